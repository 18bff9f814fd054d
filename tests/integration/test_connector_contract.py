"""One contract suite over every connector (singer-sdk style).

discover → extract → schema conforms → cursor advances → re-run loads nothing.

Each connector contributes a small harness that writes a project for one object with an
append-by-id cursor, seeds rows, and can add rows at the source.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.registry import build_source
from dativo_dagster.types import type_label
from tests.conftest import require_server
from tests.integration.contract_base import Harness


class CsvHarness(Harness):
    name = "csv"

    def setup(self) -> None:
        data = self.root / "tenants/acme/data"
        data.mkdir(parents=True)
        self.file = data / "items.csv"
        self.file.write_text("id,label,price\n")
        self.add_rows(1, 10)
        self.write_project(
            "name: csv\ntype: csv\n",
            "tenant: acme\nname: contract\nsource: {recipe: csv}\n"
            "target: {recipe: local}\nobjects:\n  - name: items\n    contract: {name: contract/items, version: 1}\n"
            "    options: {path: items.csv}\n    incremental: {strategy: append, cursor_field: id}\n",
        )

    def add_rows(self, first_id: int, count: int) -> None:
        with self.file.open("a") as handle:
            for i in range(first_id, first_id + count):
                handle.write(f"{i},item {i},{i}.50\n")


class PostgresHarness(Harness):
    name = "postgres"

    def setup(self) -> None:
        import psycopg2

        require_server("PostgreSQL", "127.0.0.1", 5432)
        self.schema = "contract_" + uuid.uuid4().hex[:8]
        self.connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
        self.connection.autocommit = True
        with self.connection.cursor() as cursor:
            cursor.execute(f"CREATE SCHEMA {self.schema}")
            cursor.execute(f"CREATE TABLE {self.schema}.items (id bigint PRIMARY KEY, label text, price numeric(10,2))")
        self.add_rows(1, 10)
        self.write_project(
            "name: postgres\ntype: postgres\n",
            "tenant: acme\nname: contract\nsource:\n  recipe: postgres\n"
            "  connection: {host: 127.0.0.1, port: 5432, database: test, user: postgres}\n"
            "target: {recipe: local}\nobjects:\n  - name: items\n    contract: {name: contract/items, version: 1}\n"
            f"    options: {{table: {self.schema}.items}}\n    incremental: {{strategy: append, cursor_field: id}}\n",
        )

    def add_rows(self, first_id: int, count: int) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {self.schema}.items SELECT i, 'item ' || i, i + 0.5 FROM generate_series(%s, %s) i",
                (first_id, first_id + count - 1),
            )

    def teardown(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.connection.close()


class MySQLHarness(Harness):
    name = "mysql"

    def setup(self) -> None:
        import pymysql

        require_server("MariaDB", "127.0.0.1", 3306)
        self.database = "contract_" + uuid.uuid4().hex[:8]
        self.connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
        with self.connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {self.database}")
            cursor.execute(
                f"CREATE TABLE {self.database}.items (id bigint PRIMARY KEY, label text, price decimal(10,2))"
            )
        self.add_rows(1, 10)
        self.write_project(
            "name: mysql\ntype: mysql\n",
            "tenant: acme\nname: contract\nsource:\n  recipe: mysql\n"
            f"  connection: {{host: 127.0.0.1, port: 3306, database: {self.database}, user: root}}\n"
            "target: {recipe: local}\nobjects:\n  - name: items\n    contract: {name: contract/items, version: 1}\n"
            f"    options: {{table: {self.database}.items}}\n    incremental: {{strategy: append, cursor_field: id}}\n",
        )

    def add_rows(self, first_id: int, count: int) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {self.database}.items VALUES (%s, %s, %s)",
                [(i, f"item {i}", f"{i}.50") for i in range(first_id, first_id + count)],
            )

    def teardown(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {self.database}")
        self.connection.close()


def _more_harnesses() -> list[type[Harness]]:
    """Harnesses of other connectors: ``harness_<connector>.py`` modules next to this file."""
    found: list[type[Harness]] = []
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if info.name.startswith("harness_"):
            module = importlib.import_module(f"{__package__}.{info.name}")
            found.extend(
                value
                for value in vars(module).values()
                if isinstance(value, type) and issubclass(value, Harness) and value is not Harness
                and value.__module__ == module.__name__ and not inspect.isabstract(value)
            )  # fmt: skip
    return found


HARNESSES: list[type[Harness]] = [CsvHarness, PostgresHarness, MySQLHarness, *_more_harnesses()]


@pytest.fixture(params=HARNESSES, ids=[h.name for h in HARNESSES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    instance: Harness = request.param(tmp_path)
    instance.setup()
    try:
        yield instance
    finally:
        instance.teardown()


def _job(root: Path) -> JobPlan:
    (job,) = load_plan(root, strict=True).jobs
    return job


def test_connector_contract(harness: Harness) -> None:
    assert_contract(harness)


def assert_contract(harness: Harness) -> None:
    """The contract checks over one harness's project, whatever its target recipe."""
    job = _job(harness.root)
    obj = job.objects[0]
    resolver = SecretResolver(environ={**os.environ, **harness.env()})
    writer = IcebergWriter(build_catalog(job.target, resolver, harness.root))
    with build_source(job, resolver) as source:
        codec = source.cursor_codec(obj)
        # discover
        source.check_connection()
        source.check_object(obj)
        discovered = source.discover_schema(obj)
        assert harness.discovered_columns <= set(discovered.names)

        # extract
        first = ingest_object(obj, source=source, writer=writer, run_id="contract-1")
        assert first.error is None, first.error
        assert first.write is not None and first.write.rows_written == 10
        assert first.write.cursor is not None

        # schema conforms to the contract
        table = writer.load_table(*obj.table_identifier)
        assert table is not None
        arrow = table.scan().to_arrow()
        assert [(f.name, type_label(f.type)) for f in arrow.schema] == harness.expected_schema
        assert not table.schema().find_field(harness.key).optional
        harness.check_row(sorted(arrow.to_pylist(), key=lambda r: r[harness.key]))

        # cursor advances
        harness.add_rows(11, 5)
        second = ingest_object(obj, source=source, writer=writer, run_id="contract-2")
        assert second.error is None, second.error
        assert second.write is not None and second.write.rows_written == (15 if harness.full_refresh else 5)
        assert second.write.cursor is not None
        assert codec.is_before(first.write.cursor.value, second.write.cursor.value)

        # re-run loads nothing
        third = ingest_object(obj, source=source, writer=writer, run_id="contract-3")
        assert third.error is None, third.error
        assert third.write is not None and third.write.rows_written == 0 and not third.write.committed
        keys = writer.load_table(*obj.table_identifier).scan().to_arrow().column(harness.key).to_pylist()  # type: ignore[union-attr]
        assert len(keys) == len(set(keys)) == 15
