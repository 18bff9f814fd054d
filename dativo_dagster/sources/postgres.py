"""PostgreSQL: ``COPY (SELECT …) TO STDOUT`` streamed through a pipe into Arrow's CSV reader.

COPY is the server's fastest way out, and Arrow's multi-threaded CSV parser is the fastest way
in; a background thread pumps COPY into an OS pipe while the caller consumes Arrow batches, so
memory is bounded by the pipe and one CSV block, never by the table. Each read runs in its own
``REPEATABLE READ READ ONLY`` transaction: one consistent snapshot per object per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog
from psycopg2 import sql
from pydantic import Field

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, QualityError
from dativo_dagster.sources.base import Extraction, ReadRequest, SourceStats
from dativo_dagster.sources.sql_common import (
    PermanentExtractError,
    SqlConnection,
    SqlObjectOptions,
    SqlSource,
    best_effort_cast,
    checked_utf8,
    decimal_type,
    guard_cursor_column,
    incremental_predicate,
    merge_reasons,
    modifies_data,
    options_for,
    parse_table_name,
    query_body,
    unclassified,
    undecodable_name,
    with_source_reasons,
)
from dativo_dagster.types import is_uuid, type_label

log = structlog.get_logger("dativo.sources.postgres")


class PostgresConnection(SqlConnection):
    """How to reach the server; the password comes from ``credentials.password``."""

    port: int = Field(default=5432, ge=1, le=65535)
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    application_name: str = "dativo"


# ----------------------------------------------------------------------------- type mapping

_INTEGERS = {"int2": pa.int32(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64()}
_FLOATS = {"float4": pa.float32(), "float8": pa.float64()}
_TEXT = {"text", "varchar", "bpchar", "char", "name", "citext", "json", "jsonb", "xml"}
# Types with no Iceberg equivalent, kept as their PostgreSQL text form (documented fallback).
_TEXT_FALLBACK = {
    "interval", "money", "inet", "cidr", "macaddr", "macaddr8", "point", "line", "lseg", "box", "path",
    "polygon", "circle", "tsvector", "tsquery", "bit", "varbit", "int4range", "int8range", "numrange",
    "tsrange", "tstzrange", "daterange", "pg_lsn", "txid_snapshot",
}  # fmt: skip
UNCONSTRAINED_NUMERIC = pa.decimal128(38, 18)
"""``numeric`` without precision: 20 integer and 18 fractional digits; other values (more decimals,
``NaN``, ``Infinity``) are quarantined with the reason, never rounded."""


@dataclass(frozen=True)
class PgColumn:
    """One column as discovered from the catalog."""

    name: str
    typname: str
    typtype: str = "b"
    precision: int | None = None
    scale: int | None = None
    element: str | None = None
    not_null: bool = False


def numeric_typmod(typmod: int) -> tuple[int | None, int | None]:
    """Precision and scale encoded in a numeric column's typmod ((None, None) when unconstrained).

    The typmod is ``((precision << 16) | (scale & 0x7ff)) + 4``. Since PostgreSQL 15 the scale is
    an 11-bit signed field (``numeric(5,-2)`` rounds to hundreds, ``numeric(3,5)`` holds values
    below 0.01); read sign-extended, it is also right for the 0..1000 scales of older servers.
    """
    if typmod < 4:
        return None, None
    value = typmod - 4
    return (value >> 16) & 0xFFFF, ((value & 0x7FF) ^ 0x400) - 0x400


def numeric_arrow_type(
    precision: int | None, scale: int | None, *, column: str = "?", label: str = "", contract: bool = False
) -> pa.DataType:
    """Arrow type of ``numeric(p, s)``: the smallest decimal that holds every value exactly.

    ``numeric(p,-s)`` holds whole numbers of up to ``p + s`` digits: ``decimal(p+s, 0)``.
    ``numeric(p,s)`` with ``s > p`` holds fractions with ``s`` decimals: ``decimal(s, s)``.

    Raises:
        ConfigError: CFG001 naming the column when more than 38 digits are needed and the object
            has no schema contract (with one, the column is read as text; see
            :func:`~dativo_dagster.sources.sql_common.decimal_type`).
    """
    if precision is None:
        return UNCONSTRAINED_NUMERIC
    scale = scale or 0
    if scale < 0:
        digits, kept = precision - scale, 0
    elif scale > precision:
        digits, kept = scale, scale
    else:
        digits, kept = precision, scale
    return decimal_type(
        digits, kept, column=column, source_type=f"numeric({precision},{scale})", label=label, contract=contract
    )


def scalar_arrow_type(
    typname: str,
    typtype: str,
    precision: int | None,
    scale: int | None,
    *,
    column: str = "?",
    label: str = "",
    contract: bool = False,
) -> pa.DataType | None:
    """Arrow type of a scalar PostgreSQL type, or None when it is unknown."""
    if typtype == "e":
        return pa.string()  # enums
    if typname in _INTEGERS:
        return _INTEGERS[typname]
    if typname in _FLOATS:
        return _FLOATS[typname]
    if typname == "numeric":
        return numeric_arrow_type(precision, scale, column=column, label=label, contract=contract)
    if typname == "bool":
        return pa.bool_()
    if typname in _TEXT or typname in _TEXT_FALLBACK:
        return pa.string()
    if typname == "date":
        return pa.date32()
    if typname == "time":
        return pa.time64("us")
    if typname == "timetz":
        return pa.string()
    if typname == "timestamp":
        return pa.timestamp("us")
    if typname == "timestamptz":
        return pa.timestamp("us", tz="UTC")
    if typname == "uuid":
        return pa.uuid()
    if typname == "bytea":
        return pa.binary()
    return None


# Array elements with a typed Arrow equivalent; every other element (numeric, text, json, jsonb,
# enums, intervals, ...) keeps PostgreSQL's exact text.
_ARRAY_ITEMS: dict[str, pa.DataType] = {
    "int2": pa.int32(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64(), "float4": pa.float32(),
    "float8": pa.float64(), "bool": pa.bool_(), "date": pa.date32(), "time": pa.time64("us"),
    "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC"), "uuid": pa.uuid(),
    "bytea": pa.binary(),
}  # fmt: skip


def array_item_type(element: str) -> pa.DataType:
    """Arrow type of the elements of a PostgreSQL array (string: the element's exact text)."""
    return _ARRAY_ITEMS.get(element, pa.string())


def column_arrow_type(column: PgColumn, label: str, *, contract: bool = False) -> pa.DataType:
    """Arrow type of a column; CFG001 naming the column when the type cannot be mapped.

    Args:
        column: The discovered column.
        label: The object's label, for messages.
        contract: The object has a schema contract (a numeric beyond 38 digits is then read as
            text for the enforcer to convert; without one it is CFG001).
    """
    if column.element is not None:
        return pa.list_(array_item_type(column.element))
    mapped = scalar_arrow_type(
        column.typname, column.typtype, column.precision, column.scale, column=column.name, label=label,
        contract=contract,
    )  # fmt: skip
    if mapped is None:
        raise ConfigError(
            f"{label}: column '{column.name}' has PostgreSQL type '{column.typname}', which dativo cannot map",
            hint="cast it in a 'query' object (e.g. col::text) or leave it out with 'columns'",
        )
    return mapped


def csv_parse_type(arrow_type: pa.DataType) -> pa.DataType:
    """How Arrow's CSV reader should parse a column from COPY's text.

    Integers, floats and booleans always parse; anything that can hold a value Arrow rejects
    (``infinity`` dates, ``NaN`` numerics, arrays, uuids, bytea) is read as text and converted
    afterwards, so one odd value quarantines one row instead of failing a block.
    """
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type):
        return arrow_type
    return pa.string()


