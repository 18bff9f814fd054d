"""``engine: airbyte``: an Airbyte Python source (``airbyte-source-*`` on PyPI) as a dativo source.

Recipe::

    name: faker
    engine: airbyte
    pip_url: airbyte-source-faker==7.2.1   # installed into its own cached virtualenv
    executable: source-faker               # default: the package name without "airbyte-"
    config:                                # the source's config (its `spec`); job `connection` keys override
      count: 1000
      api_key: "${FAKER_KEY}"              # resolved at run time, written only to a 0600 temp file

Objects name the source's stream (``options.stream``, default the object's name) and optionally
``options.fields``. ``incremental.strategy: full_refresh`` reads the stream with
``sync_mode: full_refresh`` (the table is replaced in one commit); ``updated``/``created`` read it
with ``sync_mode: incremental`` and ``cursor_field`` (a source that defines its own cursor must be
given that one).

The source runs as its executable: ``spec``, ``check --config``, ``discover --config`` and
``read --config --catalog [--state]``, one process per object with a configured catalog holding
only the object's stream.

**State.** The object's cursor is the source's state for its stream, kept as the Airbyte state
message the source sent (``{"type": "STREAM", "stream": {"stream_descriptor": ..., "stream_state":
...}}``; a ``GLOBAL`` or ``LEGACY`` state as sent), committed in the Iceberg snapshot with the rows it
covers and passed back on the next run as the ``--state`` file (a list of state messages; a legacy
state as its ``data``). Each state message of the stream is a possible commit point
(:mod:`dativo_dagster.engines.base`), so a killed run resumes from the last committed state.

**Errors.** A ``TRACE`` error decides the code: ``config_error`` → CFG001, ``transient_error`` →
EXT001 (retried), ``system_error`` and anything else → EXT001 (not retried); a message about
credentials (401, "invalid API key", ...) → AUTH001 whatever its failure type. A ``check`` that
answers ``FAILED`` is AUTH001 or CFG001 by its message. Without a trace, the process's exit code and
stderr decide (:class:`~dativo_dagster.engines.process.ConnectorProcess`). ``LOG`` messages go to
the run log, redacted.
"""

from __future__ import annotations

import builtins
import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import structlog

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.engines.base import (
    Checkpoint,
    EngineProtocol,
    EngineSource,
    Message,
    Record,
    Selection,
    StreamInfo,
)
from dativo_dagster.engines.process import _AUTH_WORDS, _CONFIG_WORDS, ConnectorProcess
from dativo_dagster.errors import (
    AuthError,
    ConfigError,
    DativoError,
    ExtractError,
    PaginationError,
    PermanentExtractError,
)

log = structlog.get_logger("dativo.engines.airbyte")

__all__ = [
    "AirbyteProtocol",
    "AirbyteSource",
    "TraceError",
    "classify_trace",
    "configured_catalog",
    "default_executable",
    "parse_catalog",
    "state_file",
    "stream_state_of",
]

_LOG_LEVELS = {"FATAL": "error", "ERROR": "error", "WARN": "warning", "WARNING": "warning"}


class TraceError:
    """An error the source reported in a ``TRACE`` message (already redacted).

    Attributes:
        message: The user-facing message.
        internal_message: The source's internal message (often an exception's text).
        failure_type: ``config_error``, ``system_error`` or ``transient_error`` (None when absent).
    """

    __slots__ = ("failure_type", "internal_message", "message")

    def __init__(self, message: str, internal_message: str, failure_type: str | None) -> None:
        self.message = message
        self.internal_message = internal_message
        self.failure_type = failure_type

    @classmethod
    def from_trace(cls, trace: Mapping[str, Any], secrets: frozenset[str]) -> TraceError:
        """From a ``TRACE`` message's ``trace`` object of type ``ERROR``."""
        error = trace.get("error")
        error = error if isinstance(error, Mapping) else {}
        failure = error.get("failure_type")
        return cls(
            redact_text(str(error.get("message") or ""), secrets)[:500],
            redact_text(str(error.get("internal_message") or ""), secrets)[:500],
            str(failure) if failure else None,
        )

    @property
    def text(self) -> str:
        """What to show: the message, and the internal message when it says more."""
        if self.internal_message and self.internal_message not in self.message:
            return f"{self.message} ({self.internal_message})" if self.message else self.internal_message
        return self.message or "no error message"


