"""Drive the schedule sensors the way ``dagster-daemon`` does, with a passed cron tick made on purpose.

The sensor daemon's iteration is called directly against a daemon workspace; a cron tick that passed
is made by moving each schedule sensor's stored cursor (the last tick it launched) back in time, so
no test waits for the clock. Private Dagster APIs, fine with the pinned dagster==1.13.27.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorType
from dagster._daemon.sensor import execute_sensor_iteration

LOG = logging.getLogger("dativo.test.sensors")


def evaluate_sensors(workspace: Any) -> None:
    """One pass of the sensor daemon over every running sensor of the workspace."""
    list(execute_sensor_iteration(workspace, LOG, None, None))


def sensor_states(instance: dg.DagsterInstance) -> dict[str, Any]:
    """Every sensor's stored state, by sensor name."""
    found = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
    return {state.instigator_name: state for state in found}


def make_schedules_due(instance: dg.DagsterInstance, names: set[str] | None = None) -> None:
    """Move each schedule sensor's cursor, and its last evaluation, a week back: a tick has passed."""
    week = datetime.timedelta(days=7)
    for name, state in sensor_states(instance).items():
        if names is not None and name not in names:
            continue
        data = state.instigator_data
        if not name.endswith("__schedule") or data is None or data.cursor is None:
            continue
        earlier = data.last_tick_start_timestamp - week.total_seconds()
        moved = data._replace(
            cursor=(datetime.datetime.fromisoformat(data.cursor) - week).isoformat(),
            last_tick_timestamp=earlier,
            last_tick_start_timestamp=earlier,
        )
        instance.update_instigator_state(state.with_data(moved))


def wait_for_run_end(instance: dg.DagsterInstance, run_id: str, timeout_s: float = 180) -> dg.DagsterRun:
    """The run once it has finished (its worker is a separate process: poll its status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        if run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout_s} s")
