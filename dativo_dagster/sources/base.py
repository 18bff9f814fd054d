"""The Source interface every connector implements.

It is deliberately small (list objects, schema, read, check connection) so that another engine
(a Singer tap, an Airbyte source) can sit behind it. A source never decides what is committed:
it yields bounded Arrow batches for the cursor it is *given*, and reports the cursor those batches
reach; the writer commits rows and cursor together.
"""

from __future__ import annotations

import abc
import builtins
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.sources.cursors import DEFAULT_CODEC, CursorCodec
from dativo_dagster.state import CursorState, check_forward


class SourceOptions(BaseModel):
    """Base for a source's per-object options model (unknown keys are CFG001)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ConnectionConfig(BaseModel):
    """Base for a source's connection model (validated after ``${VAR}`` resolution)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class SourceStats:
    """Counters a source updates while reading; surfaced as materialization metadata."""

    pages: int = 0
    api_calls: int = 0
    retries: int = 0
    throttled_s: float = 0.0
    bytes_read: int = 0
    http_429: int = 0
    breaker_openings: int = 0
    slices: int = 0
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        """Thread-safe increment of several counters."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def note(self, text: str) -> None:
        """Something an operator should read about this object's run (shown as ``dativo/notes``)."""
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def as_metadata(self) -> dict[str, float]:
        """Plain dict of the counters."""
        with self._lock:
            return {
                "pages": self.pages,
                "api_calls": self.api_calls,
                "retries": self.retries,
                "throttled_s": round(self.throttled_s, 3),
                "bytes_read": self.bytes_read,
                "http_429": self.http_429,
                "breaker_openings": self.breaker_openings,
            }


@dataclass(frozen=True)
class FileVersion:
    """One file a file-based source would read, as a new-file sensor sees it.

    ``file_id`` is stable across versions of the file (a path relative to ``base_path``, a Drive
    file id); ``fingerprint`` changes whenever its content does, even within one ``modified_ns``
    tick (a size, a Drive version number).
    """

    file_id: str
    name: str
    modified_ns: int
    fingerprint: str = ""


@dataclass(frozen=True)
class Slice:
    """A part of a long extraction that is committed on its own (a window of ``created`` times).

    ``start``/``end`` are cursor values in the source's own terms; ``end`` is exclusive and becomes
    the committed cursor once the slice's rows are in the table.
    """

    start: Any
    end: Any
    label: str = ""