_NETWORK_WORDS = re.compile(
    r"timed? ?out|timeout|connection (refused|reset|aborted)|name or service not known|"
    r"temporary failure in name resolution|could not resolve|unreachable|no route to host",
    re.I,
)
"""A check that failed because the source could not be reached: EXT001, not a configuration problem."""


def classify_trace(error: TraceError, label: str) -> DativoError:
    """The coded error for a ``TRACE`` error (see the module docstring)."""
    message = f"{label}: the connector reported an error: {error.text}"
    evidence = f"{error.message}\n{error.internal_message}"
    if error.failure_type == "transient_error":
        # The connector says a retry may help (a rate limit, an outage): whatever words its message
        # holds ("token", "unauthorized" in a proxy's page), it is not a refused credential.
        return ExtractError(message, hint="a transient failure at the source; the run is retried")
    if _AUTH_WORDS.search(evidence):
        return AuthError(message, hint="check the connector's credentials")
    if error.failure_type == "config_error":
        return ConfigError(message, hint="check the recipe's config and the job's connection settings")
    if error.failure_type == "transient_error":
        return ExtractError(message, hint="a transient failure at the source; the run is retried")
    return PermanentExtractError(message, hint="see the run log for the connector's messages")


def default_executable(package: str) -> str:
    """The command an Airbyte package installs: ``airbyte-source-faker`` → ``source-faker``."""
    return package[len("airbyte-") :] if package.startswith("airbyte-source-") else package


# --------------------------------------------------------------------------- catalog


def _key_paths(value: Any) -> tuple[str, ...]:
    """Top-level fields of an Airbyte key (``[["id"]]``); a nested path (``[["a", "b"]]``) is skipped."""
    if not isinstance(value, list):
        return ()
    found = []
    for path in value:
        if isinstance(path, list) and len(path) == 1 and isinstance(path[0], str):
            found.append(path[0])
        elif isinstance(path, str):
            found.append(path)
    return tuple(found)


def parse_catalog(document: Mapping[str, Any], label: str) -> list[StreamInfo]:
    """The streams of an Airbyte ``CATALOG`` message's ``catalog`` object.

    Raises:
        PaginationError: PAGE001 when it is not an Airbyte catalog.
    """
    streams = document.get("streams")
    if not isinstance(streams, list):
        raise PaginationError(f"{label}: discover sent a catalog without a 'streams' list")
    found = []
    for entry in streams:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PaginationError(f"{label}: discover sent a catalog stream without a name")
        schema = entry.get("json_schema")
        if not isinstance(schema, dict):
            raise PaginationError(f"{label}: discover sent stream {entry['name']!r} without a json_schema")
        namespace = entry.get("namespace")
        cursor = entry.get("default_cursor_field")
        found.append(
            StreamInfo(
                name=entry["name"],
                json_schema=schema,
                key_properties=_key_paths(entry.get("source_defined_primary_key")),
                replication_keys=(cursor[0],) if isinstance(cursor, list) and len(cursor) == 1 else (),
                aliases=(f"{namespace}.{entry['name']}",) if isinstance(namespace, str) and namespace else (),
                entry=entry,
            )
        )
    return found