def select_expression(column: PgColumn) -> sql.Composable:
    """SQL for one selected column.

    Arrays travel as a JSON array of each element's exact text (``array_to_json(col::text[])``):
    quoting and nulls survive, numerics keep every digit, jsonb elements keep PostgreSQL's text,
    bytea elements their hex form, and a multi-dimensional array shows as nested arrays.
    """
    ident = sql.Identifier(column.name)
    if column.element in _OUTPUT_DIFFERS_FROM_TEXT_CAST:
        # Their cast to text is not their printed form (char(n) drops its padding, inet adds /32);
        # array_to_json already prints them as JSON strings of that form.
        return sql.SQL("array_to_json({})::text").format(ident)
    if column.element is not None:
        return sql.SQL("array_to_json({}::text[])::text").format(ident)
    return ident


_OUTPUT_DIFFERS_FROM_TEXT_CAST = frozenset({"bpchar", "inet", "cidr"})


# ----------------------------------------------------------------------------- error mapping

# Errors that carry a SQLSTATE are classified by it (the class is its first two characters).
# Classes whose errors may pass with time: retried.
_TRANSIENT_CLASSES = {
    "08": "connection failure",
    "40": "transaction rolled back (serialization failure or deadlock)",
    "53": "insufficient resources",
    "57": "operator intervention or cancel (statement timeout, shutdown)",
    "58": "system error",
}
_TRANSIENT_STATES = {
    "55P03": "lock not available",
    "72000": "snapshot too old",
}
# Classes that name a problem with the object's configuration (its table, columns or query).
_CONFIG_CLASSES = {
    "42": "syntax error or undefined object",
    "25": "invalid transaction state",
    "0A": "feature not supported",
    "3F": "invalid schema name",
    "3D": "invalid database name",
    "54": "program limit exceeded",
}
# Connection-level failures reported by libpq carry no SQLSTATE: classified by their message
# (lower-cased), in this order. Anything else without a SQLSTATE is unclassified (permanent).
_AUTH_MARKERS = (
    "password authentication failed", "no pg_hba.conf entry", "authentication failed", 'role "',
    "no password supplied", "permission denied",
)  # fmt: skip
_CONFIG_MARKERS = (
    "does not exist", "name or service not known", "nodename nor servname", "invalid sslmode",
    "server does not support ssl", "root certificate", "certificate verify failed", "invalid connection option",
    "invalid port", "invalid integer value",
)  # fmt: skip
_TRANSIENT_MARKERS = (
    "could not connect", "connection refused", "timeout expired", "timed out", "server closed the connection",
    "terminating connection", "could not receive data", "could not send data", "ssl syscall error",
    "ssl connection has been closed", "eof detected", "connection already closed", "no connection to the server",
    "network is unreachable", "no route to host", "temporary failure in name resolution", "connection reset",
    "broken pipe", "the database system is", "too many clients", "too many connections", "lost synchronization",
    # psycopg2 when the connection breaks during COPY: libpq has no error message to give
    "no message from the libpq",
)  # fmt: skip