@dataclass(frozen=True)
class TimeWindow:
    """``[start, end)`` of a timestamp cursor, both timezone-aware (a partition's window)."""

    start: dt.datetime
    end: dt.datetime

    @property
    def label(self) -> str:
        """``start/end`` in ISO form (names the window in snapshots, quarantine rows and logs)."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def utc(self) -> tuple[dt.datetime, dt.datetime]:
        """The bounds in UTC."""
        return self.start.astimezone(dt.timezone.utc), self.end.astimezone(dt.timezone.utc)

    def dates(self) -> tuple[dt.date, dt.date]:
        """The bounds as local dates ``[start, end)`` in the partition's time zone (a date cursor's).

        A date names a calendar day, not an instant: a row dated 3 January belongs to the partition
        of 3 January wherever the partitions' days are cut, so it is never compared in UTC.
        """
        return self.start.date(), self.end.date()

    def bounds(self, date_cursor: bool) -> tuple[dt.date, dt.date] | tuple[dt.datetime, dt.datetime]:
        """The bounds to compare a cursor column with: local dates for a date column, else UTC instants."""
        return self.dates() if date_cursor else self.utc()


@dataclass(frozen=True)
class ReadRequest:
    """What to read: the object, the committed cursor, an optional slice and row limit.

    ``between`` (a partition run) asks for the rows whose cursor lies in ``[start, end)``
    instead of the rows after ``cursor``; only sources with ``reads_time_windows`` get it.
    """

    obj: ObjectPlan
    cursor: CursorState | None = None
    window: Slice | None = None
    limit: int | None = None
    between: TimeWindow | None = None


class Extraction:
    """A stream of Arrow batches plus the cursor it reaches once drained.

    Args:
        schema: Arrow schema of every batch.
        batches: Lazily produced batches (bounded in size).
        request: The read request (carries strategy, cursor field and previous cursor).
        stats: Counters the source updates while reading.
        cursor_override: For sources whose cursor is not a column (file modification times),
            a callable returning the new cursor value after the stream is drained.
        on_close: Called once when the stream is drained or abandoned (close connections).
        unique_keys: The stream has at most one row per primary key.
        lineage: dativo columns (``_dativo_`` prefix) the source adds to every row, such as the
            file a row came from; they are stored in the table next to the contract's columns.
        replaces: ``(column, callable)``: rows already in the table whose ``column`` holds one of
            the values the callable returns once the stream is drained (e.g. the files re-read
            this run) are replaced by this run's rows, in the same commit.
        codec: How the source's cursor values are ordered and normalised.
        full_refresh: This read is a complete copy of the object: it replaces the whole table
            whatever the object's write mode (a source falling back from an incremental read it
            can no longer do exactly, e.g. past an API's event retention).
        unchanged: The source says the object has not changed since the copy the cursor records
            (a spreadsheet's version): nothing was read and nothing is committed. Only a source
            that records a version in a full refresh's cursor (``cursor_override``) can say so.
    """

    def __init__(
        self,
        schema: pa.Schema,
        batches: Iterator[pa.RecordBatch],
        request: ReadRequest,
        stats: SourceStats,
        *,
        cursor_override: Callable[[], Any] | None = None,
        on_close: Callable[[], None] | None = None,
        unique_keys: bool = False,
        lineage: list[pa.Field] | None = None,
        replaces: tuple[str, Callable[[], list[str]]] | None = None,
        codec: CursorCodec = DEFAULT_CODEC,
        full_refresh: bool = False,
        unchanged: bool = False,
    ) -> None:
        self.schema = schema
        self._batches = batches
        self.request = request
        self.stats = stats
        self._cursor_override = cursor_override
        self._on_close = on_close
        # True when the source guarantees one row per primary key in this stream (a table's
        # unique index read from one snapshot): the writer can skip de-duplicating the run.
        self.unique_keys = unique_keys
        self.lineage = list(lineage or [])
        self.replaces = replaces
        self.codec = codec
        self.full_refresh = full_refresh
        self.unchanged = unchanged
        self._max_seen: Any = None
        self._rows = 0
        self._drained = False
        self._closed = False

    @property
    def rows_read(self) -> int:
        """Rows yielded so far."""
        return self._rows

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        # The typed cursor column under its table name when the source provides one, else the
        # column the contract maps to it (``source_name``).
        table_name = self.request.obj.cursor_field
        source_name = _cursor_source_name(self.request.obj)
        try:
            for batch in self._batches:
                if batch.num_rows == 0:
                    continue
                if self.request.limit is not None and self._rows + batch.num_rows > self.request.limit:
                    batch = batch.slice(0, self.request.limit - self._rows)
                field_name = table_name if table_name in batch.schema.names else source_name
                if field_name is not None:
                    batch_max = pc.max(batch.column(field_name)).as_py()
                    if batch_max is not None:
                        self._max_seen = self.codec.later(self._max_seen, self.codec.from_arrow(batch_max))
                self._rows += batch.num_rows
                yield batch
                if self.request.limit is not None and self._rows >= self.request.limit:
                    break
            self._drained = True
        finally:
            self.close()

    def close(self) -> None:
        """Release the source's resources (idempotent)."""
        if not self._closed:
            self._closed = True
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()
            if self._on_close is not None:
                self._on_close()

    def new_cursor(self) -> CursorState | None:
        """The cursor the drained stream reached.

        A full refresh has none, unless its source records the version of the object the copy
        was taken from (``cursor_override``): the next run compares it and may skip the read.

        Raises:
            StateError: STATE001 if it lies before the cursor the read started from.
        """
        obj = self.request.obj
        if obj.strategy is Strategy.FULL_REFRESH:
            if self._cursor_override is None:
                return None
            version = self._cursor_override()
            return None if version is None else CursorState(strategy=obj.strategy, field=None, value=version)
        previous = self.request.cursor.value if self.request.cursor else None
        override = self._cursor_override
        value = override() if override is not None else self.codec.later(previous, self._max_seen)
        if value is None:
            return self.request.cursor
        reached = CursorState(strategy=obj.strategy, field=obj.cursor_field, value=value)
        check_forward(self.request.cursor, reached, label=obj.label, codec=self.codec)
        return reached


def _cursor_source_name(obj: ObjectPlan) -> str | None:
    """The cursor column as the source's batches name it (a contract may rename it with source_name)."""
    name = obj.cursor_field
    if name is None or obj.contract is None:
        return name
    try:
        column = obj.contract.column(name)
    except KeyError:
        return name
    return column.source_name or name


class Source(abc.ABC):
    """A connector. One instance per credential per run; never shares clients globally.

    Subclasses declare a few class attributes (singer-sdk style) and implement four methods.
    """

    type: ClassVar[str]
    # ``builtins.type`` because the ``type`` class attribute above shadows the builtin here.
    connection_model: ClassVar[builtins.type[ConnectionConfig]]
    options_model: ClassVar[builtins.type[SourceOptions]]
    supported_strategies: ClassVar[frozenset[Strategy]]
    needs_contract: ClassVar[bool] = False
    # The key of an object without a contract or a configured primary key (an API's ``id``).
    default_primary_key: ClassVar[tuple[str, ...]] = ()
    # Connection fields naming local files; each must lie in the tenant's data roots (links
    # followed), checked at load for literal values and at run time after ``${VAR}`` resolution.
    local_path_fields: ClassVar[frozenset[str]] = frozenset()
    # True when read() yields rows in cursor order; only then can a row limit stop early without
    # skipping rows that sort before the last one read.
    ordered_by_cursor: ClassVar[bool] = False
    # True when read() honours ``ReadRequest.between``: only rows whose timestamp cursor lies in
    # ``[start, end)`` (what a partition run reads). Only such sources can be partitioned.
    reads_time_windows: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass declaring its own ``type`` registers itself (no central list to edit)."""
        super().__init_subclass__(**kwargs)
        if isinstance(cls.__dict__.get("type"), str):
            from dativo_dagster.sources.registry import register

            register(cls)

    def __init__(
        self,
        connection: ConnectionConfig,
        credentials: dict[str, str],
        *,
        project_dir: Path,
        data_roots: tuple[Path, ...] = (),
    ) -> None:
        self.connection = connection
        self.credentials = credentials
        self.project_dir = project_dir
        self.data_roots = data_roots

    @classmethod
    def from_plan(
        cls, connection: ConnectionConfig, credentials: dict[str, str], job: JobPlan, *, runtime: Any = None
    ) -> Source:
        """Build an instance for one run of ``job`` (override to pick job-level settings).

        Args:
            connection: The validated connection settings.
            credentials: Resolved credentials.
            job: The job.
            runtime: What sources of this run share (API sources: buckets and breakers per
                credential); ignored by sources that share nothing.
        """
        return cls(connection, credentials, project_dir=job.project_dir, data_roots=job.data_roots)

    @abc.abstractmethod
    def check_connection(self) -> None:
        """Raise AuthError / ExtractError if the source cannot be reached with these credentials."""

    @abc.abstractmethod
    def list_objects(self) -> list[str]:
        """Names of the objects this source can read (tables, files, resources)."""

    @abc.abstractmethod
    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """Arrow schema of ``obj`` as the source exposes it (before contract coercion)."""

    @abc.abstractmethod
    def read(self, request: ReadRequest) -> Extraction:
        """Stream ``request.obj`` from ``request.cursor`` on, in bounded batches."""

    @classmethod
    def object_options(cls, obj: ObjectPlan) -> Any:
        """``obj.options`` validated by the source's ``options_model``.

        Raises:
            ConfigError: CFG001 naming the object and the option (``options.path``) at fault.
        """
        from pydantic import ValidationError

        from dativo_dagster.errors import ConfigError

        try:
            return cls.options_model.model_validate(obj.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["options", *(str(p) for p in first["loc"])])
            raise ConfigError(f"{obj.label}: {where}: {first['msg'].removeprefix('Value error, ')}") from None

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
        """How this source's cursor values for ``obj`` are ordered, shown and moved back.

        A classmethod: it depends on the object's config only, never on the connection or the
        credentials, so ``dativo reset`` parses ``--to`` without resolving a source secret.
        """
        return CursorCodec(unit=obj.config.incremental.cursor_unit)

    def plan_slices(self, request: ReadRequest) -> list[Slice] | None:
        """The slices a read should be committed in (None: one commit for the whole read).

        A source with long extractions (an API backfill) proposes windows here; the engine reads
        and commits them one after another, each with its own cursor, so a killed run resumes at
        the last committed slice.
        """
        return None

    def read_checkpointed(self, request: ReadRequest) -> Iterator[Extraction] | None:
        """The read as consecutive extractions, each ending at a checkpoint the source marks (None:
        the source has none, and :meth:`read` is used).

        For sources whose stream carries its own commit points (a Singer tap's STATE messages, an
        Airbyte source's per-stream state): the engine commits each extraction, rows and cursor
        together, before it takes the next, so a run killed in between resumes from the last
        checkpoint committed. Each extraction's ``request.cursor`` is the cursor the one before
        it reached; a full-refresh read yields a single extraction.
        """
        return None

    def check_object(self, obj: ObjectPlan) -> None:
        """Raise ConfigError if ``obj`` does not exist at the source (default: discover its schema)."""
        self.discover_schema(obj)

    @classmethod
    def watches_files(cls, obj: ObjectPlan) -> bool:
        """Whether ``obj`` is a set of files that can gain members between runs (a folder, a glob):
        only then does a new-file sensor watch it through :meth:`list_files`.

        A classmethod: it depends on the object's config only, so definitions decide which jobs
        get a sensor without resolving a secret or reaching the source.
        """
        return False

    def list_files(self, obj: ObjectPlan) -> list[FileVersion]:
        """Every file ``obj`` would read now, whatever the committed cursor (a sensor's poll).

        Raises:
            NotImplementedError: the source does not read files.
        """
        raise NotImplementedError(f"{self.type} does not read files")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients held by this instance."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
