"""Kill the process around the Iceberg commit, re-run, and prove: no duplicate, no gap.

Runs go through the ``dativo`` CLI in a subprocess against a Dagster instance on disk
(``DAGSTER_HOME``), so Dagster's record and the table's snapshot can really disagree.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from tests.conftest import REPO

pytestmark = pytest.mark.slow

HEADER = "order_id,customer_id,status,amount,currency,ordered_at\n"


def dativo(
    project: Path, *args: str, fault: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
    env.pop("DATIVO_FAULT_INJECT", None)
    if fault:
        env["DATIVO_FAULT_INJECT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "dativo_dagster.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def order_ids(project: Path) -> list[int]:
    home = project / ".dativo"
    catalog = SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")
    table = catalog.load_table(("demo", "orders"))
    return table.scan(selected_fields=("order_id",)).to_arrow().column("order_id").to_pylist()


def append_orders(project: Path, start: int, count: int) -> None:
    with (project / "tenants/demo/data/orders.csv").open("a") as handle:
        for i in range(start, start + count):
            handle.write(f"{i},1,paid,1.00,EUR,2025-01-01T00:00:00Z\n")


@pytest.fixture
def dagster_home(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = project / ".dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("DATIVO_DAGSTER_PG_URL", raising=False)
    return home


def latest_metadata(home: Path) -> dict[str, object]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(["demo", "csv", "orders"]))
        assert event is not None and event.asset_materialization is not None
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_killed_after_commit_rerun_has_no_duplicates(project: Path, dagster_home: Path) -> None:
    assert dativo(project, "run", "demo/shop", "--object", "orders").returncode == 0
    append_orders(project, 3001, 10)
    killed = dativo(project, "run", "demo/shop", "--object", "orders", fault="after_commit")
    assert killed.returncode == 137, killed.stderr
    # Iceberg has the rows and the cursor; Dagster never heard of that run.
    assert len(order_ids(project)) == 3010
    assert '"value":3000' in str(latest_metadata(dagster_home)["dativo/cursor"])

    rerun = dativo(project, "run", "demo/shop", "--object", "orders")
    assert rerun.returncode == 0, rerun.stderr
    ids = order_ids(project)
    assert len(ids) == len(set(ids)) == 3010
    md = latest_metadata(dagster_home)
    assert '"value":3010' in str(md["dativo/cursor"])
    assert "ahead of Dagster" in str(md["dativo/cursor_origin"])


def test_killed_before_commit_rerun_has_no_gap(project: Path, dagster_home: Path) -> None:
    assert dativo(project, "run", "demo/shop", "--object", "orders").returncode == 0
    append_orders(project, 3001, 10)
    killed = dativo(project, "run", "demo/shop", "--object", "orders", fault="before_commit")
    assert killed.returncode == 137
    assert len(order_ids(project)) == 3000
    assert dativo(project, "run", "demo/shop", "--object", "orders").returncode == 0
    ids = order_ids(project)
    assert sorted(ids) == list(range(1, 3011))


def test_sigkill_at_random_instants(project: Path, dagster_home: Path) -> None:
    """Real SIGKILLs at arbitrary moments of a larger load; after a clean re-run every id is there once."""
    data = project / "tenants/demo/data/orders.csv"
    with data.open("w") as handle:
        handle.write(HEADER)
        for i in range(1, 200_001):
            handle.write(f"{i},{i % 97},paid,{i % 1000}.25,EUR,2025-01-01T00:00:00Z\n")
    rng = random.Random(42)
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
    next_id = 200_001
    for _attempt in range(3):
        process = subprocess.Popen(
            [sys.executable, "-m", "dativo_dagster.cli", "run", "demo/shop", "--object", "orders"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(2.0, 6.0))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        append_orders(project, next_id, 1000)
        next_id += 1000
    final = dativo(project, "run", "demo/shop", "--object", "orders", timeout=300)
    assert final.returncode == 0, final.stderr
    ids = order_ids(project)
    assert len(ids) == len(set(ids)), "duplicates after kill and re-run"
    assert sorted(ids) == list(range(1, next_id)), "gap after kill and re-run"


def test_runs_of_killed_processes_do_not_hold_the_tenant_pool(project: Path, dagster_home: Path) -> None:
    """More killed runs than the tenant's pool has slots: the next run still starts and loads everything.

    A killed ``dativo run`` leaves its run STARTED with the pool slot its step claimed; the next
    run of the job marks such runs failed and frees their slots instead of waiting for ever
    (without that, the run after the last kill here waits for a slot until the timeout).
    """
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        slots = instance.event_log_storage.get_concurrency_info("dativo-tenant-demo").slot_count
    for n in range(slots + 1):
        append_orders(project, 3001 + n * 10, 10)
        killed = dativo(project, "run", "demo/shop", "--object", "orders", fault="after_commit")
        assert killed.returncode == 137, killed.stderr
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert instance.event_log_storage.get_concurrency_info("dativo-tenant-demo").claimed_slots  # the last kill's
    final = dativo(project, "run", "demo/shop", "--object", "orders", timeout=120)
    assert final.returncode == 0, final.stderr
    assert "left unfinished by a dativo process that is gone" in " ".join(final.stderr.split())
    ids = order_ids(project)
    assert sorted(ids) == list(range(1, 3001 + (slots + 1) * 10))
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        statuses = [run.status for run in instance.get_runs()]
        assert statuses.count(dg.DagsterRunStatus.FAILURE) == slots + 1
        assert statuses.count(dg.DagsterRunStatus.SUCCESS) == 1
        assert not instance.event_log_storage.get_concurrency_info("dativo-tenant-demo").claimed_slots
