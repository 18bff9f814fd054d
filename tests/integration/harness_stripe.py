"""The Stripe source in the connector contract suite, and project helpers for its own tests.

The emulator (tests/fakes/stripe_api.py) runs in-process on a frozen clock; the source's clock
(:meth:`StripeSource.now`) is pointed at it, so windows, the settle lag and the events retention
are measured on the emulator's time and tests move time by moving that clock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import yaml

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.models import SchemaContract
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ObjectResult, ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.registry import build_source
from dativo_dagster.sources.stripe import StripeSource
from dativo_dagster.types import contract_arrow_schema, type_label
from tests.conftest import REPO
from tests.fakes.server import FakeClock, FakeServer
from tests.fakes.stripe_api import StripeEmulator
from tests.integration.contract_base import Harness

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z: a frozen clock keeps seeded data identical run to run
KEY = "sk_test_dativo_contract"
TARGET = "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
RECIPE = (REPO / "connectors/sources/stripe.yaml").read_text()
SCHEMAS = REPO / "connectors/schemas/stripe"


def contract_columns(name: str) -> list[tuple[str, str]]:
    """``(column, type label)`` of a shipped Stripe contract, as the table will hold them."""
    contract = SchemaContract.model_validate(yaml.safe_load((SCHEMAS / f"{name}.v1.yaml").read_text()))
    return [(f.name, type_label(f.type)) for f in contract_arrow_schema(contract)]


def stripe_object(name: str, *, contract: bool = True, **extra: Any) -> dict[str, Any]:
    """A job object reading the Stripe resource ``name`` incrementally by ``created``."""
    obj: dict[str, Any] = {"name": name, "incremental": {"strategy": "created", "cursor_field": "created"}}
    if contract:
        obj["contract"] = {"name": f"stripe/{name}", "version": 1}
    else:
        obj["primary_key"] = ["id"]  # a discovered schema has no contract to name it
    for key, value in extra.items():
        if key == "incremental":
            obj["incremental"] = {**obj["incremental"], **value}
        else:
            obj[key] = value
    return obj


def write_stripe_project(
    root: Path,
    url: str,
    objects: list[dict[str, Any]],
    *,
    connection: dict[str, Any] | None = None,
    tenants: dict[str, str] | None = None,
    per_tenant: dict[str, dict[str, Any]] | None = None,
    job: str = "payments",
) -> Path:
    """A project whose tenants each run one Stripe job ``<tenant>/<job>`` over ``objects``.

    Args:
        root: Project directory.
        url: The emulator's base URL.
        objects: The job's objects.
        connection: Overrides of the recipe's connection defaults.
        tenants: Tenant → name of the variable holding its API key (default: acme/STRIPE_API_KEY).
        per_tenant: Tenant → further connection overrides for that tenant's job.
        job: The job name.
    """
    tenants = tenants or {"acme": "STRIPE_API_KEY"}
    (root / "connectors/sources").mkdir(parents=True, exist_ok=True)
    (root / "connectors/targets").mkdir(parents=True, exist_ok=True)
    (root / "connectors/sources/stripe.yaml").write_text(RECIPE)
    (root / "connectors/targets/local.yaml").write_text(TARGET)
    shutil.copytree(SCHEMAS, root / "connectors/schemas/stripe", dirs_exist_ok=True)
    entries = [{"tenant": tenant, "job": job} for tenant in tenants]
    (root / "runner.yaml").write_text(yaml.safe_dump({"version": 1, "jobs": entries}))
    for tenant, variable in tenants.items():
        (root / f"tenants/{tenant}/jobs").mkdir(parents=True, exist_ok=True)
        spec = {
            "tenant": tenant,
            "name": job,
            "source": {
                "recipe": "stripe",
                "connection": {"base_url": url, **(connection or {}), **(per_tenant or {}).get(tenant, {})},
                "credentials": {"api_key": "${" + variable + "}"},
            },
            "target": {"recipe": "local"},
            "objects": objects,
        }
        (root / f"tenants/{tenant}/jobs/{job}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


@contextmanager
def source_clock(emulator: StripeEmulator) -> Iterator[None]:
    """Point every StripeSource's clock at the emulator's (restored on exit)."""
    with mock.patch.object(StripeSource, "now", lambda _self: emulator.clock.now()):
        yield


class StripeRunner:
    """Runs the objects of one job of a Stripe project through the shared engine."""

    def __init__(self, root: Path, environ: dict[str, str], label: str | None = None, runtime: Any = None) -> None:
        plan = load_plan(root, strict=True)
        self.job: JobPlan = plan.job(label) if label else plan.jobs[0]
        self.resolver = SecretResolver(environ)
        self.writer = IcebergWriter(build_catalog(self.job.target, self.resolver, root))
        self.runtime = runtime
        self.runs = 0

    def run(self, name: str) -> ObjectResult:
        """One run of object ``name``."""
        self.runs += 1
        with build_source(self.job, self.resolver, self.runtime, raw_pages=True) as source:
            return ingest_object(self.job.object(name), source=source, writer=self.writer, run_id=f"run-{self.runs}")

    def ok(self, name: str) -> ObjectResult:
        """One run that must succeed."""
        result = self.run(name)
        assert result.error is None, result.error
        assert result.write is not None
        return result

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The table's rows."""
        table = self.writer.load_table(self.job.tenant, name)
        assert table is not None
        return table.scan().to_arrow().to_pylist()

    def snapshots(self, name: str) -> list[Any]:
        """The table's snapshots, oldest first."""
        table = self.writer.load_table(self.job.tenant, name)
        assert table is not None
        return list(table.snapshots())


class StripeHarness(Harness):
    """Customers of an emulated Stripe account: ten to start with, newer ones added later."""

    name = "stripe"
    key = "id"
    expected_schema: ClassVar[list[tuple[str, str]]] = contract_columns("customers")
    discovered_columns: ClassVar[set[str]] = {"id", "created", "email", "name"}

    def setup(self) -> None:
        self.emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
        self.emulator.add_account(KEY, customers=0, charges=0, products=0, invoices=0, subscriptions=0)
        self.created: dict[str, dict[str, Any]] = {}
        for i in range(1, 11):
            self._create(i, NOW - 10 * 86_400 + i * 3_600)
        self.server: FakeServer = self.emulator.serve().start()
        self.clock = source_clock(self.emulator)
        self.clock.__enter__()
        write_stripe_project(self.root, self.server.url, [stripe_object("customers")], job="contract")

    def _create(self, i: int, created: int) -> None:
        rendered = self.emulator.create_object(
            KEY, "customers", created=created, email=f"item{i}@example.com", name=f"item {i}"
        )
        self.created[rendered["id"]] = rendered

    def add_rows(self, first_id: int, count: int) -> None:
        for i in range(first_id, first_id + count):
            self._create(i, NOW - 3_600 + i)

    def check_row(self, rows: list[dict[str, Any]]) -> None:
        row = rows[2]
        expected = self.created[row["id"]]
        assert row["email"] == expected["email"] and row["name"] == expected["name"]
        assert int(row["created"].timestamp()) == expected["created"]
        assert row["metadata"] == "{}" and row["livemode"] is False and row["deleted"] is None

    def env(self) -> dict[str, str]:
        return {"STRIPE_API_KEY": KEY}

    def teardown(self) -> None:
        self.clock.__exit__(None, None, None)
        self.server.stop()


def env_with(**variables: str) -> dict[str, str]:
    """The process environment plus ``variables`` (for ``${VAR}`` references)."""
    return {**os.environ, **variables}
