"""Pure helpers shared by sources: where an incremental read starts, row filters for it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import Strategy
from dativo_dagster.state import CursorState


def parse_cursor_value(value: Any) -> Any:
    """Turn a stored cursor value back into a comparable Python value (ISO strings -> datetime)."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                return value
    return value


def lower_bound(strategy: Strategy, cursor: CursorState | None, lookback_days: float) -> tuple[Any, bool]:
    """Where to start reading: ``(value, inclusive)``; ``(None, True)`` means from the beginning.

    * ``append``: strictly after the last id (ids are unique, so no boundary row is lost).
    * ``updated``/``created``: from the cursor minus the lookback, inclusive, because rows sharing
      the boundary timestamp may have arrived after the last run read it; the merge on the primary
      key makes re-reading them harmless.
    """
    if cursor is None or cursor.value is None or strategy in (Strategy.FULL_REFRESH, Strategy.FILE_MTIME):
        return None, True
    value = parse_cursor_value(cursor.value)
    if strategy is Strategy.APPEND:
        return value, False
    if lookback_days and isinstance(value, (dt.datetime, dt.date)):
        value = value - dt.timedelta(days=lookback_days)
    return value, True


def row_filter(column: pa.Array, bound: Any, inclusive: bool) -> pa.Array:
    """Boolean mask of rows at or after ``bound`` (``column`` already cast to its contract type)."""
    if isinstance(bound, dt.datetime) and pa.types.is_timestamp(column.type):
        if column.type.tz and bound.tzinfo is None:
            bound = bound.replace(tzinfo=dt.timezone.utc)
        elif not column.type.tz and bound.tzinfo is not None:
            bound = bound.astimezone(dt.timezone.utc).replace(tzinfo=None)
    scalar = pa.scalar(bound, type=column.type)
    mask = pc.greater_equal(column, scalar) if inclusive else pc.greater(column, scalar)
    return pc.fill_null(mask, False)
