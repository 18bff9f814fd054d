"""Pure helpers shared by sources: where an incremental read starts, row filters for it."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import Strategy
from dativo_dagster.sources.cursors import DEFAULT_CODEC, CursorCodec
from dativo_dagster.state import CursorState


def lower_bound(
    strategy: Strategy, cursor: CursorState | None, lookback_days: float, codec: CursorCodec = DEFAULT_CODEC
) -> tuple[Any, bool]:
    """Where to start reading: ``(value, inclusive)``; ``(None, True)`` means from the beginning.

    * ``append``: strictly after the last id (ids are unique, so no boundary row is lost).
    * ``updated``/``created``: from the cursor minus the lookback (the source's codec does the
      arithmetic), inclusive, because rows sharing the boundary value may have arrived after the
      last run read it; the merge on the primary key makes re-reading them harmless.
    """
    if cursor is None or cursor.value is None or strategy in (Strategy.FULL_REFRESH, Strategy.FILE_MTIME):
        return None, True
    if strategy is Strategy.APPEND:
        return codec.parse(cursor.value), False
    return codec.minus_lookback(cursor.value, lookback_days), True


def date_at_or_after(moment: dt.datetime) -> dt.date:
    """The first date whose midnight (UTC; naive means UTC) is at or after ``moment``.

    A date is at or after a point in time when its midnight is, as the SQL sources compare a
    date column with a timestamptz bound.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc)
    return moment.date() if moment.time() == dt.time(0) else moment.date() + dt.timedelta(days=1)


def row_filter(column: pa.Array, bound: Any, inclusive: bool) -> pa.Array:
    """Boolean mask of rows at or after ``bound`` (``column`` already cast to its contract type)."""
    if isinstance(bound, dt.datetime) and pa.types.is_date(column.type):
        # "after" a moment that is not a midnight is "at or after" the next midnight
        moment = bound.astimezone(dt.timezone.utc) if bound.tzinfo is not None else bound
        inclusive = inclusive or moment.time() != dt.time(0)
        bound = date_at_or_after(bound)
    if isinstance(bound, dt.datetime) and pa.types.is_timestamp(column.type):
        if column.type.tz and bound.tzinfo is None:
            bound = bound.replace(tzinfo=dt.timezone.utc)
        elif not column.type.tz and bound.tzinfo is not None:
            bound = bound.astimezone(dt.timezone.utc).replace(tzinfo=None)
    scalar = pa.scalar(bound, type=column.type)
    mask = pc.greater_equal(column, scalar) if inclusive else pc.greater(column, scalar)
    return pc.fill_null(mask, False)
