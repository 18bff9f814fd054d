"""A partitioned CSV job through Dagster's CLI (``--partition-range``) and its schedule sensor's tick."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from tests.conftest import REPO
from tests.integration.sensor_ticks import evaluate_sensors, make_schedules_due, wait_for_run_end

pytestmark = pytest.mark.slow

KEY = dg.AssetKey(["demo", "csv", "people"])
JOB = """\
tenant: demo
name: crm
source: {recipe: csv, connection: {base_path: tenants/demo/data}}
target: {recipe: local}
partitions: {granularity: daily, start: "2024-01-01"}
objects:
  - name: people
    table: people
    contract: {name: shop/customers, version: 1}
    options: {path: customers.csv}
    incremental: {strategy: updated, cursor_field: updated_at}
"""


def _partitioned_project(project: Path) -> Path:
    (project / "tenants/demo/jobs/crm.yaml").write_text(JOB)
    with (project / "runner.yaml").open("a") as runner:
        runner.write('  - tenant: demo\n    job: crm\n    schedule: {cron: "30 * * * *"}\n')
    home = project / ".dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def _rows(project: Path) -> list[tuple[object, ...]]:
    job = next(j for j in load_plan(project, strict=True).jobs if j.name == "crm")
    writer = IcebergWriter(build_catalog(job.target, SecretResolver({}), project))
    table = writer.load_table("demo", "people")
    assert table is not None
    return sorted(tuple(row.values()) for row in table.scan().to_arrow().to_pylist())


def _materialize(project: Path, home: Path, *partition: str) -> None:
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
    env["DAGSTER_HOME"] = str(home)
    env.pop("DATIVO_FAULT_INJECT", None)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "dativo_dagster.definitions"]
    done = subprocess.run(
        [*command, "--select", "demo/csv/people", *partition],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=project,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_partition_range_from_the_dagster_cli_then_a_rerun(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _partitioned_project(project)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    _materialize(project, home, "--partition-range", "2024-01-02...2024-01-04")
    rows = _rows(project)
    days = sorted(str(row[5])[:10] for row in rows)
    assert days == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-04"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_materialized_partitions(KEY) == {"2024-01-02", "2024-01-03", "2024-01-04"}
        assert len(instance.get_runs()) == 1  # the range ran as one run
    _materialize(project, home, "--partition", "2024-01-03")
    assert _rows(project) == rows


def test_the_schedule_of_a_partitioned_job_loads_incrementally(project: Path, tmp_path: Path) -> None:
    _partitioned_project(project)
    coordinator = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    home = tmp_path / "dagster_home"
    home.mkdir()
    target = ModuleTarget(
        module_name="dativo_dagster.definitions",
        attribute=None,
        working_directory=str(project),
        location_name="dativo",
    )
    with (
        dg.instance_for_test(temp_dir=str(home), overrides={"run_coordinator": coordinator}) as instance,
        create_test_daemon_workspace_context(target, instance) as workspace,
    ):
        evaluate_sensors(workspace)  # starts the schedule sensors: nothing due yet
        make_schedules_due(instance)
        evaluate_sensors(workspace)
        runs = [run for run in instance.get_runs() if run.tags.get("dativo/job") == "crm"]
        assert len(runs) == 1
        (run,) = runs
        assert run.asset_selection == {KEY}
        assert "dagster/partition" not in run.tags
        assert wait_for_run_end(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
    assert len(_rows(project)) == 500
    job = next(j for j in load_plan(project, strict=True).jobs if j.name == "crm")
    table = IcebergWriter(build_catalog(job.target, SecretResolver({}), project)).load_table("demo", "people")
    assert table is not None
    cursor = read_table_cursor(table)
    assert cursor is not None and cursor.cursor is not None
