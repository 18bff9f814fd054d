"""Debug runs with payloads (Stripe emulator), scratch runs and ``dativo compare`` (PostgreSQL), via the CLI."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pyarrow as pa
import pytest
import yaml

from dativo_dagster.cli import main
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.instance import instance_for_project, state_dir
from dativo_dagster.logs import configure_logging
from dativo_dagster.scratch import scratch_dir, scratch_writer
from tests.fakes.server import FakeClock
from tests.fakes.stripe_api import StripeEmulator
from tests.integration.harness_stripe import NOW, source_clock, stripe_object, write_stripe_project
from tests.integration.sql_harness import write_project

KEY = "sk_test_dativo_debug_canary_5d1e"
"""The Stripe key doubles as the canary: it must appear in no output and no file."""


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    yield
    configure_logging(logging.INFO, force=True)  # `--debug` reconfigured the process


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("DATIVO_HOME", str(tmp_path / "p" / ".dativo"))
    return tmp_path / "p"


def _files_text(root: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in root.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl")
    )


# --------------------------------------------------------------------------- debug run with payloads


def test_debug_run_logs_exchanges_and_redacted_payloads(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(KEY, seed=11, customers=60, charges=10)
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    with emulator.serve() as server, source_clock(emulator):
        root = write_stripe_project(
            env, server.url, [stripe_object("customers")], connection={"rate_limit": {"rps": 1000, "burst": 1000}}
        )
        job_file = root / "tenants/acme/jobs/payments.yaml"
        spec = yaml.safe_load(job_file.read_text())
        job_file.write_text(yaml.safe_dump({**spec, "pii_fields": ["email", "name", "phone"]}, sort_keys=False))
        code = main(["--project", str(root), "run", "acme/payments", "--object", "customers", "--debug", "--payloads"])
    out, err = capsys.readouterr()
    assert code == 0, err
    plan = load_plan(root, strict=True)
    writer = IcebergWriter(build_catalog(plan.jobs[0].target, SecretResolver(), root))
    table = writer.load_table("acme", "customers")
    assert table is not None
    rows = table.scan().to_arrow().to_pylist()
    assert len(rows) == 60
    (path,) = (state_dir(root) / "runs").glob("*/payloads.jsonl")
    assert str(path) in out + err  # the CLI says where
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    bodies = [json.loads(line["response_body"]) for line in lines if line["url"].split("?")[0].endswith("/customers")]
    listed = [item for body in bodies for item in body["data"]]
    assert {item["id"] for item in listed} == {row["id"] for row in rows}  # the bodies are there
    assert all(item["email"] == "***" and item["name"] == "***" for item in listed)
    assert {line["object"] for line in lines} == {"customers"} and all(line["status"] == 200 for line in lines)
    text = path.read_text()
    for row in rows:
        for value in (row["email"], row["name"]):
            assert not value or value not in text
    assert "http_exchange" in err and "/v1/customers" in err  # one DEBUG line per exchange
    for where in (out, err, text, _files_text(root / ".dativo")):
        assert KEY not in where


def test_payloads_are_off_unless_asked(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(KEY, seed=12, customers=5, charges=1)
    monkeypatch.setenv("STRIPE_API_KEY", KEY)
    with emulator.serve() as server, source_clock(emulator):
        root = write_stripe_project(env, server.url, [stripe_object("customers")])
        assert main(["--project", str(root), "run", "acme/payments", "--object", "customers"]) == 0
    assert not (state_dir(root) / "runs").exists()


# --------------------------------------------------------------------------- scratch runs and compare (PostgreSQL)

CONTRACT = """name: shop/orders
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: email, type: string, required: true}
  - {name: amount, type: int64}
  - {name: updated_at, type: timestamptz, required: true}
"""
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def pg(postgres_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {unique_name}")
        cursor.execute(
            f"CREATE TABLE {unique_name}.orders (id bigint PRIMARY KEY, email text NOT NULL, amount bigint, "
            "updated_at timestamptz NOT NULL)"
        )
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {unique_name} CASCADE")
        connection.close()


def _insert(connection: Any, schema: str, ids: range) -> None:
    with connection.cursor() as cursor:
        for n in ids:
            cursor.execute(
                f"INSERT INTO {schema}.orders VALUES (%s, %s, %s, %s)",
                (n, f"user{n}@example.com", n * 10, START + dt.timedelta(hours=n)),
            )


def _dagster_runs(root: Path) -> int:
    with instance_for_project(root) as instance:
        return len(instance.get_runs())


def _compare(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["--project", str(root), "compare", "acme/db", "--object", "orders", "--json"])
    out = capsys.readouterr().out
    document = json.loads(out)
    written = json.loads((state_dir(root) / "diagnose/acme__db__orders/compare.json").read_text())
    assert written == document
    return code, document


def _failed(document: dict[str, Any]) -> set[str]:
    return {check["name"] for check in document["checks"] if not check["passed"]}


def _plant(root: Path, change: Any) -> None:
    """Replace the scratch table's rows by ``change(rows)``, as a broken fix would have written them."""
    job = load_plan(root, strict=True).jobs[0]
    catalog = scratch_writer(root, job).catalog
    rows = catalog.load_table(("acme", "orders")).scan().to_arrow()
    planted: pa.Table = change(rows)
    # A plain schema: a broken contract would have let nulls through
    schema = pa.schema([field.with_nullable(True) for field in planted.schema])
    catalog.drop_table(("acme", "orders"))
    catalog.create_table(("acme", "orders"), schema=schema).append(planted.cast(schema))


