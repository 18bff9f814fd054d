"""Checkpointed reads: a source whose stream marks its own commit points (a Singer tap's STATE
messages) gets one commit per checkpoint, and a failure keeps every checkpoint committed before it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ExtractError
from dativo_dagster.sources.base import ConnectionConfig, Extraction, ReadRequest, Source, SourceOptions, SourceStats
from dativo_dagster.state import CursorState
from tests.integration.sql_harness import Runner, write_project

CONTRACT = """name: fake/items
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: label, type: string}
"""
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("label", pa.string())])


class _Options(SourceOptions):
    parts: int = 3
    rows: int = 4
    fail_at: int | None = None


class CheckpointedFake(Source):
    """Rows 1.. in ``parts`` checkpoints of ``rows`` rows; the cursor is the last id of a checkpoint."""

    type = "checkpointed_fake"
    connection_model = ConnectionConfig
    options_model = _Options
    supported_strategies = frozenset({Strategy.APPEND, Strategy.FULL_REFRESH})
    closed: ClassVar[list[bool]] = []

    def check_connection(self) -> None:
        """Nothing to reach."""

    def list_objects(self) -> list[str]:
        return ["items"]

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        return SCHEMA

    def read(self, request: ReadRequest) -> Extraction:
        raise AssertionError("a checkpointed source is read through read_checkpointed")

    def read_checkpointed(self, request: ReadRequest) -> Iterator[Extraction]:
        options = _Options.model_validate(request.obj.options)
        start = int(request.cursor.value) if request.cursor is not None else 0
        cursor = request.cursor
        try:
            for part in range(options.parts):
                first = start + part * options.rows + 1
                ids = list(range(first, first + options.rows))

                def rows(ids: list[int] = ids, part: int = part) -> Iterator[pa.RecordBatch]:
                    if options.fail_at == part:
                        raise ExtractError("the tap died")
                    yield pa.RecordBatch.from_pydict({"id": ids, "label": [f"item {i}" for i in ids]}, schema=SCHEMA)

                reached = CursorState(strategy=Strategy.APPEND, field="id", value=ids[-1])
                part_request = ReadRequest(obj=request.obj, cursor=cursor)
                yield Extraction(SCHEMA, rows(), part_request, SourceStats(), cursor_override=lambda v=ids[-1]: v)
                cursor = reached
        finally:
            CheckpointedFake.closed.append(True)


def _project(root: Path, **options: Any) -> Runner:
    objects = [
        {
            "name": "items",
            "contract": {"name": "fake/items", "version": 1},
            "incremental": {"strategy": "append", "cursor_field": "id"},
            "options": options,
        }
    ]
    write_project(root, "checkpointed_fake", {}, objects, contracts={"fake/items.v1.yaml": CONTRACT})
    return Runner(root)


def test_each_checkpoint_is_one_commit_and_a_failure_keeps_the_ones_before(tmp_path: Path) -> None:
    runner = _project(tmp_path, parts=3, rows=4)
    result = runner.run("items")
    assert result.error is None and result.write is not None and result.write.rows_written == 12
    table = runner.writer.load_table("acme", "items")
    assert table is not None and len(table.snapshots()) == 3
    assert result.source_stats["checkpoints"] == 3 and result.write.cursor.value == 12  # type: ignore[union-attr]

    failing = _project(tmp_path / "fails", parts=3, rows=4, fail_at=2)
    CheckpointedFake.closed.clear()
    broken = failing.run("items")
    assert broken.error is not None and broken.error.code == "EXT001"
    assert CheckpointedFake.closed == [True]  # the stream was stopped
    rows = failing.writer.load_table("acme", "items").scan().to_arrow()  # type: ignore[union-attr]
    assert sorted(rows.column("id").to_pylist()) == list(range(1, 9))  # two checkpoints committed
    again = _project(tmp_path / "fails", parts=1, rows=4)
    resumed = again.run("items")  # the next run starts after the last committed checkpoint
    assert resumed.error is None
    ids = sorted(again.writer.load_table("acme", "items").scan().to_arrow().column("id").to_pylist())  # type: ignore[union-attr]
    assert ids == list(range(1, 13))
