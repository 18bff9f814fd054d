"""What a failure of the catalog or the warehouse means: transient, permanent, or a bug.

pyiceberg, SQLAlchemy, fsspec/s3fs, botocore and the REST client each raise their own exceptions.
:func:`storage_failure` maps the ones known to pass with time (an unreachable catalog, a locked
SQLite file, a throttled S3 call, a commit conflict) to STG001 transient, the ones that will not
(permission denied, a read-only or missing warehouse path, bad credentials, a missing data file)
to AUTH001, CFG001 or permanent STG001, and returns None for anything else: the caller re-raises
it unchanged, so an unknown exception surfaces as a bug with its traceback instead of being
retried.
"""

from __future__ import annotations

import errno
from typing import Any

from pyiceberg import exceptions as iceberg_exceptions
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, StorageError, StorageStateError

_PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}
_TRANSIENT_ERRNOS = {
    errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ECONNREFUSED,
    errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPIPE, errno.EDQUOT,
}  # fmt: skip

_TRANSIENT_ICEBERG = (
    iceberg_exceptions.CommitFailedException,
    iceberg_exceptions.CommitStateUnknownException,
    iceberg_exceptions.ServiceUnavailableError,
    iceberg_exceptions.ServerError,
    iceberg_exceptions.TooManyRequestsError,
    iceberg_exceptions.WaitingForLockException,
)
_AUTH_ICEBERG = (
    iceberg_exceptions.UnauthorizedError,
    iceberg_exceptions.ForbiddenError,
    iceberg_exceptions.OAuthError,
    iceberg_exceptions.AuthorizationExpiredError,
)
_CONFIG_ICEBERG = (
    iceberg_exceptions.BadRequestError,
    iceberg_exceptions.NoSuchNamespaceError,
    iceberg_exceptions.NoSuchIdentifierError,
    iceberg_exceptions.NotInstalledError,
    iceberg_exceptions.ValidationError,
)

_AUTH_CODES = {
    "AccessDenied", "AccessDeniedException", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "UnrecognizedClientException", "InvalidClientTokenId",
}  # fmt: skip
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
                    "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequestsException",
                    "ConcurrentModificationException", "InternalServiceException"}  # fmt: skip


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:400]


def storage_failure(exc: BaseException, what: str) -> DativoError | None:
    """The coded error for a storage/catalog exception, or None when it is not a known one.

    Args:
        exc: What pyiceberg or the file system raised.
        what: The operation and object, e.g. ``"commit to acme.orders"``.
    """
    if isinstance(exc, DativoError):
        return exc
    message = f"{what} failed: {_message(exc)}"
    if isinstance(exc, iceberg_exceptions.CommitFailedException):
        return StorageError(f"{what} conflicted with another writer: {_message(exc)}")
    if isinstance(exc, _TRANSIENT_ICEBERG):
        return StorageError(message)
    if isinstance(exc, _AUTH_ICEBERG):
        return AuthError(message, hint="check the catalog credentials and their permissions")
    if isinstance(exc, _CONFIG_ICEBERG):
        return ConfigError(message)
    if isinstance(exc, OSError):
        return _os_failure(exc, what, message)
    mapped = _driver_failure(exc, what, message)
    if mapped is not None:
        return mapped
    return None


def _os_failure(exc: OSError, what: str, message: str) -> DativoError:
    filename = getattr(exc, "filename", None)
    if isinstance(exc, PermissionError) or exc.errno in _PERMISSION_ERRNOS:
        where = f" ({filename})" if filename else ""
        return ConfigError(
            f"{what}: the warehouse is not writable{where}: {_message(exc)}",
            hint="give the run's user write access to the warehouse, or point the target at a writable one",
        )
    if isinstance(exc, FileNotFoundError):
        return StorageStateError(
            f"{what}: a file the table references is missing: {_message(exc)}",
            hint="the warehouse was changed outside Iceberg; restore the file or roll the table back",
        )
    if isinstance(exc, (ConnectionError, TimeoutError)) or exc.errno in _TRANSIENT_ERRNOS or exc.errno is None:
        # errno None: fsspec/pyarrow wrap remote-store failures (HTTP, sockets) as plain OSError.
        return StorageError(message)
    return StorageStateError(message)


def _driver_failure(exc: BaseException, what: str, message: str) -> DativoError | None:
    """SQLAlchemy (SQL catalog), botocore (Glue, S3) and requests (REST catalog) exceptions."""
    module = type(exc).__module__
    if module.startswith("sqlalchemy"):
        import sqlalchemy.exc as sa

        from_driver = _postgres_failure(getattr(exc, "orig", None), what)
        if from_driver is not None:
            return from_driver
        if isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError, sa.DisconnectionError)):
            text = str(exc).lower()
            if "password authentication failed" in text or "access denied" in text:
                return AuthError(message)
            if "unable to open database file" in text or "readonly database" in text:
                return ConfigError(message, hint="the catalog database path must be writable by the run's user")
            return StorageError(message)
        return StorageStateError(message)
    if module.startswith("botocore"):
        code = _error_code(exc)
        if code in _AUTH_CODES or type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):
            return AuthError(message)
        if code in _TRANSIENT_CODES or type(exc).__name__ in (
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ReadTimeoutError",
            "ConnectionClosedError",
        ):
            return StorageError(message)
        if code in ("NoSuchBucket", "EntityNotFoundException", "InvalidInputException"):
            return ConfigError(message)
        return StorageStateError(message) if code else None
    if module.startswith(("requests", "urllib3")):
        return StorageError(message)
    return None


def _postgres_failure(orig: Any, what: str) -> DativoError | None:
    """A PostgreSQL catalog's error, classified by SQLSTATE as the PostgreSQL source does: a missing
    database, a bad option or an unknown role are not worth a retry."""
    if orig is None or not type(orig).__module__.startswith("psycopg2"):
        return None
    from dativo_dagster.errors import ExtractError, QualityError
    from dativo_dagster.sources.postgres import classify

    mapped = classify(orig, f"{what} (Iceberg catalog)")
    if isinstance(mapped, (AuthError, ConfigError)):
        return mapped
    if isinstance(mapped, ExtractError):
        return StorageError(mapped.message) if mapped.transient else StorageStateError(mapped.message)
    if isinstance(mapped, QualityError):
        return StorageStateError(mapped.message)
    return None


def _error_code(exc: BaseException) -> str | None:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def raise_storage_failure(exc: BaseException, what: str) -> None:
    """Raise the coded error for ``exc`` from the current ``except`` block, or re-raise ``exc``."""
    mapped = storage_failure(exc, what)
    if mapped is None:
        raise exc
    # The coded message says what failed; the driver traceback could carry connection details.
    raise mapped from None


COMMIT_ATTEMPTS = 5
"""Commits tried (the table refreshed between them) before a conflict becomes STG001."""


class CommitConflict(Exception):
    """A commit lost a race with another writer; the table is refreshed and the commit replayed."""


def replaying_conflicts() -> Retrying:
    """How every dativo commit (data, quarantine, reset) that lost a race is tried again:
    ``COMMIT_ATTEMPTS`` in all, with jittered exponential waits; the caller refreshes the table
    and replays its commit in each attempt."""
    return Retrying(
        stop=stop_after_attempt(COMMIT_ATTEMPTS),
        wait=wait_exponential_jitter(initial=0.05, max=2),
        retry=retry_if_exception_type(CommitConflict),
        reraise=True,
    )
