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


class Severity(str, enum.Enum):
    """How bad an error is, derived from its code (alerts and the processing summary group by it).

    LOW: a row quarantined or a request that passed on retry; MEDIUM: a transient failure of an
    object (retried as a whole); HIGH: an object failed for good (config, pagination, data
    quality, state, retries spent, a bug); CRITICAL: the credential is rejected, so every object
    using it fails: the run stops.
    """

    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"
    CRITICAL = "CRITICAL"


SEVERITY_BY_CODE = {
    "EXT001": Severity.MEDIUM,
    "STG001": Severity.MEDIUM,
    "CFG001": Severity.HIGH,
    "PAGE001": Severity.HIGH,
    "QUAL001": Severity.HIGH,
    "STATE001": Severity.HIGH,
    "RETRY001": Severity.HIGH,
    "BUG": Severity.HIGH,
    "AUTH001": Severity.CRITICAL,
}


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

    @property
    def severity(self) -> Severity:
        """The severity of the error's code (a permanent failure of a transient kind is HIGH)."""
        found = SEVERITY_BY_CODE.get(self.code, Severity.HIGH)
        if found is Severity.MEDIUM and not self.transient:
            return Severity.HIGH
        return found

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
            "dativo/error_severity": self.severity.value,
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


class PermanentExtractError(ExtractError):
    """EXT001, permanent: the source failed in a way a retry cannot change.

    Used for a server's internal error and for driver errors no rule recognises: an unknown error
    is reported as unclassified, with the driver's message (redacted), and never retried, so a
    permanent problem cannot burn the retry budget.
    """

    error_class = ErrorClass.PERMANENT


class PaginationError(DativoError):
    """PAGE001: pagination broke (cursor loop, malformed page, result cap)."""

    code = "PAGE001"


class StorageError(DativoError):
    """STG001: Iceberg catalog or object-store failure that may pass (unreachable, conflict, full)."""

    code = "STG001"
    error_class = ErrorClass.TRANSIENT


class StorageStateError(StorageError):
    """STG001, permanent: the table or catalog is in a state a retry cannot change (a missing data
    file, unreadable metadata)."""

    error_class = ErrorClass.PERMANENT


class StateError(DativoError):
    """STATE001: invalid state transition (cursor moving backwards, unreadable state)."""

    code = "STATE001"


class QualityError(DativoError):
    """QUAL001: data-quality threshold exceeded."""

    code = "QUAL001"


class RetryExhaustedError(DativoError):
    """RETRY001: retries exhausted or circuit open."""

    code = "RETRY001"


class UnexpectedError(DativoError):
    """An exception no code covers: a bug in dativo or a connector. Never retried.

    Raised around the original exception (``__cause__``), whose traceback is kept for the report.
    """

    code = "BUG"


def unexpected(exc: BaseException) -> UnexpectedError:
    """Wrap an exception no code covers (a bug), keeping its traceback (secrets redacted) for the report."""
    import traceback

    from dativo_dagster.config.secrets import redact_text

    trace = redact_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    error = UnexpectedError(
        redact_text(f"unexpected {type(exc).__name__}: {exc}")[:500],
        hint="this is a bug, not a problem with the data or the configuration; it is not retried",
        traceback=trace,
    )
    error.__cause__ = exc
    return error
