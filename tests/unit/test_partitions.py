"""Partitioned tenant jobs: config rules, Dagster definitions, and the window helpers."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import pyarrow as pa
import pytest
import yaml

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.models import Partitions, Strategy
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.window import (
    WindowRaceError,
    before_window,
    check_window_race,
    incremental_reach,
    window_mask,
)
from dativo_dagster.partitions import backfill_policy, partition_run_args, partitions_definition
from dativo_dagster.sources.base import ReadRequest, TimeWindow
from dativo_dagster.sources.sql_common.selection import read_predicates
from dativo_dagster.state import CursorState
from tests.conftest import copy_demo_project

UTC = dt.timezone.utc
JAN_2 = TimeWindow(dt.datetime(2024, 1, 2, tzinfo=UTC), dt.datetime(2024, 1, 3, tzinfo=UTC))


def _partition_demo(root: Path, partitions: dict[str, Any], **job_changes: Any) -> Path:
    """The demo project with its job partitioned (orders: an append cursor; customers: updated_at)."""
    path = root / "tenants/demo/jobs/shop.yaml"
    job = yaml.safe_load(path.read_text())
    job["partitions"] = partitions
    job.update(job_changes)
    path.write_text(yaml.safe_dump(job))
    return root


def _customers_only(root: Path) -> list[dict[str, Any]]:
    job = yaml.safe_load((root / "tenants/demo/jobs/shop.yaml").read_text())
    return [o for o in job["objects"] if o["name"] == "customers"]


def _problems(root: Path) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        load_plan(root, strict=True)
    return info.value.problems


def test_an_object_without_a_time_cursor_cannot_be_partitioned(tmp_path: Path) -> None:
    root = _partition_demo(copy_demo_project(tmp_path / "p"), {"granularity": "daily", "start": "2024-01-01"})
    (problem,) = _problems(root)
    assert "tenants/demo/jobs/shop.yaml" in problem
    assert "objects[0].incremental.strategy" in problem and "'append' has no time cursor" in problem


def test_a_cursor_column_that_is_not_a_timestamp_is_refused(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    customers = _customers_only(root)
    customers[0]["incremental"] = {"strategy": "updated", "cursor_field": "email"}
    _partition_demo(root, {"granularity": "daily", "start": "2024-01-01"}, objects=customers)
    (problem,) = _problems(root)
    assert "objects[0].incremental.cursor_field: 'email' is of type 'string'" in problem


def test_a_source_that_cannot_bound_a_read_refuses_partitions(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    job = {
        "tenant": "demo",
        "name": "shop",
        "source": {"recipe": "stripe", "credentials": {"api_key": "${STRIPE_API_KEY}"}},
        "target": {"recipe": "local"},
        "partitions": {"granularity": "daily", "start": "2024-01-01"},
        "objects": [
            {
                "name": "charges",
                "contract": {"name": "stripe/charges", "version": 1},
                "incremental": {"strategy": "created", "cursor_field": "created"},
            }
        ],
    }
    (root / "tenants/demo/jobs/shop.yaml").write_text(yaml.safe_dump(job))
    problems = _problems(root)
    assert any("partitions: source type 'stripe' cannot bound a read to a time window" in p for p in problems)


@pytest.mark.parametrize(
    ("partitions", "expected"),
    [
        ({"granularity": "monthly", "start": "2024-01-15"}, "monthly partitions start on the first day"),
        ({"granularity": "daily", "start": "2024-1-1"}, "is not a date (YYYY-MM-DD)"),
        ({"granularity": "daily", "start": "2024-01-01", "timezone": "Mars/Base"}, "unknown time zone"),
        ({"granularity": "hourly", "start": "2024-01-01"}, "partitions.granularity"),
        ({"granularity": "daily", "start": "2024-01-01", "every": 2}, "partitions.every"),
    ],
)
def test_bad_partitions_settings_are_cfg001(tmp_path: Path, partitions: dict[str, Any], expected: str) -> None:
    root = copy_demo_project(tmp_path / "p")
    _partition_demo(root, partitions, objects=_customers_only(root))
    problems = _problems(root)
    assert any(expected in p and "shop.yaml" in p for p in problems), problems


def test_partitioned_job_assets_share_one_definition_and_keep_their_schedule(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    config = {"granularity": "daily", "start": "2024-01-01", "timezone": "Europe/Berlin"}
    _partition_demo(root, config, objects=_customers_only(root))
    defs = build_definitions(load_plan(root, strict=True))
    (assets,) = list(defs.assets or [])
    assert isinstance(assets, dg.AssetsDefinition)
    definition = assets.partitions_def
    assert isinstance(definition, dg.DailyPartitionsDefinition)
    assert definition.timezone == "Europe/Berlin"
    assert definition is partitions_definition(Partitions.model_validate(config))
    assert assets.backfill_policy == dg.BackfillPolicy.single_run()
    assert backfill_policy(Partitions.model_validate({**config, "max_partitions_per_run": 7})) == (
        dg.BackfillPolicy.multi_run(7)
    )
    # the schedule requests an unpartitioned (incremental) run of the same assets
    schedule = defs.resolve_sensor_def("demo__shop__schedule")
    a_day_ago = (dt.datetime.now(UTC) - dt.timedelta(days=1)).isoformat()
    with dg.build_sensor_context(cursor=a_day_ago, definitions=defs) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert request.partition_key is None
    assert set(request.asset_selection or []) == {dg.AssetKey(["demo", "csv", "customers"])}


def test_an_unpartitioned_job_has_no_partitions(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    (assets,) = list(defs.assets or [])
    assert isinstance(assets, dg.AssetsDefinition)
    assert assets.partitions_def is None and assets.backfill_policy is None


def test_monthly_window_of_a_partition_key() -> None:
    definition = partitions_definition(Partitions(granularity="monthly", start="2024-01-01"))
    window = definition.time_window_for_partition_key("2024-02-01")
    assert (window.start, window.end) == (dt.datetime(2024, 2, 1, tzinfo=UTC), dt.datetime(2024, 3, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    "column",
    [
        pa.array(
            [dt.datetime(2024, 1, 1, 23, 59), dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 2, 23), None,
             dt.datetime(2024, 1, 3)],
            pa.timestamp("us"),
        ),
        pa.array(
            [dt.datetime(2024, 1, 1, 23, 59, tzinfo=UTC), dt.datetime(2024, 1, 2, tzinfo=UTC),
             dt.datetime(2024, 1, 2, 23, tzinfo=UTC), None, dt.datetime(2024, 1, 3, tzinfo=UTC)],
            pa.timestamp("us", tz="UTC"),
        ),
        pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 2), None, dt.date(2024, 1, 3)]),
    ],
)  # fmt: skip
def test_window_mask_is_start_inclusive_end_exclusive_and_false_for_null(column: pa.Array) -> None:
    assert window_mask(column, JAN_2).to_pylist() == [False, True, True, False, False]


def test_a_window_in_another_time_zone_is_compared_in_utc() -> None:
    berlin = dt.timezone(dt.timedelta(hours=1))
    window = TimeWindow(dt.datetime(2024, 1, 2, tzinfo=berlin), dt.datetime(2024, 1, 3, tzinfo=berlin))
    column = pa.array([dt.datetime(2024, 1, 1, 22, 30), dt.datetime(2024, 1, 1, 23), dt.datetime(2024, 1, 2, 23)])
    assert window_mask(column, window).to_pylist() == [False, True, False]


class _Obj:
    """Just what incremental_reach reads from an ObjectPlan."""

    def __init__(self, lookback_days: float = 0) -> None:
        self.strategy = Strategy.UPDATED
        self.label = "demo/shop/customers"
        self.config = type(
            "C", (), {"incremental": type("I", (), {"lookback_days": lookback_days, "cursor_unit": None})()}
        )()


def test_incremental_reach_is_the_cursor_minus_the_lookback() -> None:
    cursor = CursorState(Strategy.UPDATED, "updated_at", "2024-01-05T06:00:00")
    assert incremental_reach(_Obj(), cursor) == dt.datetime(2024, 1, 5, 6, tzinfo=UTC)  # type: ignore[arg-type]
    assert incremental_reach(_Obj(2), cursor) == dt.datetime(2024, 1, 3, 6, tzinfo=UTC)  # type: ignore[arg-type]
    assert incremental_reach(_Obj(), None) is None  # type: ignore[arg-type]


def test_a_partition_races_only_an_incremental_commit_that_can_reach_its_window() -> None:
    obj: Any = _Obj()
    cursor = CursorState(Strategy.UPDATED, "updated_at", "2024-01-05T00:00:00")
    check_window_race(obj, JAN_2, 1, 1, None, "t")  # nobody committed
    check_window_race(obj, JAN_2, 1, 2, cursor, "t")  # committed, but reads from 2024-01-05 on
    with pytest.raises(WindowRaceError):
        check_window_race(_Obj(3), JAN_2, 1, 2, cursor, "t")  # type: ignore[arg-type]  # a 3-day lookback
    with pytest.raises(WindowRaceError):
        check_window_race(obj, JAN_2, None, 2, None, "t")  # the first incremental run reads everything


def test_a_date_column_is_in_a_window_of_its_local_dates() -> None:
    """A date names a day in the partitions' time zone, not a UTC instant."""
    berlin = dt.timezone(dt.timedelta(hours=1))
    window = TimeWindow(dt.datetime(2024, 1, 2, tzinfo=berlin), dt.datetime(2024, 1, 3, tzinfo=berlin))
    column = pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)])
    assert window_mask(column, window).to_pylist() == [False, True, False]


