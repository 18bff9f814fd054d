"""MySQL and MariaDB, streamed into Arrow batches.

Two read paths, one result:

* **connectorx** (default): a Rust reader that decodes the wire protocol straight into Arrow
  batches; it reads the object with one ``SELECT`` inside ``START TRANSACTION WITH CONSISTENT
  SNAPSHOT, READ ONLY`` (run first on the same connection), so InnoDB serves one snapshot.
  Columns whose values it could reject or round (TIME, decimals it holds in fewer digits) are
  selected as text and cast by Arrow, so an odd value quarantines a row.
  Legacy zero dates (``0000-00-00``) stop it: the run fails with QUAL001 and nothing is
  committed; ``engine: pymysql`` reads such a table and quarantines those rows instead.
* **pymysql** (``engine: pymysql``, and whenever TLS options are set): an unbuffered server-side
  cursor inside ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``, opened without value
  converters and without decoding, so the server's bytes are checked (UTF-8) and cast by Arrow
  column by column; FLOAT and DOUBLE travel as ``CAST(col AS DOUBLE)``, whose text round-trips
  (the server prints a FLOAT with 6 significant digits).

Metadata (columns, unique indexes) always comes from pymysql.
"""

from __future__ import annotations

import contextlib
import re
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


def column_arrow_type(column: MyColumn, label: str, *, contract: bool = False) -> pa.DataType:
    """Arrow type of a MySQL/MariaDB column; CFG001 naming the column when it cannot be mapped.

    Args:
        column: The discovered column.
        label: The object's label, for messages.
        contract: The object has a schema contract (a DECIMAL beyond 38 digits is then read as
            text for the enforcer to convert; without one it is CFG001).
    """
    data_type = column.data_type.lower()
    column_type = column.column_type.lower()
    unsigned = "unsigned" in column_type
    if data_type == "tinyint" and column_type.startswith("tinyint(1)"):
        return pa.bool_()  # values other than 0 and 1 are quarantined, never read as true
    if data_type == "bit":
        width = _bit_width(column_type)
        if width == 1:
            return pa.bool_()
        return pa.int64() if width < 64 else pa.decimal128(20, 0)  # bit(64) exceeds a signed long
    if data_type in _SIGNED_INTS:
        return pa.int64() if unsigned and data_type == "int" else _SIGNED_INTS[data_type]
    if data_type == "bigint":
        return pa.decimal128(20, 0) if unsigned else pa.int64()
    if data_type == "year":
        return pa.int32()
    if data_type == "decimal":
        precision, scale = column.precision or 10, column.scale or 0
        return decimal_type(
            precision, scale, column=column.name, source_type=column.column_type, label=label, contract=contract
        )
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


def _bit_width(column_type: str) -> int:
    """n of ``bit(n)`` (``bit`` alone is ``bit(1)``)."""
    match = re.match(r"bit\((\d+)\)", column_type)
    return int(match.group(1)) if match else 1


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
    elif data_type == "year" and field.length == 2:
        column_type = "year(2)"
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
# connectorx holds a DECIMAL in a 96-bit decimal (28 digits) rescaled to decimal(38,10): a wider
# one fails or panics there, so it travels as text.
_CONNECTORX_DECIMAL_DIGITS = 28
_CONNECTORX_DECIMAL_SCALE = 10


def select_expression(column: MyColumn, *, for_connectorx: bool = False) -> str:
    """SQL for one selected column, chosen so the value arrives exactly.

    * BIT travels as an unsigned integer, not as raw bytes.
    * ``YEAR(2)`` holds 70..99 for 1970..1999 and 00..69 for 2000..2069: it travels as the year.
    * FLOAT and DOUBLE travel as ``CAST(col AS DOUBLE)`` on the text protocol (pymysql): the
      server prints a FLOAT with 6 significant digits, a double's text round-trips. connectorx
      receives the binary value, which is exact.
    * For connectorx, TIME columns and decimals wider than it holds travel as text: it aborts the
      whole read on a TIME it cannot represent (a negative duration) and holds decimals in 28
      digits rescaled to ``decimal(38,10)``.
    """
    ident = quote_identifier(column.name)
    data_type = column.data_type.lower()
    column_type = column.column_type.lower()
    if data_type == "bit":
        return f"CAST({ident} AS UNSIGNED) AS {ident}"
    if data_type == "year" and column_type.startswith("year(2)"):
        return f"CAST({ident} + IF({ident} < 70, 2000, 1900) AS UNSIGNED) AS {ident}"
    if for_connectorx:
        wide_decimal = data_type == "decimal" and (
            (column.scale or 0) > _CONNECTORX_DECIMAL_SCALE or (column.precision or 10) > _CONNECTORX_DECIMAL_DIGITS
        )
        if data_type in _AS_TEXT_FOR_CONNECTORX or wide_decimal:
            return f"CAST({ident} AS CHAR) AS {ident}"
    elif data_type in ("float", "double"):
        return f"CAST({ident} AS DOUBLE) AS {ident}"
    return ident


# Error codes of the server (1000-4999) and of the client library (2000-2999), by class.
_TRANSIENT_CODES = {
    2002: "cannot connect", 2003: "cannot connect", 2006: "server has gone away", 2013: "lost connection",
    2055: "lost connection", 2012: "handshake failed", 1040: "too many connections",
    1203: "too many connections for the user", 1226: "a user resource limit is reached (resets hourly)",
    1205: "lock wait timeout", 1213: "deadlock", 1969: "statement timed out", 3024: "statement timed out",
    1317: "query interrupted", 1927: "connection killed", 1053: "server shutdown in progress",
    1037: "server out of memory", 1038: "server out of sort memory", 1041: "server out of memory",
    1135: "server cannot create a thread", 1152: "connection aborted", 1184: "connection aborted",
    1158: "network read error", 1159: "network read timeout", 1160: "network write error",
    1161: "network write timeout", 4031: "disconnected by the server (inactivity)",
}  # fmt: skip
_AUTH_CODES = {1044, 1045, 1142, 1143, 1227, 1698, 1370, 1131, 1132, 1211, 1251, 1275, 1820, 1862, 2059, 2061,
               3118, 4151}  # fmt: skip
