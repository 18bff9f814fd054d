"""Reading one object's files into text batches shaped for the writer.

:class:`FileReader` reads each file up to its consistent cut, parses it with Arrow (columns as
text), and hands on batches of the contract's columns: the cursor column typed and filtered by
the run's bound, a reason on every row the writer must quarantine (malformed, undecodable, or a
cursor value that does not convert), and, for ``file_mtime``, the file each row came from.
:class:`ReadState` records what the run read, for the cursor and the replacement of re-read files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError, ExtractError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.csv import file_cut
from dativo_dagster.sources.csv.file_cut import SENTINEL_PATTERN, CutPlan, FileCut, decode_text, plan_cut, printable
from dativo_dagster.sources.csv.file_mtime import FILE_COLUMN
from dativo_dagster.sources.csv.files import CsvFile, FileVanished, open_confined
from dativo_dagster.sources.csv.header import HeaderMatch, match_file_header
from dativo_dagster.sources.csv.malformed import MalformedRowParser, MalformedRows, UnreadLine
from dativo_dagster.sources.csv.options import CsvFormat
from dativo_dagster.sources.csv.prefetch import Prefetch
from dativo_dagster.sources.incremental import row_filter
from dativo_dagster.types import SOURCE_REASON_COLUMN, cast_column

log = structlog.get_logger("dativo.sources.csv")


_LEFT_REASONS = {
    "line": "its last line has no line end yet",
    "quote": "a quoted value is still open at its last line end",
}


def settled(mtime_ns: int, settle_seconds: float, now_ns: int | None = None) -> bool:
    """Whether a file last modified at ``mtime_ns`` has not been modified for ``settle_seconds``."""
    if settle_seconds <= 0:
        return True
    now = time.time_ns() if now_ns is None else now_ns
    return now - mtime_ns >= settle_seconds * 1e9


def record_limit(options: CsvFormat) -> int:
    """The longest record a read takes (longer ones are quarantined)."""
    return max(file_cut.MAX_RECORD_BYTES, options.block_size_bytes)


def block_size(options: CsvFormat, longest: int) -> int:
    """Arrow's block: the configured one, or one that holds the file's longest record with room to spare."""
    if longest + (longest >> 2) <= options.block_size_bytes:
        return options.block_size_bytes
    need = longest + (longest >> 2) + (1 << 16)
    return min(-(-need // (1 << 16)) * (1 << 16), (1 << 31) - 1)


@dataclass
class ReadState:
    """What one run read, for the cursor and the replacement of re-read files."""

    read: list[tuple[int, str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    skipped_rows: int = 0
    skipped_malformed: list[str] = field(default_factory=list)


class FileReader:
    """Reads one object's files into text batches (one instance per run)."""

    def __init__(
        self,
        roots: Sequence[Path],
        obj: ObjectPlan,
        options: CsvFormat,
        source_columns: list[str],
        cursor_source: str | None,
        cursor_type: pa.DataType | None,
        bound: Any,
        inclusive: bool,
        by_mtime: bool,
        state: ReadState,
        stats: SourceStats,
        upper: Any = None,
        settle_seconds: float = 0,
        count_reads: bool = True,
    ) -> None:
        self.roots = roots
        # A file modified within this many seconds may still be being written (local files).
        self.settle_seconds = settle_seconds
        # A local file read is one "call" of the object; a downloaded one was counted by its transport.
        self.count_reads = count_reads
        self.obj = obj
        self.options = options
        self.source_columns = source_columns
        self.cursor_source = cursor_source
        self.cursor_type = cursor_type
        self.bound = bound
        self.inclusive = inclusive
        # Exclusive upper bound of a partition window (None: no upper bound).
        self.upper = upper
        self.by_mtime = by_mtime
        self.state = state
        self.stats = stats
        assert obj.contract is not None
        self.table_names = {c.source_name or c.name: c.name for c in obj.contract.columns}

    def read(self, file: CsvFile) -> Iterator[pa.RecordBatch]:
        """Batches of one file as its consistent cut allows; malformed, undecodable and overlong rows carry a reason."""
        try:
            fd = open_confined(file, self.roots, label=self.obj.label)
        except FileVanished:
            # Moved away since it was listed (a drop folder being archived): not read, not recorded.
            log.warning("csv_file_vanished", object=self.obj.label, file=file.relative)
            return
        try:
            yield from self.read_descriptor(fd, file.relative)
        finally:
            os.close(fd)

    def read_descriptor(self, fd: int, relative: str, *, mtime_ns: int | None = None) -> Iterator[pa.RecordBatch]:
        """Batches of an open file (the caller closes ``fd``), recorded under ``relative``.

        Args:
            fd: A regular file open for reading.
            relative: The name rows and messages carry (a path under base_path, a Drive file id).
            mtime_ns: The modification time to record (default: the file's own).
        """
        obj, options = self.obj, self.options
        opened = os.fstat(fd)  # size and modification time as of the moment the read starts
        size = opened.st_size
        modified_ns = opened.st_mtime_ns if mtime_ns is None else mtime_ns
        plan = plan_cut(
            fd,
            size,
            quote=options.quote_char,
            delimiter=options.delimiter,
            settled=settled(opened.st_mtime_ns, self.settle_seconds),
            limit=record_limit(options),
            chunk=options.block_size_bytes,
            label=f"{obj.label}: {relative}",
        )
        if plan.left is not None:
            # Never read a row half: a line or a quoted value still being written waits.
            if self.by_mtime:
                log.warning(
                    "csv_file_incomplete_deferred",
                    object=obj.label,
                    file=relative,
                    bytes=size,
                    reason=_LEFT_REASONS[plan.left],
                    settle_seconds=self.settle_seconds,
                )
                self.state.deferred.append(relative)
                return
            log.warning(
                "csv_partial_last_line_left",
                object=obj.label,
                file=relative,
                bytes=size - plan.end,
                reason=_LEFT_REASONS[plan.left],
                settle_seconds=self.settle_seconds,
            )
        if plan.end == 0:
            if self.by_mtime:
                self.state.deferred.append(relative)
            log.warning("csv_file_has_no_complete_line", object=obj.label, file=relative)
            return
        if plan.skips:
            log.warning(
                "csv_lines_quarantined_unread",
                object=obj.label,
                file=relative,
                unterminated_quote=sum(1 for s in plan.skips if s.kind == "unterminated"),
                longer_than_limit=sum(1 for s in plan.skips if s.kind == "too_long"),
            )
        header, match = match_file_header(obj, options, fd, plan.end, relative, plan)
        yield from self._batches(fd, plan, relative, header, match)
        if self.count_reads:
            self.stats.add(api_calls=1, bytes_read=plan.end)
        self.state.read.append((modified_ns, relative))
        self.state.sizes[relative] = plan.end

    def _batches(
        self, fd: int, plan: CutPlan, relative: str, header: list[str], match: HeaderMatch
    ) -> Iterator[pa.RecordBatch]:
        obj, options = self.obj, self.options
        included = [match.columns[name] for name in self.source_columns if name in match.columns]
        cut = FileCut(
            fd,
            plan.end,
            options.encoding,
            label=f"{obj.label}: {relative}",
            quote=options.quote_char,
            plan=plan,
            columns=len(header),
            delimiter=options.delimiter,
            limit=record_limit(options),
        )
        limit = record_limit(options)
        unread = {
            i: UnreadLine(s.kind, decode_text(s.head, options.encoding).rstrip("\r\n"), s.stop - s.start, limit)
            for i, s in enumerate(plan.skips)
        }
        malformed = MalformedRows()
        read = pacsv.ReadOptions(
            block_size=block_size(options, plan.longest),
            skip_rows=options.skip_rows,
            encoding="utf8",  # FileCut hands Arrow UTF-8 whatever the file's encoding
            column_names=None if options.header else header,
            use_threads=False,  # row numbers for malformed rows; Prefetch reads ahead instead
        )
        parse = pacsv.ParseOptions(
            delimiter=options.delimiter,
            quote_char=options.quote_char,
            # FileCut ends every read at a record end; Arrow's quote-aware chunking is the second guard.
            newlines_in_values=True,
            invalid_row_handler=malformed.handler,
        )
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in included},
            include_columns=included,
            strings_can_be_null=True,
            null_values=options.null_values,
            quoted_strings_can_be_null=False,
            check_utf8=False,  # FileCut already guarantees valid UTF-8
        )
        try:
            reader = pacsv.open_csv(cut, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"{obj.label}: {relative}: malformed CSV ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise ExtractError(f"{obj.label}: cannot read {relative}: {exc}") from None
        cursor_header = match.columns.get(self.cursor_source) if self.cursor_source is not None else None
        parser = MalformedRowParser(options, header, included, cursor_header, unread)
        prefetch = Prefetch(reader, malformed)
        try:
            for batch, bad_rows in prefetch:
                if batch is not None and batch.num_rows:
                    self.stats.add(pages=1)
                    out = self._finish(self._columns(batch, match, cut.dirty), relative)
                    if out is not None:
                        yield out
                if bad_rows:
                    parsed, reasons, flags = parser.batch(bad_rows)
                    columns, byte_reasons = self._columns(parsed, match, cut.dirty)
                    if byte_reasons is not None:
                        reasons = [
                            r if b is None else b if r is None else f"{r}; {b}"
                            for r, b in zip(reasons, byte_reasons, strict=True)
                        ]
                    out = self._finish((columns, reasons), relative, malformed=flags)
                    if out is not None:
                        yield out
        except DativoError:
            raise
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"{obj.label}: {relative}: malformed CSV ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise ExtractError(f"{obj.label}: cannot read {relative}: {exc}") from None
        finally:
            prefetch.close()
            reader.close()

    def _columns(
        self, batch: pa.RecordBatch, match: HeaderMatch, dirty: bool
    ) -> tuple[dict[str, pa.Array], list[str | None] | None]:
        """The contract's columns of a parsed batch, and a reason per row holding undecodable bytes."""
        rows = batch.num_rows
        columns: dict[str, pa.Array] = {}
        reasons: list[str | None] | None = None
        for name in self.source_columns:
            header_name = match.columns.get(name)
            if header_name is None:
                columns[name] = pa.nulls(rows, pa.string())
                continue
            column = batch.column(header_name)
            if dirty:
                flagged = pc.match_substring_regex(column, SENTINEL_PATTERN)
                if pc.any(flagged).as_py():
                    reasons = reasons or [None] * rows
                    values = column.to_pylist()
                    for i, bad in enumerate(flagged.to_pylist()):
                        if bad:
                            shown = printable(values[i])[:60]
                            text = f"{self.table_names[name]}: not valid {self.options.encoding} text ({shown!r})"
                            reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
                    column = pa.array([None if v is None else printable(v) for v in values], pa.string())
            columns[name] = column
        return columns, reasons

    def _finish(
        self,
        parts: tuple[dict[str, pa.Array], list[str | None] | None],
        relative: str,
        *,
        malformed: list[bool] | None = None,
    ) -> pa.RecordBatch | None:
        """One output batch: contract columns, typed cursor filtered by the bound, reason, file lineage.

        Args:
            parts: The contract's columns (as text) and a reason per row (or None).
            relative: The file, for the ``_dativo_file`` lineage column.
            malformed: Per row, whether it is a malformed row (its cursor may be unknown).
        """
        columns, reasons = parts
        names = list(self.source_columns)
        arrays = [columns[name] for name in names]
        rows = len(arrays[0])
        extra_names: list[str] = []
        extra: list[pa.Array] = []
        keep = None
        if self.cursor_source is not None and self.cursor_type is not None:
            typed, errors = cast_column(columns[self.cursor_source], self.cursor_type)
            if errors is not None:
                # A cursor value that does not convert exactly: quarantine the row with the reason
                # rather than let it pass as a row without a cursor.
                reasons = reasons or [None] * rows
                for i, error in enumerate(errors):
                    if error is not None and not (malformed and malformed[i]):
                        text = f"{self.obj.cursor_field}: {error}"
                        reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
            if self.bound is not None:
                keep = row_filter(typed, self.bound, self.inclusive)
                if self.upper is not None:
                    keep = pc.and_(keep, pc.invert(row_filter(typed, self.upper, True)))
                # Rows without a usable cursor were offered on the first run (and quarantined there if
                # the column is required); later runs skip them.
                if typed.null_count:
                    for i, valid in enumerate(typed.is_valid().to_pylist()):
                        if valid:
                            continue
                        if malformed and malformed[i] and reasons is not None:
                            self.state.skipped_malformed.append((reasons[i] or "").split(":", 1)[0])
                        else:
                            self.state.skipped_rows += 1
            if self.obj.cursor_field != self.cursor_source:
                extra_names.append(self.obj.cursor_field or "")
                extra.append(typed)
            else:
                arrays[names.index(self.cursor_source)] = typed
        if reasons is not None:
            extra_names.append(SOURCE_REASON_COLUMN)
            extra.append(pa.array(reasons, pa.string()))
        if self.by_mtime:
            extra_names.append(FILE_COLUMN)
            extra.append(pa.array([relative] * rows, pa.string()))
        batch = pa.RecordBatch.from_arrays(arrays + extra, names=names + extra_names)
        if keep is not None:
            batch = batch.filter(keep)
        return batch if batch.num_rows else None