def test_row_filter_compares_a_date_column_with_a_moment_by_its_midnight() -> None:
    from dativo_dagster.sources.incremental import row_filter

    column = pa.array([dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 3)])
    midnight = dt.datetime(2024, 1, 2, tzinfo=UTC)
    noon = dt.datetime(2024, 1, 2, 12, tzinfo=UTC)
    assert row_filter(column, midnight, True).to_pylist() == [False, True, True]
    assert row_filter(column, midnight, False).to_pylist() == [False, False, True]
    assert row_filter(column, noon, True).to_pylist() == [False, False, True]
    assert row_filter(column, noon, False).to_pylist() == [False, False, True]


NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")


def _local_day(zone: ZoneInfo, day: int) -> TimeWindow:
    return TimeWindow(dt.datetime(2024, 1, day, tzinfo=zone), dt.datetime(2024, 1, day + 1, tzinfo=zone))


@pytest.mark.parametrize("zone", [NEW_YORK, TOKYO], ids=["behind UTC", "ahead of UTC"])
def test_a_date_cursor_partition_holds_its_own_local_date_in_any_time_zone(zone: ZoneInfo) -> None:
    dates = pa.array([dt.date(2024, 1, d) for d in (1, 2, 3, 4)])
    assert window_mask(dates, _local_day(zone, 3)).to_pylist() == [False, False, True, False]
    # the first partition holds the rows dated on partitions.start
    assert window_mask(dates, _local_day(zone, 1)).to_pylist() == [True, False, False, False]
    assert before_window(dates, _local_day(zone, 3)).to_pylist() == [True, True, False, False]


