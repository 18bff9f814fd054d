""":class:`MySQLSource`: connection, discovery, and one consistent read per object on either path.

Metadata (columns, unique indexes) always comes from pymysql. A read builds the SELECT
(identifiers quoted, the cursor bound as a parameter) and streams it inside ``START TRANSACTION
WITH CONSISTENT SNAPSHOT, READ ONLY``, through connectorx
(:mod:`~dativo_dagster.sources.mysql.connectorx`) or an unbuffered pymysql cursor
(:mod:`~dativo_dagster.sources.mysql.pymysql_rows`).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import pyarrow as pa
import pymysql
import pymysql.converters
import pymysql.cursors
import structlog
from pydantic import Field

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError
from dativo_dagster.sources.base import Extraction, ReadRequest, SourceStats
from dativo_dagster.sources.mysql.connectorx import connectorx_batches, connectorx_url
from dativo_dagster.sources.mysql.errors import classify
from dativo_dagster.sources.mysql.pymysql_rows import pymysql_batches
from dativo_dagster.sources.mysql.types import (
    MyColumn,
    column_arrow_type,
    column_from_field,
    quote_identifier,
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

log = structlog.get_logger("dativo.sources.mysql")


class MySQLConnection(SqlConnection):
    """How to reach the server; the password comes from ``credentials.password``."""

    port: int = Field(default=3306, ge=1, le=65535)
    ssl_ca: str | None = Field(default=None, description="CA bundle; enables TLS")
    ssl_verify_identity: bool = False
    read_timeout_s: int = Field(default=600, ge=1, description="socket read timeout while streaming")
    charset: Literal["utf8mb4"] = Field(
        default="utf8mb4",
        description="session character set; only utf8mb4 holds every character (with another the server "
        "replaces what it cannot convert by '?')",
    )
    engine: Literal["connectorx", "pymysql"] = Field(
        default="connectorx", description="read path (connectorx is several times faster; pymysql supports TLS)"
    )


# pymysql's conversion table maps Python types to encoders (for parameters) and field types to
# decoders; keeping only the encoders leaves every value as the server's text.
_ENCODERS_ONLY: dict[Any, Any] = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}


class MySQLSource(SqlSource[MyColumn]):
    """Tables, views and named queries of one MySQL or MariaDB database."""

    type = "mysql"
    connection_model = MySQLConnection
    local_path_fields = frozenset({"ssl_ca"})
    driver_error = pymysql.err.MySQLError
    list_objects_sql = (
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY 1, 2"
    )

    @property
    def _settings(self) -> MySQLConnection:
        assert isinstance(self.connection, MySQLConnection)
        return self.connection

    def connect(self) -> pymysql.connections.Connection:
        """A new connection without value converters (text in, Arrow casts)."""
        s = self._settings
        try:
            return pymysql.connect(
                host=s.host,
                port=s.port,
                user=s.user,
                password=self.credentials.get("password") or "",
                database=s.database,
                charset=s.charset,
                connect_timeout=s.connect_timeout_s,
                read_timeout=s.read_timeout_s,
                ssl_ca=s.ssl_ca,
                ssl_verify_identity=s.ssl_verify_identity if s.ssl_ca else None,
                conv=_ENCODERS_ONLY,
                autocommit=False,
                init_command="SET time_zone = '+00:00'",
            )
        except pymysql.err.MySQLError as exc:
            raise classify(exc, self._label()) from None

    def _source_sql(self, options: SqlObjectOptions) -> str:
        if options.table is not None:
            schema, table = parse_table_name(options.table)
            return f"{quote_identifier(schema)}.{quote_identifier(table)}" if schema else quote_identifier(table)
        assert options.query is not None
        return f"({query_body(options.query)}) AS dativo_q"

    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a pymysql error (see :func:`classify`)."""
        return classify(exc, label)

    def arrow_type(self, column: MyColumn, label: str, *, contract: bool = False) -> pa.DataType:
        """Arrow type of a column (see :func:`column_arrow_type`)."""
        return column_arrow_type(column, label, contract=contract)

    def fetch_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[MyColumn]:
        """Columns of the table or view (information_schema) or of the query (result metadata)."""
        if options.table is None:
            return self._query_columns(cursor, options)
        schema, table = parse_table_name(options.table)
        cursor.execute(
            "SELECT column_name, data_type, column_type, numeric_precision, numeric_scale, is_nullable "
            "FROM information_schema.columns WHERE table_schema = COALESCE(%s, DATABASE()) "
            "AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        rows = cursor.fetchall()
        if not rows:
            raise ConfigError(f"{obj.label}: table or view {options.table!r} does not exist in {self._label()}")
        return [
            MyColumn(
                str(name),
                str(data_type),
                str(column_type),
                int(precision) if precision is not None else None,
                int(scale) if scale is not None else None,
                str(nullable) == "NO",
            )
            for name, data_type, column_type, precision, scale, nullable in rows
        ]

    def _query_columns(self, cursor: Any, options: SqlObjectOptions) -> list[MyColumn]:
        """Column types of a query, from the result metadata of ``LIMIT 0`` (no privileges needed).

        It runs in a READ ONLY transaction: a query that writes fails here (1792), not later.
        """
        cursor.execute("START TRANSACTION READ ONLY")
        try:
            cursor.execute(f"SELECT * FROM {self._source_sql(options)} LIMIT 0")  # noqa: S608 - validated, quoted
            return [column_from_field(field) for field in cursor._result.fields]
        finally:
            cursor.execute("ROLLBACK")

    def build_select(
        self, obj: ObjectPlan, columns: list[MyColumn], request: ReadRequest, *, for_connectorx: bool = False
    ) -> tuple[str, tuple[Any, ...]]:
        """The SELECT for one read: identifiers quoted, the cursor bound as a parameter."""
        options = options_for(obj)
        selected = ", ".join(select_expression(c, for_connectorx=for_connectorx) for c in columns)
        text = f"SELECT {selected} FROM {self._source_sql(options)}"  # noqa: S608 - identifiers quoted
        params: tuple[Any, ...] = ()
        for number, predicate in enumerate(read_predicates(obj, request, self.cursor_arrow_type(obj, columns))):
            assert predicate.column is not None
            value = predicate.value
            if hasattr(value, "tzinfo") and value.tzinfo is not None:
                value = value.replace(tzinfo=None)  # the session time zone is UTC
            text += f" {'AND' if number else 'WHERE'} {quote_identifier(predicate.column)} {predicate.operator} %s"
            params = (*params, value)
        if request.limit is not None and obj.cursor_field:
            text += f" ORDER BY {quote_identifier(obj.cursor_field)} LIMIT {int(request.limit)}"
        return text, params

    def _session_statements(self, connection: Any) -> list[str]:
        timeout = self._settings.statement_timeout_s
        statements = ["SET time_zone = '+00:00'"]
        if timeout:
            if "MariaDB" in connection.get_server_info():
                statements.append(f"SET SESSION max_statement_time = {int(timeout)}")
            else:
                statements.append(f"SET SESSION max_execution_time = {int(timeout) * 1000}")
        return statements

    def _use_connectorx(self) -> bool:
        if self._settings.engine != "connectorx" or self._settings.ssl_ca:
            return False
        try:
            import connectorx  # noqa: F401
        except ImportError:
            return False
        return True

    def read(self, request: ReadRequest) -> Extraction:
        """Stream the object past the cursor from one consistent snapshot."""
        obj = request.obj
        options = options_for(obj)
        stats = SourceStats()
        fast = self._use_connectorx()
        connection = self.connect()
        cursor: Any = None
        query = ""
        try:
            columns = self._selected(obj, self._discover(connection, obj))
            contract = obj.contract is not None
            schema = pa.schema([pa.field(c.name, column_arrow_type(c, obj.label, contract=contract)) for c in columns])
            select, params = self.build_select(obj, columns, request, for_connectorx=fast)
            unique = self._keys_unique(connection, obj)
            session = self._session_statements(connection)
            snapshot = [
                "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
            ]
            if fast:
                with connection.cursor() as render:
                    query = render.mogrify(select, params or None)
                connection.close()
            else:
                with connection.cursor() as setup:
                    for statement in session[1:]:
                        setup.execute(statement)
                    for statement in snapshot:
                        setup.execute(statement)
                # Rows arrive as the server's bytes: Arrow checks text is UTF-8 column by column,
                # so one undecodable value quarantines its row instead of failing the read.
                connection.use_unicode = False
                cursor = connection.cursor(pymysql.cursors.SSCursor)
                cursor.execute(select, params)
            stats.add(api_calls=1)
        except pymysql.err.MySQLError as exc:
            connection.close()
            raise classify(exc, obj.label) from None
        except UnicodeError as exc:
            connection.close()
            raise undecodable_name(exc, obj.label) from None
        except BaseException:
            connection.close()
            raise
        if fast:
            url = connectorx_url(self._settings, self.credentials.get("password") or "")
            return Extraction(
                schema,
                guard_cursor_column(
                    connectorx_batches(url, query, session + snapshot, schema, options.batch_rows, stats, obj.label),
                    obj,
                    schema,
                ),
                request,
                stats,
                unique_keys=unique,
            )
        batches = pymysql_batches(cursor, schema, options.batch_rows, stats, obj.label)

        def close() -> None:
            # Closing an unbuffered cursor drains the rest of the result; closing the socket
            # first makes abandoning a stream (limit reached, error) instant.
            with contextlib.suppress(Exception):
                connection.close()

        return Extraction(
            schema, guard_cursor_column(batches, obj, schema), request, stats, on_close=close, unique_keys=unique
        )

    def _keys_unique(self, connection: Any, obj: ObjectPlan) -> bool:
        """True if a unique index of the table covers the object's primary key columns."""
        options = options_for(obj)
        if options.table is None or not obj.primary_key:
            return False
        schema, table = parse_table_name(options.table)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT index_name, column_name FROM information_schema.statistics "
                "WHERE table_schema = COALESCE(%s, DATABASE()) AND table_name = %s AND non_unique = 0",
                (schema, table),
            )
            indexes: dict[str, set[str]] = {}
            for index_name, column_name in cursor.fetchall():
                indexes.setdefault(str(index_name), set()).add(str(column_name))
        keys = set(obj.primary_key)
        return any(columns <= keys for columns in indexes.values())
