"""``engine: singer``: a Singer tap (any tap on PyPI or a git URL) as a dativo source.

Recipe::

    name: mysql_singer
    engine: singer
    pip_url: tap-mysql==1.17.7          # installed into its own cached virtualenv
    executable: tap-mysql               # default: the package's name
    config:                             # the tap's config; job `connection` keys override
      host: 127.0.0.1
      port: 3306
      user: root
      password: "${MYSQL_PASSWORD:-}"   # resolved at run time, written only to a 0600 temp file
    checkpoint_rows: 100000             # commit at the first STATE after this many rows ...
    checkpoint_seconds: 60              # ... or seconds

Objects name the tap's stream (``options.stream``: its ``tap_stream_id`` or ``stream``; default the
object's name) and optionally ``options.fields``. ``incremental.strategy: full_refresh`` selects
``FULL_TABLE`` replication; ``updated``/``created`` with ``cursor_field`` select ``INCREMENTAL`` with
that ``replication-key`` (merged on the primary key: Singer taps re-send the row at the bookmark).

**One tap run per object.** A Singer tap's STATE covers every stream it syncs, but each dativo
object is its own table with its own cursor committed in its own snapshots. So the tap runs once
per object with only that object's stream selected, and the object's cursor *is* the tap's state
(``{"bookmarks": {"<tap_stream_id>": {...}}}``), passed back with ``--state`` on the next run. STATE
messages are the commit points (see :mod:`dativo_dagster.engines.base`).

Connection check (``dativo test-connection``, ``validate --connections``): ``--discover``.
"""

from __future__ import annotations

import builtins
import copy
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import structlog

from dativo_dagster.engines.base import (
    Checkpoint,
    EngineProtocol,
    EngineSource,
    Message,
    Record,
    Selection,
    StreamInfo,
    StreamSchema,
)
from dativo_dagster.engines.process import ConnectorProcess
from dativo_dagster.errors import ConfigError, PaginationError

log = structlog.get_logger("dativo.engines.singer")


