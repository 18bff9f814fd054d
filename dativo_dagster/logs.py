"""Structured logging: every line carries tenant/job/object/run id/code; secrets never appear.

structlog context variables hold the ids, so a connector logs ``log.info("page", n=3)`` and the
line still says which tenant it belongs to. The redaction processor runs last before rendering
and scrubs every registered secret value and any field whose name looks like a secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from dativo_dagster.config.secrets import REDACTED, is_sensitive_key, redact_text

_configured = False
_level = logging.INFO
_listeners: list[Callable[[MutableMapping[str, Any]], None]] = []


def add_event_listener(listener: Callable[[MutableMapping[str, Any]], None]) -> None:
    """Receive every (redacted) log event; the CLI uses this to drive its progress display."""
    _listeners.append(listener)


def _notify(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for listener in list(_listeners):
        listener(dict(event_dict))
    return event_dict


def redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secret values and secret-named fields, however deeply nested."""
    for key, value in list(event_dict.items()):
        event_dict[key] = REDACTED if is_sensitive_key(key) else redact_value(value)
    return event_dict


def redact_value(value: Any, depth: int = 0) -> Any:
    """``value`` with secret values and secret-named keys hidden (dicts, lists, exceptions, text)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    if depth > 8:
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        return {k: REDACTED if is_sensitive_key(str(k)) else redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact_value(item, depth + 1) for item in value]
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact_text(str(value))


def configure_logging(
    level: int = logging.INFO, *, json: bool = False, force: bool = False, display_level: int | None = None
) -> None:
    """Configure structlog once per process (idempotent unless ``force``).

    Args:
        level: Events below this level are not produced at all.
        json: Render JSON lines instead of key=value.
        force: Reconfigure even if already configured.
        display_level: Events below this level still reach listeners but are not printed.
    """
    global _configured, _level
    if _configured and not force:
        return
    _level = level
    shown = display_level if display_level is not None else level

    def drop_hidden(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if logging.getLevelName(str(event_dict.get("level", "info")).upper()) < shown:
            raise structlog.DropEvent
        return event_dict

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else _MetricAwareRenderer(
            structlog.processors.KeyValueRenderer(
                key_order=["event", "tenant", "job", "object", "run_id", "code"], drop_missing=True
            )
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_event,
            _notify,
            drop_hidden,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _configured = True


def debug_enabled() -> bool:
    """Whether DEBUG events are produced (``dativo run --debug``): debug-only work is skipped otherwise."""
    return _level <= logging.DEBUG


class _MetricAwareRenderer:
    """Metric events (``metric=rate_limit``, ``metric=breaker_state``) render as bare
    ``metric=... key=value`` lines operators can grep; everything else as key=value pairs."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        event = str(event_dict.get("event", ""))
        if not event.startswith("metric="):
            return str(self._fallback(logger, name, event_dict))
        fields = [f"{key}={value}" for key, value in event_dict.items() if key not in ("event", "level", "timestamp")]
        tail = f" level={event_dict.get('level', 'info')} timestamp={event_dict.get('timestamp', '')}"
        return " ".join([event, *fields]) + tail


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now (Dagster and pytest swap it during a run)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (tenant, job, object, run_id) for every log line inside the block."""
    with structlog.contextvars.bound_contextvars(**ids):
        yield
