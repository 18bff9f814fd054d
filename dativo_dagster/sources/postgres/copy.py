"""``COPY (SELECT …) TO STDOUT`` pumped through an OS pipe into Arrow's streaming CSV reader.

:func:`stream_copy` runs COPY in a background thread writing into a pipe and parses the other
end, so memory is bounded by the pipe and one CSV block, never by the table; the read end hands
Arrow only blocks in which a row ends (:class:`_WholeRowReader`). A failure of the COPY thread is
raised to the consumer, classified.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg2
import pyarrow as pa
import pyarrow.csv as pacsv

from dativo_dagster.errors import DativoError, PermanentExtractError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.postgres.convert import convert_batch, post_converter
from dativo_dagster.sources.postgres.errors import classify
from dativo_dagster.sources.postgres.types import PgColumn, csv_parse_type

PIPE_BYTES = 1 << 20
"""Capacity requested for the COPY pipe (Linux; elsewhere the default pipe size is used)."""
BLOCK_BYTES = 1 << 20
"""CSV bytes Arrow parses at a time (one batch); a longer row makes its block longer."""


class _WholeRowReader:
    """The read end of the COPY pipe as Arrow sees it, counting the bytes that pass.

    Arrow's streaming CSV reader carries the unfinished row at the end of a block over to the
    next one, and fails when that row does not end in the next block either (a text, jsonb or
    bytea value larger than a block). Every block handed to it here holds the end of at least
    one row: a read from the pipe in which no row ends (all of it inside one long row) is joined
    with the following reads until one does. A row ends at a newline outside double quotes
    (COPY's CSV quotes a value holding a newline and doubles its quotes); quotes are counted only
    in a read that holds any, and a read is handed over as it is, without copying.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.bytes_read = 0
        self._in_quotes = False  # the bytes read so far end inside a quoted value

    def read(self, size: int = -1) -> bytes:
        """About ``size`` bytes; more when a row is longer than that (Arrow accepts the block)."""
        if size < 0:
            data: bytes = self._raw.readall()
            self.bytes_read += len(data)
            return data
        parts: list[bytes] = []
        while True:
            chunk: bytes = self._raw.read(size)
            self.bytes_read += len(chunk)
            if not chunk:  # end of the stream
                return b"".join(parts)
            row_ends, self._in_quotes = _row_end_in(chunk, self._in_quotes)
            if row_ends:
                return b"".join([*parts, chunk]) if parts else chunk
            parts.append(chunk)  # no row ends here: the row goes on

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """A pipe cannot seek."""
        return False

    def tell(self) -> int:
        """Bytes read so far."""
        return self.bytes_read

    @property
    def closed(self) -> bool:
        """Whether the pipe end is closed."""
        return bool(self._raw.closed)

    def close(self) -> None:
        """Close the pipe end (the COPY thread then sees a broken pipe and stops)."""
        self._raw.close()


def _row_end_in(chunk: bytes, in_quotes: bool) -> tuple[bool, bool]:
    """Whether a row ends in ``chunk`` (which starts inside quotes or not), and whether it ends inside quotes."""
    if b'"' not in chunk:  # the common case: one memchr each, no counting
        return (not in_quotes and b"\n" in chunk), in_quotes
    total = chunk.count(b'"')
    stop, after = len(chunk), 0
    while True:
        newline = chunk.rfind(b"\n", 0, stop)
        if newline < 0:
            break
        after += chunk.count(b'"', newline, stop)
        if not (in_quotes ^ bool((total - after) & 1)):  # an even count of quotes before it: a row end
            return True, in_quotes ^ bool(total & 1)
        stop = newline
    return False, in_quotes ^ bool(total & 1)


def stream_copy(
    connection: Any,
    copy: str,
    columns: list[PgColumn],
    schema: pa.Schema,
    stats: SourceStats,
    label: str,
    *,
    check_utf8: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Run COPY in a thread writing into a pipe; parse the other end with Arrow.

    Args:
        check_utf8: Let Arrow's parser check text (the server guarantees UTF-8). When False
            (a SQL_ASCII database), text columns are checked after parsing and a row with bytes
            that are not UTF-8 is marked for quarantine, naming the column.
    """
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        # A larger pipe means fewer context switches between the COPY thread and the parser.
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    failure: list[BaseException] = []

    def pump() -> None:
        # psycopg2 calls sink.write once per row: handing it the buffered file itself keeps every
        # call in C (a Python wrapper here costs more CPU than parsing the rows).
        sink = os.fdopen(write_fd, "wb", buffering=1 << 20)
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(copy, sink)
        except BaseException as exc:  # surfaced to the consumer after the pipe closes
            failure.append(exc)
        finally:
            try:
                sink.close()
            except OSError as exc:
                if not failure:
                    failure.append(exc)

    thread = threading.Thread(target=pump, name="dativo-pg-copy", daemon=True)
    thread.start()
    names = [c.name for c in columns]
    parse_types = {c.name: csv_parse_type(schema.field(c.name).type) for c in columns}
    convert = pacsv.ConvertOptions(
        column_types=parse_types,
        true_values=["t"],
        false_values=["f"],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],
        check_utf8=check_utf8,
    )
    unchecked = [] if check_utf8 else [name for name, parsed in parse_types.items() if pa.types.is_string(parsed)]
    # Small blocks: the reader parses ahead of the consumer, and what it holds is blocks in flight.
    read_options = pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES, use_threads=True)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    converters = {c.name: post_converter(schema.field(c.name).type, c.name) for c in columns}
    source = _WholeRowReader(os.fdopen(read_fd, "rb", buffering=1 << 20))
    finished = False
    try:
        try:
            reader = pacsv.open_csv(
                source, read_options=read_options, parse_options=parse_options, convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            thread.join()
            if failure:
                raise classify(failure[0], label) from None
            if "Empty CSV file" in str(exc):
                finished = True
                return
            raise _unparsable(exc, label) from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                thread.join(timeout=5)
                if failure:
                    raise classify(failure[0], label) from None
                raise _unparsable(exc, label) from None
            stats.add(pages=1)
            yield convert_batch(batch, schema, converters, unchecked)
        thread.join()
        if failure:
            # The server stopped mid-stream; the batches already yielded are not committed
            # (the writer commits only after the stream ends), so a retry has no duplicates.
            raise classify(failure[0], label) from None
        finished = True
    finally:
        if not finished and thread.is_alive():
            with contextlib.suppress(psycopg2.Error):
                connection.cancel()
        source.close()
        thread.join(timeout=30)
        stats.add(bytes_read=source.bytes_read, api_calls=1)


def _unparsable(exc: pa.ArrowInvalid, label: str) -> DativoError:
    """The error for COPY output Arrow cannot parse although the server finished sending it.

    A retry would read the same rows, so it is permanent.
    """
    text = str(exc).splitlines()[0]
    return PermanentExtractError(
        f"{label}: COPY output could not be parsed (not retried; nothing was committed): {text}",
        hint="leave the column out with 'columns', or select it in another form in a 'query' object",
    )
