"""The code location loads: keys, groups, kinds, schedules, retry policy — with no secrets set."""

from __future__ import annotations

import importlib
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.models import Schedule


def test_definitions_module_loads(project: Path) -> None:
    import dativo_dagster.definitions as module

    defs = importlib.reload(module).defs
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"demo/csv/orders", "demo/csv/customers"}


def test_specs_keys_groups_tags_kinds_metadata(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    orders = specs["demo/csv/orders"]
    assert orders.group_name == "demo"
    assert orders.tags["dativo/tenant"] == "demo"
    assert orders.kinds == {"csv", "iceberg"}
    assert orders.metadata["dagster/table_name"] == "dativo.demo.orders"
    columns = orders.metadata["dagster/column_schema"].columns
    assert [c.name for c in columns][:2] == ["order_id", "customer_id"]
    assert not columns[0].constraints.nullable


def test_one_multi_asset_per_job_with_subsetting_retry_and_checks(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    (assets,) = list(defs.assets or [])
    assert isinstance(assets, dg.AssetsDefinition)
    assert assets.can_subset
    assert len(assets.check_specs_by_output_name) == 2
    policy = assets.op.retry_policy
    assert policy is not None and policy.max_retries == 3 and policy.backoff == dg.Backoff.EXPONENTIAL


def test_schedule_from_runner_yaml_requests_the_tenant_job_assets(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    schedule = defs.resolve_schedule_def("demo__shop__schedule")
    assert schedule.cron_schedule == "0 * * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.job_name == defs.resolve_implicit_global_asset_job_def().name
    with dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 28, 11, tzinfo=timezone.utc)) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    assert set(request.asset_selection or []) == {dg.AssetKey(["demo", "csv", k]) for k in ("orders", "customers")}
    assert request.tags["dativo/tenant"] == "demo" and request.tags["dativo/job"] == "shop"


def test_no_job_per_tenant_job(project: Path) -> None:
    """Schedules launch the tenant's assets in the asset job: Dagster resolves one job per load."""
    repository = build_definitions(load_plan(project, strict=True)).get_repository_def()
    assert [job.name for job in repository.get_all_jobs()] == [repository.get_implicit_global_asset_job_def().name]


@pytest.mark.parametrize(
    ("minutes", "cron"),
    [(1, "* * * * *"), (15, "*/15 * * * *"), (60, "0 * * * *"), (360, "0 */6 * * *"), (1440, "0 0 * * *")],
)
def test_interval_schedules_become_cron(minutes: int, cron: str) -> None:
    assert Schedule(interval_minutes=minutes).cron_expression == cron


def test_loads_without_secrets_in_the_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("base_path: tenants/demo/data", "base_path: ${DEMO_DATA_DIR}"))
    monkeypatch.delenv("DEMO_DATA_DIR", raising=False)
    defs = build_definitions(load_plan(project, strict=True))
    assert len(list(defs.resolve_all_asset_specs())) == 2


def test_definitions_load_without_importing_the_engine_pyiceberg_or_drivers(project: Path) -> None:
    """The code server and every run worker load definitions; the engine's imports wait for a run."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from dativo_dagster.definitions import defs\n"
        "defs.get_repository_def().load_all_definitions()\n"
        "heavy = ('dativo_dagster.engine', 'dativo_dagster.iceberg.writer', 'pyiceberg', 'psycopg2', 'pymysql')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=project)
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": -3}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "many"}, "limit: Input should be a valid integer, unable to parse string as an integer"),
        ({"limits": 5}, "limits: Extra inputs are not permitted"),
    ],
)
def test_bad_run_config_is_a_coded_failure_without_retries(raw: dict[str, object], message: str) -> None:
    from dativo_dagster.assets import ingest_config

    with pytest.raises(dg.Failure) as raised:
        ingest_config(raw)
    assert raised.value.description == f"CFG001 run config: {message}"
    assert raised.value.allow_retries is False


def test_run_config_limit_reaches_the_run() -> None:
    from dativo_dagster.assets import ingest_config

    assert ingest_config({"limit": 5}).limit == 5
    assert ingest_config({"limit": None}).limit is None
    assert ingest_config(None).limit is None
