"""Merge on the primary key: position deletes for sparse updates, rewrites for dense ones."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.config.models import ObjectConfig, SchemaContract
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.state import CursorState
from dativo_dagster.types import ContractEnforcer

CONTRACT = SchemaContract.model_validate(
    {
        "name": "t/items",
        "version": 1,
        "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "required": True},
            {"name": "value", "type": "string"},
            {"name": "updated_at", "type": "timestamptz", "required": True},
        ],
    }
)
OBJ = ObjectPlan(
    tenant="t",
    job="j",
    source_name="s",
    config=ObjectConfig.model_validate(
        {"name": "items", "incremental": {"strategy": "updated", "cursor_field": "updated_at"}}
    ),
    contract=CONTRACT,
    options={},
    primary_key=("id",),
    namespace="t",
    table="items",
    max_rejected_rate=0.0,
)
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def writer(tmp_path: Path) -> IcebergWriter:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    return IcebergWriter(catalog, target_file_rows=10_000)


def batches(ids: list[int], value: str, day: int) -> Iterator[pa.RecordBatch]:
    yield pa.RecordBatch.from_pydict(
        {
            "id": pa.array(ids, pa.int64()),
            "value": pa.array([f"{value}{i}" for i in ids]),
            "updated_at": pa.array([BASE + dt.timedelta(days=day)] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )


def write(writer: IcebergWriter, ids: list[int], value: str, day: int, previous: CursorState | None = None):
    cursor = CursorState(OBJ.strategy, "updated_at", (BASE + dt.timedelta(days=day)).isoformat())
    return writer.write(
        OBJ,
        batches(ids, value, day),
        enforcer=ContractEnforcer.for_contract(CONTRACT),
        run_id=f"run-{day}",
        previous_cursor=previous,
        new_cursor=lambda: cursor,
    )


def rows(writer: IcebergWriter) -> dict[int, str]:
    table = writer.load_table("t", "items")
    assert table is not None
    data = table.scan().to_arrow()
    ids = data.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate keys after merge"
    return dict(zip(ids, data.column("value").to_pylist(), strict=True))


def test_sparse_updates_use_position_deletes(writer: IcebergWriter) -> None:
    write(writer, list(range(50_000)), "v", 0)  # 5 files of 10,000 rows
    updates = list(range(0, 50_000, 100))  # 1% spread over every file
    result = write(writer, [*updates, 60_000, 60_001], "u", 1)
    assert result.rows_replaced == len(updates)
    assert result.delete_files == 5 and result.files_rewritten == 0
    table = rows(writer)
    assert len(table) == 50_002
    assert table[100] == "u100" and table[101] == "v101" and table[60_001] == "u60001"
    summary = writer.load_table("t", "items").current_snapshot().summary  # type: ignore[union-attr]
    assert summary.additional_properties["total-position-deletes"] == str(len(updates))

    # the same keys again: the earlier versions are already deleted, only the live ones are replaced
    again = write(writer, updates[:10], "w", 2)
    assert again.rows_replaced == 10
    table = rows(writer)
    assert len(table) == 50_002 and table[900] == "w900" and table[1_000] == "u1000"


def test_dense_updates_rewrite_the_file(writer: IcebergWriter) -> None:
    write(writer, list(range(10_000)), "v", 0)
    result = write(writer, list(range(8_000)), "u", 1)
    assert result.files_rewritten == 1 and result.delete_files == 0
    table = rows(writer)
    assert len(table) == 10_000 and table[7_999] == "u7999" and table[8_000] == "v8000"


def test_identical_reread_commits_nothing(writer: IcebergWriter) -> None:
    first = write(writer, list(range(1_000)), "v", 0)
    again = write(writer, list(range(900, 1_000)), "v", 0, previous=first.cursor)
    assert not again.committed and again.rows_written == 0
    assert len(writer.load_table("t", "items").snapshots()) == 1  # type: ignore[union-attr]
