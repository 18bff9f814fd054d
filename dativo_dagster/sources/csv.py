"""CSV files (one path or a glob per object), streamed with Arrow's multi-threaded reader.

Columns are read as text and cast to the contract by the writer's enforcer, so one bad value
sends one row to quarantine instead of failing a whole block. Incremental by a cursor column
(every run scans the files and keeps rows past the cursor) or by file modification time (only
new or changed files are read).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import structlog
from pydantic import Field

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, ExtractError
from dativo_dagster.paths import confine
from dativo_dagster.sources.base import ConnectionConfig, Extraction, ReadRequest, Source, SourceOptions, SourceStats
from dativo_dagster.sources.incremental import lower_bound, row_filter
from dativo_dagster.types import arrow_type, cast_column, contract_arrow_schema

log = structlog.get_logger("dativo.sources.csv")


class CsvConnection(ConnectionConfig):
    """Where a tenant's files live."""

    base_path: str | None = Field(
        default=None,
        description="directory the object paths are relative to (relative to the project; default: the "
        "tenant's first data root); must lie inside the tenant's data roots",
    )


class CsvOptions(SourceOptions):
    """Per-object CSV settings."""

    path: str = Field(description="file name or glob relative to base_path, e.g. 'orders/*.csv'")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf8"
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null"])
    # Small blocks bound memory: Arrow parses blocks ahead of the consumer.
    block_size_bytes: int = Field(default=1 << 20, ge=1 << 16, le=256 << 20)


