""":class:`PostgresSource`: connection, discovery from the catalog, and one consistent read per object.

Discovery reads a table's or view's columns from ``pg_catalog`` and a query's from its result
metadata; a read builds the COPY statement (identifiers quoted, the cursor as a literal), sets the
session so COPY's text is unambiguous, and streams it through
:func:`~dativo_dagster.sources.postgres.copy.stream_copy` inside one ``REPEATABLE READ READ ONLY``
transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import psycopg2
import psycopg2.extensions
import pyarrow as pa
import structlog
from psycopg2 import sql
from pydantic import Field

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError
from dativo_dagster.sources.base import Extraction, ReadRequest, SourceStats
from dativo_dagster.sources.postgres.copy import stream_copy
from dativo_dagster.sources.postgres.errors import classify
from dativo_dagster.sources.postgres.types import (
    PgColumn,
    column_arrow_type,
    numeric_typmod,
    result_typmod,
    select_expression,
)
from dativo_dagster.sources.sql_common import (
    SqlConnection,
    SqlObjectOptions,
    SqlSource,
    guard_cursor_column,
    options_for,
    parse_table_name,
    query_body,
    read_predicates,
    undecodable_name,
)

log = structlog.get_logger("dativo.sources.postgres")


class PostgresConnection(SqlConnection):
    """How to reach the server; the password comes from ``credentials.password``."""

    port: int = Field(default=5432, ge=1, le=65535)
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    application_name: str = "dativo"


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
            precision, scale = numeric_typmod(result_typmod(d)) if typname == "numeric" else (None, None)
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
        for number, predicate in enumerate(read_predicates(obj, request, self.cursor_arrow_type(obj, columns))):
            assert predicate.column is not None
            parts.append(
                sql.SQL((" AND " if number else " WHERE ") + "{} " + predicate.operator + " {}").format(
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
            yield from stream_copy(connection, copy, columns, schema, stats, obj.label, check_utf8=trusted_utf8)

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
