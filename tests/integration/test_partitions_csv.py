"""A partitioned CSV object: the window filter of the CSV source, and quarantined rows per partition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dativo_dagster.cli import main
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.base import TimeWindow
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import Runner, write_project

UTC = dt.timezone.utc
CONTRACT = """\
name: acme/events
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: amount, type: int64, required: true}
  - {name: updated_at, type: timestamptz, required: true}
"""
ROWS = [
    "id,amount,updated_at",
    "1,10,2024-01-01T05:00:00+00:00",
    "2,20,2024-01-01T23:59:59+00:00",
    "3,30,2024-01-02T00:00:00+00:00",
    "4,,2024-01-02T08:00:00+00:00",  # amount is required: quarantined
    "5,50,2024-01-02T09:00:00+00:00",
    "6,60,2024-01-03T10:00:00+00:00",
    "7,70,2024-01-04T10:00:00+00:00",
]


def _runner(tmp_path: Path) -> Runner:
    root = write_project(
        tmp_path / "p",
        "csv",
        {"base_path": "tenants/acme/data"},
        [
            {
                "name": "events",
                "contract": {"name": "acme/events", "version": 1},
                "options": {"path": "events.csv", "settle_seconds": 0},
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
                "quality": {"max_rejected_rate": 0.5},
            }
        ],
        job_extra={"partitions": {"granularity": "daily", "start": "2024-01-01"}},
        contracts={"acme/events.v1.yaml": CONTRACT},
    )
    data = root / "tenants/acme/data"
    data.mkdir(parents=True)
    (data / "events.csv").write_text("\n".join(ROWS) + "\n")
    return Runner(root)


def _run(runner: Runner, day: int) -> None:
    start = dt.datetime(2024, 1, day, tzinfo=UTC)
    runner.runs += 1
    with build_source(runner.job, runner.resolver) as source:
        result = ingest_object(
            runner.job.object("events"),
            source=source,
            writer=runner.writer,
            run_id=f"p-{runner.runs}",
            window=TimeWindow(start, start + dt.timedelta(days=1)),
        )
    assert result.error is None, result.error


def test_csv_partitions_load_their_windows_and_quarantine_once(tmp_path: Path) -> None:
    runner = _runner(tmp_path)
    for day in (1, 2, 3):
        _run(runner, day)
    ids = sorted(row["id"] for row in runner.rows("events"))
    assert ids == [1, 2, 3, 5, 6]
    quarantine = runner.writer.load_table("acme", "events__quarantine")
    assert quarantine is not None
    assert quarantine.scan().to_arrow().num_rows == 1
    before = sorted(map(str, runner.rows("events")))
    _run(runner, 2)
    assert sorted(map(str, runner.rows("events"))) == before
    assert quarantine.refresh().scan().to_arrow().num_rows == 1


CRM_JOB = """\
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


def test_dativo_run_with_a_partition_or_a_range(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "tenants/demo/jobs/crm.yaml").write_text(CRM_JOB)
    with (project / "runner.yaml").open("a") as runner:
        runner.write("  - tenant: demo\n    job: crm\n")
    assert main(["run", "demo/crm", "--partition", "2024-01-04"]) == 0
    assert _people_days(project) == ["2024-01-04", "2024-01-04"]
    assert main(["run", "demo/crm", "--partition", "2024-01-02...2024-01-04"]) == 0
    assert _people_days(project) == ["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-04"]
    capsys.readouterr()
    assert main(["run", "demo/crm", "--partition", "2023-12-31"]) == 2
    assert "'2023-12-31' is not a daily partition key from 2024-01-01" in capsys.readouterr().err
    assert main(["run", "demo/shop", "--partition", "2024-01-02"]) == 2
    assert "the job has no 'partitions'" in capsys.readouterr().err
    assert main(["run", "demo/crm"]) == 0  # incremental: everything
    assert len(_people_days(project)) == 500


def _people_days(project: Path) -> list[str]:
    job = next(j for j in load_plan(project, strict=True).jobs if j.name == "crm")
    table = IcebergWriter(build_catalog(job.target, SecretResolver({}), project)).load_table("demo", "people")
    assert table is not None
    return sorted(str(row["updated_at"])[:10] for row in table.scan().to_arrow().to_pylist())
