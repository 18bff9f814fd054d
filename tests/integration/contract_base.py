"""The base of the connector contract suite's harnesses (one per connector).

A harness sets up one source object with 10 rows (or records) at its source, writes a project that
loads it, and can add newer rows. The suite (test_connector_contract.py) runs the same checks
over every harness: discover → extract → schema conforms → cursor advances → re-run loads nothing.
Harnesses of other connectors live in ``harness_<connector>.py`` modules next to this one and are
found by the suite automatically.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

RUNNER = "version: 1\njobs:\n  - {tenant: acme, job: contract}\n"
TARGET = "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
CONTRACT = """name: contract/items
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: label, type: string}
  - {name: price, type: decimal, precision: 10, scale: 2}
"""


class Harness(abc.ABC):
    """Sets up one connector's source object and project files."""

    name: str
    key: ClassVar[str] = "id"
    expected_schema: ClassVar[list[tuple[str, str]]] = [
        ("id", "int64"),
        ("label", "string"),
        ("price", "decimal(10,2)"),
    ]
    discovered_columns: ClassVar[set[str]] = {"id", "label", "price"}
    full_refresh: ClassVar[bool] = False
    """The object is read whole each run (a worksheet): a run after new rows writes every row."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def check_row(self, rows: list[dict[str, Any]]) -> None:
        """Check a sample of the loaded rows (sorted by key) against what the source holds."""
        import decimal

        assert rows[2] == {"id": 3, "label": "item 3", "price": decimal.Decimal("3.50")}

    def env(self) -> dict[str, str]:
        """Environment variables the job's ``${VAR}`` references need."""
        return {}

    def write_project(self, source_recipe: str, job: str) -> None:
        (self.root / "tenants/acme/jobs").mkdir(parents=True, exist_ok=True)
        (self.root / "connectors/sources").mkdir(parents=True)
        (self.root / "connectors/targets").mkdir(parents=True)
        (self.root / "connectors/schemas/contract").mkdir(parents=True)
        (self.root / "runner.yaml").write_text(RUNNER)
        (self.root / "connectors/targets/local.yaml").write_text(TARGET)
        (self.root / "connectors/schemas/contract/items.v1.yaml").write_text(CONTRACT)
        (self.root / "connectors/sources" / f"{self.name}.yaml").write_text(source_recipe)
        (self.root / "tenants/acme/jobs/contract.yaml").write_text(job)

    @abc.abstractmethod
    def setup(self) -> None:
        """Create the source object with ids 1..10 and the project files."""

    @abc.abstractmethod
    def add_rows(self, first_id: int, count: int) -> None:
        """Add ``count`` rows at the source, newer than every row there (ids from ``first_id``)."""

    def teardown(self) -> None:  # noqa: B027 - optional
        """Drop what setup created."""
