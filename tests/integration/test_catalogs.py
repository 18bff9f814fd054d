"""Target recipes select the catalog: the SQL catalog on PostgreSQL instead of SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.cli import main

pytestmark = pytest.mark.postgres


@pytest.fixture
def catalog_database(postgres_server: dict[str, object], unique_name: str) -> Iterator[str]:
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{unique_name}"')
    try:
        yield unique_name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{unique_name}" WITH (FORCE)')
        admin.close()


def test_demo_into_a_postgres_sql_catalog(
    project: Path, catalog_database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"postgresql://postgres@127.0.0.1:5432/{catalog_database}"
    monkeypatch.setenv("DATIVO_CATALOG_URI", uri)
    monkeypatch.setenv("DATIVO_WAREHOUSE", str(project / "pg-warehouse"))
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: local", "recipe: postgres_catalog"))

    assert main(["validate"]) == 0
    assert main(["run", "demo/shop"]) == 0
    assert "3,000 row(s) written" in capsys.readouterr().out

    catalog = SqlCatalog(
        "dativo", uri=uri.replace("postgresql://", "postgresql+psycopg2://"), warehouse=f"file://{project}/pg-warehouse"
    )
    assert len(catalog.load_table(("demo", "orders")).scan().to_arrow()) == 3000
    assert not (project / ".dativo" / "catalog.db").exists()
