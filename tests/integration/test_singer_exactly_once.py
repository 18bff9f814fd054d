"""kill -9 at random instants during a Singer load through ``dativo run``, then re-run: every record once.

The tap's STATE messages are the commit points: each commit carries the tap's state in the Iceberg
snapshot, so a killed run resumes from the last committed state, and the rows the tap sends again
(Singer bookmarks are inclusive) merge onto themselves.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.engine_harness import connectors_cache, maria, singer_project, sql
from tests.integration.sql_harness import Runner

__all__ = ["connectors_cache", "maria"]  # fixtures

pytestmark = [pytest.mark.mysql, pytest.mark.slow, pytest.mark.usefixtures("connectors_cache")]

ROWS = 60_000


def _dativo(root: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(root), "DATIVO_HOME": str(root / ".dativo")}
    env.pop("DAGSTER_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-m", "dativo_dagster.cli", "run", "acme/db", "--object", "items"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _snapshots(runner: Runner) -> int:
    table = runner.writer.load_table("acme", "items")
    return 0 if table is None else len(table.snapshots())


def test_sigkill_at_random_instants_during_a_singer_load(maria: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = maria
    sql(connection, f"CREATE TABLE {db}.items (id int PRIMARY KEY, name varchar(40), updated_at datetime(6) NOT NULL)")
    base = dt.datetime(2024, 1, 1)
    for start in range(1, ROWS + 1, 10_000):
        rows = [(i, f"item {i}", base + dt.timedelta(seconds=i)) for i in range(start, start + 10_000)]
        sql(connection, f"INSERT INTO {db}.items VALUES (%s, %s, %s)", many=rows)
    objects = [
        {
            "name": "items",
            "options": {"stream": "items", "checkpoint_rows": 5_000},
            "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            "primary_key": ["id"],
        }
    ]
    root = singer_project(tmp_path / "p", db, objects)
    runner = Runner(root)  # reads the table the dativo processes write

    rng = random.Random(17)
    killed_mid_load = 0
    next_id = ROWS + 1
    for _attempt in range(4):
        before = _snapshots(runner)
        process = _dativo(root)
        # Kill once the run has committed something new (or at a random instant, whichever comes
        # first), so kills land both between and inside checkpoints.
        deadline = time.monotonic() + rng.uniform(3.0, 9.0)
        while time.monotonic() < deadline and process.poll() is None:
            if _snapshots(runner) > before and rng.random() < 0.3:
                break
            time.sleep(0.2)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed_mid_load += 1
        process.wait(timeout=60)
        # Rows keep arriving between the runs, as in production.
        more = [(i, f"item {i}", base + dt.timedelta(seconds=i)) for i in range(next_id, next_id + 500)]
        sql(connection, f"INSERT INTO {db}.items VALUES (%s, %s, %s)", many=more)
        next_id += 500
    assert killed_mid_load >= 1, "no run was killed while it was loading: the test proved nothing"

    final = _dativo(root)
    _, stderr = final.communicate(timeout=600)
    assert final.returncode == 0, stderr.decode()[-3000:]
    ids = [row["id"] for row in runner.rows("items")]
    assert len(ids) == len(set(ids)), "a record was loaded twice"
    assert sorted(ids) == list(range(1, next_id)), "a record was lost"
    table = runner.writer.load_table("acme", "items")
    assert table is not None and len(table.snapshots()) >= 3  # several checkpoints were committed