def configured_catalog(stream: StreamInfo, selection: Selection, label: str) -> dict[str, Any]:
    """The configured catalog a read is given: only ``stream``, in the sync mode the object asks for.

    Raises:
        ConfigError: CFG001 for an incremental object on a stream that only supports full refresh,
            or a cursor field other than the one the source defines.
    """
    entry = copy.deepcopy(dict(stream.entry))
    modes = entry.get("supported_sync_modes") or ["full_refresh"]
    properties = (entry.get("json_schema") or {}).get("properties") or {}
    configured: dict[str, Any] = {"stream": entry}
    if selection.incremental:
        if "incremental" not in modes:
            raise ConfigError(
                f"{label}: stream {stream.name!r} supports only {', '.join(modes)}; "
                "the object asks for an incremental read",
                hint="set incremental.strategy: full_refresh for this object",
            )
        default = entry.get("default_cursor_field") or []
        cursor = [selection.cursor_field] if selection.cursor_field else list(default)
        if entry.get("source_defined_cursor") and default and cursor != list(default):
            raise ConfigError(
                f"{label}: stream {stream.name!r} defines its own cursor {'.'.join(default)!r}; "
                f"incremental.cursor_field is {selection.cursor_field!r}",
                hint=f"set incremental.cursor_field: {'.'.join(default)}",
            )
        if not cursor:
            raise ConfigError(f"{label}: stream {stream.name!r} has no cursor; set incremental.cursor_field")
        if len(cursor) == 1 and properties and cursor[0] not in properties:
            raise ConfigError(
                f"{label}: stream {stream.name!r} has no field {cursor[0]!r} for incremental.cursor_field"
            )
        configured["sync_mode"] = "incremental"
        configured["cursor_field"] = cursor
        configured["destination_sync_mode"] = "append_dedup" if selection.primary_key else "append"
    else:
        configured["sync_mode"] = "full_refresh"
        configured["destination_sync_mode"] = "overwrite"
    if selection.primary_key:
        configured["primary_key"] = [[k] for k in selection.primary_key]
    if selection.fields is not None and properties:
        # Sources that support field selection read only these; the others' extra fields are ignored.
        wanted = set(selection.fields)
        entry["json_schema"] = {
            **entry["json_schema"],
            "properties": {k: v for k, v in properties.items() if k in wanted},
        }
    return {"streams": [configured]}


# --------------------------------------------------------------------------- state


def stream_state_of(state: Mapping[str, Any], stream: StreamInfo) -> dict[str, Any] | None:
    """The state kept as ``stream``'s cursor from a ``STATE`` message's ``state`` (None: another stream's).

    Statistics (``sourceStats``, ``destinationStats``) are dropped: they describe one run, not a position.
    """
    kind = state.get("type")
    if kind == "STREAM":
        per_stream = state.get("stream")
        if not isinstance(per_stream, Mapping):
            return None
        descriptor = per_stream.get("stream_descriptor")
        name = descriptor.get("name") if isinstance(descriptor, Mapping) else None
        namespace = descriptor.get("namespace") if isinstance(descriptor, Mapping) else None
        qualified = f"{namespace}.{name}" if namespace else name
        if name != stream.name and qualified not in stream.aliases:
            return None
        return {"type": "STREAM", "stream": dict(per_stream)}
    if kind == "GLOBAL":
        return {"type": "GLOBAL", "global": state.get("global")}
    if kind in (None, "LEGACY") and "data" in state:
        return {"type": "LEGACY", "data": state.get("data")}
    return None


def state_file(state: Any) -> Any:
    """The ``--state`` document for a cursor: a list of state messages, or a legacy state's data."""
    if isinstance(state, list):
        return state
    if isinstance(state, Mapping):
        if state.get("type") == "LEGACY":
            return state.get("data")
        if state.get("type") in ("STREAM", "GLOBAL"):
            return [dict(state)]
    return state


# --------------------------------------------------------------------------- the protocol


