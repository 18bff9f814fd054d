"""Structured logging: every line carries tenant/job/object/run id/code; secrets never appear.

structlog context variables hold the ids, so a connector logs ``log.info("page", n=3)`` and the
line still says which tenant it belongs to. The redaction processor runs last before rendering
and scrubs every registered secret value and any field whose name looks like a secret.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

from dativo_dagster.config.secrets import REDACTED, is_sensitive_key, redact_text

_configured = False


def redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secret values and secret-named fields."""
    for key, value in list(event_dict.items()):
        if is_sensitive_key(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
        elif isinstance(value, BaseException):
            event_dict[key] = redact_text(f"{type(value).__name__}: {value}")
    return event_dict


def configure_logging(level: int = logging.INFO, *, json: bool = False) -> None:
    """Configure structlog once per process (idempotent)."""
    global _configured
    if _configured:
        return
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.processors.KeyValueRenderer(
        key_order=["event", "tenant", "job", "object", "run_id", "code"], drop_missing=True
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


@contextmanager
def log_context(**ids: Any) -> Iterator[None]:
    """Bind ids (tenant, job, object, run_id) for every log line inside the block."""
    with structlog.contextvars.bound_contextvars(**ids):
        yield
