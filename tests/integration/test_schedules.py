"""runner.yaml schedules through Dagster's own daemons: a cron tick launches each tenant job's run.

The sensor daemon evaluates each tenant job's cron sensor against a code server of
``dativo_dagster.definitions`` and the queued-run daemon hands the runs to the default run launcher
(a run worker per run), as ``dagster-daemon`` does; the instance's run coordinator is dativo's, as
in the project's dagster.yaml (see :mod:`tests.integration.sensor_ticks`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from dativo_dagster.specs import CHECK_CONTRACT
from tests.integration.sensor_ticks import evaluate_sensors, make_schedules_due, sensor_states, wait_for_run_end

pytestmark = pytest.mark.slow

OBJECTS = {"orders": 3000, "customers": 500}


def _add_tenant(project: Path, tenant: str) -> None:
    """A second tenant with the demo's job, scheduled hourly like it."""
    shutil.copytree(project / "tenants/demo", project / f"tenants/{tenant}")
    job = project / f"tenants/{tenant}/jobs/shop.yaml"
    text = job.read_text().replace("tenant: demo", f"tenant: {tenant}")
    job.write_text(text.replace("tenants/demo/data", f"tenants/{tenant}/data"))
    with (project / "runner.yaml").open("a") as runner:
        runner.write(f'  - tenant: {tenant}\n    job: shop\n    schedule: {{cron: "0 * * * *"}}\n')


def test_schedule_ticks_run_each_tenant_job_with_its_assets_and_checks(project: Path, tmp_path: Path) -> None:
    _add_tenant(project, "acme")
    coordinator = {"module": "dativo_dagster.run_coordinator", "class": "TenantRunCoordinator"}
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
        queue_daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

        def tick() -> None:
            evaluate_sensors(workspace)
            list(queue_daemon.run_iteration(workspace))

        # demo/shop and acme/shop run hourly. The first pass starts their sensors, which record
        # the latest tick as their cursor and launch nothing; once a tick has passed each launches
        # exactly one run; a pass right after launches nothing more.
        tick()
        assert instance.get_runs() == []
        assert set(sensor_states(instance)) == {"demo__shop__schedule", "acme__shop__schedule"}
        make_schedules_due(instance)
        tick()
        tick()

        assert len(instance.get_runs()) == 2
        runs = {run.tags["dativo/tenant"]: run for run in instance.get_runs()}
        assert sorted(runs) == ["acme", "demo"]
        for tenant, run in runs.items():
            keys = {dg.AssetKey([tenant, "csv", name]) for name in OBJECTS}
            assert run.asset_selection == keys
            assert run.tags["dativo/job"] == "shop"
            assert run.tags["dagster/sensor_name"] == f"{tenant}__shop__schedule"
        assert runs["demo"].tags["team"] == "data-platform" and "team" not in runs["acme"].tags

        for tenant, run in runs.items():
            assert wait_for_run_end(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
            for name, rows in OBJECTS.items():
                key = dg.AssetKey([tenant, "csv", name])
                event = instance.get_latest_materialization_event(key)
                assert event is not None and event.asset_materialization is not None
                assert event.run_id == run.run_id
                assert event.asset_materialization.metadata["dagster/row_count"].value == rows
                check = dg.AssetCheckKey(key, CHECK_CONTRACT)
                execution = instance.event_log_storage.get_latest_asset_check_execution_by_key([check])[check]
                assert execution.run_id == run.run_id
                assert execution.status.value == "SUCCEEDED"