def test_scratch_run_leaves_production_alone_and_compare_catches_regressions(
    pg: tuple[Any, str], env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    connection, schema = pg
    _insert(connection, schema, range(1, 101))
    root = write_project(
        env,
        "postgres",
        {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"},
        [
            {
                "name": "orders",
                "options": {"table": f"{schema}.orders"},
                "contract": {"name": "shop/orders", "version": 1},
                "incremental": {"strategy": "updated", "cursor_field": "updated_at"},
            }
        ],
        contracts={"shop/orders.v1.yaml": CONTRACT},
    )
    assert main(["--project", str(root), "run", "acme/db"]) == 0
    job = load_plan(root, strict=True).jobs[0]
    production = IcebergWriter(build_catalog(job.target, SecretResolver(), root))
    before = production.load_table("acme", "orders")
    assert before is not None
    snapshot, cursor = before.current_snapshot().snapshot_id, read_table_cursor(before)  # type: ignore[union-attr]
    runs = _dagster_runs(root)
    _insert(connection, schema, range(101, 121))
    capsys.readouterr()

    # reproduce: from the production cursor, five rows, into the scratch catalog
    args = ["--project", str(root), "run", "acme/db", "--object", "orders", "--limit", "5", "--scratch"]
    assert main(args) == 0
    out = capsys.readouterr().out
    scratch = scratch_writer(root, job).load_table("acme", "orders")
    assert scratch is not None
    location = scratch.location().removeprefix("file://")
    assert location in out and Path(location).is_dir()
    assert Path(location).is_relative_to(scratch_dir(root, job))
    # what the production run would read: the `updated` strategy re-reads its boundary value (order 100)
    assert sorted(row["id"] for row in scratch.scan().to_arrow().to_pylist()) == [100, 101, 102, 103, 104]
    result = json.loads((scratch_dir(root, job) / "result.json").read_text())["objects"]["orders"]
    assert result["limited"] is True and result["rows_written"] == 5 and not result["from_start"]
    # production: same snapshot, same cursor, same rows; no Dagster run recorded
    after = production.load_table("acme", "orders")
    assert after is not None and after.current_snapshot().snapshot_id == snapshot  # type: ignore[union-attr]
    assert read_table_cursor(after) == cursor and after.scan().to_arrow().num_rows == 100
    assert _dagster_runs(root) == runs

    assert main(["--project", str(root), "run", "acme/db", "--from-start"]) == 2
    assert "CFG001: --from-start only applies to a scratch run" in capsys.readouterr().err

    # validate: from the start, everything; the overlap with production passes
    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--from-start"]) == 0
    code, document = _compare(root, capsys)
    assert code == 0 and document["passed"] is True and _failed(document) == set(), document
    assert {"version", "created_at", "checks", "passed", "object"} <= set(document)
    assert {check["name"] for check in document["checks"]} >= {
        "overlap",
        "rows",
        "distinct_keys",
        "nulls:email",
        "min:updated_at",
        "max:updated_at",
        "columns_missing",
    }
    rows_line = next(check for check in document["checks"] if check["name"] == "rows")
    assert rows_line["scratch"] == rows_line["production"] == 100

    # planted regressions
    _plant(
        root,
        lambda t: t.set_column(
            1, "email", pa.array([None if i % 7 == 0 else v for i, v in enumerate(t["email"].to_pylist())])
        ),
    )
    code, document = _compare(root, capsys)
    assert code == 2 and document["passed"] is False and "nulls:email" in _failed(document)

    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--from-start"]) == 0
    day = (START + dt.timedelta(hours=30), START + dt.timedelta(hours=54))
    _plant(root, lambda t: t.filter(pa.array([not day[0] <= v < day[1] for v in t["updated_at"].to_pylist()])))
    code, document = _compare(root, capsys)
    assert code == 2 and {"rows", "distinct_keys"} <= _failed(document)

    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--from-start"]) == 0
    _plant(root, lambda t: t.drop_columns(["amount"]))
    code, document = _compare(root, capsys)
    assert code == 2 and _failed(document) == {"columns_missing"}

    # the good fix passes again; production never moved
    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--from-start"]) == 0
    code, document = _compare(root, capsys)
    assert code == 0 and document["passed"] is True
    final = production.load_table("acme", "orders")
    assert final is not None and final.current_snapshot().snapshot_id == snapshot  # type: ignore[union-attr]
    assert _dagster_runs(root) == runs


def test_scratch_refusals_are_cfg001(pg: tuple[Any, str], env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    connection, schema = pg
    _insert(connection, schema, range(1, 4))
    root = write_project(
        env,
        "postgres",
        {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"},
        [{"name": "orders", "options": {"table": f"{schema}.orders"}, "primary_key": ["id"]}],
    )
    assert main(["--project", str(root), "run", "acme/db", "--scratch"]) == 2
    assert "--scratch needs --object" in capsys.readouterr().err
    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--dry-run"]) == 2
    assert "cannot be combined with --dry-run" in capsys.readouterr().err
    # full refresh objects: a row limit would replace the table with that many rows (even a scratch one)
    assert main(["--project", str(root), "run", "acme/db", "--object", "orders", "--scratch", "--limit", "2"]) == 2
    assert "CFG001" in capsys.readouterr().err
    assert main(["--project", str(root), "compare", "acme/db", "--object", "orders"]) == 2
    assert "no scratch table" in capsys.readouterr().err
