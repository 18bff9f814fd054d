"""Table upkeep on the local warehouse: compaction folds deletes and keeps rows and cursor, expiry
keeps the cursor's snapshot chain, orphan removal spares fresh and referenced files, and upkeep
and loads interleave without losing or duplicating a row."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from dativo_dagster.iceberg import writer as writer_module
from dativo_dagster.iceberg.integrity import verify_table
from dativo_dagster.iceberg.maintenance import compact_table, expire_snapshots, remove_orphans
from dativo_dagster.iceberg.tables import dativo_summaries_since, latest_dativo_snapshot_id, read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.state import PROP_MAINTENANCE, PROP_RUN_ID
from tests.integration.test_merge import rows, write

LATER = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)


@pytest.fixture
def writer(tmp_path: Path) -> IcebergWriter:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    return IcebergWriter(catalog, target_file_rows=4_000)


def merged(writer: IcebergWriter, runs: int = 3) -> Any:
    """A table of 12,000 rows after ``runs`` merges of ~1% updates plus a few new keys."""
    result = write(writer, list(range(12_000)), "v", 0)
    for day in range(1, runs + 1):
        result = write(writer, [*range(day, 12_000, 89), 20_000 + day], f"u{day}-", day, previous=result.cursor)
    return result


def table_of(writer: IcebergWriter) -> Any:
    table = writer.load_table("t", "items")
    assert table is not None
    return table


def live_layout(table: Any) -> tuple[int, int]:
    tasks = list(table.scan().plan_files())
    return len(tasks), len({d.file_path for t in tasks for d in t.delete_files})


def test_compaction_folds_deletes_and_keeps_rows_and_cursor(writer: IcebergWriter) -> None:
    merged(writer)
    before = rows(writer)
    table = table_of(writer)
    cursor = read_table_cursor(table)
    assert live_layout(table)[1] == 9  # 3 files x 3 merges

    result = compact_table(table, target_rows=4_000)

    table = table_of(writer)
    assert result.delete_files_folded == 9 and result.files_rewritten > 3
    assert live_layout(table) == (result.data_files_after, 0)
    assert rows(writer) == before
    summary = table.current_snapshot().summary
    assert summary.operation.value == "replace"
    assert summary.additional_properties[PROP_MAINTENANCE] == "compact"
    assert PROP_RUN_ID not in summary.additional_properties
    assert summary.additional_properties["total-position-deletes"] == "0"
    after = read_table_cursor(table)
    assert after is not None and cursor is not None
    assert (after.cursor, after.snapshot_id) == (cursor.cursor, cursor.snapshot_id)
    # the next run's base check, new-file sensors and the partition race check look past it too
    assert latest_dativo_snapshot_id(table) == cursor.snapshot_id
    assert dativo_summaries_since(table, cursor.snapshot_id) == []
    assert table.schema() == table_of(writer).schema() and table.schema().find_field("id").field_id == 1
    assert not verify_table(table).failed  # the new files' digests were recorded
    # nothing left to do: a second pass commits nothing
    assert compact_table(table, target_rows=4_000).snapshot_id is None


def test_expiry_keeps_the_cursor_chain_and_the_next_run_loads_nothing_new(writer: IcebergWriter) -> None:
    last = merged(writer)
    compact_table(table_of(writer), target_rows=4_000)
    table = table_of(writer)
    cursor = read_table_cursor(table)
    before = rows(writer)

    result = expire_snapshots(table, retain_days=0, min_keep=1, now=LATER)

    table = table_of(writer)
    assert result.snapshots_expired == 3 and len(table.metadata.snapshots) == 2  # compaction + cursor snapshot
    after = read_table_cursor(table)
    assert after is not None and cursor is not None
    assert (after.cursor, after.snapshot_id, after.run_id) == (cursor.cursor, cursor.snapshot_id, cursor.run_id)
    assert rows(writer) == before
    assert not verify_table(table).failed  # digests of kept files were carried forward
    # the last run again (a lookback re-read): nothing new, nothing committed
    again = write(writer, [*range(3, 12_000, 89), 20_003], "u3-", 3, previous=last.cursor)
    assert not again.committed


def orphan_candidates(table: Any) -> list[str]:
    base = table.location().removeprefix("file://")
    selector = pafs.FileSelector(base, recursive=True)
    return [i.path for i in pafs.LocalFileSystem().get_file_info(selector) if i.type == pafs.FileType.File]


def test_orphan_removal_spares_fresh_and_referenced_files(writer: IcebergWriter) -> None:
    merged(writer, runs=1)
    table = table_of(writer)
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    old_orphan = data_dir / "left-by-a-killed-run.parquet"
    fresh_orphan = data_dir / "being-written-now.parquet"
    for path in (old_orphan, fresh_orphan):
        path.write_bytes(b"PAR1")
    week_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7)).timestamp()
    import os

    os.utime(old_orphan, (week_ago, week_ago))
    referenced = set(orphan_candidates(table)) - {str(old_orphan), str(fresh_orphan)}
    for path in referenced:  # referenced files as old as the orphan stay
        os.utime(path, (week_ago, week_ago))
    before = rows(writer)

    dry = remove_orphans(table, older_than_hours=72, dry_run=True)
    assert dry.orphans_removed == 1 and old_orphan.exists()
    result = remove_orphans(table, older_than_hours=72)

    assert result.orphans_removed == 1 and result.young_unreferenced == 1 and result.bytes_removed == 4
    assert not old_orphan.exists() and fresh_orphan.exists()
    assert set(orphan_candidates(table)) == referenced | {str(fresh_orphan)}
    assert rows(writer) == before


def test_compaction_losing_to_an_append_replays_its_commit(
    writer: IcebergWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.iceberg import maintenance

    last = merged(writer, runs=2)
    commit = maintenance._commit_compaction
    calls = []

    def load_first(table: Any, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # new keys only: the files being compacted are untouched
            write(writer, [30_000, 30_001], "n", 3, previous=last.cursor)
        return commit(table, *args)

    monkeypatch.setattr(maintenance, "_commit_compaction", load_first)
    result = compact_table(table_of(writer), target_rows=4_000)

    assert result.commit_attempts == 2 and result.snapshot_id is not None
    assert rows(writer)[30_001] == "n30001" and len(rows(writer)) == 12_004
    assert live_layout(table_of(writer))[1] == 0
    assert remove_orphans(table_of(writer), older_than_hours=1, dry_run=True).young_unreferenced == 0


def test_compaction_losing_to_a_merge_on_its_files_plans_again(
    writer: IcebergWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.iceberg import maintenance

    last = merged(writer, runs=2)
    commit = maintenance._commit_compaction
    calls = []

    def load_first(table: Any, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # updates rows of the files being compacted: the plan is stale
            write(writer, list(range(0, 12_000, 500)), "late", 3, previous=last.cursor)
        return commit(table, *args)

    monkeypatch.setattr(maintenance, "_commit_compaction", load_first)
    result = compact_table(table_of(writer), target_rows=4_000)

    assert result.commit_attempts == 2 and len(calls) == 2
    data = rows(writer)
    assert len(data) == 12_002 and data[500] == "late500" and data[1] == "u1-1" and data[2] == "u2-2"
    assert live_layout(table_of(writer))[1] == 0  # the load's delete files were folded by the new plan
    assert remove_orphans(table_of(writer), older_than_hours=1, dry_run=True).young_unreferenced == 0


def test_a_merge_load_losing_to_compaction_is_replayed_without_loss(
    writer: IcebergWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = merged(writer, runs=2)
    compactions = []

    def compact_before_commit(name: str) -> None:
        if name == "before_commit" and not compactions:
            compactions.append(compact_table(table_of(writer), target_rows=4_000))

    monkeypatch.setattr(writer_module, "_fault_point", compact_before_commit)
    result = write(writer, [*range(7, 12_000, 300), 40_000], "w", 3, previous=last.cursor)

    assert compactions and compactions[0].snapshot_id is not None
    assert result.committed and result.commit_attempts == 2
    data = rows(writer)  # asserts no duplicate key
    assert len(data) == 12_003 and data[7] == "w7" and data[40_000] == "w40000" and data[90] == "u1-90"
    table = table_of(writer)
    cursor = read_table_cursor(table)
    assert cursor is not None and cursor.cursor == result.cursor and cursor.snapshot_id == result.snapshot_id
    lineage = [s.summary.additional_properties.get(PROP_MAINTENANCE) for s in table.snapshots()]
    assert "compact" in lineage


def test_compaction_reads_files_of_every_schema_version_in_the_current_schema(tmp_path: Path) -> None:
    """Files written before a column was added and before a type was widened are rewritten in the
    table's current schema: the added column reads null, the widened one keeps its values."""
    import pyarrow as pa
    from pyiceberg.types import LongType, StringType

    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("t")
    first = pa.schema([pa.field("id", pa.int32()), pa.field("a", pa.string())])
    table = catalog.create_table("t.evolved", schema=first, properties={"format-version": "2"})
    table.append(pa.table({"id": pa.array([1, 2], pa.int32()), "a": ["x", None]}, schema=first))
    with table.update_schema() as update:
        update.add_column("b", StringType())
        update.update_column("id", LongType())
    table = catalog.load_table("t.evolved")
    table.append(pa.table({"id": pa.array([3], pa.int64()), "a": ["z"], "b": ["bb"]}))
    table = catalog.load_table("t.evolved")
    before = table.scan().to_arrow().sort_by("id")

    result = compact_table(table, target_rows=1_000)

    table = catalog.load_table("t.evolved")
    assert (result.files_rewritten, result.files_written) == (2, 1)
    assert len(list(table.scan().plan_files())) == 1
    after = table.scan().to_arrow().sort_by("id")
    assert (
        after.to_pylist()
        == before.to_pylist()
        == [
            {"id": 1, "a": "x", "b": None},
            {"id": 2, "a": None, "b": None},
            {"id": 3, "a": "z", "b": "bb"},
        ]
    )
    assert not verify_table(table).failed


