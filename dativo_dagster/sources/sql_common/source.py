""":class:`SqlSource`, the base of the SQL sources: a connection per call, errors mapped, discovery cached.

A driver module supplies the connection, the error classification, the column lookup and the
type mapping; the read path stays its own.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pyarrow as pa

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import DativoError
from dativo_dagster.sources.base import Source
from dativo_dagster.sources.sql_common.errors import undecodable_name
from dativo_dagster.sources.sql_common.options import SqlConnection, SqlObjectOptions, options_for
from dativo_dagster.sources.sql_common.selection import contract_columns, missing_columns


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
    reads_time_windows = True  # the window is pushed down as a bound WHERE
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
    def arrow_type(self, column: ColumnT_co, label: str, *, contract: bool = False) -> pa.DataType:
        """Arrow type of a column (CFG001 naming it when it cannot be mapped).

        Args:
            column: The discovered column.
            label: The object's label, for messages.
            contract: The object has a schema contract, so a column Iceberg cannot hold as is
                (a decimal beyond 38 digits) is read as text for the enforcer to convert.
        """

    def cursor_arrow_type(self, obj: ObjectPlan, columns: Sequence[ColumnT_co]) -> pa.DataType | None:
        """Arrow type of the object's cursor column among ``columns`` (None without one): what a
        read's bounds are compared as (dates stay dates, instants are UTC)."""
        for column in columns:
            if column.name == obj.cursor_field:
                return self.arrow_type(column, obj.label, contract=obj.contract is not None)
        return None

    @contextlib.contextmanager
    def _connection(self, label: str) -> Iterator[Any]:
        connection = self.connect()
        try:
            yield connection
        except self.driver_error as exc:
            raise self.classify(exc, label) from None
        except UnicodeError as exc:
            raise undecodable_name(exc, label) from None
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
        contract = obj.contract is not None
        return pa.schema(
            [
                pa.field(c.name, self.arrow_type(c, obj.label, contract=contract), nullable=not c.not_null)
                for c in columns
            ]
        )

    def _selected(self, obj: ObjectPlan, columns: list[ColumnT_co]) -> list[ColumnT_co]:
        """Columns to read: the contract's when there is one, else all."""
        return contract_columns(obj, columns, lambda column: column.name)
