"""``engine: meltano``: tap-mysql managed by a Meltano project, run through ``meltano invoke``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.engine_harness import TAP_MYSQL, connectors_cache, maria, sql
from tests.integration.sql_harness import Runner, write_project

__all__ = ["connectors_cache", "maria"]  # fixtures

pytestmark = [pytest.mark.mysql, pytest.mark.slow, pytest.mark.usefixtures("connectors_cache")]


def _meltano_project(root: Path, database: str) -> None:
    """A Meltano project whose tap-mysql settings (host, user, database filter) live in meltano.yml."""
    project = root / "meltano" / "shop"
    project.mkdir(parents=True)
    meltano_yml = {
        "version": 1,
        "default_environment": "dev",
        "project_id": "dativo-engine-test",
        "send_anonymous_usage_stats": False,
        "environments": [{"name": "dev"}],
        "plugins": {
            "extractors": [
                {
                    "name": "tap-mysql",
                    "namespace": "tap_mysql",
                    "pip_url": TAP_MYSQL,
                    "executable": "tap-mysql",
                    "capabilities": ["catalog", "discover", "state"],
                    "settings": [
                        {"name": "host"},
                        {"name": "port", "kind": "integer"},
                        {"name": "user"},
                        {"name": "password", "kind": "password"},
                        {"name": "filter_dbs"},
                    ],
                    "config": {"host": "127.0.0.1", "port": 3306, "user": "root", "filter_dbs": database},
                }
            ]
        },
    }
    (project / "meltano.yml").write_text(yaml.safe_dump(meltano_yml, sort_keys=False))


def test_an_extractor_of_a_meltano_project_loads_incrementally(maria: tuple[Any, str], tmp_path: Path) -> None:
    connection, db = maria
    sql(connection, f"CREATE TABLE {db}.events (id int PRIMARY KEY, kind varchar(20), at datetime(6) NOT NULL)")
    base = dt.datetime(2024, 1, 1)
    rows = [(i, f"kind {i % 3}", base + dt.timedelta(minutes=i)) for i in range(1, 301)]
    sql(connection, f"INSERT INTO {db}.events VALUES (%s, %s, %s)", many=rows)
    root = tmp_path / "p"
    objects = [
        {
            "name": "events",
            "options": {"stream": f"{db}-events"},
            "incremental": {"strategy": "updated", "cursor_field": "at"},
            "primary_key": ["id"],
        }
    ]
    write_project(root, "shop_meltano", {}, objects)
    recipe = {
        "name": "shop_meltano",
        "engine": "meltano",
        "meltano": {"project": "meltano/shop", "extractor": "tap-mysql"},
        # Only the secret comes from dativo; everything else is the Meltano project's.
        "config": {"password": "${TEST_MYSQL_PASSWORD:-}"},
    }
    (root / "connectors/sources/shop_meltano.yaml").write_text(yaml.safe_dump(recipe))
    _meltano_project(root, db)
    runner = Runner(root)

    first = runner.run("events")
    assert first.error is None, first.error
    assert first.write is not None and first.write.rows_written == 300
    assert first.write.cursor is not None
    bookmark = first.write.cursor.value["bookmarks"][f"{db}-events"]
    assert bookmark["replication_key"] == "at" and bookmark["replication_key_value"].startswith("2024-01-01T05:00")
    assert (root / "meltano/shop/.meltano/extractors/tap-mysql/venv").is_dir()  # installed by meltano install

    more = [(i, "late", base + dt.timedelta(days=1, minutes=i)) for i in range(301, 311)]
    sql(connection, f"INSERT INTO {db}.events VALUES (%s, %s, %s)", many=more)
    second = runner.run("events")
    assert second.error is None, second.error
    assert second.write is not None and second.write.rows_read == 11  # the bookmark row and the 10 new ones
    ids = sorted(row["id"] for row in runner.rows("events"))
    assert ids == list(range(1, 311))