def test_orphan_removal_never_touches_a_path_shared_with_other_tables(tmp_path: Path) -> None:
    """Two tables whose data path is one shared directory (set by another engine): orphan removal
    on one lists and deletes nothing there, and says why."""
    import pyarrow as pa

    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("t")
    properties = {"write.data.path": f"file://{tmp_path}/shared-data", "format-version": "2"}
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64())})
    for name in ("t.a", "t.b"):
        catalog.create_table(name, schema=data.schema, properties=properties).append(data)

    result = remove_orphans(catalog.load_table("t.a"), older_than_hours=72, now=LATER)

    assert result.orphans_removed == 0 and result.files_listed == 0
    assert result.skipped is not None and "write.data.path" in result.skipped and "outside" in result.skipped
    assert catalog.load_table("t.b").scan().to_arrow().num_rows == 3
    assert catalog.load_table("t.a").scan().to_arrow().num_rows == 3


def test_a_replay_expired_from_the_lineage_is_still_found_committed(writer: IcebergWriter) -> None:
    """Expiry removing a replay's snapshot records its id: repeating the replay commits nothing."""
    from dativo_dagster.iceberg.writer import replay_commit
    from dativo_dagster.replay import _props, replay_snapshot
    from dativo_dagster.types import ContractEnforcer
    from tests.integration.test_merge import CONTRACT, OBJ, batches

    result = write(writer, list(range(100)), "v", 0)
    replayed = writer.write(
        OBJ,
        batches([500, 501], "replayed", 0),
        enforcer=ContractEnforcer.for_contract(CONTRACT),
        run_id="raw-r-old",
        previous_cursor=None,
        new_cursor=lambda: None,
        replay_properties=_props("raw-r-old", "raw", "ana"),
    )
    for day in range(1, 7):
        result = write(writer, [1000 + day], "n", day, previous=result.cursor)
    assert replay_snapshot(table_of(writer), "raw-r-old") == replayed.snapshot_id

    expiry = expire_snapshots(table_of(writer), retain_days=7, now=LATER)

    table = table_of(writer)
    assert replayed.snapshot_id in expiry.expired_ids
    assert table.snapshot_by_id(replayed.snapshot_id) is None
    assert replay_snapshot(table, "raw-r-old") == replayed.snapshot_id
    assert replay_commit(table, "raw-r-old") == replayed.snapshot_id
    assert replay_snapshot(table, "raw-r-other") is None
    # a second expiry keeps what the first recorded
    write(writer, [2000], "n", 7, previous=result.cursor)
    expire_snapshots(table_of(writer), retain_days=0, min_keep=1, now=LATER)
    assert replay_snapshot(table_of(writer), "raw-r-old") == replayed.snapshot_id


