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
import re
from typing import Any
from urllib.parse import urlsplit

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


def failure_text(exc: BaseException) -> str:
    """``Type: first line`` of an exception, with known secrets redacted (for logs)."""
    return _message(exc)


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
        from_store = _arrow_s3_failure(exc, what, message)
        if from_store is not None:
            return from_store
        return _os_failure(exc, what, message)
    azure = _azure_cause(exc)
    if azure is not None:
        return _azure_failure(azure, what)
    if isinstance(exc, ValueError) and str(exc).startswith(_ADLFS_CONNECT_FAILED):
        # adlfs could not build its client from the settings (a malformed connection string, an
        # account name without any way in): nothing a retry changes.
        return ConfigError(message, hint="check the target recipe's storage.azure settings")
    mapped = _driver_failure(exc, what, message)
    if mapped is not None:
        return mapped
    return None


# PyArrow's S3 client reports ``... in bucket 'name': AWS Error NO_SUCH_BUCKET during ...``.
_ARROW_AWS_ERROR = re.compile(r"AWS Error (?P<code>[A-Z_]+)(?: \(HTTP status (?P<status>\d+)\))?")
_ARROW_BUCKET = re.compile(r"bucket '(?P<bucket>[^']+)'")
_ARROW_AUTH_CODES = {
    "ACCESS_DENIED", "INVALID_ACCESS_KEY_ID", "SIGNATURE_DOES_NOT_MATCH", "EXPIRED_TOKEN",
    "INVALID_CLIENT_TOKEN_ID", "MISSING_AUTHENTICATION_TOKEN", "UNRECOGNIZED_CLIENT", "INCOMPLETE_SIGNATURE",
}  # fmt: skip
# The AWS SDK's codes for failures that pass with time: no connection, throttling, a busy or failing
# service, a timed-out request.
_ARROW_TRANSIENT_CODES = {
    "NETWORK_CONNECTION", "SLOW_DOWN", "THROTTLING", "SERVICE_UNAVAILABLE", "INTERNAL_FAILURE", "REQUEST_TIMEOUT",
}  # fmt: skip
_ARROW_MISSING_CODES = {"NO_SUCH_KEY", "RESOURCE_NOT_FOUND"}


def _arrow_s3_failure(exc: OSError, what: str, message: str) -> DativoError | None:
    """PyArrow's S3 errors: plain OSErrors whose text carries the AWS error code."""
    text = str(exc)
    found = _ARROW_AWS_ERROR.search(text)
    if found is None:
        return None
    code, status = found.group("code"), found.group("status")
    bucket = _ARROW_BUCKET.search(text)
    if code == "NO_SUCH_BUCKET":
        named = f"the bucket '{bucket.group('bucket')}'" if bucket else "the warehouse's bucket"
        return ConfigError(
            f"{what}: {named} does not exist",
            hint="create the bucket, or point the target recipe's warehouse at an existing one",
        )
    if code in _ARROW_AUTH_CODES or status in ("401", "403"):
        return AuthError(
            message,
            hint="check the S3 credentials (default chain or the storage.s3 references) and the bucket policy",
        )
    if status == "301" or code == "PERMANENT_REDIRECT":
        # S3 answers 301 when the request went to another region than the bucket's.
        return ConfigError(
            f"{message} (the bucket is in another region than the one configured)",
            hint="set storage.s3.region in the target recipe (or AWS_REGION for the run) to the bucket's region",
        )
    if code in _ARROW_TRANSIENT_CODES or (status is not None and _transient_status(int(status))):
        return StorageError(message)
    if code in _ARROW_MISSING_CODES or status == "404":
        return StorageStateError(
            f"{what}: a file the table references is missing: {_message(exc)}",
            hint="the warehouse was changed outside Iceberg; restore the file or roll the table back",
        )
    # Any other answer (a 4xx such as 400 InvalidArgument, an unknown code): the store refused the
    # request as it was made, and the same request will be refused again.
    return StorageStateError(message)


