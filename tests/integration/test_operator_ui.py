"""What an operator sees and does in the Dagster UI, read and done over GraphQL as the UI does it.

A real ``dagster-webserver`` and ``dagster-daemon`` serve the demo project from an instance holding
the project's dagster.yaml (dativo's run coordinator, queued runs, per-tenant limits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

LOCATION = "dativo_dagster.definitions"
REPOSITORY = "__repository__"
DEMO_ASSETS = {"demo/csv/orders", "demo/csv/customers"}

ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    targetingInstigators { __typename ... on Sensor { name } ... on Schedule { name } }
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } }
  }
}
"""

REPOSITORY_QUERY = """
query ($selector: RepositorySelector!) {
  repositoryOrError(repositorySelector: $selector) {
    __typename
    ... on Repository {
      sensors { name description sensorState { status } assetSelection { assetKeys { path } } }
      schedules { name }
    }
    ... on PythonError { message }
  }
}
"""

LAUNCH_RUN = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status jobName tags { key value } assetSelection { path } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert "errors" not in answer, answer["errors"]
    return answer["data"]  # type: ignore[no-any-return]


def _env(project: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATIVO_FAULT_INJECT",)}
    env.update(DAGSTER_HOME=str(home), DATIVO_PROJECT_DIR=str(project), DATIVO_HOME=str(project / ".dativo"))
    return env


@contextmanager
def _serving(project: Path, home: Path, logs: Path) -> Iterator[str]:
    """``dagster-webserver`` and ``dagster-daemon`` for the project; yields the GraphQL URL once it answers."""
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    # Create the instance's storage (SQLite schemas) before two processes open it at once: each
    # would otherwise try to create the same tables, as a deployment's first start would not.
    migrate = [str(bin_dir / "dagster"), "instance", "migrate"]
    done = subprocess.run(migrate, cwd=project, env=_env(project, home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    commands = {
        "webserver": [str(bin_dir / "dagster-webserver"), "-m", LOCATION, "-h", "127.0.0.1", "-p", str(port)],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-m", LOCATION],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (logs / f"{name}.log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    command,
                    cwd=project,
                    env=_env(project, home),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        url = f"http://127.0.0.1:{port}/graphql"
        deadline = time.monotonic() + 180
        while True:
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited:\n{(logs / f'{name}.log').read_text()[-3000:]}"
            try:
                _graphql(url, "{ version }")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                assert time.monotonic() < deadline, "the webserver did not answer in time"
                time.sleep(0.5)  # not listening yet: poll again
        yield url
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_for_run(url: str, run_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        run = _graphql(url, RUN_QUERY, {"runId": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run {run_id} is still {run['status']}"
        time.sleep(1)  # the daemon dequeues and launches it: poll its status


def _path(key: dict[str, Any]) -> str:
    return "/".join(key["path"])


@pytest.fixture
def served(project: Path, tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    with _serving(project, home, logs) as url:
        yield url


def test_assets_name_their_automation_and_sensors_list_their_targets(served: str) -> None:
    nodes = {_path(node["assetKey"]): node for node in _graphql(served, ASSETS_QUERY)["assetNodes"]}
    assert set(nodes) == DEMO_ASSETS
    for key, node in nodes.items():
        # The asset page's "Automation" section: what materializes it.
        instigators = {(i["__typename"], i["name"]) for i in node["targetingInstigators"]}
        assert instigators == {("Sensor", "demo__shop__schedule")}, f"{key}: {instigators}"
        checks = {check["name"] for check in node["assetChecksOrError"]["checks"]}
        assert "rows_conform_to_contract" in checks

    selector = {"repositoryName": REPOSITORY, "repositoryLocationName": LOCATION}
    repository = _graphql(served, REPOSITORY_QUERY, {"selector": selector})["repositoryOrError"]
    assert repository["__typename"] == "Repository", repository
    sensors = {sensor["name"]: sensor for sensor in repository["sensors"]}
    schedule = sensors["demo__shop__schedule"]
    assert schedule["sensorState"]["status"] == "RUNNING"
    assert "0 * * * *" in schedule["description"]
    assert {_path(key) for key in schedule["assetSelection"]["assetKeys"]} == DEMO_ASSETS


def test_a_run_launched_from_the_ui_carries_the_tenant_tags_and_succeeds(served: str) -> None:
    params = {
        "selector": {
            "repositoryName": REPOSITORY,
            "repositoryLocationName": LOCATION,
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": ["demo", "csv", "orders"]}],
        },
        "runConfigData": {},
        "mode": "default",
        # Typed in the launchpad: the run must stay demo's (its run limit, its alerts' routes).
        "executionMetadata": {"tags": [{"key": "dativo/tenant", "value": "globex"}]},
    }
    launched = _graphql(served, LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run = _wait_for_run(served, launched["run"]["runId"])
    assert run["status"] == "SUCCESS"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dativo/tenant"] == "demo" and tags["dativo/job"] == "shop"
    assert tags["team"] == "data-platform"  # the job's runner.yaml tags come with it


LAUNCH_BACKFILL = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

BACKFILL_QUERY = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs { runId status tags { key value } } }
  }
}
"""


@pytest.fixture
def served_with_partitions(project: Path, tmp_path: Path) -> Iterator[str]:
    """The demo project plus a daily-partitioned CSV job (demo/crm, asset demo/csv/people)."""
    from tests.integration.test_partitions_cli import JOB

    (project / "tenants/demo/jobs/crm.yaml").write_text(JOB)
    with (project / "runner.yaml").open("a") as runner:
        runner.write('  - tenant: demo\n    job: crm\n    schedule: {cron: "30 * * * *"}\n')
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    with _serving(project, home, logs) as url:
        yield url


def test_a_partition_backfill_launched_from_the_ui_succeeds(served_with_partitions: str) -> None:
    url = served_with_partitions
    params = {
        "assetSelection": [{"path": ["demo", "csv", "people"]}],
        "partitionNames": ["2024-01-01", "2024-01-02", "2024-01-03"],
    }
    launched = _graphql(url, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + 300
    while True:
        backfill = _graphql(url, BACKFILL_QUERY, {"id": launched["backfillId"]})["partitionBackfillOrError"]
        runs = backfill["runs"]
        settled = backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING")
        if settled and runs and all(run["status"] in ("SUCCESS", "FAILURE", "CANCELED") for run in runs):
            break
        assert time.monotonic() < deadline, f"the backfill is still {backfill['status']}: {runs}"
        time.sleep(1)  # the daemon launches the backfill's run and it executes: poll its status
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    # One run for the three days (the job's backfill policy), tagged with the tenant like any run.
    (run,) = runs
    assert run["status"] == "SUCCESS"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dativo/tenant"] == "demo" and tags["dativo/job"] == "crm"
    assert tags["dagster/asset_partition_range_start"] == "2024-01-01"
    assert tags["dagster/asset_partition_range_end"] == "2024-01-03"


NEW_FILES_SENSOR_QUERY = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      description
      minIntervalSeconds
      assetSelection { assetKeys { path } }
      sensorState { status typeSpecificData { ... on SensorData { lastCursor } } }
    }
  }
}
"""

RUNS_QUERY = """
{ runsOrError { ... on Runs { results { runId status tags { key value } } } } }
"""


def test_a_new_file_sensor_shows_its_objects_and_cursor_and_launches_a_run(project: Path, tmp_path: Path) -> None:
    from tests.file_drops import drop, watch_drops

    drops = watch_drops(project, interval_s=5)
    drop(drops, "a.csv", 1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    logs = tmp_path / "logs"
    logs.mkdir()
    with _serving(project, home, logs) as url:
        nodes = {_path(node["assetKey"]): node for node in _graphql(url, ASSETS_QUERY)["assetNodes"]}
        instigators = {i["name"] for i in nodes["demo/csv/orders"]["targetingInstigators"]}
        assert instigators == {"demo__shop__schedule", "demo__shop__new_files"}
        assert {i["name"] for i in nodes["demo/csv/customers"]["targetingInstigators"]} == {"demo__shop__schedule"}

        selector = {
            "repositoryName": REPOSITORY,
            "repositoryLocationName": LOCATION,
            "sensorName": "demo__shop__new_files",
        }
        deadline = time.monotonic() + 180
        while True:
            sensor = _graphql(url, NEW_FILES_SENSOR_QUERY, {"selector": selector})["sensorOrError"]
            assert sensor["__typename"] == "Sensor", sensor
            cursor = sensor["sensorState"]["typeSpecificData"]["lastCursor"]
            if cursor:
                break
            assert time.monotonic() < deadline, "the new-file sensor never kept a cursor"
            time.sleep(1)  # the daemon evaluates the sensor: poll its state
        assert sensor["sensorState"]["status"] == "RUNNING"
        assert sensor["minIntervalSeconds"] == 5
        assert "orders" in sensor["description"]
        assert {_path(key) for key in sensor["assetSelection"]["assetKeys"]} == {"demo/csv/orders"}
        assert set(json.loads(cursor)["objects"]["orders"]["files"]) == {"drops/a.csv"}

        (launched,) = _graphql(url, RUNS_QUERY)["runsOrError"]["results"]
        tags = {tag["key"]: tag["value"] for tag in launched["tags"]}
        assert (
            tags["dagster/sensor_name"] == "demo__shop__new_files" and tags["dativo/new_files"] == "orders: drops/a.csv"
        )
        assert _wait_for_run(url, launched["runId"])["status"] == "SUCCESS"
