"""What a read selects: the rows past the cursor, and the columns (the contract's, or all).

Cursor values are always bound as parameters (:class:`IncrementalPredicate`), never spliced
into SQL text.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyarrow as pa

from dativo_dagster.config.models import ColumnType, Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.base import ReadRequest
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound
from dativo_dagster.state import CursorState


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
    codec = CursorCodec(unit=obj.config.incremental.cursor_unit)
    value, inclusive = lower_bound(obj.strategy, cursor, obj.config.incremental.lookback_days, codec)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return IncrementalPredicate(obj.cursor_field, ">=" if inclusive else ">", value)


def window_cursor_is_date(obj: ObjectPlan, cursor_type: pa.DataType | None) -> bool:
    """Whether a partition window bounds a date column (else a timestamp); CFG001 for any other type.

    A partitioned object without a contract has its cursor column's type checked only here, when
    a partition runs, against the type discovered at the source (the load-time rules check a
    contract's).

    Args:
        obj: The object.
        cursor_type: The Arrow type of the cursor column at the source (None: not discovered).

    Raises:
        ConfigError: CFG001 naming the job file and ``objects[N].incremental.cursor_field``.
    """
    if cursor_type is None or pa.types.is_timestamp(cursor_type) or pa.types.is_date(cursor_type):
        return cursor_type is not None and pa.types.is_date(cursor_type)
    where = obj.config_where or obj.label
    raise ConfigError(
        f"{where}.incremental.cursor_field: column '{obj.cursor_field}' of {obj.label} is of type '{cursor_type}' "
        "at the source; a partitioned object needs a timestamp or date cursor (partitions)",
        hint="choose a timestamp or date cursor column, or move the object to a job without partitions",
    )


def read_predicates(
    obj: ObjectPlan, request: ReadRequest, cursor_type: pa.DataType | None = None
) -> list[IncrementalPredicate]:
    """The row filters of a read, ANDed: ``[start, end)`` of a partition window, else the cursor's.

    Args:
        obj: The object.
        request: The read.
        cursor_type: The Arrow type of the cursor column at the source: a date column is bounded by
            the window's local dates, a timestamp by its UTC instants (see :meth:`TimeWindow.bounds`);
            with a contract, its type of the column decides (the table holds that type).

    Raises:
        ConfigError: a partition window of an object without a time cursor column.
    """
    if request.between is not None:
        if obj.cursor_field is None:
            raise ConfigError(f"{obj.label}: a partition window needs a cursor column")
        date_cursor = window_cursor_is_date(obj, cursor_type)
        if obj.contract is not None:
            # the table holds the contract's type, and the window replace compares that
            date_cursor = obj.contract.column(obj.cursor_field).type is ColumnType.DATE
        start, end = request.between.bounds(date_cursor)
        return [
            IncrementalPredicate(obj.cursor_field, ">=", start),
            IncrementalPredicate(obj.cursor_field, "<", end),
        ]
    predicate = incremental_predicate(obj, request.cursor)
    return [predicate] if predicate.active else []


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
