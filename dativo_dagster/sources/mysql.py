"""MySQL and MariaDB, streamed into Arrow batches.

Two read paths, one result:

* **connectorx** (default): a Rust reader that decodes the wire protocol straight into Arrow
  batches; it reads the object with one ``SELECT`` inside ``START TRANSACTION WITH CONSISTENT
  SNAPSHOT, READ ONLY`` (run first on the same connection), so InnoDB serves one snapshot.
  Columns whose values it could reject or round (TIME, decimals beyond ``decimal(38,10)``) are
  selected as text and cast by Arrow, so an odd value quarantines a row.
  Legacy zero dates (``0000-00-00``) stop it: the run fails with QUAL001 and nothing is
  committed; ``engine: pymysql`` reads such a table and quarantines those rows instead.
* **pymysql** (``engine: pymysql``, and whenever TLS options are set): an unbuffered server-side
  cursor inside ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``, opened without value
  converters so the server's text is cast by Arrow column by column.

Metadata (columns, unique indexes) always comes from pymysql.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import pyarrow as pa
import pymysql
import pymysql.converters
import pymysql.cursors
import structlog
from pydantic import Field

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, QualityError
from dativo_dagster.sources.base import Extraction, ReadRequest, SourceStats
from dativo_dagster.sources.sql_common import (
    SqlConnection,
    SqlObjectOptions,
    SqlSource,
    best_effort_cast,
    guard_cursor_column,
    incremental_predicate,
    options_for,
    parse_table_name,
)

log = structlog.get_logger("dativo.sources.mysql")


class MySQLConnection(SqlConnection):
    """How to reach the server; the password comes from ``credentials.password``."""

    port: int = Field(default=3306, ge=1, le=65535)
    ssl_ca: str | None = Field(default=None, description="CA bundle; enables TLS")
    ssl_verify_identity: bool = False
    read_timeout_s: int = Field(default=600, ge=1, description="socket read timeout while streaming")
    charset: str = "utf8mb4"
    engine: Literal["connectorx", "pymysql"] = Field(
        default="connectorx", description="read path (connectorx is several times faster; pymysql supports TLS)"
    )


@dataclass(frozen=True)
class MyColumn:
    """One column as discovered from information_schema."""

    name: str
    data_type: str  # e.g. 'bigint'
    column_type: str  # e.g. 'bigint(20) unsigned', 'tinyint(1)'
    precision: int | None = None
    scale: int | None = None
    not_null: bool = False


_SIGNED_INTS = {"tinyint": pa.int32(), "smallint": pa.int32(), "mediumint": pa.int32(), "int": pa.int32()}
_TEXT = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json"}
_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_TEXT_FALLBACK = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring",
                  "multipolygon", "geometrycollection", "inet4", "inet6", "uuid"}  # fmt: skip


def column_arrow_type(column: MyColumn, label: str) -> pa.DataType:
    """Arrow type of a MySQL/MariaDB column; CFG001 naming the column when it cannot be mapped."""
    data_type = column.data_type.lower()
    column_type = column.column_type.lower()
    unsigned = "unsigned" in column_type
    if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
        return pa.bool_()
    if data_type == "bit":
        return pa.bool_() if column_type in ("bit(1)", "bit") else pa.int64()
    if data_type in _SIGNED_INTS:
        return pa.int64() if unsigned and data_type == "int" else _SIGNED_INTS[data_type]
    if data_type == "bigint":
        return pa.decimal128(20, 0) if unsigned else pa.int64()
    if data_type == "year":
        return pa.int32()
    if data_type == "decimal":
        return pa.decimal128(column.precision or 10, column.scale or 0)
    if data_type == "float":
        return pa.float32()
    if data_type == "double":
        return pa.float64()
    if data_type in _TEXT or data_type in _TEXT_FALLBACK:
        return pa.string()
    if data_type in _BINARY:
        return pa.binary()
    if data_type == "date":
        return pa.date32()
    if data_type == "time":
        return pa.time64("us")
    if data_type == "datetime":
        return pa.timestamp("us")
    if data_type == "timestamp":
        return pa.timestamp("us", tz="UTC")  # the session runs in UTC
    raise ConfigError(
        f"{label}: column '{column.name}' has MySQL type '{column.column_type}', which dativo cannot map",
        hint="cast it in a 'query' object or leave it out with 'columns'",
    )


_FIELD_TYPES = {
    0: "decimal", 246: "decimal", 1: "tinyint", 2: "smallint", 3: "int", 9: "mediumint", 8: "bigint",
    4: "float", 5: "double", 7: "timestamp", 10: "date", 14: "date", 11: "time", 12: "datetime",
    13: "year", 16: "bit", 245: "json", 247: "enum", 248: "set", 15: "varchar", 253: "varchar",
    254: "char", 249: "blob", 250: "blob", 251: "blob", 252: "blob", 255: "geometry", 6: "varchar",
}  # fmt: skip
_BINARY_CHARSET = 63
# pymysql's conversion table maps Python types to encoders (for parameters) and field types to
# decoders; keeping only the encoders leaves every value as the server's text.
_ENCODERS_ONLY: dict[Any, Any] = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}
_UNSIGNED_FLAG = 32


def column_from_field(field: Any) -> MyColumn:
    """Describe a result column (pymysql field metadata) the way information_schema would."""
    data_type = _FIELD_TYPES.get(field.type_code, "varchar")
    unsigned = bool(field.flags & _UNSIGNED_FLAG)
    if data_type in ("varchar", "char", "blob") and field.charsetnr == _BINARY_CHARSET:
        data_type = "varbinary" if data_type != "blob" else "blob"
    elif data_type == "blob":
        data_type = "text"
    column_type = data_type
    precision = scale = None
    if data_type == "tinyint" and field.length == 1:
        column_type = "tinyint(1)"
    elif data_type == "bit":
        column_type = f"bit({field.length})"
    elif data_type == "decimal":
        scale = field.scale
        precision = field.length - (1 if scale else 0) - (0 if unsigned else 1)
    if unsigned:
        column_type += " unsigned"
    return MyColumn(field.name, data_type, column_type, precision, scale)


def quote_identifier(name: str) -> str:
    """Backtick-quote an identifier (embedded backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


# TIME holds durations (negative, over 24 h) that connectorx cannot decode: it travels as text.
_AS_TEXT_FOR_CONNECTORX = {"time"}


def select_expression(column: MyColumn, *, for_connectorx: bool = False) -> str:
    """SQL for one selected column; BIT travels as an integer, not as raw bytes.

    For connectorx, TIME columns and wide decimals travel as text: connectorx aborts the whole read
    on a TIME it cannot represent (a negative duration) and holds decimals as ``decimal(38,10)``,
    which would round a wider scale.
    """
    ident = quote_identifier(column.name)
    data_type = column.data_type.lower()
    if data_type == "bit":
        return f"CAST({ident} AS UNSIGNED) AS {ident}"
    if for_connectorx:
        wide_decimal = data_type == "decimal" and (
            (column.scale or 0) > 10 or (column.precision or 0) - (column.scale or 0) > 28
        )
        if data_type in _AS_TEXT_FOR_CONNECTORX or wide_decimal:
            return f"CAST({ident} AS CHAR) AS {ident}"
    return ident


_AUTH_CODES = {1044, 1045, 1142, 1143, 1227, 1698}  # access denied variants
_CONFIG_CODES = {1046, 1049, 1054, 1064, 1146, 1109}  # no db, unknown db/column, syntax, no table


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a pymysql error to dativo's taxonomy (message redacted)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    message = redact_text(str(text))
    if code in _AUTH_CODES:
        return AuthError(f"{label}: access denied: {message}")
    if code in _CONFIG_CODES:
        return ConfigError(f"{label}: {message}")
    if code in (1969, 3024):  # statement timeout (MariaDB, MySQL)
        return ExtractError(f"{label}: statement timed out: {message}")
    if isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InterfaceError)):
        return ExtractError(f"{label}: connection failed: {message}")
    if isinstance(exc, pymysql.err.ProgrammingError):
        return ConfigError(f"{label}: {message}")
    return ExtractError(f"{label}: {type(exc).__name__}: {message}")