# psycopg2 raises one class per SQLSTATE; the class tells the state when ``pgcode`` is unset
# (an error raised by the client library rather than received from the server).
_SQLSTATE_OF_CLASS: dict[type, str] = {
    cls: code for code, cls in getattr(psycopg2.extensions, "sqlstate_errors", {}).items()
} or {cls: code for code, cls in getattr(psycopg2._psycopg, "sqlstate_errors", {}).items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a psycopg2 (or pipe) error to dativo's taxonomy (message redacted, no DSN).

    The rule, in order:

    * SQLSTATE class 08 (connection), 53 (insufficient resources), 57 (operator intervention,
      cancel, statement timeout), 40 (serialization failure, deadlock), 58 (system I/O), and
      55P03 (lock not available), 72000 (snapshot too old): EXT001, transient.
    * class 28 (invalid authorization) and 42501 (insufficient privilege): AUTH001.
    * 25006 (a write in a READ ONLY transaction): CFG001, the query modifies data.
    * class 42 (syntax, undefined table/column/function), 25, 0A, 3F, 3D, 54: CFG001.
    * class 22 (data exception): QUAL001, naming the column when the server does.
    * class XX (internal error, corruption) and any other SQLSTATE: EXT001, permanent.
    * no SQLSTATE (libpq's connection-level errors): by message; authentication → AUTH001, a
      missing database, unknown host or TLS setting → CFG001, a refused, dropped or timed-out
      connection → EXT001 transient.
    * anything else is unclassified: permanent, with the driver's message (redacted).
    """
    message = _first_line(exc)
    if isinstance(exc, OSError):
        # The COPY pipe: only broken when the consumer went away or the server stopped mid-stream.
        return ExtractError(f"{label}: I/O error while streaming: {message}")
    code = getattr(exc, "pgcode", None) or _SQLSTATE_OF_CLASS.get(type(exc))
    if isinstance(code, str) and len(code) == 5:
        return _classify_sqlstate(exc, code, message, label)
    if isinstance(exc, (psycopg2.DatabaseError, psycopg2.InterfaceError)):
        lowered = message.lower()
        if any(m in lowered for m in _AUTH_MARKERS):
            return AuthError(f"{label}: authentication failed: {message}")
        if any(m in lowered for m in _CONFIG_MARKERS):
            return ConfigError(f"{label}: cannot connect: {message}")
        if any(m in lowered for m in _TRANSIENT_MARKERS):
            return ExtractError(f"{label}: connection failed: {message}")
    return unclassified("PostgreSQL", f"{type(exc).__name__}: {message}", label)


def _classify_sqlstate(exc: BaseException, code: str, message: str, label: str) -> DativoError:
    klass = code[:2]
    shown = f"{message} (SQLSTATE {code})"
    if code in _TRANSIENT_STATES:
        return ExtractError(f"{label}: {_TRANSIENT_STATES[code]}: {shown}")
    if klass in _TRANSIENT_CLASSES:
        return ExtractError(f"{label}: {_TRANSIENT_CLASSES[klass]}: {shown}")
    if klass == "28" or code == "42501":
        return AuthError(f"{label}: permission denied: {shown}")
    if code == "25006":
        return modifies_data(label, shown)
    if klass in _CONFIG_CLASSES:
        return ConfigError(f"{label}: {_CONFIG_CLASSES[klass]}: {shown}")
    if klass == "22":
        diag = getattr(exc, "diag", None)
        column = getattr(diag, "column_name", None)
        where = f"column '{column}': " if column else ""
        return QualityError(
            f"{label}: {where}the server could not produce a value: {shown}; nothing was committed",
            hint="fix or exclude the value at the source, or convert it in a 'query' object",
        )
    if klass == "XX":
        return PermanentExtractError(f"{label}: internal error of the server (not retried): {shown}")
    return unclassified("PostgreSQL", shown, label)


# ----------------------------------------------------------------------------- source


def _result_typmod(description: Any) -> int:
    """The typmod of a numeric result column, rebuilt from what psycopg2 decoded of it.

    psycopg2 splits the typmod into ``precision = (typmod - 4) >> 16`` and ``scale = (typmod - 4)
    & 0xffff`` (65535 each when unconstrained); :func:`numeric_typmod` decodes it properly.
    """
    precision, scale = description.precision, description.scale
    if precision is None or scale is None or (precision, scale) == (0xFFFF, 0xFFFF):
        return -1
    return ((precision << 16) | scale) + 4


class PostgresSource(SqlSource[PgColumn]):
    """Tables, views and named queries of one PostgreSQL database."""

    type = "postgres"
    connection_model = PostgresConnection
    local_path_fields = frozenset({"sslrootcert"})
    driver_error = psycopg2.Error
    list_objects_sql = (
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
    )

    @property
    def _settings(self) -> PostgresConnection:
        assert isinstance(self.connection, PostgresConnection)
        return self.connection

    def connect(self) -> psycopg2.extensions.connection:
        """A new connection (one per read: objects of a job are read in parallel threads)."""
        s = self._settings
        try:
            connection = psycopg2.connect(
                host=s.host,
                port=s.port,
                dbname=s.database,
                user=s.user,
                password=self.credentials.get("password") or None,
                sslmode=s.sslmode,
                sslrootcert=s.sslrootcert,
                connect_timeout=s.connect_timeout_s,
                application_name=s.application_name,
                # The server converts text to UTF-8 (a SQL_ASCII database passes its bytes as
                # they are; those are checked row by row).
                client_encoding="UTF8",
            )
        except psycopg2.Error as exc:
            raise classify(exc, self._label()) from None
        # Every transaction dativo opens only reads: discovery of a query (``LIMIT 0``, which
        # still runs a data-modifying CTE) included. psycopg2 sends this with each BEGIN.
        connection.set_session(readonly=True)
        return connection

    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a psycopg2 error (see :func:`classify`)."""
        return classify(exc, label)

    def arrow_type(self, column: PgColumn, label: str, *, contract: bool = False) -> pa.DataType:
        """Arrow type of a column (see :func:`column_arrow_type`)."""
        return column_arrow_type(column, label, contract=contract)

    # ------------------------------------------------------------------ discovery

    def fetch_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[PgColumn]:
        """Columns of the table or view (from pg_catalog) or of the query (from its result metadata)."""
        if options.table is not None:
            return self._table_columns(cursor, options, obj)
        return self._query_columns(cursor, options, obj)

    def _table_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[PgColumn]:
        assert options.table is not None
        schema, table = parse_table_name(options.table)
        ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        cursor.execute("SELECT to_regclass(%s)::oid", (ident.as_string(cursor.connection),))
        row = cursor.fetchone()
        if row is None or row[0] is None:
            raise ConfigError(f"{obj.label}: table or view {options.table!r} does not exist in {self._label()}")
        cursor.execute(
            """
            SELECT a.attname, COALESCE(bt.typname, t.typname), COALESCE(bt.typtype, t.typtype),
                   CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                   a.attnotnull, et.typname
            FROM pg_attribute a
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
            LEFT JOIN pg_type et ON et.oid = COALESCE(bt.typelem, t.typelem)
                 AND COALESCE(bt.typcategory, t.typcategory) = 'A'
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (row[0],),
        )
        columns = []
        for name, typname, typtype, typmod, not_null, element in cursor.fetchall():
            precision, scale = numeric_typmod(typmod) if typname == "numeric" else (None, None)
            columns.append(PgColumn(name, typname, typtype, precision, scale, element, bool(not_null)))
        return columns

    def _query_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[PgColumn]:
        assert options.query is not None
        query = sql.SQL(query_body(options.query))
        # The connection is READ ONLY (see connect): a query that writes fails here with 25006.
        cursor.execute(sql.SQL("SELECT * FROM ({}) AS dativo_q LIMIT 0").format(query))
        description = cursor.description
        oids = tuple({d.type_code for d in description})
        cursor.execute(
            "SELECT t.oid, t.typname, t.typtype, et.typname FROM pg_type t "
            "LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' WHERE t.oid IN %s",
            (oids,),
        )
        types = {oid: (name, kind, element) for oid, name, kind, element in cursor.fetchall()}
        columns = []
        for d in description:
            typname, typtype, element = types[d.type_code]
            precision, scale = numeric_typmod(_result_typmod(d)) if typname == "numeric" else (None, None)
            columns.append(PgColumn(d.name, typname, typtype, precision, scale, element))
        return columns

    # ------------------------------------------------------------------ read

    def build_copy(self, connection: Any, obj: ObjectPlan, columns: list[PgColumn], request: ReadRequest) -> str:
        """The COPY statement for one read, with every identifier quoted and values as literals."""
        options = options_for(obj)
        if options.table is not None:
            schema, table = parse_table_name(options.table)
            source: sql.Composable = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        else:
            assert options.query is not None
            source = sql.SQL("({}) AS dativo_q").format(sql.SQL(query_body(options.query)))
        select = sql.SQL(", ").join(select_expression(c) for c in columns)
        parts: list[sql.Composable] = [sql.SQL("SELECT {} FROM {}").format(select, source)]
        predicate = incremental_predicate(obj, request.cursor)
        if predicate.active:
            assert predicate.column is not None
            parts.append(
                sql.SQL(" WHERE {} " + predicate.operator + " {}").format(
                    sql.Identifier(predicate.column), sql.Literal(predicate.value)
                )
            )
        if request.limit is not None and obj.cursor_field:
            parts.append(
                sql.SQL(" ORDER BY {} LIMIT {}").format(sql.Identifier(obj.cursor_field), sql.Literal(request.limit))
            )
        query = sql.Composed(parts)
        copy = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv)").format(query)
        return copy.as_string(connection)

    def read(self, request: ReadRequest) -> Extraction:
        """Stream the object past the cursor from one consistent snapshot."""
        obj = request.obj
        stats = SourceStats()
        connection = self.connect()
        try:
            connection.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with connection.cursor() as cursor:
                # Session settings make COPY's text unambiguous whatever the server's defaults:
                # UTC offsets, ISO dates, PostgreSQL's interval text, floats that round-trip,
                # bytea as hex.
                cursor.execute(
                    "SET TIME ZONE 'UTC'; SET datestyle TO 'ISO, YMD'; SET IntervalStyle TO 'postgres'; "
                    "SET extra_float_digits TO 3; SET bytea_output TO 'hex'; SET statement_timeout TO %s",
                    (self._settings.statement_timeout_s * 1000,),
                )
            columns = self._selected(obj, self._discover(connection, obj))
            copy = self.build_copy(connection, obj, columns, request)
            unique = self._keys_unique(connection, obj)
            contract = obj.contract is not None
            schema = pa.schema([pa.field(c.name, column_arrow_type(c, obj.label, contract=contract)) for c in columns])
            # Any other server encoding is converted to UTF-8 by the server. A SQL_ASCII database
            # holds bytes in no particular encoding, and the server refuses the whole COPY at the
            # first one that is not UTF-8; with a SQL_ASCII client encoding it sends them as they
            # are, and dativo checks the text row by row (a bad row is quarantined, naming the column).
            trusted_utf8 = connection.info.parameter_status("server_encoding") != "SQL_ASCII"
            if not trusted_utf8:
                with connection.cursor() as cursor:
                    cursor.execute("SET client_encoding TO 'SQL_ASCII'")
        except psycopg2.Error as exc:
            connection.close()
            raise classify(exc, obj.label) from None
        except UnicodeError as exc:
            connection.close()
            raise undecodable_name(exc, obj.label) from None
        except BaseException:
            connection.close()
            raise

        def batches() -> Iterator[pa.RecordBatch]:
            yield from _stream_copy(connection, copy, columns, schema, stats, obj.label, check_utf8=trusted_utf8)

        def close() -> None:
            with contextlib.suppress(psycopg2.Error):
                connection.rollback()
            connection.close()

        return Extraction(
            schema, guard_cursor_column(batches(), obj, schema), request, stats, on_close=close, unique_keys=unique
        )

    def _keys_unique(self, connection: Any, obj: ObjectPlan) -> bool:
        """True if a unique index of the table covers the object's primary key columns."""
        options = options_for(obj)
        if options.table is None or not obj.primary_key:
            return False
        schema, table = parse_table_name(options.table)
        ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT array_agg(a.attname::text)
                FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
                GROUP BY i.indexrelid
                """,
                (ident.as_string(connection),),
            )
            keys = set(obj.primary_key)
            return any(set(row[0]) <= keys for row in cursor.fetchall())

    def close(self) -> None:
        """Nothing is held between reads."""


PIPE_BYTES = 1 << 20
"""Capacity requested for the COPY pipe (Linux; elsewhere the default pipe size is used)."""
BLOCK_BYTES = 1 << 20
"""CSV bytes Arrow parses at a time (one batch); a longer row makes its block longer."""


class _WholeRowReader:
    """The read end of the COPY pipe as Arrow sees it, counting the bytes that pass.

    Arrow's streaming CSV reader carries the unfinished row at the end of a block over to the
    next one, and fails when that row does not end in the next block either (a text, jsonb or
    bytea value larger than a block). Every block handed to it here holds the end of at least
    one row: a read from the pipe in which no row ends (all of it inside one long row) is joined
    with the following reads until one does. A row ends at a newline outside double quotes
    (COPY's CSV quotes a value holding a newline and doubles its quotes); quotes are counted only
    in a read that holds any, and a read is handed over as it is, without copying.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.bytes_read = 0
        self._in_quotes = False  # the bytes read so far end inside a quoted value

    def read(self, size: int = -1) -> bytes:
        """About ``size`` bytes; more when a row is longer than that (Arrow accepts the block)."""
        if size < 0:
            data: bytes = self._raw.readall()
            self.bytes_read += len(data)
            return data
        parts: list[bytes] = []
        while True:
            chunk: bytes = self._raw.read(size)
            self.bytes_read += len(chunk)
            if not chunk:  # end of the stream
                return b"".join(parts)
            row_ends, self._in_quotes = _row_end_in(chunk, self._in_quotes)
            if row_ends:
                return b"".join([*parts, chunk]) if parts else chunk
            parts.append(chunk)  # no row ends here: the row goes on

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """A pipe cannot seek."""
        return False

    def tell(self) -> int:
        """Bytes read so far."""
        return self.bytes_read

    @property
    def closed(self) -> bool:
        """Whether the pipe end is closed."""
        return bool(self._raw.closed)

    def close(self) -> None:
        """Close the pipe end (the COPY thread then sees a broken pipe and stops)."""
        self._raw.close()


def _row_end_in(chunk: bytes, in_quotes: bool) -> tuple[bool, bool]:
    """Whether a row ends in ``chunk`` (which starts inside quotes or not), and whether it ends inside quotes."""
    if b'"' not in chunk:  # the common case: one memchr each, no counting
        return (not in_quotes and b"\n" in chunk), in_quotes
    total = chunk.count(b'"')
    stop, after = len(chunk), 0
    while True:
        newline = chunk.rfind(b"\n", 0, stop)
        if newline < 0:
            break
        after += chunk.count(b'"', newline, stop)
        if not (in_quotes ^ bool((total - after) & 1)):  # an even count of quotes before it: a row end
            return True, in_quotes ^ bool(total & 1)
        stop = newline
    return False, in_quotes ^ bool(total & 1)


def _stream_copy(
    connection: Any,
    copy: str,
    columns: list[PgColumn],
    schema: pa.Schema,
    stats: SourceStats,
    label: str,
    *,
    check_utf8: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Run COPY in a thread writing into a pipe; parse the other end with Arrow.

    Args:
        check_utf8: Let Arrow's parser check text (the server guarantees UTF-8). When False
            (a SQL_ASCII database), text columns are checked after parsing and a row with bytes
            that are not UTF-8 is marked for quarantine, naming the column.
    """
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(ImportError, AttributeError, OSError):
        import fcntl

        # A larger pipe means fewer context switches between the COPY thread and the parser.
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    failure: list[BaseException] = []

    def pump() -> None:
        # psycopg2 calls sink.write once per row: handing it the buffered file itself keeps every
        # call in C (a Python wrapper here costs more CPU than parsing the rows).
        sink = os.fdopen(write_fd, "wb", buffering=1 << 20)
        try:
            with connection.cursor() as cursor:
                cursor.copy_expert(copy, sink)
        except BaseException as exc:  # surfaced to the consumer after the pipe closes
            failure.append(exc)
        finally:
            try:
                sink.close()
            except OSError as exc:
                if not failure:
                    failure.append(exc)

    thread = threading.Thread(target=pump, name="dativo-pg-copy", daemon=True)
    thread.start()
    names = [c.name for c in columns]
    parse_types = {c.name: csv_parse_type(schema.field(c.name).type) for c in columns}
    convert = pacsv.ConvertOptions(
        column_types=parse_types,
        true_values=["t"],
        false_values=["f"],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],
        check_utf8=check_utf8,
    )
    unchecked = [] if check_utf8 else [name for name, parsed in parse_types.items() if pa.types.is_string(parsed)]
    # Small blocks: the reader parses ahead of the consumer, and what it holds is blocks in flight.
    read_options = pacsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES, use_threads=True)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    converters = {c.name: _post_converter(schema.field(c.name).type, c.name) for c in columns}
    source = _WholeRowReader(os.fdopen(read_fd, "rb", buffering=1 << 20))
    finished = False
    try:
        try:
            reader = pacsv.open_csv(
                source, read_options=read_options, parse_options=parse_options, convert_options=convert
            )
        except pa.ArrowInvalid as exc:
            thread.join()
            if failure:
                raise classify(failure[0], label) from None
            if "Empty CSV file" in str(exc):
                finished = True
                return
            raise _unparsable(exc, label) from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                thread.join(timeout=5)
                if failure:
                    raise classify(failure[0], label) from None
                raise _unparsable(exc, label) from None
            stats.add(pages=1)
            yield _convert_batch(batch, schema, converters, unchecked)
        thread.join()
        if failure:
            # The server stopped mid-stream; the batches already yielded are not committed
            # (the writer commits only after the stream ends), so a retry has no duplicates.
            raise classify(failure[0], label) from None
        finished = True
    finally:
        if not finished and thread.is_alive():
            with contextlib.suppress(psycopg2.Error):
                connection.cancel()
        source.close()
        thread.join(timeout=30)
        stats.add(bytes_read=source.bytes_read, api_calls=1)


def _unparsable(exc: pa.ArrowInvalid, label: str) -> DativoError:
    """The error for COPY output Arrow cannot parse although the server finished sending it.

    A retry would read the same rows, so it is permanent.
    """
    text = str(exc).splitlines()[0]
    return PermanentExtractError(
        f"{label}: COPY output could not be parsed (not retried; nothing was committed): {text}",
        hint="leave the column out with 'columns', or select it in another form in a 'query' object",
    )


Converter = Callable[[pa.Array], tuple[pa.Array, "list[str | None] | None"]]
"""From COPY's text to the column's type: the array, and a reason per row it could not convert
exactly (None when every row converted)."""


def _post_converter(target: pa.DataType, name: str) -> Converter | None:
    """Conversion from COPY text to the target type for columns Arrow's CSV reader left as text."""
    if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_boolean(target):
        return None
    if pa.types.is_string(target):
        return None
    if is_uuid(target):
        return lambda column: (_uuids(column, target), None)
    if pa.types.is_binary(target):
        return lambda column: (_hex_bytes(column), None)
    if pa.types.is_list(target):
        return lambda column: _arrays(column, target, name)
    if pa.types.is_time(target):
        return lambda column: (_times_or_text(column, target), None)
    return lambda column: (best_effort_cast(column, target), None)


def _times_or_text(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Clock times parsed in one vectorised pass, or the text when one does not parse (24:00:00)."""
    try:
        return _element_parser(target)(column)
    except _PARSE_ERRORS:
        return column  # the enforcer converts value by value and quarantines the odd row


def _uuids(column: pa.Array, target: pa.DataType) -> pa.Array:
    values = [None if v is None else bytes.fromhex(v.replace("-", "")) for v in column.to_pylist()]
    return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))


def _hex_bytes(column: pa.Array) -> pa.Array:
    # bytea_output is 'hex' for the session: every value is \x followed by two digits per byte.
    return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], pa.binary())


def _element_parser(item: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    """Parse a flat array of element texts into ``item``; raises when any element does not fit."""
    if pa.types.is_string(item):
        return lambda texts: texts
    if is_uuid(item):
        return lambda texts: _uuids(texts, item)
    if pa.types.is_binary(item):
        return _hex_bytes
    if pa.types.is_time(item):
        # Arrow has no text-to-time cast; a timestamp on the epoch's date has the same clock time.
        return lambda texts: pc.cast(
            pc.cast(pc.binary_join_element_wise("1970-01-01 ", texts, ""), pa.timestamp("us")), item
        )
    return lambda texts: pc.cast(texts, item)


_PARSE_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)


def _arrays(column: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, list[str | None] | None]:
    """JSON texts of one-dimensional arrays (``array_to_json(col::text[])``) to ``list<item>``.

    Every element is converted exactly from PostgreSQL's text for it. A row whose array cannot
    be held exactly (more than one dimension; an element such as ``infinity`` that the element
    type cannot hold) gets null and a reason naming the column and the element; the other rows
    of the batch are unaffected.
    """
    texts = column.to_pylist()
    rows: list[list[Any] | None] = [None if text is None else json.loads(text) for text in texts]
    reasons: list[str | None] | None = None
    try:
        as_text = pa.array(rows, pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Some row is multi-dimensional (nested lists): mark those rows, keep the others.
        reasons = [None] * len(rows)
        for index, row in enumerate(rows):
            if row is not None and any(isinstance(item, list) for item in row):
                reasons[index] = (
                    f"{name}: {_shown(texts[index])} is a {_dimensions(row)}-dimensional array; "
                    "only one-dimensional arrays can be stored"
                )
                rows[index] = None
        as_text = pa.array(rows, pa.list_(pa.string()))
    parse = _element_parser(target.value_type)
    converted, failed = _convert_lists(as_text, parse)
    for index, (position, element) in failed.items():
        if reasons is None:
            reasons = [None] * len(rows)
        reasons[index] = (
            f"{name}: element {position} ({_shown(element)}) cannot be held by {type_label(target.value_type)}"
        )
    return converted, reasons


def _convert_lists(
    lists: pa.ListArray, parse: Callable[[pa.Array], pa.Array]
) -> tuple[pa.Array, dict[int, tuple[int, str]]]:
    """Convert every list's elements; rows with an element that does not parse become null.

    The whole array is converted at once; only when that fails is it split in halves, so a batch
    with one odd row costs a few extra conversions, not one per row.

    Returns:
        The converted lists and, per failed row (index), the 1-based position and text of the
        first element that did not parse.
    """
    try:
        values = parse(lists.flatten())
        return _rebuild(lists, values), {}
    except _PARSE_ERRORS:
        pass
    if len(lists) == 1:
        elements = lists[0].values
        for position in range(len(elements)):
            try:
                parse(elements.slice(position, 1))
            except _PARSE_ERRORS:
                return _rebuild(lists, parse(elements.slice(0, 0)), null=True), {
                    0: (position + 1, str(elements[position].as_py()))
                }
        return _rebuild(lists, parse(elements.slice(0, 0)), null=True), {0: (0, "?")}
    half = len(lists) // 2
    left, left_failed = _convert_lists(lists.slice(0, half), parse)
    right, right_failed = _convert_lists(lists.slice(half), parse)
    failed = {**left_failed, **{half + index: found for index, found in right_failed.items()}}
    return pa.concat_arrays([left, right]), failed


def _rebuild(lists: pa.ListArray, values: pa.Array, *, null: bool = False) -> pa.Array:
    """A list array with ``lists``' shape (offsets, nulls) over the converted ``values``."""
    list_type = pa.list_(values.type)
    if null:
        return pa.nulls(len(lists), list_type)
    offsets = lists.offsets  # of this slice: they start where its first list starts
    if offsets[0].as_py() != 0:
        offsets = pc.subtract(offsets, offsets[0])
    return pa.ListArray.from_arrays(offsets, values, type=list_type, mask=lists.is_null())


def _dimensions(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = next((item for item in value if item is not None), None)
    return depth


def _shown(text: str | None) -> str:
    shown = "null" if text is None else text
    return repr(shown if len(shown) <= 40 else shown[:37] + "...")


def _convert_batch(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    converters: dict[str, Converter | None],
    unchecked: list[str] | None = None,
) -> pa.RecordBatch:
    arrays = []
    reasons: list[list[str | None] | None] = []
    for field in schema:
        column = batch.column(field.name)
        if unchecked and field.name in unchecked:
            column, bad = checked_utf8(column, field.name)
            reasons.append(bad)
        convert = converters[field.name]
        if convert is not None:
            column, bad = convert(column)
            reasons.append(bad)
        arrays.append(column)
    return with_source_reasons(arrays, schema.names, merge_reasons(batch.num_rows, *reasons))
