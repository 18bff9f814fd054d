"""The code location loads: keys, groups, kinds, schedules, retry policy — with no secrets set."""

from __future__ import annotations

import importlib
from datetime import datetime, timedelta, timezone
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
    names = {(spec.asset_key.path[-1], spec.name) for spec in assets.check_specs_by_output_name.values()}
    expected = {
        "rows_conform_to_contract",
        "required_columns_not_null",
        "primary_key_unique",
        "schema_matches_contract",
        "volume_within_history",
        "quarantine_growth",
    }
    assert names == {(obj, name) for obj in ("orders", "customers") for name in expected}
    policy = assets.op.retry_policy
    assert policy is not None and policy.max_retries == 3 and policy.backoff == dg.Backoff.EXPONENTIAL


def test_schedule_from_runner_yaml_is_a_cron_sensor_targeting_the_job_assets(project: Path) -> None:
    defs = build_definitions(load_plan(project, strict=True))
    keys = {dg.AssetKey(["demo", "csv", k]) for k in ("orders", "customers")}
    sensor = defs.resolve_sensor_def("demo__shop__schedule")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.asset_selection is not None
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == keys
    assert "`0 * * * *` (UTC)" in (sensor.description or "")

    with dg.build_sensor_context(cursor=None, definitions=defs) as context:
        first = sensor.evaluate_tick(context)
    assert first.run_requests == [] and first.cursor is not None  # starting now waits for the next tick

    an_hour_ago = (datetime.now(timezone.utc) - timedelta(hours=1, minutes=1)).isoformat()
    with dg.build_sensor_context(cursor=an_hour_ago, definitions=defs) as context:
        due = sensor.evaluate_tick(context)
    (request,) = due.run_requests or []
    assert set(request.asset_selection or []) == keys
    assert request.tags["dativo/tenant"] == "demo" and request.tags["dativo/job"] == "shop"
    assert request.tags["team"] == "data-platform"
    assert request.run_key == request.tags["dativo/scheduled_for"] == due.cursor


@pytest.mark.parametrize(
    ("cursor", "now", "tick", "kept"),
    [
        (None, "2026-11-28T10:30:00+00:00", None, "2026-11-28T10:00:00+00:00"),
        ("2026-11-28T10:00:00+00:00", "2026-11-28T10:59:59+00:00", None, "2026-11-28T10:00:00+00:00"),
        ("2026-11-28T10:00:00+00:00", "2026-11-28T11:00:30+00:00", "2026-11-28T11:00:00+00:00", None),
        # The daemon was down for hours: the missed ticks become one run (an incremental load catches up).
        ("2026-11-28T06:00:00+00:00", "2026-11-28T11:20:00+00:00", "2026-11-28T11:00:00+00:00", None),
        ("edited by hand", "2026-11-28T11:20:00+00:00", None, "2026-11-28T11:00:00+00:00"),
    ],
)
def test_due_tick(cursor: str | None, now: str, tick: str | None, kept: str | None) -> None:
    from dativo_dagster.automation import due_tick

    found, new_cursor = due_tick(Schedule(cron="0 * * * *"), datetime.fromisoformat(now), cursor)
    assert found == tick
    assert new_cursor == (kept or tick)


def test_due_tick_in_the_schedules_timezone() -> None:
    from dativo_dagster.automation import due_tick

    daily = Schedule(cron="0 9 * * *", timezone="Europe/Paris")
    now = datetime(2026, 11, 28, 8, 30, tzinfo=timezone.utc)  # 09:30 in Paris
    found, _ = due_tick(daily, now, "2026-11-27T09:00:00+01:00")
    assert found == "2026-11-28T09:00:00+01:00"


def test_disabled_schedule_is_a_stopped_sensor(project: Path) -> None:
    runner = project / "runner.yaml"
    paused = runner.read_text().replace("      timezone: UTC\n", "      timezone: UTC\n      enabled: false\n")
    runner.write_text(paused)
    defs = build_definitions(load_plan(project, strict=True))
    assert defs.resolve_sensor_def("demo__shop__schedule").default_status == dg.DefaultSensorStatus.STOPPED


def test_no_job_and_no_schedule_per_tenant_job(project: Path) -> None:
    """Dagster resolves every job at every load: the asset job is the only one."""
    repository = build_definitions(load_plan(project, strict=True)).get_repository_def()
    assert [job.name for job in repository.get_all_jobs()] == [repository.get_implicit_global_asset_job_def().name]
    assert list(repository.schedule_defs) == []


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


# --------------------------------------------------------------------------- broken tenant jobs


def _add_job(project: Path, name: str, replacements: dict[str, str]) -> Path:
    text = (project / "tenants/demo/jobs/shop.yaml").read_text().replace("\nname: shop\n", f"\nname: {name}\n")
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = project / f"tenants/demo/jobs/{name}.yaml"
    path.write_text(text)
    with (project / "runner.yaml").open("a") as runner:
        runner.write(f"  - {{tenant: demo, job: {name}}}\n")
    return path


