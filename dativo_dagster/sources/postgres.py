"""PostgreSQL: ``COPY (SELECT …) TO STDOUT`` streamed through a pipe into Arrow's CSV reader.

COPY is the server's fastest way out, and Arrow's multi-threaded CSV parser is the fastest way
in; a background thread pumps COPY into an OS pipe while the caller consumes Arrow batches, so
memory is bounded by the pipe and one CSV block, never by the table. Each read runs in its own
``REPEATABLE READ READ ONLY`` transaction: one consistent snapshot per object per run.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.csv as pacsv
import structlog
from psycopg2 import sql
from pydantic import Field

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError
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
    """Precision and scale encoded in a numeric column's typmod (-1 when unconstrained)."""
    if typmod < 4:
        return None, None
    return ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF


def scalar_arrow_type(typname: str, typtype: str, precision: int | None, scale: int | None) -> pa.DataType | None:
    """Arrow type of a scalar PostgreSQL type, or None when it is unknown."""
    if typtype == "e":
        return pa.string()  # enums
    if typname in _INTEGERS:
        return _INTEGERS[typname]
    if typname in _FLOATS:
        return _FLOATS[typname]
    if typname == "numeric":
        if precision is None or precision > 38:
            return UNCONSTRAINED_NUMERIC
        return pa.decimal128(precision, scale or 0)
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


def column_arrow_type(column: PgColumn, label: str) -> pa.DataType:
    """Arrow type of a column; CFG001 naming the column when the type cannot be mapped."""
    if column.element is not None:
        item = scalar_arrow_type(column.element, "b", None, None)
        if item is None or pa.types.is_decimal(item) or isinstance(item, pa.BaseExtensionType):
            item = pa.string()  # arrays of numeric/uuid keep their elements' text form
        return pa.list_(item)
    mapped = scalar_arrow_type(column.typname, column.typtype, column.precision, column.scale)
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
    """SQL for one selected column: arrays travel as JSON so nesting and quoting survive."""
    ident = sql.Identifier(column.name)
    if column.element is not None:
        return sql.SQL("array_to_json({})::text").format(ident)
    return ident


# ----------------------------------------------------------------------------- error mapping

_AUTH_MARKERS = ("password authentication failed", "no pg_hba.conf entry", 'role "', "authentication failed")


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a psycopg2 error to dativo's taxonomy (message redacted, no DSN)."""
    message = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    if isinstance(exc, psycopg2.errors.InsufficientPrivilege):
        return AuthError(f"{label}: permission denied: {message}")
    if isinstance(exc, (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn)):
        return ConfigError(f"{label}: {message}")
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return ExtractError(f"{label}: statement cancelled (timeout): {message}")
    if isinstance(exc, psycopg2.OperationalError) and any(m in message for m in _AUTH_MARKERS):
        return AuthError(f"{label}: authentication failed: {message}")
    if isinstance(exc, psycopg2.errors.InvalidCatalogName):
        return AuthError(f"{label}: {message}")
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return ExtractError(f"{label}: connection failed: {message}")
    if isinstance(exc, (psycopg2.ProgrammingError, psycopg2.DataError)):
        return ConfigError(f"{label}: {message}")
    return ExtractError(f"{label}: {type(exc).__name__}: {message}")