def test_freshness_and_a_reset_re_execution_still_work_after_expiry(writer: IcebergWriter) -> None:
    """Expiry keeps the chains to the newest load that is not a reset (freshness counts from it)
    and to the newest reset (its re-execution finds it and does not reset again)."""
    from dativo_dagster.checks.facts import last_commit_ms
    from dativo_dagster.resets import ResetRequest, apply_reset
    from dativo_dagster.sources.cursors import DEFAULT_CODEC
    from tests.integration.test_merge import OBJ

    write(writer, list(range(10)), "v", 3)
    loaded_ms = last_commit_ms(table_of(writer))
    request = ResetRequest(to="2024-01-02T00:00:00+00:00")
    assert apply_reset(OBJ, writer, DEFAULT_CODEC, request, by="ana", run_id="reset-a").committed

    expire_snapshots(table_of(writer), retain_days=0, min_keep=1, now=LATER)
    assert last_commit_ms(table_of(writer)) == loaded_ms  # the reset loaded nothing

    cursor = read_table_cursor(table_of(writer))
    assert cursor is not None
    write(writer, [20], "n", 4, previous=cursor.cursor)
    expire_snapshots(table_of(writer), retain_days=0, min_keep=1, now=LATER)
    again = apply_reset(OBJ, writer, DEFAULT_CODEC, request, by="ana", run_id="reset-a")
    assert not again.committed


