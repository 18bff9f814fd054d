"""Writer guarantees: one owner per table, quarantine exactly once, commit conflicts, empty refreshes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.config.models import ObjectConfig, SchemaContract
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, QualityError, StorageError
from dativo_dagster.iceberg.tables import OWNER_PROPERTY, TENANT_PROPERTY, Owner
from dativo_dagster.iceberg.writer import IcebergWriter, WriteResult
from dativo_dagster.state import CursorState
from dativo_dagster.types import CURSOR_FROM_COLUMN, ContractEnforcer

CONTRACT = SchemaContract.model_validate(
    {
        "name": "t/items",
        "version": 1,
        "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "required": True},
            {"name": "amount", "type": "decimal", "precision": 10, "scale": 2},
        ],
    }
)


def make_obj(
    *, tenant: str = "acme", job: str = "j", name: str = "items", strategy: str = "append", table: str | None = None,
    namespace: str | None = None, max_rejected_rate: float = 0.5, allow_empty_refresh: bool = False,
) -> ObjectPlan:  # fmt: skip
    incremental: dict[str, Any] = {"strategy": strategy}
    if strategy in ("append", "updated"):
        incremental["cursor_field"] = "id"
    return ObjectPlan(
        tenant=tenant,
        job=job,
        source_name="s",
        config=ObjectConfig.model_validate({"name": name, "incremental": incremental}),
        contract=CONTRACT,
        options={},
        primary_key=("id",),
        namespace=namespace or tenant,
        table=table or name,
        max_rejected_rate=max_rejected_rate,
        allow_empty_refresh=allow_empty_refresh,
    )


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")


@pytest.fixture
def writer(catalog: SqlCatalog) -> IcebergWriter:
    return IcebergWriter(catalog)


def rows(ids: list[int], amounts: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    amounts = amounts or [f"{i}.00" for i in ids]
    yield pa.RecordBatch.from_pydict({"id": pa.array([str(i) for i in ids]), "amount": pa.array(amounts)})


def write(
    writer: IcebergWriter,
    obj: ObjectPlan,
    ids: list[int],
    *,
    previous: int | None = None,
    amounts: list[str] | None = None,
    run_id: str = "r",
    **kwargs: Any,
) -> WriteResult:
    prev = CursorState(obj.strategy, obj.cursor_field, previous) if previous is not None else None
    cursor = CursorState(obj.strategy, obj.cursor_field, max(ids)) if ids and obj.cursor_field else prev
    return writer.write(
        obj,
        rows(ids, amounts),
        enforcer=ContractEnforcer.for_contract(CONTRACT, obj.primary_key),
        run_id=run_id,
        previous_cursor=prev,
        new_cursor=lambda: cursor,
        **kwargs,
    )


def ids_in(catalog: SqlCatalog, namespace: str, name: str) -> list[int]:
    return sorted(catalog.load_table((namespace, name)).scan().to_arrow().column("id").to_pylist())


# ----------------------------------------------------------------------------- one owner per table


def test_the_table_and_namespace_record_their_owner(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    write(writer, make_obj(), [1, 2])
    assert catalog.load_table(("acme", "items")).properties[OWNER_PROPERTY] == "acme/j/items"
    assert catalog.load_namespace_properties("acme")[TENANT_PROPERTY] == "acme"


def test_another_object_cannot_write_a_table_it_does_not_own(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    write(writer, make_obj(), [1, 2])
    intruder = make_obj(job="other", table="items")
    with pytest.raises(ConfigError, match=r"table acme.items is owned by acme/j/items; acme/other/items may not"):
        write(writer, intruder, [3, 4], previous=2)
    assert ids_in(catalog, "acme", "items") == [1, 2]


def test_another_tenant_cannot_write_into_a_namespace(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    write(writer, make_obj(tenant="acme_corp"), [1])
    with pytest.raises(ConfigError, match="namespace acme_corp belongs to tenant 'acme_corp', not 'acme'"):
        write(writer, make_obj(tenant="acme", namespace="acme_corp", name="other"), [1])


def test_a_table_made_outside_dativo_is_not_taken_over(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    catalog.create_namespace("acme", properties={TENANT_PROPERTY: "acme"})
    table = catalog.create_table(("acme", "items"), schema=pa.schema([pa.field("id", pa.int64(), nullable=False)]))
    table.append(pa.table({"id": pa.array([7], pa.int64())}).cast(table.schema().as_arrow()))
    with pytest.raises(ConfigError, match="was not created by dativo and already holds data"):
        write(writer, make_obj(), [1])
    assert ids_in(catalog, "acme", "items") == [7]


def test_a_dativo_table_from_before_owners_were_recorded_is_adopted(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    write(writer, make_obj(), [1])
    table = catalog.load_table(("acme", "items"))
    with table.transaction() as txn:
        txn.remove_properties(OWNER_PROPERTY)
    write(writer, make_obj(), [2], previous=1)
    assert catalog.load_table(("acme", "items")).properties[OWNER_PROPERTY] == "acme/j/items"
    with pytest.raises(ConfigError, match="is owned by acme/j/items"):
        write(writer, make_obj(job="k"), [3], previous=2)


def test_ensure_table_checks_the_owner(writer: IcebergWriter) -> None:
    schema = pa.schema([pa.field("id", pa.int64())])
    writer.ensure_table("acme", "x", schema, Owner("acme", "acme/j/x"))
    with pytest.raises(ConfigError):
        writer.ensure_table("acme", "x", schema, Owner("acme", "acme/k/x"))


# ----------------------------------------------------------------------------- quarantine exactly once


def quarantined(catalog: SqlCatalog) -> pa.Table:
    return catalog.load_table(("acme", "items__quarantine")).scan().to_arrow()


def test_a_retried_range_does_not_repeat_its_quarantined_rows(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    obj = make_obj(max_rejected_rate=0.1)
    bad = ["x", "2.00", "y", "4.00"]
    for _ in range(3):  # QUAL001 three times over the same range (50% rejected, threshold 10%)
        with pytest.raises(QualityError):
            write(writer, obj, [1, 2, 3, 4], amounts=bad)
    assert quarantined(catalog).num_rows == 2
    lenient = make_obj(max_rejected_rate=0.6)
    write(writer, lenient, [1, 2, 3, 4], amounts=bad)  # the same range, committed at last
    assert quarantined(catalog).num_rows == 2
    assert set(quarantined(catalog).column(CURSOR_FROM_COLUMN).to_pylist()) == {""}
    write(writer, lenient, [5, 6], previous=4, amounts=["z", "6.00"])  # the next range adds its own
    assert sorted(quarantined(catalog).column("id").to_pylist()) == ["1", "3", "5"]


def test_a_key_rejected_again_through_a_lookback_is_kept_once(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    obj = make_obj(strategy="updated", max_rejected_rate=0.9)
    write(writer, obj, [1, 2], amounts=["bad", "2.00"])
    write(writer, obj, [1, 3], previous=2, amounts=["still bad", "3.00"])  # id 1 re-read by the lookback
    table = quarantined(catalog)
    assert table.column("id").to_pylist() == ["1"]
    assert "still bad" in table.column("amount").to_pylist()


# ----------------------------------------------------------------------------- commit conflicts


def _compact(catalog: SqlCatalog) -> None:
    """What table maintenance does: the same rows rewritten into new files, in a non-dativo snapshot."""
    other = catalog.load_table(("acme", "items"))
    other.overwrite(other.scan().to_arrow())


def test_a_foreign_commit_is_absorbed_without_reading_the_source_again(
    writer: IcebergWriter, catalog: SqlCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(writer, make_obj(), [1, 2])
    original = IcebergWriter._commit_once
    calls = {"n": 0}

    def commit_after_a_foreign_writer(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # table maintenance (or any non-dativo writer) commits first
            _compact(catalog)
        return original(self, table, txn, staged)

    monkeypatch.setattr(IcebergWriter, "_commit_once", commit_after_a_foreign_writer)
    reads = {"n": 0}

    def counted() -> Iterator[pa.RecordBatch]:
        reads["n"] += 1
        yield from rows([3, 4])

    obj = make_obj()
    result = writer.write(
        obj,
        counted(),
        enforcer=ContractEnforcer.for_contract(CONTRACT),
        run_id="r2",
        previous_cursor=CursorState(obj.strategy, "id", 2),
        new_cursor=lambda: CursorState(obj.strategy, "id", 4),
    )
    assert result.committed and result.commit_attempts == 2 and reads["n"] == 1
    assert ids_in(catalog, "acme", "items") == [1, 2, 3, 4]


def test_merge_is_replanned_on_the_refreshed_table(
    writer: IcebergWriter, catalog: SqlCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = make_obj(strategy="updated")
    write(writer, obj, [1, 2, 3])
    original = IcebergWriter._commit_once
    calls = {"n": 0}

    def conflict_once(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            _compact(catalog)
        return original(self, table, txn, staged)

    monkeypatch.setattr(IcebergWriter, "_commit_once", conflict_once)
    result = write(writer, obj, [2, 4], previous=3, amounts=["20.00", "40.00"])
    assert result.commit_attempts == 2
    data = catalog.load_table(("acme", "items")).scan().to_arrow().sort_by("id").to_pylist()
    assert [(r["id"], str(r["amount"])) for r in data] == [(1, "1.00"), (2, "20.00"), (3, "3.00"), (4, "40.00")]


def test_two_runs_of_one_object_never_both_commit_a_range(
    writer: IcebergWriter, catalog: SqlCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(writer, make_obj(), [1, 2])
    both_staged = threading.Barrier(2, timeout=60)
    original = IcebergWriter._commit

    def commit_together(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        both_staged.wait()  # both runs read the same cursor and staged the same rows
        return original(self, table, txn, staged)

    monkeypatch.setattr(IcebergWriter, "_commit", commit_together)
    outcomes: list[object] = []

    def run() -> None:
        try:
            outcomes.append(write(writer, make_obj(), [3, 4], previous=2, base_snapshot_id=_base(catalog)))
        except StorageError as exc:
            outcomes.append(exc)

    base = _base(catalog)
    assert base is not None
    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committed = [o for o in outcomes if isinstance(o, WriteResult)]
    refused = [o for o in outcomes if isinstance(o, StorageError)]
    assert len(committed) == 1 and len(refused) == 1
    assert refused[0].transient and "another run committed" in str(refused[0])
    assert ids_in(catalog, "acme", "items") == [1, 2, 3, 4]


def _base(catalog: SqlCatalog) -> int | None:
    from dativo_dagster.iceberg.tables import latest_dativo_snapshot_id

    return latest_dativo_snapshot_id(catalog.load_table(("acme", "items")))


def test_a_run_that_started_before_another_committed_commits_nothing(
    writer: IcebergWriter, catalog: SqlCatalog
) -> None:
    write(writer, make_obj(), [1, 2])
    stale_base = _base(catalog)
    write(writer, make_obj(), [3], previous=2)
    with pytest.raises(StorageError, match="another run committed"):
        write(writer, make_obj(), [3, 4], previous=2, base_snapshot_id=stale_base)
    assert ids_in(catalog, "acme", "items") == [1, 2, 3]


# ----------------------------------------------------------------------------- full refresh


def test_a_full_refresh_reading_nothing_never_empties_the_table(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    obj = make_obj(strategy="full_refresh")
    write(writer, obj, [1, 2])
    with pytest.raises(QualityError, match=r"returned no rows; a full refresh would empty acme\.items"):
        write(writer, obj, [])
    assert ids_in(catalog, "acme", "items") == [1, 2]
    write(writer, make_obj(strategy="full_refresh", allow_empty_refresh=True), [])
    assert ids_in(catalog, "acme", "items") == []


def test_a_full_refresh_of_an_empty_table_may_read_nothing(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    result = write(writer, make_obj(strategy="full_refresh"), [])
    assert result.rows_written == 0


def test_a_row_without_a_key_rejected_again_is_kept_once(writer: IcebergWriter, catalog: SqlCatalog) -> None:
    obj = make_obj(strategy="updated", max_rejected_rate=0.9)

    def keyless(ids: list[object], previous: int | None) -> WriteResult:
        prev = CursorState(obj.strategy, "id", previous) if previous is not None else None
        batch = pa.RecordBatch.from_pydict(
            {"id": pa.array([None if i is None else str(i) for i in ids]), "amount": pa.array(["1.00"] * len(ids))}
        )
        reached = CursorState(obj.strategy, "id", max(i for i in ids if i is not None))
        return writer.write(
            obj,
            iter([batch]),
            enforcer=ContractEnforcer.for_contract(CONTRACT, obj.primary_key),
            run_id="r",
            previous_cursor=prev,
            new_cursor=lambda: reached,
        )

    keyless([1, None], None)
    keyless([2, None], 1)  # the same keyless row, re-read by a lookback
    assert quarantined(catalog).num_rows == 1
