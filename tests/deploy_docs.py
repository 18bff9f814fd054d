"""The configuration blocks of docs/deploy.md, for the tests that keep the guide true.

Every fenced block of the guide is read here: ``yaml`` blocks name the file they belong to on
their first line (``# dagster.yaml``, ``# workspace.yaml``, ``# values.yaml ...``), ``json``
blocks are ECS task definitions, and the rest (``bash``, diagrams) are prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

GUIDE = REPO / "docs" / "deploy.md"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced block of the guide."""

    language: str
    text: str
    line: int

    @property
    def file_kind(self) -> str:
        """The file a YAML block belongs to, from its first comment line (``dagster.yaml``, ...)."""
        first = self.text.lstrip().splitlines()[0] if self.text.strip() else ""
        match = re.match(r"#\s*([\w.-]+\.ya?ml)", first)
        return match.group(1) if match else ""

    def load(self) -> Any:
        """The block parsed as YAML (JSON is YAML)."""
        return yaml.safe_load(self.text)


def guide_blocks(path: Path = GUIDE) -> list[Block]:
    """Every fenced block of ``path`` with its language and starting line."""
    text = path.read_text(encoding="utf-8")
    return [
        Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1) for match in _FENCE.finditer(text)
    ]


def compute_logs_block() -> dict[str, Any]:
    """The guide's stand-alone ``compute_logs`` block (section "Compute logs in S3")."""
    for block in guide_blocks():
        if block.language == "yaml" and block.file_kind == "dagster.yaml":
            config = block.load()
            if set(config) == {"compute_logs"}:
                return config
    raise AssertionError(f"{GUIDE.name} has no dagster.yaml block holding only compute_logs")
