"""Error classification of the SQL sources, with canned driver exceptions (no server needed).

The rule: a failure a retry can fix is EXT001 transient; everything else is permanent (AUTH001,
CFG001, QUAL001, or EXT001 permanent for an internal or unclassified error, which keeps the
driver's message, redacted).
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pymysql
import pytest

from dativo_dagster.config.secrets import register_secrets
from dativo_dagster.errors import ConfigError, DativoError, ExtractError, PermanentExtractError, QualityError
from dativo_dagster.sources import mysql as my
from dativo_dagster.sources import postgres as pg


def pg_error(sqlstate: str, message: str = "boom") -> psycopg2.Error:
    """A psycopg2 exception of the class the server's SQLSTATE maps to."""
    return psycopg2.errors.lookup(sqlstate)(message)


def kind(error: DativoError) -> tuple[str, bool]:
    return error.code, error.transient


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("08006", ("EXT001", True)),  # connection failure
        ("08001", ("EXT001", True)),
        ("53300", ("EXT001", True)),  # too many connections
        ("53100", ("EXT001", True)),  # disk full
        ("57014", ("EXT001", True)),  # statement timeout / cancel
        ("57P01", ("EXT001", True)),  # admin shutdown
        ("40001", ("EXT001", True)),  # serialization failure
        ("40P01", ("EXT001", True)),  # deadlock
        ("58030", ("EXT001", True)),  # I/O error
        ("55P03", ("EXT001", True)),  # lock not available
        ("28P01", ("AUTH001", False)),  # invalid password
        ("28000", ("AUTH001", False)),
        ("42501", ("AUTH001", False)),  # insufficient privilege
        ("42P01", ("CFG001", False)),  # undefined table
        ("42703", ("CFG001", False)),  # undefined column
        ("42601", ("CFG001", False)),  # syntax error
        ("42883", ("CFG001", False)),  # undefined function
        ("25006", ("CFG001", False)),  # a write in a READ ONLY transaction
        ("25001", ("CFG001", False)),
        ("0A000", ("CFG001", False)),  # feature not supported
        ("3F000", ("CFG001", False)),  # invalid schema name
        ("3D000", ("CFG001", False)),  # invalid database name
        ("22012", ("QUAL001", False)),  # division by zero
        ("22P02", ("QUAL001", False)),  # invalid text representation
        ("22021", ("QUAL001", False)),  # invalid byte sequence
        ("XX000", ("EXT001", False)),  # internal error: permanent
        ("XX001", ("EXT001", False)),  # data corrupted
        ("P0001", ("EXT001", False)),  # RAISE EXCEPTION in a function: unclassified, permanent
    ],
)
def test_postgres_sqlstate_classes(sqlstate: str, expected: tuple[str, bool]) -> None:
    assert kind(pg.classify(pg_error(sqlstate), "acme/db/t")) == expected


def test_postgres_read_only_violation_says_the_query_modifies_data() -> None:
    error = pg.classify(pg_error("25006", "cannot execute INSERT in a read-only transaction"), "acme/db/t")
    assert isinstance(error, ConfigError) and "the query modifies data" in str(error) and "25006" in str(error)


def test_postgres_internal_and_unknown_errors_are_permanent_and_keep_the_message() -> None:
    internal = pg.classify(pg_error("XX000", "could not read block 7"), "l")
    assert isinstance(internal, PermanentExtractError) and not internal.transient
    assert "could not read block 7" in str(internal) and "XX000" in str(internal)
    unknown = pg.classify(psycopg2.DatabaseError("something odd"), "l")
    assert isinstance(unknown, PermanentExtractError) and not unknown.transient
    assert "unclassified" in str(unknown) and "something odd" in str(unknown)
    not_a_driver_error = pg.classify(RuntimeError("bug"), "l")
    assert not not_a_driver_error.transient and "unclassified" in str(not_a_driver_error)


def test_postgres_data_exception_names_the_column_when_the_server_does() -> None:
    class NamedOverflow(psycopg2.errors.NumericValueOutOfRange):
        pgcode = "22003"

        @property
        def diag(self) -> object:
            return type("Diag", (), {"column_name": "amount"})()

    error = pg.classify(NamedOverflow("numeric field overflow"), "l")
    assert isinstance(error, QualityError) and "column 'amount'" in str(error)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("server closed the connection unexpectedly", ("EXT001", True)),
        ('connection to server at "db" (10.0.0.1), port 5432 failed: Connection refused', ("EXT001", True)),
        ('connection to server at "db" failed: timeout expired', ("EXT001", True)),
        ("SSL SYSCALL error: EOF detected", ("EXT001", True)),
        ("FATAL:  the database system is starting up", ("EXT001", True)),
        ('FATAL:  password authentication failed for user "reader"', ("AUTH001", False)),
        ('FATAL:  role "nobody" does not exist', ("AUTH001", False)),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.2"', ("AUTH001", False)),
        ('FATAL:  database "shop" does not exist', ("CFG001", False)),
        ('could not translate host name "nope" to address: Name or service not known', ("CFG001", False)),
        ("server does not support SSL, but SSL was required", ("CFG001", False)),
        ("something nobody has seen", ("EXT001", False)),
    ],
)
def test_postgres_connection_level_errors_without_sqlstate(message: str, expected: tuple[str, bool]) -> None:
    assert kind(pg.classify(psycopg2.OperationalError(message), "l")) == expected


