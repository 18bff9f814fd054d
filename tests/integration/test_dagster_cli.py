"""The code location through Dagster's own CLI, and the dativo CLI's exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _env(project: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo"), **extra}
    env.pop("DATIVO_FAULT_INJECT", None)
    return env


def _dagster_home(project: Path) -> Path:
    home = project / ".dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    return home


def test_dagster_asset_materialize_cli(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _dagster_home(project)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    command = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "dativo_dagster.definitions",
        "--select",
        "demo/csv/orders",
    ]
    done = subprocess.run(
        command,
        env=_env(project, DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["demo", "csv", "orders"]))
        assert event is not None and event.asset_materialization is not None
        md = event.asset_materialization.metadata
        assert md["dagster/row_count"].value == 3000
        assert instance.get_latest_materialization_event(dg.AssetKey(["demo", "csv", "customers"])) is None


def test_dagster_definitions_validate(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "dativo_dagster.definitions"],
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dativo_dagster.cli", *args],
        env=_env(project),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_exit_codes_success_partial_failure(project: Path) -> None:
    ok = _cli(project, "run", "demo/shop")
    assert ok.returncode == 0, ok.stderr
    assert "3,000 row(s) written" in ok.stdout
    again = _cli(project, "run", "demo/shop", "--object", "orders")
    assert again.returncode == 0 and "up to date" in again.stdout

    (project / "tenants/demo/data/customers.csv").unlink()
    with (project / "tenants/demo/data/orders.csv").open("a") as handle:
        handle.write("3001,1,paid,1.00,EUR,2025-01-01T00:00:00Z\n")
    partial = _cli(project, "run", "demo/shop")
    assert partial.returncode == 1
    assert "CFG001" in partial.stderr and "customers" in partial.stderr
    assert "Traceback" not in partial.stderr

    failed = _cli(project, "run", "demo/shop", "--object", "customers")
    assert failed.returncode == 2
    unknown = _cli(project, "run", "demo/nope")
    assert unknown.returncode == 2 and "CFG001" in unknown.stderr and "Traceback" not in unknown.stderr


def test_cli_dry_run_and_limit(project: Path) -> None:
    dry = _cli(project, "run", "demo/shop", "--dry-run", "--limit", "10")
    assert dry.returncode == 0, dry.stderr
    assert "nothing was written" in dry.stdout
    assert not (project / ".dativo" / "warehouse" / "demo").exists()
    # CSV rows are not read in cursor order: stopping after N rows could skip earlier ids.
    limited = _cli(project, "run", "demo/shop", "--object", "orders", "--limit", "100")
    assert limited.returncode == 2
    assert "CFG001" in limited.stderr and "does not read in cursor order" in limited.stderr
    rest = _cli(project, "run", "demo/shop", "--object", "orders")
    assert "3,000 row(s) written" in rest.stdout


def test_validate_reports_missing_env_vars(project: Path) -> None:
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("base_path: tenants/demo/data", "base_path: ${DEMO_DIR_NOT_SET}"))
    done = _cli(project, "validate")
    assert done.returncode == 2
    assert "DEMO_DIR_NOT_SET" in done.stderr
    assert _cli(project, "list").returncode == 0
