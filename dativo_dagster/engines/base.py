"""The Source every external engine shares: an :class:`EngineProtocol` adapter behind dativo's Source.

An engine (Singer, Airbyte, Meltano) is a protocol adapter; everything dativo-specific lives here once:

* :class:`EngineProtocol` (one per engine): ``spec()``, ``check()``, ``discover()`` and
  ``read(stream, selection=..., state=...)``, which runs the connector and yields its stdout normalised
  into :class:`Record`, :class:`Checkpoint`, :class:`StreamSchema` and :class:`LogLine` messages
  (errors the connector reports are given to the process, :meth:`ConnectorProcess.note_error`, and
  raised as coded errors when it exits). ``state_for`` turns a plain cursor value (``initial_value``,
  ``dativo reset --to``) into the connector's state.
* :class:`EngineSource` (a :class:`~dativo_dagster.sources.base.Source`): each dativo object selects
  one stream of the discovered catalog (``options.stream``, default the object's name; optionally
  ``options.fields``); its Arrow schema comes from the stream's JSON schema
  (:func:`dativo_dagster.engines.jsonschema.stream_arrow_schema`), or the object's contract;
  records become bounded Arrow batches (:class:`~dativo_dagster.engines.jsonschema.RecordBatcher`).

**State and checkpoints.** An object's cursor *is* the connector's state for its stream (a Singer
STATE value, an Airbyte stream state), committed in the Iceberg snapshot with the rows it covers and
passed back to the connector on the next run. Incremental objects are read with
:meth:`EngineSource.read_checkpointed`: the connector's state messages mark possible commit points,
and a commit is made at the first one after ``checkpoint_rows`` rows or ``checkpoint_seconds``
seconds (recipe settings, overridable per object), so a run killed at any instant resumes from the
last committed state. Full-refresh objects are read as one extraction that replaces the table in
one commit (no state is passed).

Connector states are opaque to dativo: :class:`EngineStateCodec` orders two states by the position a
protocol can read from them (a Singer bookmark's ``replication_key_value``) and otherwise trusts
the connector.
"""

from __future__ import annotations

import abc
import builtins
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import structlog
from pydantic import ConfigDict, Field

from dativo_dagster.config.models import Strategy, WriteMode
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.engines.jsonschema import RecordBatcher, stream_arrow_schema
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.base import ConnectionConfig, Extraction, ReadRequest, Source, SourceOptions, SourceStats
from dativo_dagster.sources.cursors import CursorCodec

if TYPE_CHECKING:
    from dativo_dagster.config.models import SourceRecipe

log = structlog.get_logger("dativo.engines")

DEFAULT_CHECKPOINT_ROWS = 100_000
DEFAULT_CHECKPOINT_SECONDS = 60.0
BATCH_ROWS = 10_000


# --------------------------------------------------------------------------- messages


class Record:
    """One record of ``stream`` (a Singer RECORD, an Airbyte RECORD)."""

    __slots__ = ("data", "stream")

    def __init__(self, stream: str, data: Mapping[str, Any]) -> None:
        self.stream = stream
        self.data = data


@dataclass(frozen=True)
class Checkpoint:
    """The connector's state after every record before it: a possible commit point."""

    state: Any


@dataclass(frozen=True)
class StreamSchema:
    """A stream's schema as the connector announces it while reading (Singer SCHEMA)."""

    stream: str
    schema: Mapping[str, Any]
    key_properties: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogLine:
    """A log message the connector sent on stdout (Airbyte LOG); already written to the run log."""

    level: str
    text: str


