"""Data files: streaming Arrow batches into the Parquet files of an Iceberg table.

Files are written while the source streams, rolling to a new file every ``target_rows`` rows, so
memory holds one row group and the writer's buffers, never a file, let alone the table. Nothing
written here is visible to readers until a commit references it; files of a write that fails are
deleted (:func:`delete_files`), and any that cannot be are unreferenced orphans, never data.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Record

from dativo_dagster.compat.pyiceberg import (
    FileFormatFactory,
    ParquetFormatWriter,
    _to_requested_schema,
    load_location_provider,
    pyarrow_to_schema,
    set_dictionary_columns,
)
from dativo_dagster.iceberg.failures import failure_text, raise_storage_failure
from dativo_dagster.iceberg.integrity import FileDigests, hashing_output

log = structlog.get_logger("dativo.iceberg")

ROW_GROUP_ROWS = 131_072
"""Rows gathered into one Parquet row group before it is written."""

ROW_GROUP_BYTES = 16 * 1024 * 1024
"""...or fewer, once they hold this many bytes in memory: wide rows (an API object flattened into
a hundred columns, JSON text) would otherwise keep a whole table's worth of them waiting."""

DICTIONARY_MAX_DISTINCT = 0.1
"""A flat column is dictionary-encoded when its first row group has at most this share of distinct
values. Dictionary-encoding a near-unique column (ids, timestamps, e-mails) costs about 4x the
encoding time and yields larger files than plain encoding plus zstd."""

DICTIONARY_MIN_ROWS = 1_000
"""Below this many rows in the first row group there is too little to judge: keep the default."""

DICTIONARY_SAMPLE_ROWS = 32_768
"""Rows of the first row group whose distinct values are counted (counting is a hash per value)."""


def dictionary_columns(data: pa.Table) -> list[str] | None:
    """Parquet column paths worth dictionary-encoding, judged from ``data`` (None: all columns).

    Flat columns are chosen by their share of distinct values; nested columns keep dictionary
    encoding for every leaf.
    """
    if data.num_rows < DICTIONARY_MIN_ROWS:
        return None
    sample = data.slice(0, DICTIONARY_SAMPLE_ROWS)
    chosen: list[str] = []
    for data_field, column in zip(sample.schema, sample.columns, strict=True):
        if pa.types.is_nested(data_field.type):
            chosen.extend(_leaf_paths(data_field.name, data_field.type))
            continue
        values = column.combine_chunks()
        if isinstance(values.type, pa.BaseExtensionType):
            values = values.storage
        if pc.count_distinct(values).as_py() <= DICTIONARY_MAX_DISTINCT * sample.num_rows:
            chosen.append(data_field.name)
    return chosen


