"""Table upkeep planners: which files are compacted and how they are grouped, which snapshots
expire, which files are orphans; and the settings' safety rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dativo_dagster.config.models import RunnerConfig, TenantMaintenance
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.maintenance import (
    FileFacts,
    ListedFile,
    SnapshotFacts,
    check_orphan_age,
    check_retain_days,
    pack_groups,
    plan_compaction,
    plan_expiry,
    protected_snapshots,
    select_for_compaction,
    select_orphans,
)
from dativo_dagster.state import PROP_CURSOR, PROP_PARTITION, PROP_RUN_ID

TARGET = 1_000


def f(path: str, rows: int, *deletes: str) -> FileFacts:
    return FileFacts(path=path, rows=rows, delete_paths=frozenset(deletes))


def test_small_files_and_files_with_deletes_are_selected() -> None:
    files = [f("big", 900), f("small", 100), f("big-with-deletes", 950, "d1"), f("edge", 750)]
    chosen = {x.path for x in select_for_compaction(files, TARGET)}
    assert chosen == {"small", "big-with-deletes"}


def test_groups_are_bin_packed_to_the_target() -> None:
    files = [f("a", 600), f("b", 500), f("c", 400), f("d", 300), f("e", 200)]
    groups = pack_groups(files, TARGET)
    assert all(sum(x.rows for x in group) <= TARGET for group in groups)
    assert sorted(x.path for group in groups for x in group) == ["a", "b", "c", "d", "e"]
    assert len(groups) == 2  # 2,000 rows in two full groups (first fit, largest first)


def test_an_oversized_file_with_deletes_gets_a_group_of_its_own() -> None:
    groups = plan_compaction([f("huge", 5_000, "d"), f("s1", 10), f("s2", 10)], TARGET)
    assert [[x.path for x in g] for g in groups] == [["huge"], ["s1", "s2"]]


def test_a_lone_small_file_without_deletes_is_not_rewritten() -> None:
    assert plan_compaction([f("big", 990), f("small", 10)], TARGET) == []
    assert plan_compaction([f("small", 10, "d")], TARGET) == [[f("small", 10, "d")]]
    with pytest.raises(ValueError):
        plan_compaction([], 0)


DAY = 86_400_000
NOW = 100 * DAY


def snap(sid: int, parent: int | None, day: float, **props: str) -> SnapshotFacts:
    return SnapshotFacts(sid, parent, int(day * DAY), props)


def run(run_id: str) -> dict[str, str]:
    return {PROP_RUN_ID: run_id, PROP_CURSOR: '{"v":1}'}


def test_expiry_keeps_the_chain_back_to_the_cursor_snapshot() -> None:
    snapshots = [
        snap(1, None, 1, **run("r1")),
        snap(2, 1, 2, **run("r2")),
        snap(3, 2, 3, **run("r3")),  # the cursor
        snap(4, 3, 4, **{"dativo.maintenance": "compact"}),
        snap(5, 4, 5, **{"dativo.maintenance": "compact"}),
    ]
    expired = plan_expiry(snapshots, 5, ref_heads=[5], now_ms=NOW, retain_days=7, min_keep=1)
    assert expired == [1, 2]
    assert protected_snapshots(snapshots, 5, [5], min_keep=1) == {3, 4, 5}


def test_expiry_keeps_young_snapshots_minimum_count_refs_and_newest_partition() -> None:
    snapshots = [
        snap(1, None, 1, **run("r1")),
        snap(2, 1, 2, **{**run("p"), PROP_PARTITION: "2024-01-01/2024-01-02"}),
        snap(3, 2, 3, **run("r3")),
        snap(4, 3, 4),
        snap(5, 4, 98),  # young
        snap(9, 1, 1.5),  # a tag's head, off the main lineage
    ]
    expired = plan_expiry(snapshots, 5, ref_heads=[5, 9], now_ms=NOW, retain_days=7, min_keep=1)
    assert expired == [1]
    # a minimum count keeps the newest of the lineage even when they are old
    assert plan_expiry(snapshots, 5, [5, 9], NOW, retain_days=0, min_keep=5) == []


def test_without_an_incremental_snapshot_the_walk_to_the_partition_cursor_is_kept() -> None:
    snapshots = [
        snap(1, None, 1, **{**run("p"), PROP_PARTITION: "w"}),
        snap(2, 1, 2, **{"dativo.maintenance": "compact"}),
        snap(3, 2, 3, **{"dativo.maintenance": "compact"}),
    ]
    assert plan_expiry(snapshots, 3, [3], NOW, retain_days=0, min_keep=1) == []


def test_orphans_are_unreferenced_and_old() -> None:
    listed = [
        ListedFile("wh/t/data/referenced.parquet", 10, 0.0),
        ListedFile("wh/t/data/old-orphan.parquet", 20, 100.0),
        ListedFile("wh/t/data/young-orphan.parquet", 30, 5_000.0),
        ListedFile("wh/t/data/unknown-age.parquet", 40, None),
    ]
    orphans = select_orphans(listed, {"wh/t/data/referenced.parquet"}, older_than_s=1_000.0)
    assert [o.path for o in orphans] == ["wh/t/data/old-orphan.parquet"]


def test_safety_margins_are_enforced_with_cfg001() -> None:
    assert check_orphan_age(1) == 1
    with pytest.raises(ConfigError, match=r"CFG001.*safety window"):
        check_orphan_age(0.5)
    with pytest.raises(ConfigError, match="CFG001"):
        check_retain_days(-1)
    for days in (float("inf"), float("nan"), 3651, 1e300):
        with pytest.raises(ConfigError, match=r"CFG001.*between 0 and 3650"):
            check_retain_days(days)
    for hours in (float("inf"), 87601):
        with pytest.raises(ConfigError, match=r"CFG001.*at most 87600"):
            check_orphan_age(hours)
    assert check_retain_days(3650) == 3650 and check_orphan_age(87600) == 87600


def test_tenant_maintenance_settings_are_validated() -> None:
    settings = TenantMaintenance.model_validate({"schedule": "0 3 * * 0", "retain_days": 7, "orphan_age_hours": 72})
    assert settings.timezone == "UTC" and settings.enabled
    for bad in (
        {"schedule": "every sunday"},
        {"schedule": "0 3 * * 0", "orphan_age_hours": 0.5},
        {"schedule": "0 3 * * 0", "orphan_age_hours": 12},  # scheduled: at least a day
        {"schedule": "0 3 * * 0", "retain_days": float("inf")},
        {"schedule": "0 3 * * 0", "timezone": "Mars/Olympus"},
        {"schedule": "0 3 * * 0", "extra": 1},
    ):
        with pytest.raises(ValidationError):
            TenantMaintenance.model_validate(bad)


def test_maintenance_of_a_tenant_without_jobs_is_refused() -> None:
    jobs = [{"tenant": "acme", "job": "crm"}]
    RunnerConfig.model_validate({"jobs": jobs, "maintenance": {"acme": {"schedule": "0 3 * * 0"}}})
    with pytest.raises(ValidationError, match="globex"):
        RunnerConfig.model_validate({"jobs": jobs, "maintenance": {"globex": {"schedule": "0 3 * * 0"}}})


def test_definitions_hold_the_upkeep_job_and_schedule_without_secrets(project: Path) -> None:
    import dagster as dg

    from dativo_dagster.build import build_definitions
    from dativo_dagster.config.loader import load_plan

    assert not {j.name for j in build_definitions(load_plan(project, strict=True)).resolve_all_job_defs()} & {
        "demo__maintain"
    }
    runner = project / "runner.yaml"
    runner.write_text(
        runner.read_text() + 'maintenance:\n  demo: {schedule: "0 3 * * 0", timezone: Europe/Paris, enabled: false}\n'
    )
    defs = build_definitions(load_plan(project, strict=True))
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("demo__maintain")
    assert job.tags["dativo/tenant"] == "demo"
    schedule = defs.resolve_schedule_def("demo__maintain__schedule")
    assert schedule.cron_schedule == "0 3 * * 0" and schedule.execution_timezone == "Europe/Paris"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "demo__maintain"


class _FailingFirstWriter:
    """A writer whose first table load fails with an uncoded exception; the others have no table."""

    target_file_rows = 1_000

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load_table(self, namespace: str, name: str) -> None:
        self.loaded.append(f"{namespace}.{name}")
        if len(self.loaded) == 1:
            raise RuntimeError("an engine's table dativo cannot read")
        return None


def test_a_table_failing_with_an_uncoded_exception_does_not_stop_the_others(project: Path) -> None:
    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.maintain import UpkeepSettings, job_tables, maintain_job

    job = load_plan(project, strict=True).jobs[0]
    writer = _FailingFirstWriter()

    reports = maintain_job(job, writer, UpkeepSettings())

    assert writer.loaded == [f"{ns}.{name}" for _, ns, name in job_tables(job)]  # every table was tried
    assert reports[0].error is not None and reports[0].error.startswith("BUG: unexpected RuntimeError")
    assert all(r.error is None for r in reports[1:]) and len(reports) == len(job.objects)


def test_the_upkeep_op_runs_every_job_before_failing(project: Path) -> None:
    import dataclasses

    import dagster as dg

    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.config.models import TenantMaintenance
    from dativo_dagster.errors import AuthError
    from dativo_dagster.maintenance_jobs import build_maintenance_job

    job = load_plan(project, strict=True).jobs[0]
    second = dataclasses.replace(job, job=job.job.model_copy(update={"name": "second"}))
    writers: list[_FailingFirstWriter] = []

    class Resource:
        def writer_for(self, target: object) -> _FailingFirstWriter:
            if not writers:
                writers.append(_FailingFirstWriter())
                raise AuthError("the catalog refused the target's credentials")
            writers.append(_FailingFirstWriter())
            return writers[-1]

    upkeep = build_maintenance_job(job.tenant, [job, second], TenantMaintenance(schedule="0 3 * * 0"))
    op = upkeep.graph.node_defs[0]
    with pytest.raises(dg.Failure) as failure:
        op(dg.build_op_context(resources={"dativo": Resource()}))
    assert len(writers) == 2 and writers[1].loaded  # the second job's tables were maintained
    assert "AUTH001" in str(failure.value.description) and "BUG: unexpected RuntimeError" in str(
        failure.value.description
    )


@pytest.mark.parametrize(
    "key",
    ["write.data.path", "write.metadata.path", "write.object-storage.path", "write.location-provider.impl"],
)
def test_table_properties_moving_files_out_of_the_table_location_are_refused(tmp_path: Path, key: str) -> None:
    from tests.unit.test_storage_config import SQL, recipe, refused

    problems = refused(tmp_path, SQL + f"table_properties: {{{key}: 's3://shared/data'}}\nwarehouse: w\n")
    assert f"'{key}' moves the table's files out of its own location" in problems
    # object-store layout stays under the table's data directory: allowed
    allowed = recipe(tmp_path, SQL + "table_properties: {write.object-storage.enabled: 'true'}\nwarehouse: w\n")
    assert allowed.table_properties == {"write.object-storage.enabled": "true"}


def test_fsspec_modification_times_are_read_in_each_implementation_s_spelling() -> None:
    import datetime as dt

    from dativo_dagster.iceberg.maintenance import fsspec_modified

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert fsspec_modified({"last_modified": when}) == when.timestamp()  # adlfs
    assert fsspec_modified({"LastModified": when.replace(tzinfo=None)}) == when.timestamp()  # s3fs, naive UTC
    assert fsspec_modified({"mtime": 12.5}) == 12.5  # local
    assert fsspec_modified({"updated": "2026-01-02T03:04:05Z"}) == when.timestamp()  # gcsfs
    assert fsspec_modified({"size": 3}) is None and fsspec_modified({"mtime": "not a time"}) is None
    # a file whose age is unknown is never an orphan
    assert select_orphans([ListedFile("a", 1, None)], set(), older_than_s=10**12) == []
