"""Helpers for the SQL source tests: a scratch project for one job and a run helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ObjectResult, ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.registry import build_source


def write_project(
    root: Path,
    source_type: str,
    connection: dict[str, Any],
    objects: list[dict[str, Any]],
    credentials: dict[str, str] | None = None,
    job_extra: dict[str, Any] | None = None,
    contracts: dict[str, str] | None = None,
) -> Path:
    """A project with one job ``acme/db`` reading ``objects`` from a SQL source.

    ``contracts`` maps a file under ``connectors/schemas`` (``shop/orders.v1.yaml``) to its YAML;
    an object refers to it with ``contract: {name: shop/orders, version: 1}``.
    """
    for relative, text in (contracts or {}).items():
        path = root / "connectors/schemas" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "tenants/acme/jobs").mkdir(parents=True, exist_ok=True)
    (root / "connectors/sources").mkdir(parents=True, exist_ok=True)
    (root / "connectors/targets").mkdir(parents=True, exist_ok=True)
    (root / "runner.yaml").write_text("version: 1\njobs: [{tenant: acme, job: db}]\n")
    (root / "connectors/sources" / f"{source_type}.yaml").write_text(f"name: {source_type}\ntype: {source_type}\n")
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
    )
    job: dict[str, Any] = {
        "tenant": "acme",
        "name": "db",
        "source": {"recipe": source_type, "connection": connection, "credentials": credentials or {}},
        "target": {"recipe": "local"},
        "objects": objects,
        **(job_extra or {}),
    }
    (root / "tenants/acme/jobs/db.yaml").write_text(yaml.safe_dump(job))
    return root


class Runner:
    """Runs objects of the project's job through the shared engine."""

    def __init__(self, root: Path, environ: dict[str, str] | None = None) -> None:
        self.root = root
        self.job: JobPlan = load_plan(root, strict=True).jobs[0]
        self.resolver = SecretResolver(environ or {})
        self.writer = IcebergWriter(build_catalog(self.job.target, self.resolver, root), target_file_rows=50_000)
        self.runs = 0

    def run(self, name: str, limit: int | None = None) -> ObjectResult:
        self.runs += 1
        with build_source(self.job, self.resolver, raw_pages=True) as source:
            return ingest_object(
                self.job.object(name), source=source, writer=self.writer, run_id=f"run-{self.runs}", limit=limit
            )

    def rows(self, name: str) -> list[dict[str, Any]]:
        table = self.writer.load_table("acme", name)
        assert table is not None
        return table.scan().to_arrow().to_pylist()