# ----------------------------------------------------------------------------- source


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
            )
        except psycopg2.Error as exc:
            raise classify(exc, self._label()) from None
        return connection

    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a psycopg2 error (see :func:`classify`)."""
        return classify(exc, label)

    def arrow_type(self, column: PgColumn, label: str) -> pa.DataType:
        """Arrow type of a column (see :func:`column_arrow_type`)."""
        return column_arrow_type(column, label)

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
        query = sql.SQL(options.query.strip().rstrip(";"))
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
            precision = d.precision if typname == "numeric" and d.precision and d.precision > 0 else None
            scale = d.scale if precision is not None else None
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
            source = sql.SQL("({}) AS dativo_q").format(sql.SQL(options.query.strip().rstrip(";")))
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
        options = options_for(obj)
        stats = SourceStats()
        connection = self.connect()
        try:
            connection.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
            with connection.cursor() as cursor:
                # Session settings make COPY's text unambiguous: UTC offsets, ISO dates.
                cursor.execute("SET TIME ZONE 'UTC'")
                cursor.execute("SET datestyle TO 'ISO, YMD'")
                cursor.execute("SET extra_float_digits TO 3")
                cursor.execute("SET statement_timeout TO %s", (self._settings.statement_timeout_s * 1000,))
            columns = self._selected(obj, self._discover(connection, obj))
            copy = self.build_copy(connection, obj, columns, request)
            unique = self._keys_unique(connection, obj)
        except psycopg2.Error as exc:
            connection.close()
            raise classify(exc, obj.label) from None
        except BaseException:
            connection.close()
            raise
        schema = pa.schema([pa.field(c.name, column_arrow_type(c, obj.label)) for c in columns])

        def batches() -> Iterator[pa.RecordBatch]:
            yield from _stream_copy(connection, copy, columns, schema, options, stats, obj.label)

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


class _CountingReader:
    """The read end of the COPY pipe as Arrow sees it, counting the bytes that pass."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (Arrow asks for whole blocks, so this runs rarely)."""
        data: bytes = self._raw.read(size) if size >= 0 else self._raw.readall()
        self.bytes_read += len(data)
        return data

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


def _stream_copy(
    connection: Any,
    copy: str,
    columns: list[PgColumn],
    schema: pa.Schema,
    options: SqlObjectOptions,
    stats: SourceStats,
    label: str,
) -> Iterator[pa.RecordBatch]:
    """Run COPY in a thread writing into a pipe; parse the other end with Arrow."""
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
    convert = pacsv.ConvertOptions(
        column_types={c.name: csv_parse_type(schema.field(c.name).type) for c in columns},
        true_values=["t"],
        false_values=["f"],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    # Small blocks: the reader parses ahead of the consumer, and what it holds is blocks in flight.
    read_options = pacsv.ReadOptions(column_names=names, block_size=1 << 20, use_threads=True)
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    converters = {c.name: _post_converter(schema.field(c.name).type) for c in columns}
    source = _CountingReader(os.fdopen(read_fd, "rb", buffering=1 << 20))
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
            raise ExtractError(f"{label}: COPY output could not be parsed: {exc}") from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:
                thread.join(timeout=5)
                if failure:
                    raise classify(failure[0], label) from None
                raise ExtractError(f"{label}: COPY output could not be parsed: {exc}") from None
            stats.add(pages=1)
            yield _convert_batch(batch, schema, converters)
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


def _post_converter(target: pa.DataType) -> Callable[[pa.Array], pa.Array] | None:
    """Conversion from COPY text to the target type for columns Arrow's CSV reader left as text."""
    if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_boolean(target):
        return None
    if pa.types.is_string(target):
        return None
    if isinstance(target, pa.BaseExtensionType) and target.extension_name == "arrow.uuid":

        def to_uuid(column: pa.Array) -> pa.Array:
            values = [None if v is None else bytes.fromhex(v.replace("-", "")) for v in column.to_pylist()]
            return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))

        return to_uuid
    if pa.types.is_binary(target):

        def to_bytes(column: pa.Array) -> pa.Array:
            return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], pa.binary())

        return to_bytes
    if pa.types.is_list(target):
        import json

        def to_list(column: pa.Array) -> pa.Array:
            values = [None if v is None else json.loads(v) for v in column.to_pylist()]
            try:
                return pa.array(values, target)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                return pa.array(
                    [None if v is None else [None if x is None else str(x) for x in v] for v in values],
                    pa.list_(pa.string()),
                )

        return to_list
    return lambda column: best_effort_cast(column, target)


def _convert_batch(
    batch: pa.RecordBatch, schema: pa.Schema, converters: dict[str, Callable[[pa.Array], pa.Array] | None]
) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        column = batch.column(field.name)
        convert = converters[field.name]
        arrays.append(convert(column) if convert is not None else column)
    return pa.RecordBatch.from_arrays(arrays, names=schema.names)
