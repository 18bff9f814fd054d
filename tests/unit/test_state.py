"""Cursor serialisation, ordering and reconciliation (pure functions)."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from dativo_dagster.config.models import Strategy
from dativo_dagster.errors import ConfigError, StateError
from dativo_dagster.sources.cursors import DEFAULT_CODEC, CursorCodec, EpochSecondsCodec
from dativo_dagster.state import (
    CursorState,
    TableCursor,
    check_forward,
    reconcile_cursor,
)

cursor_value_from_arrow = DEFAULT_CODEC.from_arrow
later_cursor = DEFAULT_CODEC.later


def _cursor(value: object) -> CursorState:
    return CursorState(strategy=Strategy.UPDATED, field="updated_at", value=value)


def test_cursor_round_trips_through_json() -> None:
    cursor = _cursor("2024-01-01T00:00:00.000000+00:00")
    assert CursorState.from_json(cursor.to_json(), where="x") == cursor


def test_unreadable_cursor_is_state001() -> None:
    with pytest.raises(StateError) as info:
        CursorState.from_json("{not json", where="snapshot 1")
    assert info.value.code == "STATE001"


def test_timestamps_normalise_to_utc_iso_so_text_order_is_time_order() -> None:
    berlin = dt.timezone(dt.timedelta(hours=2))
    early = cursor_value_from_arrow(dt.datetime(2024, 1, 1, 11, 0, tzinfo=berlin))  # 09:00Z
    late = cursor_value_from_arrow(dt.datetime(2024, 1, 1, 10, 0, tzinfo=dt.timezone.utc))
    assert early == "2024-01-01T09:00:00.000000+00:00"
    assert later_cursor(early, late) == late


def test_decimal_cursor_values() -> None:
    assert cursor_value_from_arrow(decimal.Decimal("42")) == 42
    assert cursor_value_from_arrow(decimal.Decimal("4.5")) == "4.5"


def test_later_cursor_treats_none_as_earliest() -> None:
    assert later_cursor(None, 5) == 5
    assert later_cursor(7, None) == 7
    assert later_cursor(7, 9) == 9


def test_cursor_moving_backwards_is_state001() -> None:
    with pytest.raises(StateError, match="backwards"):
        check_forward(_cursor("2024-02-01"), _cursor("2024-01-01"), label="demo/shop/orders")
    check_forward(_cursor("2024-01-01"), _cursor("2024-01-01"), label="same is fine")


def _table(cursor: CursorState | None, snapshot: int, ancestors: set[int]) -> TableCursor:
    return TableCursor(cursor, snapshot, "run", frozenset(ancestors | {snapshot}))


def test_table_wins_when_ahead_of_dagster() -> None:
    newer = _cursor("2024-03-01")
    result = reconcile_cursor(
        dagster_cursor=_cursor("2024-02-01"),
        dagster_snapshot_id=1,
        table=_table(newer, 2, {1}),
        table_exists=True,
        initial=None,
    )
    assert result.cursor == newer
    assert result.origin == "table"
    assert "ahead of Dagster" in result.note


def test_agreement_and_rollback_notes() -> None:
    cursor = _cursor("2024-03-01")
    agree = reconcile_cursor(
        dagster_cursor=cursor,
        dagster_snapshot_id=2,
        table=_table(cursor, 2, {1}),
        table_exists=True,
        initial=None,
    )
    assert "agree" in agree.note
    rolled = reconcile_cursor(
        dagster_cursor=cursor,
        dagster_snapshot_id=99,
        table=_table(cursor, 2, {1}),
        table_exists=True,
        initial=None,
    )
    assert "not in the table history" in rolled.note


def test_dropped_table_reloads_instead_of_trusting_dagster() -> None:
    result = reconcile_cursor(
        dagster_cursor=_cursor("2024-03-01"),
        dagster_snapshot_id=2,
        table=None,
        table_exists=False,
        initial=None,
    )
    assert result.cursor is None
    assert "reloading" in result.note


def test_initial_value_used_on_first_run() -> None:
    initial = _cursor("2023-01-01")
    result = reconcile_cursor(
        dagster_cursor=None, dagster_snapshot_id=None, table=None, table_exists=False, initial=initial
    )
    assert result.cursor == initial
    assert result.origin == "initial"


def test_a_source_codec_decides_order_and_display() -> None:
    epoch = EpochSecondsCodec()
    assert epoch.display(1_704_067_200, "created") == "created=2024-01-01T00:00:00+00:00"
    assert epoch.later(1_704_067_200, 1_704_067_100) == 1_704_067_200
    with pytest.raises(StateError, match="backwards"):
        check_forward(
            CursorState(Strategy.CREATED, "created", 20),
            CursorState(Strategy.CREATED, "created", 10),
            label="x",
            codec=epoch,
        )


def test_lookback_moves_an_epoch_seconds_cursor_back() -> None:
    assert EpochSecondsCodec().minus_lookback(1_704_067_200, 1) == 1_704_067_200 - 86_400
    assert CursorCodec(unit="milliseconds").minus_lookback(1_704_067_200_000, 0.5) == 1_704_067_200_000 - 43_200_000
    assert CursorCodec().minus_lookback("2024-01-10", 2) == dt.datetime(2024, 1, 8)


def test_lookback_on_a_number_without_a_unit_is_cfg001() -> None:
    with pytest.raises(ConfigError, match="cursor_unit"):
        CursorCodec().minus_lookback(1_704_067_200, 1)
