"""Two code locations served by a real dagster-webserver: each loads alone; one failing hides nothing.

The workspace is the one ``dativo workspace`` writes from runner.yaml; the webserver starts one code
server per location, and the UI's view of them is read over GraphQL, as the UI reads it.
"""

from __future__ import annotations

import json
import os
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

from dativo_dagster.cli import main
from tests.unit.test_locations import add_tenant, write_runner

pytestmark = pytest.mark.slow

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { assetNodes { assetKey { path } description } } }
          ... on PythonError { message causes { message } }
        }
      }
    }
  }
}
"""

RELOAD_WORKSPACE = "mutation { reloadWorkspace { __typename } }"

EU = {f"{tenant}/csv/{name}" for tenant in ("acme", "globex") for name in ("orders", "customers")}
US = {f"{tenant}/csv/{name}" for tenant in ("demo", "initech") for name in ("orders", "customers")}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _graphql(url: str, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body: dict[str, Any] = json.loads(response.read())
    assert "errors" not in body, body
    return body["data"]


@contextmanager
def _webserver(project: Path, home: Path, log: Path) -> Iterator[str]:
    """``dagster-webserver -w workspace.yaml`` on a free port; yields its GraphQL URL once it answers."""
    port = _free_port()
    command = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=project,
            env={**os.environ, "DAGSTER_HOME": str(home)},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code servers share the session: stopped together below
        )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the webserver exited:\n{log.read_text()[-3000:]}"
            try:
                _graphql(url, "{ version }")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"the webserver did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _locations(url: str, timeout_s: float = 120) -> dict[str, dict[str, Any]]:
    """Every location entry once none is still loading."""
    deadline = time.monotonic() + timeout_s
    while True:
        workspace = _graphql(url, WORKSPACE_QUERY)["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", workspace
        entries = {entry["name"]: entry for entry in workspace["locationEntries"]}
        if all(entry["loadStatus"] == "LOADED" for entry in entries.values()):
            return entries
        assert time.monotonic() < deadline, f"locations still loading: {entries}"
        time.sleep(0.2)


def _assets(entry: dict[str, Any]) -> dict[str, str]:
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location
    return {
        "/".join(node["assetKey"]["path"]): node["description"] or ""
        for repository in location["repositories"]
        for node in repository["assetNodes"]
    }


def test_each_location_loads_alone_and_a_failing_one_hides_nothing(project: Path, tmp_path: Path) -> None:
    for tenant in ("acme", "globex", "initech"):
        add_tenant(project, tenant)
    write_runner(project, ["demo", "acme", "globex", "initech"])  # eu: acme, globex; us: demo, initech
    # A broken job in eu: shown as its placeholder, next to its tenant's working job.
    crm = add_tenant(project, "globex", job="crm")
    crm.write_text(crm.read_text().replace("strategy: append", "strategy: sometimes"))
    with (project / "runner.yaml").open("a") as runner:
        runner.write("  - {tenant: globex, job: crm}\n")
    assert main(["--project", str(project), "workspace"]) == 0
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    with _webserver(project, home, tmp_path / "webserver.log") as url:
        entries = _locations(url)
        assert sorted(entries) == ["eu", "us"]
        eu = _assets(entries["eu"])
        assert set(eu) == EU | {"globex/config_error/crm"}
        assert "CFG001 tenants/globex/jobs/crm.yaml: objects[0].incremental.strategy" in eu["globex/config_error/crm"]
        assert set(_assets(entries["us"])) == US

        # us's code server now loads a location runner.yaml does not define: its load fails.
        workspace = project / "workspace.yaml"
        workspace.write_text(workspace.read_text().replace("attribute: us\n", "attribute: us_retired\n"))
        _graphql(url, RELOAD_WORKSPACE)
        entries = _locations(url)
        assert sorted(entries) == ["eu", "us"]
        assert set(_assets(entries["eu"])) == EU | {"globex/config_error/crm"}
        error = entries["us"]["locationOrLoadError"]
        assert error["__typename"] == "PythonError"
        causes = " ".join(cause["message"] for cause in error["causes"])
        assert "CFG001: runner.yaml: code_locations: there is no code location 'us_retired'" in causes
