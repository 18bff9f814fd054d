"""The CSV source: :class:`CsvSource`, which checks an object's files and orchestrates a read.

It resolves ``base_path``, lists the files an object's path or glob matches
(:mod:`~dativo_dagster.sources.csv.files`), picks the ones a ``file_mtime`` run reads and builds
its cursor (:mod:`~dativo_dagster.sources.csv.file_mtime`), and streams them through a
:class:`~dativo_dagster.sources.csv.reader.FileReader` as one
:class:`~dativo_dagster.sources.base.Extraction`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import structlog

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, ExtractError
from dativo_dagster.paths import confine
from dativo_dagster.sources.base import Extraction, FileVersion, ReadRequest, Source, SourceStats
from dativo_dagster.sources.csv.file_cut import last_newline_end
from dativo_dagster.sources.csv.file_mtime import FILE_COLUMN, FileCursorCodec, file_cursor, files_after
from dativo_dagster.sources.csv.files import CsvFile, FileVanished, find_files, is_glob, open_confined
from dativo_dagster.sources.csv.header import match_file_header
from dativo_dagster.sources.csv.options import CsvConnection, CsvOptions
from dativo_dagster.sources.csv.reader import FileReader, ReadState, settled
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound
from dativo_dagster.types import arrow_type, contract_arrow_schema

log = structlog.get_logger("dativo.sources.csv")


class CsvSource(Source):
    """Local CSV files; object stores plug in through the same options later."""

    type = "csv"
    connection_model = CsvConnection
    options_model = CsvOptions
    supported_strategies = frozenset(
        {Strategy.FULL_REFRESH, Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED, Strategy.FILE_MTIME}
    )
    needs_contract = True
    reads_time_windows = True  # every row is read and typed anyway; the window filters them
    local_path_fields = frozenset({"base_path"})

    @property
    def base_path(self) -> Path:
        """Resolved base directory (inside the tenant's data roots)."""
        assert isinstance(self.connection, CsvConnection)
        if self.connection.base_path is None:
            if not self.data_roots:
                raise ConfigError("csv source: no base_path and no data root configured for this tenant")
            return self.data_roots[0]
        return confine(
            self.connection.base_path, self.data_roots, base=self.project_dir, what="source.connection.base_path"
        )

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
        options: CsvOptions = self.object_options(obj)
        return options

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
        """File modification times for ``file_mtime``; the cursor column's values otherwise."""
        if obj.strategy is Strategy.FILE_MTIME:
            return FileCursorCodec()
        return super().cursor_codec(obj)

    def matching_files(self, obj: ObjectPlan) -> list[CsvFile]:
        """Every regular file the object's path or glob matches, each checked against the data roots.

        Raises:
            ConfigError: CFG001 naming the path (relative to base_path) of a file or directory
                that resolves outside the tenant's data roots, a dangling or looping link, or
                something that is not a regular file.
        """
        options = self._options(obj)
        return find_files(
            self.base_path, self.data_roots, pattern=options.path, label=obj.label, project_dir=self.project_dir
        )

    def check_object(self, obj: ObjectPlan) -> None:
        """At least one file must match, with every contract column in its header."""
        files = self.matching_files(obj)
        if not files:
            raise ConfigError(f"{obj.label}: no file matches options.path {self._options(obj).path!r}")
        options = self._options(obj)
        try:
            fd = open_confined(files[0], self.data_roots, label=obj.label)
        except FileVanished:
            raise ConfigError(f"{obj.label}: {files[0].relative} disappeared while it was being checked") from None
        try:
            opened = os.fstat(fd)
            end = last_newline_end(fd, opened.st_size)
            if end < opened.st_size and settled(opened.st_mtime_ns, options.settle_seconds):
                end = opened.st_size  # a last line without a line end counts once the file has settled
            if end == 0:
                raise ConfigError(
                    f"{obj.label}: {files[0].relative}: no complete line yet (empty, or its first line is still "
                    "being written)"
                )
            match_file_header(obj, options, fd, end, files[0].relative)
        finally:
            os.close(fd)

    @classmethod
    def watches_files(cls, obj: ObjectPlan) -> bool:
        """A glob can match new files between runs; a single path cannot."""
        return is_glob(CsvOptions.model_validate(obj.options).path)

    def list_files(self, obj: ObjectPlan) -> list[FileVersion]:
        """Every file the object's path or glob matches now (relative path, mtime, size)."""
        return [
            FileVersion(file.relative, file.relative, file.mtime_ns, str(file.size))
            for file in self.matching_files(obj)
        ]

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The contract's schema (CSV carries no types of its own)."""
        assert obj.contract is not None
        return contract_arrow_schema(obj.contract)

    def read(self, request: ReadRequest) -> Extraction:
        """Stream matching files past the cursor as text batches."""
        obj = request.obj
        assert obj.contract is not None
        options = self._options(obj)
        stats = SourceStats()
        listed = self.matching_files(obj)
        if not listed and (obj.strategy is not Strategy.FILE_MTIME or not is_glob(options.path)):
            # An empty read here would look like a successful load (or, for a full refresh, empty
            # the table): a missing file is a configuration problem, not "no new rows".
            raise ConfigError(f"{obj.label}: no file matches options.path {options.path!r} under base_path")
        by_mtime = obj.strategy is Strategy.FILE_MTIME
        previous_files = request.cursor.value if request.cursor and by_mtime else None
        files = listed
        if by_mtime:
            wanted = set(
                files_after(
                    [(f.mtime_ns, f.relative) for f in listed],
                    previous_files,
                    sizes={f.relative: f.size for f in listed},
                )
            )
            files = [f for f in listed if (f.mtime_ns, f.relative) in wanted]
        source_columns = [c.source_name or c.name for c in obj.contract.columns]
        schema = pa.schema([pa.field(name, pa.string()) for name in source_columns])
        bound, inclusive = lower_bound(
            obj.strategy, request.cursor, obj.config.incremental.lookback_days, self.cursor_codec(obj)
        )
        cursor_type = None
        cursor_source = None
        if obj.cursor_field:
            cursor_column = obj.contract.column(obj.cursor_field)
            cursor_type = arrow_type(cursor_column)
            cursor_source = cursor_column.source_name or cursor_column.name
        upper = None
        if request.between is not None:  # a partition window: [start, end) of the cursor
            bound, upper = request.between.bounds(cursor_type is not None and pa.types.is_date(cursor_type))
            inclusive = True
        state = ReadState()
        reader = FileReader(
            self.data_roots,
            obj,
            options,
            source_columns,
            cursor_source,
            cursor_type,
            bound,
            inclusive,
            by_mtime,
            state,
            stats,
            upper=upper,
            settle_seconds=options.settle_seconds,
        )

        def batches() -> Iterator[pa.RecordBatch]:
            for file in files:
                yield from reader.read(file)

        def on_close() -> None:
            if state.skipped_rows:
                log.warning("rows_without_cursor_skipped", object=obj.label, rows=state.skipped_rows)
            if state.skipped_malformed:
                log.warning(
                    "malformed_rows_without_cursor_skipped",
                    object=obj.label,
                    rows=len(state.skipped_malformed),
                    lines=state.skipped_malformed[:20],
                )

        def new_file_cursor() -> Any:
            return file_cursor(state.read, previous_files, sizes=state.sizes, pending=state.deferred)

        def replaced_files() -> list[str]:
            return [relative for _, relative in state.read]

        typed_schema = schema
        if cursor_source is not None and cursor_type is not None:
            index = typed_schema.get_field_index(cursor_source)
            typed_schema = typed_schema.set(index, pa.field(cursor_source, cursor_type))
        lineage = [pa.field(FILE_COLUMN, pa.string())] if by_mtime else None
        if lineage:
            typed_schema = typed_schema.append(lineage[0])
        return Extraction(
            typed_schema,
            batches(),
            request,
            stats,
            cursor_override=new_file_cursor if by_mtime else None,
            codec=self.cursor_codec(obj),
            on_close=on_close,
            lineage=lineage,
            replaces=(FILE_COLUMN, replaced_files) if by_mtime else None,
        )