def test_a_broken_job_is_a_placeholder_asset_next_to_the_working_ones(project: Path) -> None:
    _add_job(project, "crm", {"strategy: append": "strategy: sometimes"})
    defs = build_definitions(load_plan(project))
    dg.Definitions.validate_loadable(defs)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert {"demo/csv/orders", "demo/csv/customers", "demo/config_error/crm"} == set(specs)
    placeholder = specs["demo/config_error/crm"]
    assert placeholder.group_name == "demo"
    assert placeholder.kinds == {"config"}
    assert placeholder.tags["dativo/config"] == "broken" and placeholder.tags["dativo/job"] == "crm"
    assert "CFG001 tenants/demo/jobs/crm.yaml: objects[0].incremental.strategy" in (placeholder.description or "")
    assert placeholder.metadata["dativo/job_file"] == "tenants/demo/jobs/crm.yaml"
    # Nothing automates it, and the working job's automation is untouched.
    assert [s.name for s in defs.get_repository_def().sensor_defs] == ["demo__shop__schedule"]


def test_materializing_a_placeholder_fails_at_once_without_retry(project: Path) -> None:
    _add_job(project, "crm", {"strategy: append": "strategy: sometimes"})
    defs = build_definitions(load_plan(project))
    key = dg.AssetKey(["demo", "config_error", "crm"])
    result = dg.materialize(
        assets=list(defs.assets or []),  # type: ignore[arg-type]
        selection=[key],
        resources=defs.resources,
        raise_on_error=False,
    )
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_FAILURE" in events and "STEP_UP_FOR_RETRY" not in events
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    description = failure.event_specific_data.user_failure_data.description  # type: ignore[union-attr]
    assert description.startswith("CFG001 demo/crm is not loaded: tenants/demo/jobs/crm.yaml: objects[0]")
    (placeholder,) = [a for a in defs.assets or [] if isinstance(a, dg.AssetsDefinition) and key in a.keys]
    with pytest.raises(dg.Failure) as raised:
        placeholder.op.compute_fn.decorated_fn(None)  # type: ignore[union-attr]
    assert raised.value.allow_retries is False


def test_the_code_location_shows_broken_jobs(project: Path) -> None:
    import dativo_dagster.definitions as module

    _add_job(project, "crm", {"strategy: append": "strategy: sometimes"})
    defs = importlib.reload(module).defs
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"demo/csv/orders", "demo/csv/customers", "demo/config_error/crm"}


def test_two_jobs_defining_one_asset_key_keep_the_location_loadable(project: Path) -> None:
    # Same tenant, recipe and object names, other tables: the loader lets it through, Dagster would not.
    _add_job(
        project,
        "shop_copy",
        {
            "options: {path: orders.csv}": "options: {path: orders.csv}\n    table: orders_copy",
            "options: {path: customers.csv}": "options: {path: customers.csv}\n    table: customers_copy",
        },
    )
    plan = load_plan(project, strict=True)
    defs = build_definitions(plan)
    dg.Definitions.validate_loadable(defs)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert specs["demo/csv/orders"].tags["dativo/job"] == "shop"  # the first job in runner.yaml keeps it
    problems = specs["demo/config_error/shop_copy"].metadata["dativo/problems"]
    assert problems.splitlines()[0] == (
        "tenants/demo/jobs/shop_copy.yaml: objects[0].name: asset key demo/csv/orders is already defined by "
        "demo/shop (tenants/demo/jobs/shop.yaml objects[0]); two tenant jobs cannot define the same Dagster "
        "asset (rename the object or use another source recipe)"
    )
    assert len(problems.splitlines()) == 2


def test_asset_key_clashes_are_found_before_dagster_sees_them(project: Path) -> None:
    from dativo_dagster.build import split_asset_key_clashes
    from dativo_dagster.translator import DativoTranslator

    _add_job(
        project,
        "shop_copy",
        {
            "options: {path: customers.csv}": "options: {path: customers.csv}\n    table: customers_copy",
            "- name: orders": "- name: invoices",
        },
    )
    kept, broken = split_asset_key_clashes(load_plan(project, strict=True), DativoTranslator())
    assert [job.label for job in kept] == ["demo/shop"]
    (clash,) = broken
    assert clash.label == "demo/shop_copy" and clash.code_location == "dativo"
    assert ["customers" in line for line in clash.problems] == [True]


def test_contract_column_types_read_as_the_runs_arrow_types() -> None:
    """The load shows a contract's column types without pyarrow; a run shows its Arrow types: the same."""
    from dativo_dagster.config.models import ColumnContract, ColumnType
    from dativo_dagster.specs import column_type_label
    from dativo_dagster.types import arrow_type, type_label

    columns = [ColumnContract(name="c", type=t) for t in ColumnType if t not in (ColumnType.DECIMAL, ColumnType.LIST)]
    columns += [ColumnContract(name="d", type=ColumnType.DECIMAL, precision=12, scale=2)]
    columns += [
        ColumnContract(name="l", type=ColumnType.LIST, item_type=t)
        for t in ColumnType
        if t not in (ColumnType.DECIMAL, ColumnType.LIST)
    ]
    for column in columns:
        assert column_type_label(column) == type_label(arrow_type(column)), column