def classify_text(message: str, label: str) -> DativoError:
    """Map a connectorx error message (no error codes cross that boundary) to the taxonomy."""
    text = redact_text(message.strip().splitlines()[0] if message.strip() else "connectorx failed")
    lowered = text.lower()
    if "access denied" in lowered:
        return AuthError(f"{label}: access denied: {text}")
    if "doesn't exist" in lowered or "unknown column" in lowered or "unknown database" in lowered:
        return ConfigError(f"{label}: {text}")
    return ExtractError(f"{label}: read failed: {text}")


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
        return f"({options.query.strip().rstrip(';')}) AS dativo_q"

    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a pymysql error (see :func:`classify`)."""
        return classify(exc, label)

    def arrow_type(self, column: MyColumn, label: str) -> pa.DataType:
        """Arrow type of a column (see :func:`column_arrow_type`)."""
        return column_arrow_type(column, label)

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
        """Column types of a query, from the result metadata of ``LIMIT 0`` (no privileges needed)."""
        cursor.execute(f"SELECT * FROM {self._source_sql(options)} LIMIT 0")  # noqa: S608 - validated, quoted
        return [column_from_field(field) for field in cursor._result.fields]

    def build_select(
        self, obj: ObjectPlan, columns: list[MyColumn], request: ReadRequest, *, for_connectorx: bool = False
    ) -> tuple[str, tuple[Any, ...]]:
        """The SELECT for one read: identifiers quoted, the cursor bound as a parameter."""
        options = options_for(obj)
        selected = ", ".join(select_expression(c, for_connectorx=for_connectorx) for c in columns)
        text = f"SELECT {selected} FROM {self._source_sql(options)}"  # noqa: S608 - identifiers quoted
        params: tuple[Any, ...] = ()
        predicate = incremental_predicate(obj, request.cursor)
        if predicate.active:
            assert predicate.column is not None
            value = predicate.value
            if hasattr(value, "tzinfo") and value.tzinfo is not None:
                value = value.replace(tzinfo=None)  # the session time zone is UTC
            text += f" WHERE {quote_identifier(predicate.column)} {predicate.operator} %s"
            params = (value,)
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
                cursor = connection.cursor(pymysql.cursors.SSCursor)
                cursor.execute(select, params)
            stats.add(api_calls=1)
        except pymysql.err.MySQLError as exc:
            connection.close()
            raise classify(exc, obj.label) from None
        except BaseException:
            connection.close()
            raise
        schema = pa.schema([pa.field(c.name, column_arrow_type(c, obj.label)) for c in columns])
        if fast:
            return Extraction(
                schema,
                guard_cursor_column(
                    self._connectorx_batches(query, session + snapshot, schema, options, stats, obj.label),
                    obj,
                    schema,
                ),
                request,
                stats,
                unique_keys=unique,
            )
        binary = [pa.types.is_binary(f.type) for f in schema]

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                while True:
                    rows = cursor.fetchmany(options.batch_rows)
                    if not rows:
                        break
                    stats.add(pages=1)
                    yield _to_batch(rows, schema, binary)
            except pymysql.err.MySQLError as exc:
                raise classify(exc, obj.label) from None

        def close() -> None:
            # Closing an unbuffered cursor drains the rest of the result; closing the socket
            # first makes abandoning a stream (limit reached, error) instant.
            with contextlib.suppress(Exception):
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

    def _connectorx_url(self) -> str:
        s = self._settings
        password = self.credentials.get("password") or ""
        auth = quote(s.user, safe="") + (":" + quote(password, safe="") if password else "")
        return f"mysql://{auth}@{s.host}:{s.port}/{quote(s.database, safe='')}"

    def _connectorx_batches(
        self,
        query: str,
        session: list[str],
        schema: pa.Schema,
        options: SqlObjectOptions,
        stats: SourceStats,
        label: str,
    ) -> Iterator[pa.RecordBatch]:
        import connectorx

        try:
            reader = connectorx.read_sql(
                self._connectorx_url(),
                query,
                return_type="arrow_stream",
                batch_size=min(options.batch_rows, 65_536),
                pre_execution_query=session,
            )
            for batch in reader:
                stats.add(pages=1)
                yield pa.RecordBatch.from_arrays(
                    [best_effort_cast(batch.column(i), field.type) for i, field in enumerate(schema)],
                    names=schema.names,
                )
        except DativoError:
            raise
        except BaseException as exc:  # connectorx reports server errors as RuntimeError, bugs as panics
            if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                raise
            if type(exc).__name__ == "PanicException" and "Couldn't convert the value" in str(exc):
                raise QualityError(
                    f"{label}: the source holds a value the connectorx reader cannot decode "
                    f"({redact_text(str(exc).splitlines()[0])[-120:]}); nothing was committed",
                    hint="set connection.engine: pymysql for this source; it quarantines such rows",
                ) from None
            raise classify_text(str(exc), label) from None


def _to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema, binary: list[bool]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays = []
    for index, field in enumerate(schema):
        values = columns[index]
        raw = pa.array(values, pa.binary() if binary[index] else pa.string())
        arrays.append(best_effort_cast(raw, field.type))
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)