def test_a_timestamp_cursor_partition_is_the_local_day_in_utc_instants() -> None:
    moments = pa.array(
        [
            dt.datetime(2024, 1, 3, 4, 59),
            dt.datetime(2024, 1, 3, 5),
            dt.datetime(2024, 1, 4, 4, 59),
            dt.datetime(2024, 1, 4, 5),
        ]
    )
    assert window_mask(moments, _local_day(NEW_YORK, 3)).to_pylist() == [False, True, True, False]
    tokyo = pa.array([dt.datetime(2024, 1, 2, 14, 59), dt.datetime(2024, 1, 2, 15), dt.datetime(2024, 1, 3, 15)])
    assert window_mask(tokyo, _local_day(TOKYO, 3)).to_pylist() == [False, True, False]


def _sql_plan() -> Any:
    from tests.unit.test_sql_common import plan

    obj = plan({"table": "events"}, {"strategy": "updated", "cursor_field": "updated_at"})
    return dataclasses.replace(obj, config_where="tenants/acme/jobs/db.yaml: objects[0]")


@pytest.mark.parametrize("zone", [NEW_YORK, TOKYO], ids=["behind UTC", "ahead of UTC"])
def test_sql_predicates_bound_a_date_cursor_by_local_dates_and_a_timestamp_by_utc(zone: ZoneInfo) -> None:
    obj = _sql_plan()
    request = ReadRequest(obj=obj, between=_local_day(zone, 3))
    dates = read_predicates(obj, request, pa.date32())
    assert [(p.operator, p.value) for p in dates] == [(">=", dt.date(2024, 1, 3)), ("<", dt.date(2024, 1, 4))]
    start, end = (p.value for p in read_predicates(obj, request, pa.timestamp("us", tz="UTC")))
    assert (start, end) == _local_day(zone, 3).utc()


