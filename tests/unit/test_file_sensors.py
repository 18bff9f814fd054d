"""New-file sensors: the pure comparison, the config block, the definitions, and ticks on a real instance."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.file_sensors import (
    START_MARGIN_NS,
    TAG_NEW_FILES,
    TAG_TRIGGER,
    FileMark,
    advance_mark,
    arrived_files,
    describe_arrived,
    format_cursor,
    parse_cursor,
    run_key,
    starting_mark,
)
from dativo_dagster.sources.base import FileVersion
from tests.file_drops import CUSTOMERS_HEADER, drop, watch_drops

SENSOR = "demo__shop__new_files"
ORDERS = dg.AssetKey(["demo", "csv", "orders"])
CUSTOMERS = dg.AssetKey(["demo", "csv", "customers"])
T = 1_700_000_000_000_000_000


def fv(file_id: str, modified_ns: int, fingerprint: str = "10") -> FileVersion:
    return FileVersion(file_id, file_id, modified_ns, fingerprint)


def ids(files: list[FileVersion]) -> list[str]:
    return [f.file_id for f in files]


# --------------------------------------------------------------------------- the comparison


def test_a_new_file_arrives_and_the_mark_moves_to_it() -> None:
    mark = FileMark(T, {"a": "10"})
    files = [fv("a", T), fv("b", T + 5)]
    assert ids(arrived_files(files, mark)) == ["b"]
    assert advance_mark(files, mark) == FileMark(T + 5, {"b": "10"})


def test_a_second_file_within_the_same_tick_arrives() -> None:
    mark = FileMark(T, {"a": "10"})
    files = [fv("a", T), fv("b", T)]
    assert ids(arrived_files(files, mark)) == ["b"]
    nxt = advance_mark(files, mark)
    assert nxt == FileMark(T, {"a": "10", "b": "10"})
    assert arrived_files(files, nxt) == []


def test_a_file_rewritten_within_the_tick_arrives_again() -> None:
    mark = FileMark(T, {"a": "10"})
    files = [fv("a", T, "25")]
    assert ids(arrived_files(files, mark)) == ["a"]
    assert advance_mark(files, mark) == FileMark(T, {"a": "25"})


def test_deleting_files_launches_nothing_and_keeps_the_mark() -> None:
    mark = FileMark(T, {"a": "10", "b": "10"})
    assert arrived_files([fv("a", T)], mark) == []
    assert arrived_files([], mark) == []
    assert advance_mark([], mark) == FileMark(T)


def test_a_file_of_the_mark_going_back_in_time_arrives_once() -> None:
    mark = FileMark(T, {"a": "10", "b": "10"})
    files = [fv("a", T - 50), fv("b", T)]
    assert ids(arrived_files(files, mark)) == ["a"]
    nxt = advance_mark(files, mark)
    assert nxt == FileMark(T, {"b": "10"})  # the mark's time stays: b was seen there
    assert arrived_files(files, nxt) == []


def test_an_older_file_not_at_the_mark_is_not_seen() -> None:
    # The documented price of a bounded cursor: a file appearing with an old time is left to the next run.
    assert arrived_files([fv("old", T - 1)], FileMark(T, {"a": "10"})) == []


def test_first_evaluation_starts_from_what_the_table_holds() -> None:
    # A file_mtime cursor says exactly which files were loaded: ties and newer files arrive.
    cursor = {"mtime_ns": T, "paths": ["at_cursor"], "sizes": {"at_cursor": 10}}
    files = [fv("old", T - 5), fv("at_cursor", T, "10"), fv("tie", T, "3"), fv("later", T + 1)]
    assert ids(arrived_files(files, starting_mark(files, T + 10**12, cursor))) == ["tie", "later"]
    # Files the run left for later (pending): everything arrives, the run reads what it needs.
    assert starting_mark(files, T, {**cursor, "pending": ["x"]}) == FileMark(0)
    # No file cursor: files written while the last run was under way (before its commit) still arrive.
    commit = T + START_MARGIN_NS * 2
    files = [fv("long_ago", commit - START_MARGIN_NS - 1), fv("during_run", commit - 1), fv("later", commit + 1)]
    assert ids(arrived_files(files, starting_mark(files, commit))) == ["during_run", "later"]
    assert ids(arrived_files(files, starting_mark(files, None))) == ["long_ago", "during_run", "later"]
    assert starting_mark([], None) == FileMark(0)


def test_arrived_files_are_ordered_by_time_then_id() -> None:
    files = [fv("c", T + 2), fv("b", T + 1), fv("a", T + 2)]
    assert ids(arrived_files(files, FileMark(T))) == ["b", "a", "c"]


def test_cursor_round_trip_and_unreadable_cursors() -> None:
    marks = {"orders": FileMark(T, {"b": "2", "a": "1"}), "refunds": FileMark(0)}
    text = format_cursor(marks)
    assert parse_cursor(text) == marks
    assert json.loads(text)["objects"]["orders"] == {"modified_ns": T, "files": {"a": "1", "b": "2"}}
    for bad in (None, "", "not json", "[]", '{"objects": {"o": {}}}', '{"objects": {"o": {"modified_ns": "x"}}}'):
        assert parse_cursor(bad) == {}


def test_run_key_depends_on_the_versions_only() -> None:
    one = {"orders": [fv("a", T), fv("b", T + 1)]}
    assert run_key(one) == run_key({"orders": [fv("b", T + 1), fv("a", T)]})
    assert run_key(one).startswith("new_files:")
    assert run_key(one) != run_key({"orders": [fv("a", T), fv("b", T + 1, "11")]})
    assert run_key(one) != run_key({"refunds": [fv("a", T), fv("b", T + 1)]})


def test_the_files_tag_is_bounded() -> None:
    assert describe_arrived({"orders": [fv("a", T), fv("b", T)], "x": [fv("c", T)]}) == "orders: a, b; x: c"
    many = {"orders": [fv(f"file_{n:04}.csv", T) for n in range(500)]}
    text = describe_arrived(many)
    assert len(text) <= 240 and text.endswith("(500 files)")


# --------------------------------------------------------------------------- config and definitions


def test_only_jobs_with_watched_files_get_a_sensor(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    assert SENSOR not in {sensor.name for sensor in defs.sensors or []}  # demo/shop reads two single files

    watch_drops(project, interval_s=30)
    defs = build_definitions(load_plan(project, strict=True))
    sensor = defs.resolve_sensor_def(SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 30
    assert sensor.asset_selection is not None
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {ORDERS}
    assert "demo/shop" in (sensor.description or "") and "orders" in (sensor.description or "")
    assert defs.resolve_sensor_def("demo__shop__schedule") is not None  # the cron sensor stays


def test_a_disabled_file_sensor_is_not_defined(project: Path) -> None:
    watch_drops(project)
    runner = project / "runner.yaml"
    runner.write_text(runner.read_text().replace("{minimum_interval_seconds: 5}", "{enabled: false}"))
    defs = build_definitions(load_plan(project, strict=True))
    assert SENSOR not in {sensor.name for sensor in defs.sensors or []}


@pytest.mark.parametrize(
    ("block", "field"),
    [("{minimum_interval_seconds: 1}", "minimum_interval_seconds"), ("{enabld: true}", "enabld")],
)
def test_a_bad_file_sensor_block_is_cfg001(project: Path, block: str, field: str) -> None:
    watch_drops(project)
    runner = project / "runner.yaml"
    runner.write_text(runner.read_text().replace("{minimum_interval_seconds: 5}", block))
    with pytest.raises(ConfigProblems) as caught:
        load_plan(project, strict=True)
    assert "CFG001" in str(caught.value) and f"file_sensor.{field}" in str(caught.value)


# --------------------------------------------------------------------------- ticks on a real instance


class Ticks:
    """Evaluates the sensor tick after tick, carrying its cursor as the daemon does."""

    def __init__(self, project: Path, instance: dg.DagsterInstance) -> None:
        self.defs = build_definitions(load_plan(project, strict=True))
        self.sensor = self.defs.resolve_sensor_def(SENSOR)
        self.instance = instance
        self.cursor: str | None = None

    def __call__(self) -> dg.SensorResult:
        with dg.build_sensor_context(cursor=self.cursor, instance=self.instance, definitions=self.defs) as context:
            data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data  # type: ignore[return-value]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as found:
        yield found


def test_ticks_request_one_run_per_arrival(project: Path, instance: dg.DagsterInstance) -> None:
    drops = watch_drops(project)
    drop(drops, "a.csv", 1, modified_ns=T)
    tick = Ticks(project, instance)

    # Never loaded: the files present arrive on the first tick.
    (first,) = tick().run_requests or []
    assert first.asset_selection == [ORDERS]
    assert first.tags[TAG_TRIGGER] == "new_files" and first.tags[TAG_NEW_FILES] == "orders: drops/a.csv"
    assert first.tags["dativo/tenant"] == "demo" and first.tags["dativo/job"] == "shop"
    assert first.tags["team"] == "data-platform"
    size = str((drops / "a.csv").stat().st_size)
    assert first.run_key == run_key({"orders": [FileVersion("drops/a.csv", "drops/a.csv", T, size)]})

    nothing = tick()
    assert not nothing.run_requests
    assert "no new or changed file in orders (1 files)" in (nothing.skip_message or "")

    drop(drops, "b.csv", 2, modified_ns=T + 10**9)
    (second,) = tick().run_requests or []
    assert second.tags[TAG_NEW_FILES] == "orders: drops/b.csv" and second.run_key != first.run_key
    assert not tick().run_requests

    # Written within the same clock tick as b.csv: it arrives; b.csv rewritten within it arrives too.
    drop(drops, "c.csv", 3, modified_ns=T + 10**9)
    (tie,) = tick().run_requests or []
    assert tie.tags[TAG_NEW_FILES] == "orders: drops/c.csv"
    drop(drops, "b.csv", 20, rows=3, modified_ns=T + 10**9)
    (rewritten,) = tick().run_requests or []
    assert rewritten.tags[TAG_NEW_FILES] == "orders: drops/b.csv"

    # Deleting a file launches nothing; the cursor holds only the files of the latest tick.
    (drops / "a.csv").unlink()
    assert not tick().run_requests
    assert tick.cursor is not None
    assert set(json.loads(tick.cursor)["objects"]["orders"]["files"]) == {"drops/b.csv", "drops/c.csv"}


def test_a_tick_evaluated_again_requests_the_same_run_key(project: Path, instance: dg.DagsterInstance) -> None:
    drops = watch_drops(project)
    drop(drops, "a.csv", 1)
    tick = Ticks(project, instance)
    tick()
    drop(drops, "b.csv", 2, modified_ns=(drops / "a.csv").stat().st_mtime_ns + 10**9)
    before = tick.cursor
    (launched,) = tick().run_requests or []
    tick.cursor = before  # the daemon died between the launch and the cursor's save
    (again,) = tick().run_requests or []
    assert again.run_key == launched.run_key


def test_one_object_failing_does_not_hide_another_objects_files(project: Path, instance: dg.DagsterInstance) -> None:
    drops = watch_drops(project, customers=True)
    customer_drops = drops.parent / "customer_drops"
    (customer_drops / "c.csv").write_text(CUSTOMERS_HEADER)
    tick = Ticks(project, instance)
    tick()
    assert tick.cursor is not None and set(json.loads(tick.cursor)["objects"]) == {"orders", "customers"}

    # A link leading outside the tenant's data roots: the customers listing fails with CFG001.
    outside = project / "outside.csv"
    outside.write_text(CUSTOMERS_HEADER)
    os.symlink(outside, customer_drops / "escape.csv")
    drop(drops, "a.csv", 1)
    (request,) = tick().run_requests or []
    assert request.asset_selection == [ORDERS]
    size = str((customer_drops / "c.csv").stat().st_size)
    assert json.loads(tick.cursor)["objects"]["customers"]["files"] == {"customer_drops/c.csv": size}

    # Nothing else arrived: the tick fails, with the code and the object, and no traceback of the source.
    with pytest.raises(Exception, match=r"customers: CFG001") as caught:
        tick()
    assert "Traceback" not in str(caught.value)


def test_a_source_that_cannot_be_built_fails_the_tick_with_its_code(
    project: Path, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch_drops(project)
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("base_path: tenants/demo/data", "base_path: ${DROPS_HOME_UNSET_VAR}"))
    monkeypatch.delenv("DROPS_HOME_UNSET_VAR", raising=False)
    tick = Ticks(project, instance)
    expected = r"new_files could not check .* orders: CFG001: .*DROPS_HOME_UNSET_VAR is not set"
    with pytest.raises(Exception, match=expected):
        tick()


# --------------------------------------------------------------------------- any source that lists files

LISTINGS: dict[str, list[FileVersion] | Exception] = {}
TOKEN = "fake-drive-token-8d1e"


@pytest.fixture
def fake_drive(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[FileVersion] | Exception]]:
    """demo/shop read through a source type that watches every object (a folder per object, as a
    Drive source does) and lists what ``LISTINGS`` holds; its credential is a ``${VAR}``."""
    from dativo_dagster.errors import AuthError
    from dativo_dagster.sources import registry
    from dativo_dagster.sources.csv.source import CsvSource

    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))
    monkeypatch.setenv("FAKE_DRIVE_TOKEN", TOKEN)

    class FakeDrive(CsvSource):
        type = "fake_drive"

        @classmethod
        def watches_files(cls, obj: object) -> bool:  # type: ignore[override]
            return True

        def list_files(self, obj: object) -> list[FileVersion]:  # type: ignore[override]
            found = LISTINGS[obj.name]  # type: ignore[attr-defined]
            if found == "denied":
                # A source that puts its credential into its message: the sensor must not show it.
                raise AuthError(f"token {self.credentials['token']} was rejected")
            if isinstance(found, Exception):
                raise found
            return list(found)

    (project / "connectors/sources/fake_drive.yaml").write_text(
        'name: fake_drive\ntype: fake_drive\ncredentials: {token: "${FAKE_DRIVE_TOKEN}"}\n'
    )
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: csv", "recipe: fake_drive"))
    LISTINGS.clear()
    yield LISTINGS
    LISTINGS.clear()


def test_any_source_listing_files_is_watched_and_its_failures_are_coded_and_redacted(
    fake_drive: dict[str, list[FileVersion] | Exception], project: Path, instance: dg.DagsterInstance
) -> None:
    orders = dg.AssetKey(["demo", "fake_drive", "orders"])
    customers = dg.AssetKey(["demo", "fake_drive", "customers"])
    fake_drive.update(orders=[fv("id1", T, "v1")], customers=[fv("c1", T, "v1")])
    tick = Ticks(project, instance)
    assert tick.sensor.asset_selection is not None
    assert tick.sensor.asset_selection.resolve(tick.defs.resolve_asset_graph()) == {orders, customers}

    (both,) = tick().run_requests or []
    assert both.asset_selection == [customers, orders] and both.tags[TAG_NEW_FILES] == "customers: c1; orders: id1"

    # A new version of id1 (same time, another fingerprint) arrives while customers' listing is refused.
    fake_drive.update(orders=[fv("id1", T, "v2")], customers="denied")  # type: ignore[dict-item]
    (only_orders,) = tick().run_requests or []
    assert only_orders.asset_selection == [orders]

    with pytest.raises(Exception, match="customers: AUTH001") as caught:
        tick()
    assert TOKEN not in str(caught.value)

    fake_drive["customers"] = RuntimeError("listing broke")
    with pytest.raises(Exception, match="customers: BUG: unexpected RuntimeError: listing broke"):
        tick()

    # Customers listed again: its mark was kept, so only what changed meanwhile arrives.
    fake_drive["customers"] = [fv("c1", T, "v1"), fv("c2", T + 1, "v1")]
    (later,) = tick().run_requests or []
    assert later.tags[TAG_NEW_FILES] == "customers: c2"
