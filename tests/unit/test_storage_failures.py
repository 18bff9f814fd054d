"""Storage exceptions map to transient, permanent or bug; nothing unknown is retried."""

from __future__ import annotations

import errno

import pytest
from pyiceberg.exceptions import CommitFailedException, ForbiddenError, ServiceUnavailableError

from dativo_dagster.errors import AuthError, ConfigError, StorageError, StorageStateError
from dativo_dagster.iceberg.failures import raise_storage_failure, storage_failure


@pytest.mark.parametrize(
    ("exc", "kind", "transient"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/wh/x.parquet"), ConfigError, False),
        (OSError(errno.EROFS, "Read-only file system"), ConfigError, False),
        (OSError(errno.ENOSPC, "No space left on device"), StorageError, True),
        (ConnectionResetError(errno.ECONNRESET, "reset"), StorageError, True),
        (FileNotFoundError(errno.ENOENT, "No such file", "/wh/gone.parquet"), StorageStateError, False),
        (CommitFailedException("conflict"), StorageError, True),
        (ServiceUnavailableError("503"), StorageError, True),
        (ForbiddenError("no"), AuthError, False),
    ],
)
def test_known_storage_failures_are_classified(exc: BaseException, kind: type, transient: bool) -> None:
    mapped = storage_failure(exc, "commit to acme.orders")
    assert isinstance(mapped, kind)
    assert mapped.transient is transient
    assert "acme.orders" in str(mapped)


def test_sqlalchemy_errors_by_kind() -> None:
    import sqlalchemy.exc as sa

    locked = sa.OperationalError("INSERT", {}, Exception("database is locked"))
    assert isinstance(storage_failure(locked, "x"), StorageError) and storage_failure(locked, "x").transient  # type: ignore[union-attr]
    readonly = sa.OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
    assert isinstance(storage_failure(readonly, "x"), ConfigError)


def test_unknown_exceptions_are_not_mapped_so_they_surface_as_bugs() -> None:
    assert storage_failure(KeyError("x"), "commit") is None
    with pytest.raises(KeyError):
        try:
            raise KeyError("x")
        except KeyError as exc:
            raise_storage_failure(exc, "commit")


def test_a_postgres_catalog_that_is_misconfigured_is_not_retried(postgres_server: dict[str, object]) -> None:
    import sqlalchemy

    cases = {
        "postgresql+psycopg2://postgres@127.0.0.1:5432/no_such_database_here": ConfigError,
        "postgresql+psycopg2://no_such_role_here:pw@127.0.0.1:5432/test": AuthError,
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test?sslmode=bogus": ConfigError,
    }
    for url, kind in cases.items():
        try:
            sqlalchemy.create_engine(url).connect()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            mapped = storage_failure(exc, "opening the catalog")
            assert isinstance(mapped, kind), (url, mapped)
            assert not mapped.transient
        else:  # pragma: no cover - the server accepted a bad URL
            raise AssertionError(url)


def test_a_password_holding_at_signs_is_redacted_whole_and_in_pieces() -> None:
    from dativo_dagster.config.secrets import redact_text, register_secrets, secret_parts

    register_secrets(secret_parts("postgresql://postgres:Sup3r@S3cretPW@127.0.0.1:5432/x", sensitive=False))
    shown = redact_text('could not translate host name "S3cretPW@127.0.0.1" to address')
    assert "S3cretPW" not in shown