def test_postgres_connection_lost_during_copy_is_transient() -> None:
    # what psycopg2 raises when the server goes away in the middle of COPY ... TO STDOUT
    lost = psycopg2.DatabaseError("error with status PGRES_COPY_OUT and no message from the libpq")
    assert kind(pg.classify(lost, "l")) == ("EXT001", True)
    assert kind(pg.classify(BrokenPipeError(32, "Broken pipe"), "l")) == ("EXT001", True)


def test_classified_messages_are_redacted() -> None:
    register_secrets(["s3cr3t-pa55word"])
    error = pg.classify(psycopg2.OperationalError('password "s3cr3t-pa55word" rejected'), "l")
    assert "s3cr3t-pa55word" not in str(error)
    error = my.classify(pymysql.err.OperationalError(9999, "odd s3cr3t-pa55word"), "l")
    assert "s3cr3t-pa55word" not in str(error) and "unclassified" in str(error)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (2002, ("EXT001", True)),
        (2003, ("EXT001", True)),
        (2006, ("EXT001", True)),
        (2013, ("EXT001", True)),
        (2055, ("EXT001", True)),
        (1205, ("EXT001", True)),  # lock wait timeout
        (1213, ("EXT001", True)),  # deadlock
        (1040, ("EXT001", True)),  # too many connections
        (1969, ("EXT001", True)),  # MariaDB max_statement_time
        (3024, ("EXT001", True)),  # MySQL max_execution_time
        (1927, ("EXT001", True)),  # connection killed
        (1044, ("AUTH001", False)),
        (1045, ("AUTH001", False)),
        (1142, ("AUTH001", False)),
        (1143, ("AUTH001", False)),
        (1227, ("AUTH001", False)),
        (1698, ("AUTH001", False)),
        (1064, ("CFG001", False)),  # syntax
        (1146, ("CFG001", False)),  # unknown table
        (1054, ("CFG001", False)),  # unknown column
        (1049, ("CFG001", False)),  # unknown database
        (1305, ("CFG001", False)),  # unknown function
        (1792, ("CFG001", False)),  # a write in a READ ONLY transaction
        (1264, ("QUAL001", False)),  # out of range
        (1292, ("QUAL001", False)),  # truncated incorrect value
        (1366, ("QUAL001", False)),  # incorrect string value
        (1242, ("QUAL001", False)),  # subquery returns more than one row
        (1105, ("EXT001", False)),  # unknown error: unclassified, permanent
        (9999, ("EXT001", False)),
    ],
)
def test_mysql_error_codes(code: int, expected: tuple[str, bool]) -> None:
    exc = pymysql.err.OperationalError(code, f"message of {code}")
    error = my.classify(exc, "acme/db/t")
    assert kind(error) == expected
    assert f"message of {code}" in str(error)


def test_mysql_classification_ignores_the_exception_class() -> None:
    # pymysql files unknown columns under OperationalError and syntax errors under ProgrammingError
    assert isinstance(my.classify(pymysql.err.ProgrammingError(1064, "syntax"), "l"), ConfigError)
    assert isinstance(my.classify(pymysql.err.OperationalError(1054, "Unknown column"), "l"), ConfigError)
    assert isinstance(my.classify(pymysql.err.InternalError(1205, "Lock wait timeout"), "l"), ExtractError)
    lost = my.classify(pymysql.err.InterfaceError(0, ""), "l")
    assert isinstance(lost, ExtractError) and lost.transient
    unknown = my.classify(pymysql.err.DatabaseError("no code at all"), "l")
    assert not unknown.transient and "unclassified" in str(unknown)


def test_mysql_read_only_violation_says_the_query_modifies_data() -> None:
    error = my.classify(pymysql.err.OperationalError(1792, "Cannot execute statement in a READ ONLY transaction"), "l")
    assert isinstance(error, ConfigError) and "the query modifies data" in str(error)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("MySqlError { ERROR 1146 (42S02): Table 'shop.nope' doesn't exist }", ("CFG001", False)),
        ("MySqlError { ERROR 1064 (42000): You have an error in your SQL syntax }", ("CFG001", False)),
        ("MySqlError { ERROR 1969 (70100): Query execution was interrupted (max_statement_time exceeded) }",
         ("EXT001", True)),
        ("MySqlError { ERROR 1792 (25006): Cannot execute statement in a READ ONLY transaction }", ("CFG001", False)),
        ("MySqlError { ERROR 1213 (40001): Deadlock found when trying to get lock }", ("EXT001", True)),
        ("timed out waiting for connection: MySqlError { ERROR 1698 (28000): Access denied for user 'x'@'h' }",
         ("AUTH001", False)),
        ("timed out waiting for connection: DriverError { Could not connect to address `db:3306': "
         "Connection refused (os error 111) }", ("EXT001", True)),
        ("IoError { Connection reset by peer (os error 104) }", ("EXT001", True)),
        ("Could not retrieve `Option<String>`: Couldn't convert the value `Bytes(\"\\xff\")` to a desired type",
         ("QUAL001", False)),
        ("cx writer failed: Destination(Other(decimal scale is not equal to expected scale", ("QUAL001", False)),
        ("MySqlError { ERROR 1105 (HY000): Unknown error }", ("EXT001", False)),
        ("something new", ("EXT001", False)),
    ],
)  # fmt: skip
def test_connectorx_messages(message: str, expected: tuple[str, bool]) -> None:
    error = my.classify_text(message, "l")
    assert kind(error) == expected
    if not error.transient and error.code == "EXT001":
        assert "unclassified" in str(error)