def _leaf_paths(prefix: str, data_type: pa.DataType) -> list[str]:
    """Parquet leaf column paths of a nested Arrow type (pyarrow's compliant nested naming)."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return _leaf_paths(f"{prefix}.list.element", data_type.value_type)
    if pa.types.is_map(data_type):
        return _leaf_paths(f"{prefix}.key_value.key", data_type.key_type) + _leaf_paths(
            f"{prefix}.key_value.value", data_type.item_type
        )
    if pa.types.is_struct(data_type):
        return [path for child in data_type for path in _leaf_paths(f"{prefix}.{child.name}", child.type)]
    return [prefix]


_UNDECIDED = object()


class RollingParquetWriter:
    """Writes batches to Parquet data files of the table, one row group per batch.

    With ``digests``, each file's SHA-256 is computed from the bytes as they are written and
    recorded there when the file is complete (:mod:`~dativo_dagster.iceberg.integrity`).
    """

    def __init__(
        self,
        table: Table,
        metadata: TableMetadata,
        schema: pa.Schema,
        target_rows: int,
        *,
        digests: FileDigests | None = None,
    ) -> None:
        self._table = table
        self._digests = digests
        self._metadata = metadata
        self._file_schema = self._metadata.schema()
        self._task_schema = pyarrow_to_schema(
            schema, name_mapping=self._file_schema.name_mapping, format_version=self._metadata.format_version
        )
        self._locations = load_location_provider(self._metadata.location, self._metadata.properties)
        self._target_rows = target_rows
        self._format_model = FileFormatFactory.get(FileFormat.PARQUET)
        self._write_uuid = uuid.uuid4()
        self._counter = itertools.count(0)
        self._current: Any = None
        self._output: Any = None
        self._path = ""
        self._rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._open_paths: list[str] = []
        self._dictionary: Any = _UNDECIDED

    def _open(self) -> None:
        name = f"00000-{next(self._counter)}-{self._write_uuid}.parquet"
        self._path = self._locations.new_data_location(name)
        self._output = hashing_output(self._table.io, self._path, self._digests)
        self._current = ParquetFormatWriter(self._output, self._file_schema, self._metadata.properties)
        self._open_paths.append(self._path)
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> list[DataFile]:
        """Buffer one batch (split at file boundaries); returns the files it completed.

        Batches are gathered into row groups of about ``ROW_GROUP_ROWS`` rows (fewer when they
        reach ``ROW_GROUP_BYTES``): small row groups make Parquet slow to read, large ones cost
        memory.
        """
        finished: list[DataFile] = []
        while batch.num_rows:
            if self._current is None:
                self._open()
            take = min(batch.num_rows, self._target_rows - self._rows - self._pending_rows)
            part = batch.slice(0, take) if take < batch.num_rows else batch
            converted = _to_requested_schema(
                requested_schema=self._file_schema,
                file_schema=self._task_schema,
                batch=part,
                include_field_ids=True,
                format_model=self._format_model,
            )
            self._pending.append(converted)
            self._pending_rows += take
            self._pending_bytes += converted.nbytes
            batch = batch.slice(take)
            if self._pending_rows >= ROW_GROUP_ROWS or self._pending_bytes >= ROW_GROUP_BYTES:
                self._flush()
            if self._rows + self._pending_rows >= self._target_rows:
                done = self.close()
                if done is not None:
                    finished.append(done)
        return finished

    def _flush(self) -> None:
        if self._pending:
            data = pa.Table.from_batches(self._pending)
            if self._dictionary is _UNDECIDED:
                # Decided once per write from the first row group, so every file of it agrees.
                self._dictionary = dictionary_columns(data)
            if self._dictionary is not None and not self._rows:
                # ParquetFormatWriter opens its pyarrow writer on the first write, with these kwargs.
                set_dictionary_columns(self._current, self._dictionary)
            self._current.write(data)
            self._rows += self._pending_rows
            self._pending = []
            self._pending_rows = 0
            self._pending_bytes = 0

    def close(self) -> DataFile | None:
        """Finish the open file and describe it (None if no file is open)."""
        if self._current is None:
            return None
        self._flush()
        statistics = self._current.close()
        data_file = DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self._path,
            file_format=FileFormat.PARQUET,
            partition=Record(),
            file_size_in_bytes=len(self._output),
            sort_order_id=None,
            spec_id=self._metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )
        self._current = None
        self._rows = 0
        self._open_paths.remove(self._path)
        return data_file

    def abort(self) -> None:
        """Drop a half-written file."""
        delete_files(self._table, self._open_paths)
        self._open_paths.clear()
        self._pending = []
        self._current = None


def write_data_files(
    table: Table,
    metadata: TableMetadata,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    target_rows: int,
    *,
    digests: FileDigests | None = None,
) -> list[DataFile]:
    """Stream ``batches`` into new data files of ``table`` (schema and field ids from ``metadata``).

    Args:
        table: The table (its FileIO and location provider).
        metadata: The metadata whose schema (field ids) and properties the files follow.
        schema: The Arrow schema of ``batches``.
        batches: The rows.
        target_rows: Roll a new file after this many rows.
        digests: Records the SHA-256 and size of every file written (computed while writing).

    Raises:
        StorageError, ConfigError: the warehouse failed (coded; the files written so far are deleted).
    """
    files: list[DataFile] = []
    writer = RollingParquetWriter(table, metadata, schema, target_rows, digests=digests)
    try:
        for batch in batches:
            for closed in writer.write(batch):
                files.append(closed)
                log.info("rows_staged", rows=closed.record_count, files=len(files))
        last = writer.close()
        if last is not None:
            files.append(last)
            log.info("rows_staged", rows=last.record_count, files=len(files))
    except BaseException as exc:
        writer.abort()
        delete_files(table, [f.file_path for f in files])
        if isinstance(exc, OSError):
            raise_storage_failure(exc, f"writing data files of {'.'.join(table.name())}")
        raise
    return files


def rewrite_rows(
    table: Table, metadata: TableMetadata, data: pa.Table, *, digests: FileDigests | None = None
) -> list[DataFile]:
    """Write the rows of ``data`` (rows of the table, read back for a merge or window rewrite) as new data files."""
    if not data.num_rows:
        return []
    return write_data_files(table, metadata, data.schema, data.to_batches(), data.num_rows, digests=digests)


def read_data_files(table: Table, files: list[DataFile]) -> pa.Table:
    """The rows of uncommitted data files (as written: the table's field ids, no deletes)."""
    parts = []
    for data_file in files:
        with table.io.new_input(data_file.file_path).open() as stream:
            parts.append(pq.read_table(stream))
    return pa.concat_tables(parts) if parts else pa.table({})


def delete_files(table: Table, paths: Iterable[str]) -> None:
    """Delete uncommitted files; one that cannot be deleted is logged and left as an orphan.

    An orphan is never visible (no snapshot references it); table maintenance removes it. Cleanup
    runs while another error is on its way out, so no failure of the FileIO (an OSError, an Azure
    SDK error through adlfs, ...) is raised in its place.
    """
    for path in paths:
        try:
            table.io.delete(path)
        except FileNotFoundError:
            continue
        except Exception as exc:
            log.warning("orphan_file_left", path=path.rsplit("/", 1)[-1], reason=failure_text(exc))