def cloud_catalog(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> SqlCatalog:
    """A SQLite catalog whose warehouse is on moto's S3 (pyarrow FileIO) or Azurite (adlfs, with the
    ``container@account.dfs.core.windows.net`` form deployments use)."""
    if store == "s3":
        moto = request.getfixturevalue("aws")
        bucket = request.getfixturevalue("s3_bucket")
        properties = {
            "s3.endpoint": moto.endpoint,
            "s3.region": moto.region,
            "s3.access-key-id": "testing",
            "s3.secret-access-key": "testing",
        }
        warehouse = f"s3://{bucket}/wh"
    else:
        azurite = request.getfixturevalue("azurite_server")
        container = request.getfixturevalue("azure_container")
        properties = {"adls.connection-string": azurite.connection_string}
        warehouse = f"abfss://{container}@{azurite.account}.dfs.core.windows.net/wh"
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=warehouse, **properties)


@pytest.mark.parametrize("store", ["s3", "azure"])
def test_orphan_removal_on_object_storage_removes_an_old_orphan_and_keeps_live_files(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import pyarrow as pa

    catalog = cloud_catalog(store, request, tmp_path)
    catalog.create_namespace("t")
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64())})
    catalog.create_table("t.a", schema=data.schema).append(data)
    table = catalog.load_table("t.a")
    orphan = f"{table.location()}/data/left-by-a-failed-load.parquet"
    with table.io.new_output(orphan).create(overwrite=True) as out:
        out.write(b"not referenced")

    fresh = remove_orphans(table, older_than_hours=72, dry_run=True)
    assert fresh.orphans_removed == 0 and fresh.young_unreferenced == 1 and fresh.unknown_age == 0

    result = remove_orphans(table, older_than_hours=72, now=LATER)

    assert (result.orphans_removed, result.unknown_age, result.young_unreferenced) == (1, 0, 0)
    assert result.files_listed >= 4  # the data file, manifest list, manifest, metadata files and the orphan
    assert not table.io.new_input(orphan).exists()
    assert catalog.load_table("t.a").scan().to_arrow().num_rows == 3
    assert not verify_table(catalog.load_table("t.a")).failed


def test_a_table_with_equality_deletes_is_reported_and_its_other_upkeep_runs(
    writer: IcebergWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyiceberg cannot apply equality deletes (another engine's): compaction of such a table is a
    coded failure naming it, not a bug, and expiry still runs."""
    from pyiceberg.table import DataScan

    from dativo_dagster.iceberg.maintenance import UnreadableDeletes
    from dativo_dagster.maintain import Action, TableUpkeep, UpkeepSettings, _maintain_table

    merged(writer, runs=1)

    def equality_deletes(self: DataScan) -> None:
        raise ValueError(
            "PyIceberg does not yet support equality deletes: https://github.com/apache/iceberg/issues/6568"
        )

    monkeypatch.setattr(DataScan, "plan_files", equality_deletes)
    with pytest.raises(UnreadableDeletes, match=r"STG001: t\.items has equality delete files"):
        compact_table(table_of(writer), target_rows=4_000)
    report = TableUpkeep(object_label="items", table="t.items")
    settings = UpkeepSettings(actions=(Action.COMPACT, Action.EXPIRE), retain_days=0)
    _maintain_table(table_of(writer), 4_000, settings, report, LATER)
    assert report.error is not None and "compaction was skipped" in report.error
    assert report.expiry is not None and report.compaction is None
