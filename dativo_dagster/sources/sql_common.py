"""Pure helpers shared by the SQL sources: options, identifiers, incremental predicates.

Nothing here opens a connection. Identifiers from config are validated and quoted here, and
cursor values are always bound as parameters, so no config value is ever spliced into SQL text.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError, QualityError
from dativo_dagster.sources.base import ConnectionConfig, Source, SourceOptions
from dativo_dagster.sources.incremental import lower_bound
from dativo_dagster.state import CursorState
from dativo_dagster.types import type_label

# Names may hold anything a database allows except control characters; quoting makes them
# inert. The check rejects what no sane table name contains and what quoting would not fix.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SqlObjectOptions(SourceOptions):
    """Per-object settings of a SQL source: a table/view, or a named query."""

    table: str | None = Field(default=None, description="'schema.table' or 'table'")
    query: str | None = Field(default=None, description="a SELECT whose rows are the object")
    columns: list[str] | None = Field(default=None, description="subset of columns to read (default: all)")
    batch_rows: int = Field(default=100_000, ge=1_000, le=5_000_000, description="rows per Arrow batch")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SqlObjectOptions:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.table is not None:
            parse_table_name(self.table)
        if self.query is not None:
            text = self.query.strip().rstrip(";").strip()
            if ";" in text:
                raise ValueError("'query' must be a single SELECT statement")
            if not re.match(r"(?is)^\s*(select|with)\b", text):
                raise ValueError("'query' must start with SELECT or WITH")
        for column in self.columns or []:
            check_identifier(column)
        return self


def check_identifier(name: str) -> str:
    """Validate one identifier from config (it will be quoted, never interpolated raw)."""
    if not name or len(name) > 128 or _CONTROL.search(name):
        raise ValueError(f"invalid identifier {name!r}")
    return name


def parse_table_name(text: str) -> tuple[str | None, str]:
    """Split ``schema.table`` (either part may be double-quoted to contain dots)."""
    parts: list[str] = []
    current = ""
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and i + 1 < len(text) and text[i + 1] == '"':
                current += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if quoted:
        raise ValueError(f"unbalanced quotes in table name {text!r}")
    parts.append(current)
    if len(parts) > 2:
        raise ValueError(f"table name {text!r} has more than two parts (use schema.table)")
    for part in parts:
        check_identifier(part)
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


@dataclass(frozen=True)
class IncrementalPredicate:
    """``WHERE <column> >= / > %s`` with its bound parameter (or no predicate)."""

    column: str | None
    operator: str
    value: Any

    @property
    def active(self) -> bool:
        """True when rows must be filtered."""
        return self.column is not None and self.value is not None


def incremental_predicate(obj: ObjectPlan, cursor: CursorState | None) -> IncrementalPredicate:
    """The row filter for an incremental read (the lookback is applied here)."""
    if obj.strategy in (Strategy.FULL_REFRESH, Strategy.FILE_MTIME) or obj.cursor_field is None:
        return IncrementalPredicate(None, "", None)
    value, inclusive = lower_bound(obj.strategy, cursor, obj.config.incremental.lookback_days)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return IncrementalPredicate(obj.cursor_field, ">=" if inclusive else ">", value)


def options_for(obj: ObjectPlan) -> SqlObjectOptions:
    """Validated options of a SQL object."""
    return SqlObjectOptions.model_validate(obj.options)


ColumnT = TypeVar("ColumnT")


def contract_columns(obj: ObjectPlan, columns: list[ColumnT], name_of: Callable[[ColumnT], str]) -> list[ColumnT]:
    """Columns to read: the contract's (by source name, in contract order) when there is one, else all.

    Raises:
        ConfigError: CFG001 naming a required contract column the source does not have.
    """
    if obj.contract is None:
        return columns
    by_name = {name_of(c): c for c in columns}
    required = [c.source_name or c.name for c in obj.contract.columns if c.required]
    missing_columns(required, list(by_name), obj)
    wanted = [c.source_name or c.name for c in obj.contract.columns]
    return [by_name[name] for name in wanted if name in by_name]


def missing_columns(wanted: list[str], available: list[str], obj: ObjectPlan) -> None:
    """CFG001 naming the first configured column the source does not have."""
    have = set(available)
    for name in wanted:
        if name not in have:
            raise ConfigError(
                f"{obj.label}: column '{name}' does not exist in the source (available: {', '.join(available)})"
            )


def best_effort_cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Vectorised cast of text from the server to ``target``; on any odd value, keep the text.

    Keeping the text hands the column to the contract enforcer, which converts value by value and
    quarantines just the rows that do not convert (a zero date, ``infinity``, ``NaN`` numeric).
    """
    if column.type == target:
        return column
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    if pa.types.is_timestamp(target) and target.tz is not None:
        try:
            # Servers that print UTC without an offset (MySQL with time_zone '+00:00').
            return pc.assume_timezone(pc.cast(column, pa.timestamp(target.unit)), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    return column


def guard_cursor_column(
    batches: Iterator[pa.RecordBatch], obj: ObjectPlan, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Pass batches through, failing loudly if the cursor column is not of its mapped type.

    Other columns may stay text when a value does not convert (the enforcer quarantines that
    row), but the new cursor is the maximum of the cursor column: over text, ``'infinity'`` or
    ``'0000-00-00'`` would sort after every real timestamp and silently end all later reads.

    Raises:
        QualityError: QUAL001 naming the column and the value; nothing is committed.
    """
    name = obj.cursor_field
    if name is None or schema.get_field_index(name) < 0:
        yield from batches
        return
    expected = schema.field(name).type
    try:
        for batch in batches:
            column = batch.column(name)
            if column.type != expected:
                shown = _first_unconvertible(column, expected)
                raise QualityError(
                    f"{obj.label}: cursor column '{name}' holds {shown!r}, which cannot be read as "
                    f"{type_label(expected)}, so the cursor cannot advance past it; nothing was committed",
                    hint="exclude or convert such rows with a 'query' object, or pick another cursor_field",
                )
            yield batch
    finally:
        # Release the server-side stream now, not when the inner generator is collected.
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _first_unconvertible(column: pa.Array, target: pa.DataType) -> str:
    for value in column.to_pylist():
        if value is None:
            continue
        try:
            best = best_effort_cast(pa.array([value], column.type), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return str(value)
        if best.type != target:
            return str(value)
    return "?"


class SqlConnection(ConnectionConfig):
    """Connection settings every SQL source has; the password comes from ``credentials.password``."""

    host: str = "localhost"
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    connect_timeout_s: int = Field(default=10, ge=1, le=600)
    statement_timeout_s: int = Field(default=0, ge=0, description="0 = no limit")


class DiscoveredColumn(Protocol):
    """What the shared plumbing needs of a driver's column description."""

    @property
    def name(self) -> str: ...

    @property
    def not_null(self) -> bool: ...


ColumnT_co = TypeVar("ColumnT_co", bound=DiscoveredColumn)


class SqlSource(Source, Generic[ColumnT_co]):
    """Plumbing shared by the SQL sources: a connection per call, errors mapped, discovery cached.

    A driver module supplies ``connect``, ``classify``, the column lookup and the type mapping;
    the read path stays its own (COPY for PostgreSQL, connectorx or a cursor for MySQL).
    """

    options_model = SqlObjectOptions
    supported_strategies = frozenset({Strategy.FULL_REFRESH, Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED})
    ordered_by_cursor = True  # a limited read orders by the cursor column
    driver_error: ClassVar[type[Exception]]
    list_objects_sql: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._columns: dict[str, list[ColumnT_co]] = {}
        self._lock = threading.Lock()

    @property
    def _settings(self) -> SqlConnection:
        assert isinstance(self.connection, SqlConnection)
        return self.connection

    def _label(self) -> str:
        s = self._settings
        return f"{self.type} {s.host}:{s.port}/{s.database}"

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection (one per call: objects of a job are read in parallel threads)."""

    @abc.abstractmethod
    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a driver error to the taxonomy (message redacted)."""

    @abc.abstractmethod
    def fetch_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[ColumnT_co]:
        """Describe the object's columns from the catalog (CFG001 if the table does not exist)."""

    @abc.abstractmethod
    def arrow_type(self, column: ColumnT_co, label: str) -> pa.DataType:
        """Arrow type of a column (CFG001 naming it when it cannot be mapped)."""

    @contextlib.contextmanager
    def _connection(self, label: str) -> Iterator[Any]:
        connection = self.connect()
        try:
            yield connection
        except self.driver_error as exc:
            raise self.classify(exc, label) from None
        finally:
            connection.close()

    def check_connection(self) -> None:
        """Connect and run ``SELECT 1``."""
        with self._connection(self._label()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def list_objects(self) -> list[str]:
        """``schema.table`` of the tables and views the source can read."""
        with self._connection(self._label()) as connection, connection.cursor() as cursor:
            cursor.execute(self.list_objects_sql)
            return [f"{schema}.{name}" for schema, name in cursor.fetchall()]

    def _discover(self, connection: Any, obj: ObjectPlan) -> list[ColumnT_co]:
        """The object's columns (narrowed to ``options.columns``), looked up once per source instance."""
        with self._lock:
            cached = self._columns.get(obj.name)
        if cached is not None:
            return cached
        options = options_for(obj)
        with connection.cursor() as cursor:
            columns = self.fetch_columns(cursor, options, obj)
        if options.columns:
            missing_columns(options.columns, [c.name for c in columns], obj)
            wanted = set(options.columns)
            columns = [c for c in columns if c.name in wanted]
        with self._lock:
            self._columns[obj.name] = columns
        return columns

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """Arrow schema from the catalog (NOT NULL columns are non-nullable)."""
        with self._connection(obj.label) as connection:
            columns = self._discover(connection, obj)
        return pa.schema([pa.field(c.name, self.arrow_type(c, obj.label), nullable=not c.not_null) for c in columns])

    def _selected(self, obj: ObjectPlan, columns: list[ColumnT_co]) -> list[ColumnT_co]:
        """Columns to read: the contract's when there is one, else all."""
        return contract_columns(obj, columns, lambda column: column.name)