class AirbyteProtocol(EngineProtocol):
    """The Airbyte protocol over a source's executable.

    Args:
        command: The source's command.
        env: Environment for the source.
        path_prefix: Directories put first on its ``PATH`` (its virtualenv's ``bin``).
    """

    def __init__(
        self,
        *,
        command: list[str],
        env: Mapping[str, str] | None = None,
        path_prefix: tuple[Path, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.env = dict(env or {})
        self.path_prefix = path_prefix

    def _process(self, args: list[str], files: dict[str, Any], what: str, *, config: bool = True) -> ConnectorProcess:
        if config:
            args = [args[0], "--config", "{config}", *args[1:]]
            files = {"config": self.config, **files}
        return ConnectorProcess(
            [*self.command, *args],
            label=f"{self.label} {what}",
            files=files,
            secrets=self.secrets,
            env=self.env,
            path_prefix=self.path_prefix,
        )

    def _messages(self, proc: ConnectorProcess, errors: list[TraceError]) -> Iterator[dict[str, Any]]:
        """The source's messages; LOG and TRACE messages are handled here (logged, errors noted)."""
        for message in proc.messages():
            kind = message.get("type")
            if kind == "LOG":
                self._log(proc, message.get("log"))
            elif kind == "TRACE":
                trace = message.get("trace")
                if isinstance(trace, Mapping) and trace.get("type") == "ERROR":
                    error = TraceError.from_trace(trace, self.secrets)
                    errors.append(error)
                    proc.note_error(error.text)
                    log.error(
                        "connector_error", connector=proc.label, failure_type=error.failure_type, error=error.text
                    )
            elif kind == "CONTROL":
                # A source may ask for its config to be replaced (a refreshed OAuth token): dativo's
                # config comes from the recipe and the job's secrets, which it never rewrites.
                log.warning(
                    "connector_config_update_ignored",
                    connector=proc.label,
                    hint="update the secret the recipe's config references",
                )
            elif kind is None:
                raise PaginationError(f"{proc.label}: a message without a type on stdout")
            else:
                yield message

    def _log(self, proc: ConnectorProcess, entry: Any) -> None:
        if not isinstance(entry, Mapping):
            return
        level = str(entry.get("level") or "INFO").upper()
        text = redact_text(str(entry.get("message") or ""), self.secrets)[:2000]
        emit = getattr(log, _LOG_LEVELS.get(level, "info"))  # looked up per call: logging may be reconfigured
        emit("connector_log", connector=proc.label, source_level=level, line=text)
        if level == "FATAL":
            proc.note_error(text)

    def _finish(self, proc: ConnectorProcess, errors: list[TraceError]) -> None:
        """Wait for the source; a TRACE error it sent decides the code, else its exit and stderr do."""
        try:
            proc.finish()
        except DativoError:
            if errors:
                raise classify_trace(errors[-1], self.label) from None
            raise
        if errors:
            raise classify_trace(errors[-1], self.label)

    def spec(self) -> Mapping[str, Any] | None:
        """The source's ``connectionSpecification`` (what its config may hold)."""
        errors: list[TraceError] = []
        found: Mapping[str, Any] | None = None
        with self._process(["spec"], {}, "spec", config=False) as proc:
            for message in self._messages(proc, errors):
                spec = message.get("spec") if message.get("type") == "SPEC" else None
                if isinstance(spec, Mapping):
                    specification = spec.get("connectionSpecification")
                    found = specification if isinstance(specification, Mapping) else {}
            self._finish(proc, errors)
        if found is None:
            raise PaginationError(f"{self.label}: spec sent no SPEC message")
        return found

    def check(self) -> None:
        """Run the source's ``check``.

        Raises:
            AuthError: AUTH001 when it fails on credentials.
            ConfigError: CFG001 when it fails otherwise (Airbyte's check judges the config).
        """
        errors: list[TraceError] = []
        status: Mapping[str, Any] | None = None
        with self._process(["check"], {}, "check") as proc:
            for message in self._messages(proc, errors):
                found = message.get("connectionStatus") if message.get("type") == "CONNECTION_STATUS" else None
                if isinstance(found, Mapping):
                    status = found
            self._finish(proc, errors)
        if status is None:
            raise PaginationError(f"{self.label}: check sent no CONNECTION_STATUS message")
        if status.get("status") == "SUCCEEDED":
            return
        said = redact_text(str(status.get("message") or "no reason given"), self.secrets)[:500]
        text = f"{self.label}: the connector's check failed: {said}"
        if _AUTH_WORDS.search(said) and not _CONFIG_WORDS.search(said):
            raise AuthError(text, hint="check the connector's credentials")
        if _NETWORK_WORDS.search(said):
            raise ExtractError(text, hint="the source could not be reached; check the network and try again")
        raise ConfigError(text, hint="check the recipe's config and the job's connection settings")

    def discover(self) -> list[StreamInfo]:
        """Run ``discover`` and parse its ``CATALOG``.

        Raises:
            PaginationError: PAGE001 when it sends no catalog.
        """
        errors: list[TraceError] = []
        catalog: Mapping[str, Any] | None = None
        with self._process(["discover"], {}, "discover") as proc:
            for message in self._messages(proc, errors):
                found = message.get("catalog") if message.get("type") == "CATALOG" else None
                if isinstance(found, Mapping):
                    catalog = found
            self._finish(proc, errors)
        if catalog is None:
            raise PaginationError(f"{self.label}: discover sent no CATALOG message")
        return parse_catalog(catalog, self.label)

    def read(self, stream: StreamInfo, *, selection: Selection, state: Any | None) -> Iterator[Message]:
        """Read ``stream`` from ``state``: RECORD → :class:`Record`, the stream's STATE → :class:`Checkpoint`.

        Raises:
            PaginationError: PAGE001 for a line that is not an Airbyte message.
        """
        files: dict[str, Any] = {"catalog": configured_catalog(stream, selection, self.label)}
        args = ["read", "--catalog", "{catalog}"]
        if state is not None and selection.incremental:
            files["state"] = state_file(state)
            args += ["--state", "{state}"]
        errors: list[TraceError] = []
        with self._process(args, files, "read") as proc:
            for message in self._messages(proc, errors):
                kind = message.get("type")
                if kind == "RECORD":
                    record = message.get("record")
                    data = record.get("data") if isinstance(record, Mapping) else None
                    name = record.get("stream") if isinstance(record, Mapping) else None
                    if not isinstance(data, dict) or not isinstance(name, str):
                        raise PaginationError(f"{proc.label}: a RECORD message without a stream or a data object")
                    yield Record(name, data)
                elif kind == "STATE":
                    body = message.get("state")
                    if not isinstance(body, Mapping):
                        raise PaginationError(f"{proc.label}: a STATE message without a state object")
                    own = stream_state_of(body, stream)
                    if own is not None:
                        yield Checkpoint(own)
                # SPEC, CATALOG, CONNECTION_STATUS and newer message types carry nothing a read needs.
            self._finish(proc, errors)

    def state_for(self, stream: StreamInfo, selection: Selection, value: Any) -> Any:
        """A per-stream state starting the stream at ``value`` (``initial_value``, ``dativo reset --to``).

        Sources built on the Airbyte CDK keep an incremental stream's state as ``{cursor_field: value}``.
        """
        cursor = selection.cursor_field or (stream.replication_keys[0] if stream.replication_keys else None)
        if cursor is None:
            raise ConfigError(f"{self.label}: stream {stream.name!r} has no cursor field to start from {value!r}")
        return {
            "type": "STREAM",
            "stream": {"stream_descriptor": {"name": stream.name}, "stream_state": {cursor: value}},
        }


class AirbyteSource(EngineSource):
    """An Airbyte Python source installed from the recipe's ``pip_url`` into its own virtualenv."""

    type = "airbyte"
    protocol_class: ClassVar[builtins.type[EngineProtocol]] = AirbyteProtocol

    @classmethod
    def default_executable(cls, package: str) -> str:
        """``airbyte-source-faker`` installs ``source-faker``."""
        return default_executable(package)