def _transient_status(status: int) -> bool:
    """HTTP statuses worth a retry: server errors, timeouts, throttling (0: no answer at all)."""
    return status == 0 or status >= 500 or status in (408, 429)


def is_missing_file(exc: BaseException) -> bool:
    """True if ``exc`` says that the file read does not exist (and nothing worse).

    Decide with :func:`storage_failure` first: a missing bucket or container, rejected credentials
    or an outage have their own codes, even where the FileIO reports them as a missing file.
    """
    if isinstance(exc, FileNotFoundError) or (isinstance(exc, OSError) and exc.errno == errno.ENOENT):
        return True
    azure = _azure_cause(exc)
    return (
        azure is not None
        and type(azure).__name__ == "ResourceNotFoundError"
        and str(getattr(azure, "error_code", None) or "") != "ContainerNotFound"
    )


def _azure_cause(exc: BaseException) -> BaseException | None:
    """The Azure SDK exception behind ``exc`` (adlfs wraps them in RuntimeError/ValueError)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 6:
        if type(current).__module__.startswith("azure.core"):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None


_ADLFS_CONNECT_FAILED = "unable to connect to account for"

_AZURE_AUTH_CODES = {
    "AuthenticationFailed", "AuthorizationFailure", "AuthorizationPermissionMismatch",
    "AuthorizationPermissionDenied", "InsufficientAccountPermissions", "AccountIsDisabled",
    "InvalidAuthenticationInfo", "NoAuthenticationInformation",
}  # fmt: skip


def _azure_failure(exc: BaseException, what: str) -> DativoError:
    """Azure Blob errors (through adlfs) by error code and HTTP status."""
    from azure.core import exceptions as azure

    message = f"{what} failed: {_message(exc)}"
    code = str(getattr(exc, "error_code", None) or "")
    status = getattr(exc, "status_code", None)
    if code == "ContainerNotFound":
        container = _azure_container(exc)
        named = f"the container '{container}'" if container else "the warehouse's container"
        return ConfigError(
            f"{what}: {named} does not exist",
            hint="create the container, or point the target recipe's warehouse at an existing one",
        )
    if isinstance(exc, azure.ClientAuthenticationError) or code in _AZURE_AUTH_CODES or status in (401, 403):
        return AuthError(
            message, hint="check the Azure credentials (storage.azure references or the managed identity) and role"
        )
    if isinstance(exc, (azure.ServiceRequestError, azure.ServiceResponseError)) or (
        isinstance(status, int) and (status >= 500 or status in (408, 429))
    ):
        return StorageError(message)
    if isinstance(exc, azure.ResourceNotFoundError):
        return StorageStateError(
            f"{what}: a file the table references is missing: {_message(exc)}",
            hint="the warehouse was changed outside Iceberg; restore the file or roll the table back",
        )
    return StorageStateError(message)


def _azure_container(exc: BaseException) -> str | None:
    """The container of the request that failed: the first path segment of the blob URL, or
    the second on an emulator's ``http://host:port/<account>/<container>`` URL."""
    response: Any = getattr(exc, "response", None)
    url = getattr(getattr(response, "request", None), "url", None)
    if not url:
        return None
    parts = urlsplit(str(url))
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        return None
    on_account_host = ".blob." in parts.netloc or ".dfs." in parts.netloc
    index = 0 if on_account_host else 1
    return segments[index] if len(segments) > index else None


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
        if code == "NoSuchBucket":
            bucket = _bucket_name(exc)
            named = f"the bucket '{bucket}'" if bucket else "the warehouse's bucket"
            return ConfigError(
                f"{what}: {named} does not exist",
                hint="create the bucket, or point the target recipe's warehouse at an existing one",
            )
        if code in ("EntityNotFoundException", "InvalidInputException"):
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


def _bucket_name(exc: BaseException) -> str | None:
    response: Any = getattr(exc, "response", None)
    if isinstance(response, dict):
        name = response.get("Error", {}).get("BucketName")
        return str(name) if name else None
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
