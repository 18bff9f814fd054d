"""runner.yaml schedules through Dagster's own daemons: a cron tick launches each tenant's run.

The asset daemon evaluates the tenants' automation sensors and the queued-run daemon hands the runs
to the default run launcher (a run worker per run), as ``dagster-daemon`` does, against a code
server of ``dativo_dagster.definitions``; the instance's run coordinator is dativo's, as in the
project's dagster.yaml. The clock is frozen by Dagster's test utilities, and the daemons' iterations
are called directly: private APIs, fine with the pinned dagster==1.13.27.
"""

from __future__ import annotations

import datetime
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.asset_daemon import AssetDaemon
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from dativo_dagster.specs import CHECK_CONTRACT

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


def _wait_for_end(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s} s")


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
        asset_daemon = AssetDaemon(settings=instance.get_settings("auto_materialize"), pre_sensor_interval_seconds=0)
        queue_daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

        def tick(now: datetime.datetime) -> None:
            with freeze_time(now):
                asset_daemon._run_iteration_impl(
                    workspace, threadpool_executor=None, amp_tick_futures={}, debug_crash_flags={}
                )
                list(queue_daemon.run_iteration(workspace))

        # demo/shop and acme/shop run hourly: the first pass starts their tenants' sensors, the
        # second is past the next hour and launches exactly one run per tenant, the third (a
        # minute later) launches nothing more.
        started = datetime.datetime(2026, 11, 28, 10, 30, tzinfo=datetime.timezone.utc)
        tick(started)
        assert instance.get_runs() == []
        tick(started + datetime.timedelta(hours=1))
        tick(started + datetime.timedelta(hours=1, minutes=1))

        assert len(instance.get_runs()) == 2
        runs = {run.tags["dativo/tenant"]: run for run in instance.get_runs()}
        assert sorted(runs) == ["acme", "demo"]
        for tenant, run in runs.items():
            keys = {dg.AssetKey([tenant, "csv", name]) for name in OBJECTS}
            assert run.asset_selection == keys
            assert run.tags["dativo/job"] == "shop"
            assert run.tags["dagster/sensor_name"] == f"{tenant}__automation"
        assert runs["demo"].tags["team"] == "data-platform" and "team" not in runs["acme"].tags

        for tenant, run in runs.items():
            assert _wait_for_end(instance, run.run_id).status == dg.DagsterRunStatus.SUCCESS
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