Message = Record | Checkpoint | StreamSchema | LogLine


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a connector's catalog.

    Attributes:
        name: The stream's name (Singer ``stream``/``tap_stream_id``, Airbyte ``name``).
        json_schema: Its JSON schema.
        key_properties: Primary key the connector declares.
        replication_keys: Cursor fields the connector suggests or requires.
        aliases: Other names the stream answers to (a Singer ``tap_stream_id``).
        entry: The catalog entry as the connector gave it (the protocol builds its read catalog from it).
    """

    name: str
    json_schema: Mapping[str, Any]
    key_properties: tuple[str, ...] = ()
    replication_keys: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    entry: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Selection:
    """What an object reads from its stream.

    Attributes:
        fields: Properties to read (None: all).
        incremental: Read from a state (else a full copy).
        cursor_field: The replication key (the object's cursor column as the connector names it).
        primary_key: The object's key.
    """

    fields: tuple[str, ...] | None
    incremental: bool
    cursor_field: str | None
    primary_key: tuple[str, ...] = ()


class EngineProtocol(abc.ABC):
    """How one kind of connector is run: the adapter each engine implements.

    Args:
        label: Names the connector in logs and errors.
        project_dir: The project (connector environments are cached under its state directory).
        config: The connector's resolved config (secrets included: only ever written to a private file).
        secrets: Values to scrub from whatever the connector says.
    """

    def __init__(self, *, label: str, project_dir: Path, config: Mapping[str, Any], secrets: frozenset[str]) -> None:
        self.label = label
        self.project_dir = project_dir
        self.config = dict(config)
        self.secrets = secrets

    def spec(self) -> Mapping[str, Any] | None:
        """The connector's config specification, when its protocol has one (Airbyte ``spec``)."""
        return None

    @abc.abstractmethod
    def check(self) -> None:
        """Run the connector's own connection check; raise a coded error when it fails."""

    @abc.abstractmethod
    def discover(self) -> list[StreamInfo]:
        """The connector's catalog."""

    @abc.abstractmethod
    def read(self, stream: StreamInfo, *, selection: Selection, state: Any | None) -> Iterator[Message]:
        """Run the connector for ``stream`` from ``state`` and yield its messages.

        The connector runs while the iterator is consumed; closing the iterator stops it. Once the
        messages are exhausted the connector has exited successfully, else a coded error is raised.
        """

    def state_for(self, stream: StreamInfo, selection: Selection, value: Any) -> Any:
        """The connector state that starts a read at a plain cursor ``value`` (``initial_value``, a reset)."""
        return value

    @classmethod
    def state_position(cls, state: Any) -> Any:
        """The cursor position a state records (for ordering and display), or None if unknown."""
        return None


# --------------------------------------------------------------------------- cursor codec


class EngineStateCodec(CursorCodec):
    """Connector states as cursor values: compared by the position the protocol reads from them.

    Args:
        protocol: The protocol class whose :meth:`EngineProtocol.state_position` reads a state.
        unit: The unit of a numeric epoch position.
    """

    def __init__(self, protocol: builtins.type[EngineProtocol], unit: str | None = None) -> None:
        super().__init__(unit=unit)
        self.protocol = protocol

    def _position(self, value: Any) -> Any:
        return self.protocol.state_position(value) if isinstance(value, (dict, list)) else value

    def later(self, a: Any, b: Any) -> Any:
        """The later of two values; a state always wins over a plain value (it is the newer record)."""
        if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
            return b if b is not None else a
        return super().later(a, b)

    def is_before(self, new: Any, previous: Any) -> bool:
        """True only when both positions are known, comparable, and ``new``'s lies before ``previous``'s."""
        left, right = self._position(new), self._position(previous)
        if left is None or right is None or isinstance(left, (dict, list)) or isinstance(right, (dict, list)):
            return False
        try:
            return bool(self.order_key(left) < self.order_key(right))
        except TypeError:
            return False

    def display(self, value: Any, field: str | None = None) -> str:
        """``field=<position>``, or the state's JSON (shortened)."""
        position = self._position(value)
        if position is not None and not isinstance(position, (dict, list)):
            return super().display(position, field)
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
        return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------- the Source


class EngineConnection(ConnectionConfig):
    """The connector's config: any keys (recipe ``config`` merged with the job's ``connection``)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class EngineOptions(SourceOptions):
    """Per-object options of an engine source."""

    stream: str | None = Field(default=None, description="the connector's stream (default: the object's name)")
    fields: list[str] | None = Field(default=None, min_length=1, description="properties to read (default: all)")
    checkpoint_rows: int | None = Field(
        default=None, ge=1, description="commit at the first state after this many rows"
    )
    checkpoint_seconds: float | None = Field(default=None, gt=0, description="... or after this many seconds")


class EngineSource(Source):
    """A Source running an external connector through an :class:`EngineProtocol`.

    Subclasses set ``type``, ``protocol_class`` and build their protocol in :meth:`make_protocol`.
    """

    connection_model: ClassVar[builtins.type[ConnectionConfig]] = EngineConnection
    options_model: ClassVar[builtins.type[SourceOptions]] = EngineOptions
    # Connector replication is inclusive of the bookmark (Singer re-sends the row at the state's
    # replication_key_value): incremental objects merge on their key, so a re-sent row replaces itself.
    supported_strategies: ClassVar[frozenset[Strategy]] = frozenset(
        {Strategy.FULL_REFRESH, Strategy.UPDATED, Strategy.CREATED}
    )
    protocol_class: ClassVar[builtins.type[EngineProtocol]]

    def __init__(
        self,
        connection: ConnectionConfig,
        credentials: dict[str, str],
        *,
        project_dir: Path,
        data_roots: tuple[Path, ...] = (),
        recipe: SourceRecipe | None = None,
        label: str = "connector",
    ) -> None:
        super().__init__(connection, credentials, project_dir=project_dir, data_roots=data_roots)
        if recipe is None:
            raise ConfigError(f"{label}: an engine source needs its recipe")
        self.recipe = recipe
        self.label = label
        extra = dict(connection.model_extra or {})
        self.config: dict[str, Any] = {**extra, **credentials}
        from dativo_dagster.config.secrets import is_sensitive_key, registered_secrets, secret_parts

        secrets = set(credentials.values())
        for key, value in self.config.items():
            secrets.update(secret_parts(value, sensitive=is_sensitive_key(key)))
        self.secrets = frozenset(s for s in secrets if s) | registered_secrets()
        self._protocol: EngineProtocol | None = None
        self._catalog: list[StreamInfo] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_plan(
        cls, connection: ConnectionConfig, credentials: dict[str, str], job: JobPlan, *, runtime: Any = None
    ) -> Source:
        """An instance for one run of ``job`` (the recipe names the connector)."""
        return cls(
            connection,
            credentials,
            project_dir=job.project_dir,
            data_roots=job.data_roots,
            recipe=job.source,
            label=f"{job.label} ({job.source.name})",
        )

    # ------------------------------------------------------------------ protocol

    def make_protocol(self) -> EngineProtocol:
        """Install the connector of the recipe's ``pip_url`` (once per package and version) and point
        the engine's protocol at its executable (an engine that runs otherwise, Meltano, overrides this)."""
        from dativo_dagster.engines.venvs import connector_venv, executable, package_name

        pip_url = self.recipe.pip_url or ""
        venv = connector_venv(self.project_dir, pip_url, label=self.label)
        command = executable(venv, self.recipe.executable or self.default_executable(package_name(pip_url)))
        protocol: Any = self.protocol_class
        built: EngineProtocol = protocol(
            command=[str(command)],
            path_prefix=(venv / "bin",),
            label=self.label,
            project_dir=self.project_dir,
            config=self.config,
            secrets=self.secrets,
        )
        return built

    @classmethod
    def default_executable(cls, package: str) -> str:
        """The command a connector package installs when the recipe names none: the package's name."""
        return package

    @property
    def protocol(self) -> EngineProtocol:
        """The protocol adapter (built once per instance)."""
        with self._lock:
            if self._protocol is None:
                self._protocol = self.make_protocol()
            return self._protocol

    def catalog(self) -> list[StreamInfo]:
        """The connector's discovered streams (discovered once per instance)."""
        protocol = self.protocol
        with self._lock:
            if self._catalog is None:
                self._catalog = protocol.discover()
            return self._catalog

    def stream_of(self, obj: ObjectPlan) -> StreamInfo:
        """The stream ``obj`` reads.

        Raises:
            ConfigError: CFG001 when the catalog has no such stream (the message lists the streams).
        """
        options = EngineOptions.model_validate(obj.options)
        wanted = options.stream or obj.name
        streams = self.catalog()
        found = [s for s in streams if wanted == s.name] or [s for s in streams if wanted in s.aliases]
        if len(found) != 1:
            names = ", ".join(sorted(s.name for s in streams)[:50]) + (", ..." if len(streams) > 50 else "")
            what = "no stream" if not found else f"{len(found)} streams"
            raise ConfigError(
                f"{obj.label}: the connector has {what} named {wanted!r} (streams: {names or 'none'})",
                hint="set the object's options.stream to one of them",
            )
        return found[0]

    def selection(self, obj: ObjectPlan, stream: StreamInfo) -> Selection:
        """What ``obj`` reads from ``stream``."""
        options = EngineOptions.model_validate(obj.options)
        cursor = _source_column(obj, obj.cursor_field) if obj.cursor_field else None
        fields = None
        if options.fields is not None:
            must = [*(_source_column(obj, k) for k in obj.primary_key), *([cursor] if cursor else [])]
            fields = tuple(dict.fromkeys([*options.fields, *must]))
        return Selection(
            fields=fields,
            incremental=obj.strategy is not Strategy.FULL_REFRESH,
            cursor_field=cursor,
            primary_key=tuple(_source_column(obj, k) for k in obj.primary_key) or stream.key_properties,
        )

    # ------------------------------------------------------------------ Source

    def check_connection(self) -> None:
        """The connector's own check (Singer: discovery; Airbyte: ``check``)."""
        self.protocol.check()

    def list_objects(self) -> list[str]:
        """The streams of the connector's catalog."""
        return [s.name for s in self.catalog()]

    def check_object(self, obj: ObjectPlan) -> None:
        """CFG001 unless the catalog has the object's stream (and its selected fields)."""
        self.discover_schema(obj)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The stream's JSON schema as Arrow (the contract's schema when the object has one)."""
        stream = self.stream_of(obj)
        selection = self.selection(obj, stream)
        schema: pa.Schema = stream_arrow_schema(
            dict(stream.json_schema), contract=obj.contract, key_properties=stream.key_properties
        )
        if selection.fields is not None and obj.contract is None:
            missing = [f for f in selection.fields if f not in schema.names]
            if missing:
                raise ConfigError(
                    f"{obj.label}: options.fields: stream {stream.name!r} has no field(s) {', '.join(missing)}",
                    hint=f"its fields: {', '.join(schema.names)}",
                )
            schema = pa.schema([schema.field(f) for f in selection.fields], metadata=schema.metadata)
        if selection.cursor_field and selection.cursor_field not in schema.names:
            raise ConfigError(
                f"{obj.label}: incremental.cursor_field: stream {stream.name!r} has no field {selection.cursor_field!r}"
            )
        return schema

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
        """Connector states, ordered by the position the protocol reads from them."""
        return EngineStateCodec(cls.protocol_class, unit=obj.config.incremental.cursor_unit)

    def read(self, request: ReadRequest) -> Extraction:
        """The whole read as one extraction (full refresh, dry runs)."""
        run = self._start(request)
        return run.extraction(request, whole=True)

    def read_checkpointed(self, request: ReadRequest) -> Iterator[Extraction] | None:
        """Incremental reads: one extraction per checkpoint (see the module's docstring)."""
        if request.obj.strategy is Strategy.FULL_REFRESH:
            return None
        return self._checkpoints(request)

    def _checkpoints(self, request: ReadRequest) -> Iterator[Extraction]:
        run = self._start(request)
        try:
            cursor = request.cursor
            while True:
                part = run.extraction(ReadRequest(obj=request.obj, cursor=cursor, limit=request.limit), whole=False)
                yield part
                if run.done:
                    return
                cursor = part.new_cursor()
        finally:
            run.close()

    def _start(self, request: ReadRequest) -> _EngineRun:
        obj = request.obj
        if obj.strategy is not Strategy.FULL_REFRESH and obj.write_mode is not WriteMode.MERGE:
            # A connector re-sends the rows at its state's position (a Singer bookmark is inclusive,
            # and the records after a stream's last state are sent again by the next run): only a
            # merge on the key turns those into the same rows instead of duplicates.
            raise ConfigError(
                f"{obj.label}: an incremental object of an external engine must merge on its primary key "
                f"(write_mode {obj.write_mode.value} would load the rows a connector sends again twice)",
                hint="remove write_mode (updated and created merge by default) and give the object a primary_key",
            )
        options = EngineOptions.model_validate(obj.options)
        stream = self.stream_of(obj)
        selection = self.selection(obj, stream)
        schema = self.discover_schema(obj)
        state: Any = None
        if selection.incremental and request.cursor is not None and request.cursor.value is not None:
            value = request.cursor.value
            state = value if isinstance(value, (dict, list)) else self.protocol.state_for(stream, selection, value)
        messages = self.protocol.read(stream, selection=selection, state=state)
        rows = options.checkpoint_rows or self.recipe.checkpoint_rows
        seconds = options.checkpoint_seconds or self.recipe.checkpoint_seconds
        run = _EngineRun(self, stream, schema, messages, state, rows=rows, seconds=seconds)
        run.midnight_dates = _midnight_date_fields(stream, schema)
        return run


class _EngineRun:
    """One connector run for one object, cut into extractions at checkpoints."""

    def __init__(
        self,
        source: EngineSource,
        stream: StreamInfo,
        schema: pa.Schema,
        messages: Iterator[Message],
        state: Any,
        *,
        rows: int,
        seconds: float,
    ) -> None:
        self.source = source
        self.stream = stream
        self.schema = schema
        self.messages = messages
        self.state = state
        self.rows = rows
        self.seconds = seconds
        self.done = False
        self.stats = SourceStats()
        self.names = {stream.name, *stream.aliases}
        self.other_streams = 0
        self.midnight_dates: tuple[str, ...] = ()

    def extraction(self, request: ReadRequest, *, whole: bool) -> Extraction:
        obj = request.obj
        batches = self._batches(whole=whole)
        override = None
        if obj.strategy is not Strategy.FULL_REFRESH:
            previous = request.cursor.value if request.cursor is not None else None

            def override() -> Any:
                return self.state if self.state is not None else previous

        return Extraction(
            self.schema,
            batches,
            request,
            SourceStats() if not whole else self.stats,
            cursor_override=override,
            on_close=self.close if whole else None,
            codec=self.source.cursor_codec(obj),
        )

    def _batches(self, *, whole: bool) -> Iterator[pa.RecordBatch]:
        batcher = RecordBatcher(self.schema, max_rows=BATCH_ROWS)
        add = batcher.add
        names = self.names
        dates = self.midnight_dates
        rows = 0
        started = time.monotonic()
        limit_rows, limit_s = self.rows, self.seconds
        for message in self.messages:
            if message.__class__ is Record:
                if message.stream not in names:
                    self.other_streams += 1
                    continue
                rows += 1
                data = message.data
                if dates:
                    data = _dates_from_midnights(data, dates)
                batch = add(data)
                if batch is not None:
                    yield batch
            elif message.__class__ is Checkpoint:
                self.state = message.state
                if not whole and (rows >= limit_rows or time.monotonic() - started >= limit_s):
                    tail = batcher.flush()
                    if tail is not None:
                        yield tail
                    log.info("connector_checkpoint", connector=self.source.label, rows=rows)
                    return
        self.done = True
        tail = batcher.flush()
        if tail is not None:
            yield tail
        if self.other_streams:
            log.warning("connector_other_streams", connector=self.source.label, records=self.other_streams)

    def close(self) -> None:
        close = getattr(self.messages, "close", None)
        if close is not None:
            close()


def _midnight_date_fields(stream: StreamInfo, schema: pa.Schema) -> tuple[str, ...]:
    """Fields the stream sends as date-times but the table holds as dates (a contract's ``date`` column).

    Singer taps send SQL ``DATE`` values as ``date-time`` strings at midnight UTC (tap-mysql:
    ``2024-01-02T00:00:00.000000Z``); such a value is that date exactly, anything else is not a date.
    """
    properties = stream.json_schema.get("properties") or {}
    found = []
    for column in schema:
        node = properties.get(column.name)
        if pa.types.is_date(column.type) and isinstance(node, Mapping) and node.get("format") == "date-time":
            found.append(column.name)
    return tuple(found)


_MIDNIGHT = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ]00:00:00(\.0+)?(Z|[+-]00:?00)?$")


def _dates_from_midnights(data: Mapping[str, Any], fields: tuple[str, ...]) -> Mapping[str, Any]:
    """``data`` with midnight date-times of ``fields`` shortened to their date (others left to be refused)."""
    changed: dict[str, Any] | None = None
    for name in fields:
        value = data.get(name)
        if isinstance(value, str):
            match = _MIDNIGHT.match(value)
            if match:
                if changed is None:
                    changed = dict(data)
                changed[name] = match.group(1)
    return data if changed is None else changed


def _source_column(obj: ObjectPlan, name: str) -> str:
    """A table column as the connector names it (a contract's ``source_name``)."""
    if obj.contract is None:
        return name
    try:
        column = obj.contract.column(name)
    except KeyError:
        return name
    return column.source_name or name


def first_words(value: Any, limit: int = 300) -> str:
    """A short text of a connector's message for errors."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


def selected_properties(schema: Mapping[str, Any], fields: Sequence[str] | None) -> list[str]:
    """Every property of a stream's schema, or the selected ones."""
    names = list((schema.get("properties") or {}).keys())
    return names if fields is None else [n for n in names if n in fields]
