"""The README's first run: `dativo run demo/shop`, then `dagster dev` in the project shows that run.

Neither command is given DAGSTER_HOME: both must find the project's own instance by themselves.
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
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "DATIVO_HOME", "DATIVO_FAULT_INJECT")}
    env["DATIVO_PROJECT_DIR"] = str(project)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(port: int, query: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


RUNS = "{ runsOrError { ... on Runs { results { runId status jobName assetSelection { path } tags { key value } } } } }"


def test_cli_runs_appear_in_dagster_dev_without_any_environment(project: Path) -> None:
    shutil.copy(REPO / "dagster.yaml", project / "dagster.yaml")
    dativo = Path(sys.executable).with_name("dativo")
    done = subprocess.run(
        [str(dativo), "run", "demo/shop"], cwd=project, env=_env(project), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3,000 row(s) written" in done.stdout
    assert (project / ".dativo" / "dagster" / "storage").is_dir()

    port = _free_port()
    dev = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-m", "dativo_dagster.definitions", "-p", str(port)],
        cwd=project,
        env=_env(project),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        runs: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            if dev.poll() is not None:
                pytest.fail(f"dagster dev exited: {dev.stderr.read()[-3000:] if dev.stderr else ''}")
            try:
                answer = _graphql(port, RUNS)
            except OSError:
                time.sleep(0.5)  # the server is not listening yet: poll again
                continue
            runs = answer["data"]["runsOrError"]["results"]  # type: ignore[index]
            break
        assert runs, "dagster dev did not answer in time"
        assert [r["status"] for r in runs] == ["SUCCESS"]
        # Shown as the assets it materialized (Dagster's asset job), not an anonymous job.
        assert runs[0]["jobName"] == "__ASSET_JOB"
        selected = sorted("/".join(key["path"]) for key in runs[0]["assetSelection"])  # type: ignore[index,union-attr]
        assert selected == ["demo/csv/customers", "demo/csv/orders"]
        tags = {t["key"]: t["value"] for t in runs[0]["tags"]}  # type: ignore[index,union-attr]
        assert tags["dativo/tenant"] == "demo" and tags["dativo/job"] == "shop"
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        try:
            dev.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # `dagster dev` waits for its daemon's sensor threads and code servers to stop; on a busy
            # machine that can outlast the wait. What this test checks is done: end the group.
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