_MODIFIES_CODES = {1792, 1290}  # a write in a READ ONLY transaction; the server runs --read-only
_CONFIG_CODES = {
    1046, 1049, 1052, 1054, 1055, 1056, 1060, 1064, 1102, 1103, 1109, 1111, 1140, 1146, 1149, 1166, 1176, 1222,
    1235, 1241, 1247, 1248, 1267, 1270, 1271, 1295, 1305, 1318, 1327, 1356, 1449, 1582, 1583, 1584, 1630, 4078,
}  # fmt: skip
_DATA_CODES = {1242, 1264, 1265, 1292, 1300, 1365, 1366, 1367, 1406, 1411, 1441, 1690, 1916, 1918, 3140, 3141,
               3146, 3156}  # fmt: skip


def classify_code(code: int | None, message: str, label: str, driver: str = "MySQL") -> DativoError:
    """Map a MySQL/MariaDB error code to dativo's taxonomy.

    The rule: connection failures (2002, 2003, 2006, 2013, 2055, ...), lock waits (1205),
    deadlocks (1213), too many connections (1040), statement timeouts (1969, 3024), killed or
    interrupted statements and server resource shortages are EXT001 transient; access denied
    (1044, 1045, 1142, 1143, 1227, 1698, ...) is AUTH001; a write refused in a READ ONLY
    transaction (1792, 1290) is CFG001 "the query modifies data"; syntax errors and unknown
    databases, tables, columns or functions are CFG001; data errors (out of range, truncated,
    invalid string or JSON, subquery returning several rows) are QUAL001. Any other code is
    unclassified: permanent, with the server's message (redacted).
    """
    shown = f"{message} (error {code})" if code else message
    if code in _TRANSIENT_CODES:
        return ExtractError(f"{label}: {_TRANSIENT_CODES[code]}: {shown}")
    if code in _AUTH_CODES:
        return AuthError(f"{label}: access denied: {shown}")
    if code in _MODIFIES_CODES:
        return modifies_data(label, shown)
    if code in _CONFIG_CODES:
        return ConfigError(f"{label}: {shown}")
    if code in _DATA_CODES:
        return QualityError(
            f"{label}: the server could not produce a value: {shown}; nothing was committed",
            hint="fix or exclude the value at the source, or convert it in a 'query' object",
        )
    return unclassified(driver, shown, label)


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a pymysql error to dativo's taxonomy (message redacted; see :func:`classify_code`)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    message = redact_text(str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__)
    if isinstance(exc, pymysql.err.InterfaceError) and not code:
        # pymysql raises these only for a connection it already lost or closed.
        return ExtractError(f"{label}: connection lost: {message or type(exc).__name__}")
    return classify_code(code, message, label)


_CONNECTORX_CODE = re.compile(r"ERROR (\d{4,5}) \(")
_CONNECTORX_TRANSIENT = (
    "connection refused", "connection reset", "broken pipe", "timed out", "unexpected eof", "io error",
    "os error", "server has gone away", "lost connection", "connection closed", "connectionclosed",
)  # fmt: skip


def classify_text(message: str, label: str) -> DativoError:
    """Map a connectorx error message to the taxonomy.

    No error object crosses that boundary, but the server's ``ERROR <code> (<state>)`` is in the
    text: it is classified like a pymysql error. Without one: a value connectorx cannot decode is
    QUAL001 (``engine: pymysql`` reads it and quarantines the row); access denied is AUTH001; a
    refused, reset or timed-out socket is EXT001 transient; anything else is unclassified.
    """
    text = redact_text(message.strip().splitlines()[0] if message.strip() else "connectorx failed")
    found = _CONNECTORX_CODE.search(text)
    if found is not None:
        return classify_code(int(found.group(1)), text, label, driver="connectorx")
    lowered = text.lower()
    if "couldn't convert the value" in lowered or "scale is not equal" in lowered:
        return QualityError(
            f"{label}: the source holds a value the connectorx reader cannot decode ({text[-160:]}); "
            "nothing was committed",
            hint="set connection.engine: pymysql for this source; it quarantines such rows",
        )
    if "access denied" in lowered:
        return AuthError(f"{label}: access denied: {text}")
    if any(marker in lowered for marker in _CONNECTORX_TRANSIENT):
        return ExtractError(f"{label}: read failed: {text}")
    return unclassified("connectorx", text, label)


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
            raise classify_text(str(exc), label) from None


def _to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema, binary: list[bool]) -> pa.RecordBatch:
    """One batch from the server's bytes: text checked as UTF-8, then cast to each column's type.

    A value that is not UTF-8 nulls its column in that row and marks the row with a reason
    naming the column, for the enforcer to quarantine.
    """
    columns = list(zip(*rows, strict=True))
    arrays = []
    reasons: list[list[str | None] | None] = []
    for index, field in enumerate(schema):
        raw = pa.array(columns[index], pa.binary())
        if binary[index]:
            arrays.append(raw)
            continue
        text, bad = checked_utf8(raw, field.name)
        reasons.append(bad)
        arrays.append(best_effort_cast(text, field.type))
    return with_source_reasons(arrays, schema.names, merge_reasons(len(rows), *reasons))
