"""The same dagster.yaml runs the Dagster instance on PostgreSQL (dagster-postgres)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def pg_database(postgres_server: dict[str, object], unique_name: str) -> Iterator[str]:
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{unique_name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{unique_name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{unique_name}" WITH (FORCE)')
        admin.close()


def test_runs_and_materializations_are_stored_in_postgres(
    project: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = project / ".dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATIVO_DAGSTER_PG_URL": pg_database,
        "DATIVO_PROJECT_DIR": str(project),
        "DATIVO_HOME": str(project / ".dativo"),
    }
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "dativo_dagster.cli", "run", "demo/shop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert not list(home.rglob("*.db")), "nothing may fall back to SQLite"

    monkeypatch.setenv("DATIVO_DAGSTER_PG_URL", pg_database)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert len(instance.get_runs()) == 2
        event = instance.get_latest_materialization_event(dg.AssetKey(["demo", "csv", "orders"]))
        assert event is not None and event.asset_materialization is not None
        md = event.asset_materialization.metadata
        assert md["dativo/rows_written"].value == 0
        assert "agree" in str(md["dativo/cursor_origin"].value)

    with psycopg2.connect(pg_database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs")
        assert cursor.fetchone() == (2,)
