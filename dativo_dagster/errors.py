"""Error taxonomy: every failure dativo reports carries a code and a retry class.

The codes are part of the product's contract (operators grep for them, alerts route on them),
so they live in one place. A *transient* error may succeed when retried (network, 5xx, commit
conflict); a *permanent* one will not (bad config, bad password) and must never burn the retry
budget.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar


class ErrorClass(str, enum.Enum):
    """Whether retrying can help."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


class DativoError(Exception):
    """Base class of every error dativo raises on purpose.

    Args:
        message: One line a person can act on. Never include secret values.
        hint: Optional next step for the operator.
        context: Extra structured fields (file, field path, object, ...) for logs and metadata.
    """

    code: ClassVar[str] = "DATIVO"
    error_class: ClassVar[ErrorClass] = ErrorClass.PERMANENT

    def __init__(self, message: str, *, hint: str | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context: dict[str, Any] = dict(context)

    @property
    def transient(self) -> bool:
        """True when a retry may succeed."""
        return self.error_class is ErrorClass.TRANSIENT

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def as_metadata(self) -> Mapping[str, str]:
        """Fields safe to attach to logs, Dagster metadata and run tags."""
        return {
            "dativo/error_code": self.code,
            "dativo/error_class": self.error_class.value,
            "dativo/error": str(self),
        }


class ConfigError(DativoError):
    """CFG001: configuration invalid; the message names the file and field path."""

    code = "CFG001"


class AuthError(DativoError):
    """AUTH001: authentication or permission failure."""

    code = "AUTH001"


class ExtractError(DativoError):
    """EXT001: the source failed (5xx, dropped connection, timeout)."""

    code = "EXT001"
    error_class = ErrorClass.TRANSIENT


class PaginationError(DativoError):
    """PAGE001: pagination broke (cursor loop, malformed page, result cap)."""

    code = "PAGE001"


class StorageError(DativoError):
    """STG001: Iceberg catalog or object-store failure."""

    code = "STG001"
    error_class = ErrorClass.TRANSIENT


class StateError(DativoError):
    """STATE001: invalid state transition (cursor moving backwards, unreadable state)."""

    code = "STATE001"


class QualityError(DativoError):
    """QUAL001: data-quality threshold exceeded."""

    code = "QUAL001"


class RetryExhaustedError(DativoError):
    """RETRY001: retries exhausted or circuit open."""

    code = "RETRY001"
