"""A scratch project with one Google job ``acme/db`` on the Google emulator, run through the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from dativo_dagster.api.source import ApiRuntime
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ObjectResult, ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.base import Source
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import write_project

SA_EMAIL = "dativo-reader@acme-data.iam.gserviceaccount.com"
FAST = {"rate_limit": {"rps": 1000, "burst": 1000}, "rate_limits": {"sheets": {"rps": 1000, "burst": 1000}}}
QUICK_RETRIES = {"retry": {"attempts": 3, "initial_s": 0.01, "max_s": 0.05}}

ITEMS_CONTRACT = """name: drive/items
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: label, type: string}
  - {name: amount, type: decimal, precision: 12, scale: 2}
"""


class GoogleProject:
    """One job reading ``objects`` from ``source_type`` with a service account key from ``${GOOGLE_SA}``."""

    def __init__(
        self,
        root: Path,
        source_type: str,
        url: str,
        objects: list[dict[str, Any]],
        key: dict[str, Any],
        *,
        connection: dict[str, Any] | None = None,
        contracts: dict[str, str] | None = None,
    ) -> None:
        write_project(
            root,
            source_type,
            {"base_url": url, **FAST, **(connection or {})},
            objects,
            {"service_account_json": "${GOOGLE_SA}"},
            contracts=contracts or {"drive/items.v1.yaml": ITEMS_CONTRACT},
        )
        self.root = root
        self.env = {"GOOGLE_SA": json.dumps(key)}
        self.reload()

    def reload(self) -> None:
        self.job = load_plan(self.root, strict=True).jobs[0]
        self.resolver = SecretResolver(self.env)
        self.writer = IcebergWriter(build_catalog(self.job.target, self.resolver, self.root))

    def source(self, runtime: ApiRuntime | None = None) -> Source:
        return build_source(self.job, self.resolver, runtime, raw_pages=True)

    def run(self, name: str, run_id: str = "run") -> ObjectResult:
        with self.source() as source:
            return ingest_object(self.job.object(name), source=source, writer=self.writer, run_id=run_id)

    def rows(self, table: str, key: str = "id") -> list[dict[str, Any]]:
        loaded = self.writer.load_table("acme", table)
        assert loaded is not None
        return sorted(loaded.scan().to_arrow().to_pylist(), key=lambda r: (r[key] is None, r[key]))

    def quarantined(self, table: str) -> list[dict[str, Any]]:
        loaded = self.writer.load_table("acme", f"{table}__quarantine")
        return [] if loaded is None else loaded.scan().to_arrow().to_pylist()

    def edit_object(self, name: str, **changes: Any) -> None:
        path = self.root / "tenants/acme/jobs/db.yaml"
        data = yaml.safe_load(path.read_text())
        for obj in data["objects"]:
            if obj["name"] == name:
                obj.update(changes)
        path.write_text(yaml.safe_dump(data))
        self.reload()


def ok(result: ObjectResult) -> ObjectResult:
    """``result`` after checking it did not fail (the error's code and message otherwise)."""
    assert result.error is None, f"{result.error.code}: {result.error}" if result.error else ""
    return result
