"""Pure helpers: file cursors, incremental bounds, schema differ."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from dativo_dagster.config.models import Strategy
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.schema import ChangeKind, plan_schema_changes
from dativo_dagster.sources.csv import file_cursor, files_after
from dativo_dagster.sources.incremental import lower_bound, row_filter
from dativo_dagster.state import CursorState


def test_file_cursor_remembers_every_file_at_the_latest_mtime() -> None:
    files = [(10, "a.csv"), (20, "b.csv"), (20, "c.csv")]
    cursor = file_cursor(files, None)
    assert cursor == {"mtime_ns": 20, "paths": ["b.csv", "c.csv"]}
    # a new file with the same mtime as the boundary is still picked up, the old ones are not
    later = [*files, (20, "d.csv"), (30, "e.csv")]
    assert files_after(later, cursor) == [(20, "d.csv"), (30, "e.csv")]
    assert files_after(files, cursor) == []


def test_lower_bound_per_strategy() -> None:
    ts = CursorState(Strategy.UPDATED, "u", "2024-01-10T00:00:00.000000+00:00")
    value, inclusive = lower_bound(Strategy.UPDATED, ts, lookback_days=2)
    assert value == dt.datetime(2024, 1, 8, tzinfo=dt.timezone.utc) and inclusive
    assert lower_bound(Strategy.APPEND, CursorState(Strategy.APPEND, "id", 41), 0) == (41, False)
    assert lower_bound(Strategy.FULL_REFRESH, ts, 0) == (None, True)
    assert lower_bound(Strategy.UPDATED, None, 3) == (None, True)


def test_row_filter_keeps_boundary_rows_when_inclusive() -> None:
    column = pa.array([1, 2, 3, None], pa.int64())
    assert row_filter(column, 2, inclusive=True).to_pylist() == [False, True, True, False]
    assert row_filter(column, 2, inclusive=False).to_pylist() == [False, False, True, False]
    stamps = pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))
    assert row_filter(stamps, dt.datetime(2024, 1, 1), inclusive=True).to_pylist() == [True]


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(list(fields))


def test_schema_differ_allows_additive_and_widening_changes() -> None:
    current = _schema(pa.field("id", pa.int32(), nullable=False), pa.field("x", pa.float32()))
    desired = _schema(
        pa.field("id", pa.int64(), nullable=False), pa.field("x", pa.float64()), pa.field("new", pa.string())
    )
    kinds = {(c.kind, c.column) for c in plan_schema_changes(current, desired, table="n.t")}
    assert kinds == {(ChangeKind.WIDEN, "id"), (ChangeKind.WIDEN, "x"), (ChangeKind.ADD_COLUMN, "new")}


def test_schema_differ_relaxes_dropped_required_columns() -> None:
    current = _schema(pa.field("id", pa.int64(), nullable=False), pa.field("gone", pa.string(), nullable=False))
    changes = plan_schema_changes(current, _schema(pa.field("id", pa.int64(), nullable=False)), table="n.t")
    assert [(c.kind, c.column) for c in changes] == [(ChangeKind.MAKE_OPTIONAL, "gone")]


@pytest.mark.parametrize(
    ("current", "desired", "message"),
    [
        (pa.field("a", pa.int64()), pa.field("a", pa.string()), "int64 -> string"),
        (pa.field("a", pa.int64()), pa.field("a", pa.int32()), "int64 -> int32"),
        (
            pa.field("a", pa.decimal128(10, 2)),
            pa.field("a", pa.decimal128(12, 3)),
            "decimal(10,2) -> decimal(12,3)",
        ),
    ],
)
def test_schema_differ_rejects_incompatible_changes(current: pa.Field, desired: pa.Field, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_schema_changes(_schema(current), _schema(desired), table="n.t")


def test_new_required_column_is_rejected() -> None:
    with pytest.raises(ConfigError, match="new column 'b' is required"):
        plan_schema_changes(
            _schema(pa.field("a", pa.int64())),
            _schema(pa.field("a", pa.int64()), pa.field("b", pa.int64(), nullable=False)),
            table="n.t",
        )