def file_cursor(files: list[tuple[int, str]], previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """New ``file_mtime`` cursor: latest mtime and the files seen at exactly that mtime."""
    if not files:
        return previous
    latest = max(m for m, _ in files)
    at_latest = sorted({p for m, p in files if m == latest})
    if previous and previous.get("mtime_ns") == latest:
        at_latest = sorted(set(at_latest) | set(previous.get("paths", [])))
    if previous and previous.get("mtime_ns", -1) > latest:
        return previous
    return {"mtime_ns": latest, "paths": at_latest}


def files_after(files: list[tuple[int, str]], cursor: dict[str, Any] | None) -> list[tuple[int, str]]:
    """Files modified after the cursor (same-mtime files not yet loaded are included)."""
    if not cursor:
        return files
    mtime = cursor.get("mtime_ns", -1)
    seen = set(cursor.get("paths", []))
    return [(m, p) for m, p in files if m > mtime or (m == mtime and p not in seen)]


class CsvSource(Source):
    """Local CSV files; object stores plug in through the same options later."""

    type = "csv"
    connection_model = CsvConnection
    options_model = CsvOptions
    supported_strategies = frozenset(
        {Strategy.FULL_REFRESH, Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED, Strategy.FILE_MTIME}
    )
    needs_contract = True
    local_path_fields = frozenset({"base_path"})

    @property
    def base_path(self) -> Path:
        """Resolved base directory (inside the tenant's data roots)."""
        assert isinstance(self.connection, CsvConnection)
        if self.connection.base_path is None:
            if not self.data_roots:
                raise ConfigError("csv source: no base_path and no data root configured for this tenant")
            return self.data_roots[0]
        return confine(self.connection.base_path, self.data_roots, base=self.project_dir, what="source.connection.base_path")

    def check_connection(self) -> None:
        """The base directory must exist and be readable."""
        base = self.base_path
        if not base.is_dir():
            raise ConfigError(f"csv base_path {base.name!r} is not a directory")
        if not os.access(base, os.R_OK | os.X_OK):
            raise ExtractError(f"csv base_path {base.name!r} is not readable")

    def list_objects(self) -> list[str]:
        """CSV file stems under the base directory."""
        return sorted(p.stem for p in self.base_path.glob("*.csv"))

    def _options(self, obj: ObjectPlan) -> CsvOptions:
        return CsvOptions.model_validate(obj.options)

    def matching_files(self, obj: ObjectPlan) -> list[tuple[int, str]]:
        """``(mtime_ns, relative path)`` of every file the object's path or glob matches."""
        options = self._options(obj)
        base = self.base_path
        if Path(options.path).is_absolute() or ".." in Path(options.path).parts:
            raise ConfigError(f"{obj.label}: options.path must stay inside base_path (got {options.path!r})")
        matches = sorted(glob.glob(str(base / options.path), recursive=True))
        files = []
        for match in matches:
            path = Path(match)
            if path.is_file():
                files.append((path.stat().st_mtime_ns, str(path.relative_to(base))))
        return files

    def check_object(self, obj: ObjectPlan) -> None:
        """At least one file must match, with every required contract column in its header."""
        files = self.matching_files(obj)
        if not files:
            raise ConfigError(f"{obj.label}: no file matches options.path {self._options(obj).path!r}")
        self._check_header(obj, self.base_path / files[0][1])

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The contract's schema (CSV carries no types of its own)."""
        assert obj.contract is not None
        return contract_arrow_schema(obj.contract)

    def _read_options(self, options: CsvOptions) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions]:
        read = pacsv.ReadOptions(
            block_size=options.block_size_bytes,
            skip_rows=options.skip_rows,
            encoding=options.encoding,
            autogenerate_column_names=not options.header,
            use_threads=True,
        )
        parse = pacsv.ParseOptions(delimiter=options.delimiter, quote_char=options.quote_char)
        return read, parse

    def _check_header(self, obj: ObjectPlan, path: Path) -> list[str]:
        options = self._options(obj)
        read, parse = self._read_options(options)
        try:
            with pacsv.open_csv(
                path,
                read_options=read,
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=True),
            ) as reader:
                names = reader.schema.names
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"{obj.label}: {path.name}: not a readable CSV file ({exc})") from None
        assert obj.contract is not None
        missing = [
            c.source_name or c.name
            for c in obj.contract.columns
            if c.required and (c.source_name or c.name) not in names
        ]
        if missing:
            raise ConfigError(
                f"{obj.label}: {path.name}: required column(s) missing from the header: {', '.join(missing)}"
            )
        return names

    def read(self, request: ReadRequest) -> Extraction:
        """Stream matching files past the cursor as text batches."""
        obj = request.obj
        assert obj.contract is not None
        options = self._options(obj)
        stats = SourceStats()
        files = self.matching_files(obj)
        is_glob = any(ch in options.path for ch in "*?[")
        if not files and (obj.strategy is not Strategy.FILE_MTIME or not is_glob):
            # An empty read here would look like a successful load (or, for a full refresh, empty
            # the table): a missing file is a configuration problem, not "no new rows".
            raise ConfigError(f"{obj.label}: no file matches options.path {options.path!r} under base_path")
        previous_files = request.cursor.value if request.cursor and obj.strategy is Strategy.FILE_MTIME else None
        if obj.strategy is Strategy.FILE_MTIME:
            files = files_after(files, previous_files)
        source_columns = [c.source_name or c.name for c in obj.contract.columns]
        schema = pa.schema([pa.field(name, pa.string()) for name in source_columns])
        bound, inclusive = lower_bound(obj.strategy, request.cursor, obj.config.incremental.lookback_days)
        cursor_type = None
        cursor_source = None
        if obj.cursor_field:
            cursor_column = obj.contract.column(obj.cursor_field)
            cursor_type = arrow_type(cursor_column)
            cursor_source = cursor_column.source_name or cursor_column.name
        skipped = {"rows": 0}

        def batches() -> Iterator[pa.RecordBatch]:
            read, parse = self._read_options(options)
            for _, relative in files:
                path = self.base_path / relative
                names = self._check_header(obj, path)
                present = [c for c in source_columns if c in names]
                convert = pacsv.ConvertOptions(
                    column_types={c: pa.string() for c in present},
                    include_columns=present,
                    strings_can_be_null=True,
                    null_values=options.null_values,
                    quoted_strings_can_be_null=False,
                )
                stats.add(api_calls=1, bytes_read=path.stat().st_size)
                try:
                    reader = pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
                except (pa.ArrowInvalid, OSError) as exc:
                    raise ExtractError(f"{obj.label}: cannot open {relative}: {exc}") from None
                with reader:
                    while True:
                        try:
                            batch = reader.read_next_batch()
                        except StopIteration:
                            break
                        except pa.ArrowInvalid as exc:
                            raise ConfigError(f"{obj.label}: {relative}: malformed CSV ({exc})") from None
                        stats.add(pages=1)
                        batch = _with_columns(batch, source_columns)
                        if cursor_source is not None and cursor_type is not None:
                            typed, _ = cast_column(batch.column(cursor_source), cursor_type)
                            if bound is not None:
                                keep = row_filter(typed, bound, inclusive)
                                # Rows without a usable cursor were offered on the first run (and
                                # quarantined there if the column is required); later runs skip them.
                                skipped["rows"] += typed.null_count
                                batch = batch.filter(keep)
                                typed = typed.filter(keep)
                            if obj.cursor_field != cursor_source:
                                batch = batch.append_column(obj.cursor_field, typed)
                            else:
                                batch = batch.set_column(
                                    batch.schema.get_field_index(cursor_source), cursor_source, typed
                                )
                        yield batch

        def on_close() -> None:
            if skipped["rows"]:
                log.warning("rows_without_cursor_skipped", object=obj.label, rows=skipped["rows"])

        def new_file_cursor() -> Any:
            return file_cursor(files, previous_files) if files else previous_files

        typed_schema = schema
        if cursor_source is not None and cursor_type is not None:
            index = typed_schema.get_field_index(cursor_source)
            typed_schema = typed_schema.set(index, pa.field(cursor_source, cursor_type))
        return Extraction(
            typed_schema,
            batches(),
            request,
            stats,
            cursor_override=new_file_cursor if obj.strategy is Strategy.FILE_MTIME else None,
            on_close=on_close,
        )


def _with_columns(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    """Add absent (nullable) contract columns as nulls so every batch has the same layout."""
    arrays = []
    for name in columns:
        index = batch.schema.get_field_index(name)
        arrays.append(batch.column(index) if index >= 0 else pa.nulls(batch.num_rows, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=columns)
