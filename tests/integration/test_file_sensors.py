"""New-file sensors against committed tables and under a real ``dagster-daemon``.

The daemon test serves the project with ``dagster-daemon run`` on an instance holding the
project's dagster.yaml (dativo's run coordinator, queued runs), stops it and starts it again: each
file dropped into the watched folder launches exactly one run, whatever the restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import TickStatus

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.file_sensors import START_MARGIN_NS, TAG_NEW_FILES, TAG_TRIGGER, run_key
from dativo_dagster.sources.base import FileVersion
from tests.conftest import REPO
from tests.file_drops import drop, watch_drops
from tests.integration.sensor_ticks import sensor_states, wait_for_run_end

pytestmark = pytest.mark.slow

SENSOR = "demo__shop__new_files"
ORDERS = dg.AssetKey(["demo", "csv", "orders"])
Found = TypeVar("Found")


def _version(drops: Path, name: str) -> FileVersion:
    info = (drops / name).stat()
    relative = f"drops/{name}"
    return FileVersion(relative, relative, info.st_mtime_ns, str(info.st_size))


def _wait_for(what: str, probe: Callable[[], Found | None], timeout_s: float = 180) -> Found:
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s} s"
        time.sleep(0.5)  # the daemon works in its own process: poll


def test_first_tick_after_a_load_counts_only_files_newer_than_the_commit(project: Path) -> None:
    drops = watch_drops(project)
    # Written well before the load (files written while a run is under way arrive on the first tick).
    drop(drops, "a.csv", 1, modified_ns=time.time_ns() - 2 * START_MARGIN_NS)
    defs = build_definitions(load_plan(project, strict=True))
    with dg.instance_for_test() as instance:
        loaded = dg.materialize(
            assets=list(defs.assets or []), selection=[ORDERS], instance=instance, resources=defs.resources
        )
        assert loaded.success
        sensor = defs.resolve_sensor_def(SENSOR)

        def tick(cursor: str | None) -> dg.SensorResult:
            with dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs) as context:
                return sensor.evaluate_tick(context)  # type: ignore[return-value]

        # Turned on after a load: a.csv was committed, nothing arrived.
        first = tick(None)
        assert not first.run_requests and "orders (1 files)" in (first.skip_message or "")
        later = time.time_ns() + 10**9
        drop(drops, "b.csv", 2, modified_ns=later)
        (request,) = tick(first.cursor).run_requests or []
        assert request.tags[TAG_NEW_FILES] == "orders: drops/b.csv"


@contextmanager
def _daemon(project: Path, home: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATIVO_FAULT_INJECT", "DATIVO_DAGSTER_PG_URL")}
    env.update(DAGSTER_HOME=str(home), DATIVO_PROJECT_DIR=str(project), DATIVO_HOME=str(project / ".dativo"))
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "dativo_dagster.definitions"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_each_new_file_launches_one_run_across_a_daemon_restart(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drops = watch_drops(project, interval_s=5, schedule=False)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the instance's SQLite lives under it (dativo_dagster.instance)
    monkeypatch.delenv("DATIVO_DAGSTER_PG_URL", raising=False)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    log = tmp_path / "daemon.log"
    drop(drops, "a.csv", 1)

    with dg.DagsterInstance.from_config(str(home)) as instance:

        def runs(count: int) -> list[dg.DagsterRun] | None:
            found = instance.get_runs()
            assert len(found) <= count, f"more runs than files: {[run.tags for run in found]}"
            return sorted(found, key=lambda run: run.tags[TAG_NEW_FILES]) if len(found) == count else None

        with _daemon(project, home, log) as daemon:
            (first,) = _wait_for("the run of a.csv", lambda: runs(1))
            assert wait_for_run_end(instance, first.run_id).status == dg.DagsterRunStatus.SUCCESS
            assert daemon.poll() is None, log.read_text()[-3000:]

        # The daemon is down when b.csv arrives; the restarted one launches it, and a.csv never again.
        later = (drops / "a.csv").stat().st_mtime_ns + 10**9
        drop(drops, "b.csv", 2, modified_ns=later)
        with _daemon(project, home, log):
            first, second = _wait_for("the run of b.csv", lambda: runs(2))
            assert wait_for_run_end(instance, second.run_id).status == dg.DagsterRunStatus.SUCCESS
            state = sensor_states(instance)[SENSOR]
            record = instance.get_run_record_by_id(second.run_id)
            assert record is not None and record.create_timestamp is not None
            launched_at = record.create_timestamp.timestamp()

            def skipped_after_second() -> bool:
                ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
                return any(t.status == TickStatus.SKIPPED and t.timestamp > launched_at for t in ticks)

            # A later tick saw both files and launched nothing.
            _wait_for("a tick after the second run", skipped_after_second)
            assert runs(2) is not None

    for run, name in ((first, "a.csv"), (second, "b.csv")):
        assert run.tags[TAG_NEW_FILES] == f"orders: drops/{name}"
        assert run.tags[TAG_TRIGGER] == "new_files"
        assert run.tags["dagster/run_key"] == run_key({"orders": [_version(drops, name)]})
        assert run.tags["dagster/sensor_name"] == SENSOR
        assert run.tags["dativo/tenant"] == "demo" and run.tags["dativo/job"] == "shop"
        assert run.asset_selection == {ORDERS}