@pytest.mark.parametrize("cursor_type", [pa.string(), pa.int64()])
def test_a_partition_refuses_a_cursor_column_that_is_not_a_time_at_the_source(cursor_type: pa.DataType) -> None:
    obj = _sql_plan()
    with pytest.raises(ConfigError) as info:
        read_predicates(obj, ReadRequest(obj=obj, between=JAN_2), cursor_type)
    assert info.value.code == "CFG001"
    assert "tenants/acme/jobs/db.yaml: objects[0].incremental.cursor_field" in info.value.message
    assert "acme/db/orders" in info.value.message


def _committed(cursor: str | None, **props: str) -> dict[str, str]:
    value = CursorState(Strategy.UPDATED, "updated_at", cursor).to_json() if cursor else "null"
    return {"dativo.run-id": "r", "dativo.cursor": value, **props}


def test_a_reset_committed_during_a_partition_read_makes_the_partition_read_again() -> None:
    obj: Any = _Obj()
    base = CursorState(Strategy.UPDATED, "updated_at", "2024-02-01T00:00:00")
    january = TimeWindow(dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 2, 1, tzinfo=UTC))
    # newer incremental commits only: January lies before their reach
    check_window_race(obj, january, 1, 3, base, "t", committed_since=[_committed("2024-02-03T00:00:00")])
    for since in (
        # `dativo reset --to 2024-01-10`, then an incremental run from there
        [_committed("2024-02-02T00:00:00"), _committed("2024-01-10T00:00:00", **{"dativo.reset-kind": "cursor"})],
        # `dativo run --full-refresh`: the reset carries no cursor (reaches everything)
        [_committed("2024-02-02T00:00:00"), _committed(None, **{"dativo.reset-kind": "full-refresh"})],
        # any commit with a lower cursor than the read began with
        [_committed("2024-01-20T00:00:00")],
    ):
        with pytest.raises(WindowRaceError):
            check_window_race(obj, january, 1, 3, base, "t", committed_since=since)


def test_a_reversed_partition_range_is_refused() -> None:
    config = Partitions.model_validate({"granularity": "daily", "start": "2024-01-01"})
    with pytest.raises(ConfigError) as info:
        partition_run_args(config, "2024-01-31...2024-01-01", "demo/crm")
    assert info.value.code == "CFG001" and "starts after it ends" in info.value.message
    assert partition_run_args(config, "2024-01-01...2024-01-31", "demo/crm")["tags"] == {
        "dagster/asset_partition_range_start": "2024-01-01",
        "dagster/asset_partition_range_end": "2024-01-31",
    }
    monthly = Partitions.model_validate({"granularity": "monthly", "start": "2024-01-01"})
    with pytest.raises(ConfigError):
        partition_run_args(monthly, "2024-03-01...2024-02-01", "demo/crm")