class SingerProtocol(EngineProtocol):
    """The Singer spec: ``--discover`` prints a catalog; a sync prints SCHEMA/RECORD/STATE lines.

    Args:
        command: The tap's command (its executable, or ``meltano invoke <extractor>``).
        env: Environment for the tap.
        cwd: Working directory (a Meltano project).
        pass_config: Pass ``--config`` (a Meltano-managed tap gets its config from Meltano).
        catalog_flag: ``--catalog`` (current taps) or ``--properties`` (older ones).
        catalog_env: Pass the catalog's path in this environment variable instead of a flag
            (Meltano's ``<EXTRACTOR>__CATALOG`` extra).
    """

    def __init__(
        self,
        *,
        command: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Any = None,
        pass_config: bool = True,
        catalog_flag: str = "--catalog",
        path_prefix: tuple[Any, ...] = (),
        catalog_env: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.env = dict(env or {})
        self.cwd = cwd
        self.pass_config = pass_config
        self.catalog_flag = catalog_flag
        self.path_prefix = path_prefix
        self.catalog_env = catalog_env

    def _process(
        self, args: list[str], files: dict[str, Any], what: str, env: dict[str, str] | None = None
    ) -> ConnectorProcess:
        if self.pass_config:
            args = ["--config", "{config}", *args]
            files = {"config": self.config, **files}
        return ConnectorProcess(
            [*self.command, *args],
            label=f"{self.label} {what}",
            files=files,
            secrets=self.secrets,
            env={**self.env, **(env or {})},
            cwd=self.cwd,
            path_prefix=self.path_prefix,
        )

    def check(self) -> None:
        """Discovery is a Singer tap's connection check: it connects and lists what it can read."""
        self.discover()

    def discover(self) -> list[StreamInfo]:
        """Run ``--discover`` and parse the catalog.

        Raises:
            PaginationError: PAGE001 when the output is not a Singer catalog.
        """
        with self._process(["--discover"], {}, "discover") as proc:
            document = proc.document()
            proc.finish()
        streams = document.get("streams") if isinstance(document, dict) else None
        if not isinstance(streams, list):
            raise PaginationError(f"{self.label}: --discover printed no catalog (no 'streams' list)")
        found = []
        for entry in streams:
            if not isinstance(entry, dict) or not isinstance(entry.get("schema"), dict):
                raise PaginationError(f"{self.label}: --discover printed a catalog entry without a schema")
            stream_id = str(entry.get("tap_stream_id") or entry.get("stream") or "")
            name = str(entry.get("stream") or stream_id)
            root = _root_metadata(entry)
            keys = entry.get("key_properties") or root.get("table-key-properties") or []
            replication = root.get("valid-replication-keys") or []
            found.append(
                StreamInfo(
                    name=stream_id,
                    json_schema=entry["schema"],
                    key_properties=tuple(str(k) for k in keys),
                    replication_keys=tuple(str(k) for k in replication),
                    aliases=tuple(dict.fromkeys(a for a in (name, entry.get("table_name")) if a and a != stream_id)),
                    entry=entry,
                )
            )
        return found

    def read_catalog(self, stream: StreamInfo, selection: Selection) -> dict[str, Any]:
        """The catalog a sync is given: only ``stream``, selected, with its replication method."""
        entry = copy.deepcopy(dict(stream.entry))
        properties = (entry.get("schema") or {}).get("properties") or {}
        if selection.cursor_field is not None and selection.cursor_field not in properties:
            raise ConfigError(
                f"{self.label}: stream {stream.name!r} has no property {selection.cursor_field!r} "
                "for incremental.cursor_field"
            )
        metadata: list[dict[str, Any]] = [m for m in entry.get("metadata") or [] if isinstance(m, dict)]
        by_crumb = {tuple(m.get("breadcrumb") or ()): m for m in metadata}
        root = by_crumb.setdefault((), {"breadcrumb": [], "metadata": {}})
        settings = root.setdefault("metadata", {})
        settings["selected"] = True
        if selection.incremental:
            settings["replication-method"] = "INCREMENTAL"
            settings["replication-key"] = selection.cursor_field
        else:
            settings["replication-method"] = "FULL_TABLE"
            settings.pop("replication-key", None)
        wanted = set(selection.fields) if selection.fields is not None else None
        for name in properties:
            crumb = ("properties", name)
            item = by_crumb.setdefault(crumb, {"breadcrumb": list(crumb), "metadata": {}})
            meta = item.setdefault("metadata", {})
            meta["selected"] = wanted is None or name in wanted or meta.get("inclusion") == "automatic"
        entry["metadata"] = list(by_crumb.values())
        entry.setdefault("schema", {})["selected"] = True  # taps that read the legacy schema flag
        return {"streams": [entry]}

    def read(self, stream: StreamInfo, *, selection: Selection, state: Any | None) -> Iterator[Message]:
        """Sync ``stream`` from ``state``: RECORD → :class:`Record`, STATE → :class:`Checkpoint`.

        Raises:
            PaginationError: PAGE001 for a line that is not a Singer message.
        """
        files: dict[str, Any] = {"catalog": self.read_catalog(stream, selection)}
        args = [] if self.catalog_env else [self.catalog_flag, "{catalog}"]
        env = {self.catalog_env: "{catalog}"} if self.catalog_env else {}
        if state is not None:
            files["state"] = state
            args += ["--state", "{state}"]
        with self._process(args, files, "sync", env) as proc:
            for message in proc.messages():
                kind = message.get("type")
                if kind == "RECORD":
                    record = message.get("record")
                    name = message.get("stream")
                    if not isinstance(record, dict) or not isinstance(name, str):
                        raise PaginationError(f"{proc.label}: a RECORD message without a stream or a record object")
                    yield Record(name, record)
                elif kind == "STATE":
                    if "value" not in message:
                        raise PaginationError(f"{proc.label}: a STATE message without a value")
                    yield Checkpoint(_own_state(message["value"]))
                elif kind == "SCHEMA":
                    yield StreamSchema(
                        str(message.get("stream")),
                        message.get("schema") or {},
                        tuple(message.get("key_properties") or ()),
                    )
                elif kind is None:
                    raise PaginationError(f"{proc.label}: a message without a type on stdout")
                # ACTIVATE_VERSION, BATCH and newer message types carry nothing dativo needs.
            proc.finish()

    def state_for(self, stream: StreamInfo, selection: Selection, value: Any) -> Any:
        """A Singer state whose bookmark starts the stream at ``value`` (``initial_value``, a reset)."""
        return {"bookmarks": {stream.name: {"replication_key": selection.cursor_field, "replication_key_value": value}}}

    @classmethod
    def state_position(cls, state: Any) -> Any:
        """The bookmark's ``replication_key_value`` (the state holds one stream: one tap run per object)."""
        bookmarks = state.get("bookmarks") if isinstance(state, dict) else None
        if not isinstance(bookmarks, dict) or len(bookmarks) != 1:
            return None
        (bookmark,) = bookmarks.values()
        return bookmark.get("replication_key_value") if isinstance(bookmark, dict) else None


def _own_state(value: Any) -> Any:
    """The state kept as the cursor: ``currently_syncing`` says nothing once committed."""
    if isinstance(value, dict) and "currently_syncing" in value:
        value = {k: v for k, v in value.items() if k != "currently_syncing"}
    return value


def _root_metadata(entry: Mapping[str, Any]) -> dict[str, Any]:
    for item in entry.get("metadata") or []:
        if isinstance(item, dict) and not item.get("breadcrumb"):
            meta = item.get("metadata")
            return dict(meta) if isinstance(meta, dict) else {}
    return {}


class SingerSource(EngineSource):
    """A Singer tap installed from the recipe's ``pip_url`` into its own virtualenv."""

    type = "singer"
    protocol_class: ClassVar[builtins.type[EngineProtocol]] = SingerProtocol
