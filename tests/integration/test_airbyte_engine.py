"""``engine: airbyte`` end to end: the real ``airbyte-source-faker`` from PyPI loaded into Iceberg with
its per-stream state as the committed cursor, and failures with their codes.

The connector's virtualenv is built once per session in the shared connector cache
(:func:`tests.integration.engine_harness.connectors_cache`) and reused by every test here.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_dagster.engines.airbyte import AirbyteProtocol, AirbyteSource
from dativo_dagster.engines.base import EngineProtocol
from dativo_dagster.engines.venvs import connector_venv
from dativo_dagster.logs import configure_logging
from dativo_dagster.sources.registry import build_source
from dativo_dagster.state import PROP_CURSOR
from dativo_dagster.types import type_label
from tests.integration.engine_harness import connectors_cache
from tests.integration.sql_harness import Runner, write_project

__all__ = ["connectors_cache"]  # fixtures

pytestmark = [pytest.mark.slow]

PIP_URL = "airbyte-source-faker==7.2.1"
REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "fixtures" / "engines" / "airbyte_fake_source.py"
CANARY = "canary-faker-key-41b7c2"


@pytest.fixture(scope="session")
def faker_venv(connectors_cache: Path) -> Path:
    """The faker's virtualenv, built once per session in the shared connector cache."""
    return connector_venv(REPO, PIP_URL, label="airbyte-source-faker")


def _project(
    root: Path,
    objects: list[dict[str, Any]],
    config: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
    credentials: dict[str, str] | None = None,
) -> Path:
    write_project(root, "faker", connection or {}, objects, credentials=credentials)
    recipe = {
        "name": "faker",
        "engine": "airbyte",
        "pip_url": PIP_URL,
        "executable": "source-faker",
        "config": {"seed": 1, "records_per_slice": 5, "parallelism": 1, **(config or {})},
        "checkpoint_rows": 1,  # commit at every state message
        "tenant_settings": sorted(
            {"seed", "records_per_slice", "parallelism", "count", *(config or {}), *(connection or {})}
        ),
    }
    (root / "connectors/sources/faker.yaml").write_text(yaml.safe_dump(recipe))
    return root


USERS = {
    "name": "users",
    "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
    "primary_key": ["id"],
}


def _snapshots_with_cursor(runner: Runner, name: str) -> list[dict[str, Any]]:
    table = runner.writer.load_table("acme", name)
    assert table is not None
    found = []
    for snapshot in table.snapshots():
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_CURSOR in props:
            found.append(json.loads(props[PROP_CURSOR]))
    return found


def test_faker_incremental_state_is_the_committed_cursor(faker_venv: Path, tmp_path: Path) -> None:
    root = _project(tmp_path, [USERS], config={"count": 12, "always_updated": False})
    first = Runner(root).run("users")
    assert first.error is None and first.write is not None
    assert first.write.rows_written == 12
    runner = Runner(root)
    rows = runner.rows("users")
    assert sorted(r["id"] for r in rows) == list(range(1, 13))
    table = runner.writer.load_table("acme", "users")
    assert table is not None
    schema = table.schema().as_arrow()
    assert type_label(schema.field("created_at").type) == "timestamptz"
    assert json.loads(rows[0]["address"]).keys() >= {"city", "postal_code"}  # an object column holds JSON
    # Each state message of the stream was a commit, and the last one is the cursor in the last snapshot.
    cursor = first.write.cursor
    assert cursor is not None
    state = cursor.value
    assert state["type"] == "STREAM" and state["stream"]["stream_descriptor"] == {"name": "users"}
    assert state["stream"]["stream_state"]["loop_offset"] == 12
    committed = _snapshots_with_cursor(runner, "users")
    assert len(committed) >= 2 and first.source_stats.get("checkpoints", 0) >= 2
    assert committed[-1]["value"] == state

    # The state goes back to the source: with always_updated off, faker has nothing new to send.
    second = Runner(root).run("users")
    assert second.error is None and second.write is not None and second.write.rows_written == 0
    assert second.write.cursor is not None and second.write.cursor.value == state

    # Every user updated again (and three new ones): merged on the key, each id once.
    _project(tmp_path, [USERS], config={"count": 15, "always_updated": True})
    third_runner = Runner(root)
    third = third_runner.run("users")
    assert third.error is None and third.write is not None and third.write.rows_written == 15
    ids = [r["id"] for r in third_runner.rows("users")]
    assert sorted(ids) == list(range(1, 16))
    assert third.write.cursor is not None and third.write.cursor.value["stream"]["stream_state"]["loop_offset"] == 15


def test_faker_full_refresh_replaces_the_table(faker_venv: Path, tmp_path: Path) -> None:
    products = {"name": "products", "primary_key": ["id"]}
    root = _project(tmp_path, [products], config={"count": 5})
    first = Runner(root).run("products")
    assert first.error is None and first.write is not None and first.write.rows_written > 0
    again = Runner(root)
    second = again.run("products")
    assert second.error is None and second.write is not None
    rows = again.rows("products")
    assert len(rows) == first.write.rows_written == second.write.rows_written  # replaced, not appended
    assert len({r["id"] for r in rows}) == len(rows)


def test_faker_bad_config_is_cfg001_and_the_secret_never_shows(
    faker_venv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(logging.INFO, force=True)
    root = _project(
        tmp_path,
        [USERS],
        config={"count": 0},  # below the spec's minimum
        credentials={"api_key": "${FAKER_API_KEY}"},
    )
    runner = Runner(root, environ={"FAKER_API_KEY": CANARY})
    result = runner.run("users")
    assert result.error is not None and result.error.code == "CFG001"
    assert "less than the minimum of 1" in str(result.error)
    with build_source(runner.job, runner.resolver) as source:
        assert isinstance(source, AirbyteSource)
        with pytest.raises(Exception) as check:
            source.check_connection()
    assert getattr(check.value, "code", None) == "CFG001"
    err = capsys.readouterr().err
    assert "connector_started" in err  # the connector did run and log
    assert CANARY not in err and CANARY not in str(result.error) and CANARY not in str(check.value)


def _use_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the protocol-speaking fake instead of installing a package (same adapter, any behaviour)."""

    def make_protocol(self: AirbyteSource) -> EngineProtocol:
        return AirbyteProtocol(
            command=[sys.executable, str(FAKE)],
            label=self.label,
            project_dir=self.project_dir,
            config=self.config,
            secrets=self.secrets,
        )

    monkeypatch.setattr(AirbyteSource, "make_protocol", make_protocol)


def test_a_source_dying_midway_resumes_from_its_last_committed_state(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_fake(monkeypatch)
    items = {"name": "items", "incremental": {"strategy": "updated", "cursor_field": "id"}, "primary_key": ["id"]}
    root = _project(tmp_path, [items], config={"mode": "die_midway", "count": 10, "every": 2})
    broken = Runner(root).run("items")
    assert broken.error is not None and broken.error.code == "EXT001"
    runner = Runner(root)
    assert sorted(r["id"] for r in runner.rows("items")) == [1, 2]  # the checkpoint before the crash
    assert _snapshots_with_cursor(runner, "items")[-1]["value"]["stream"]["stream_state"] == {"id": 2}
    _project(tmp_path, [items], config={"mode": "ok", "count": 4, "every": 2})
    resumed = Runner(root)
    result = resumed.run("items")
    assert result.error is None and result.write is not None and result.write.rows_written == 4
    rows = resumed.rows("items")
    assert sorted(r["id"] for r in rows) == [1, 2, 3, 4, 5, 6]  # row 3 once, though the first run read it
    assert {r["label"] for r in rows} >= {"item 3"}


def test_full_refresh_only_stream_refuses_an_incremental_object(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _use_fake(monkeypatch)
    snapshot = {"name": "snapshot", "incremental": {"strategy": "updated", "cursor_field": "id"}, "primary_key": ["id"]}
    root = _project(tmp_path, [snapshot], config={"mode": "ok"})
    result = Runner(root).run("snapshot")
    assert result.error is not None and result.error.code == "CFG001"
    assert "supports only full_refresh" in str(result.error)
