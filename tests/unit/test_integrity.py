"""Integrity digests: hashed while written, recorded in a manifest the snapshot names, carried over expiry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table
from pyiceberg.table.update.snapshot import ExpireSnapshots

from dativo_dagster.errors import DativoError
from dativo_dagster.iceberg.deletes import write_position_delete_file
from dativo_dagster.iceberg.files import write_data_files
from dativo_dagster.iceberg.integrity import (
    FAILED_STATUSES,
    PROP_INTEGRITY,
    PROP_INTEGRITY_SHA256,
    TABLE_PROP_INTEGRITY_BASE,
    TABLE_PROP_INTEGRITY_BASE_SHA256,
    TABLE_PROP_INTEGRITY_SINCE,
    FileDigests,
    HashingOutputFile,
    IntegrityError,
    carry_forward_before_expiry,
    integrity_properties,
    live_file_digests,
    live_files,
    retained_integrity_paths,
    verify_table,
)

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
RUN = {"run_id": "r1", "tenant": "t", "job": "j", "object": "o", "cursor_before": "null", "operation": "append"}


@pytest.fixture
def table(tmp_path: Path) -> Table:
    catalog = SqlCatalog("c", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("n")
    return catalog.create_table(("n", "t"), schema=SCHEMA)


def _rows(start: int, count: int) -> pa.RecordBatch:
    ids = list(range(start, start + count))
    return pa.RecordBatch.from_pydict(
        {"id": pa.array(ids, pa.int64()), "name": [f"row {i}" for i in ids]}, schema=SCHEMA
    )


def _commit(table: Table, start: int, count: int, run: dict[str, str] | None = None) -> int:
    """Append rows through the hashing writer, with their integrity manifest; the new snapshot id."""
    digests = FileDigests()
    files = write_data_files(table, table.metadata, SCHEMA, [_rows(start, count)], 10_000, digests=digests)
    props = integrity_properties(table, files, digests, run or RUN)
    txn = table.transaction()
    with txn.update_snapshot(snapshot_properties=props).fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)
    snapshot = txn.commit_transaction().current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id


def _read(path: str) -> bytes:
    return Path(path.removeprefix("file://")).read_bytes()


def test_hashing_output_digest_equals_sha256_of_the_bytes_on_storage(tmp_path: Path) -> None:
    digests = FileDigests()
    location = f"file://{tmp_path}/out.bin"
    output = HashingOutputFile(PyArrowFileIO().new_output(location), digests)
    with output.create(overwrite=True) as stream:
        for part in (b"PAR1", b"x" * 100_000, memoryview(b"tail")):
            stream.write(part)
    recorded = digests.get(location)
    data = _read(location)
    assert recorded is not None
    assert recorded.sha256 == hashlib.sha256(data).hexdigest()
    assert recorded.size == len(data) == len(output) == 100_008


def test_a_failed_write_records_no_digest(tmp_path: Path) -> None:
    digests = FileDigests()
    output = HashingOutputFile(PyArrowFileIO().new_output(f"file://{tmp_path}/half.bin"), digests)
    with pytest.raises(RuntimeError), output.create(overwrite=True) as stream:
        stream.write(b"half")
        raise RuntimeError("source died")
    assert len(digests) == 0


def test_data_and_delete_files_are_hashed_while_written(table: Table) -> None:
    digests = FileDigests()
    files = write_data_files(table, table.metadata, SCHEMA, [_rows(0, 300), _rows(300, 300)], 250, digests=digests)
    assert len(files) == 3
    for data_file in files:
        recorded = digests.get(data_file.file_path)
        data = _read(data_file.file_path)
        assert recorded is not None and recorded.sha256 == hashlib.sha256(data).hexdigest()
        assert data_file.file_size_in_bytes == recorded.size == len(data)
    _commit(table, 0, 10)
    committed = next(iter(table.scan().plan_files())).file  # a delete file refers to a committed file
    delete_file = write_position_delete_file(table, committed, pa.array([1, 5]), digests=digests)
    recorded = digests.get(delete_file.file_path)
    assert recorded is not None
    assert recorded.sha256 == hashlib.sha256(_read(delete_file.file_path)).hexdigest()
    assert delete_file.file_size_in_bytes == recorded.size


def test_manifest_round_trip_through_the_snapshot(table: Table) -> None:
    snapshot_id = _commit(table, 0, 100)
    props = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    payload = _read(props[PROP_INTEGRITY])
    assert hashlib.sha256(payload).hexdigest() == props[PROP_INTEGRITY_SHA256]
    manifest = json.loads(payload)
    assert manifest["run"] == {**RUN}
    assert manifest["files"][0]["record_count"] == 100 and manifest["files"][0]["content"] == "data"
    assert props[PROP_INTEGRITY].startswith(table.metadata.location + "/metadata/dativo-integrity-")
    (path, recorded), *_ = live_file_digests(table).items()
    assert recorded.snapshot_id == snapshot_id and recorded.run_id == "r1"
    assert recorded.sha256 == hashlib.sha256(_read(path)).hexdigest()
    assert verify_table(table).count("ok") == 1 and not verify_table(table).failed


def test_an_added_file_without_digest_is_refused_and_no_manifest_is_written(table: Table) -> None:
    files = write_data_files(table, table.metadata, SCHEMA, [_rows(0, 10)], 10_000)  # no digests
    with pytest.raises(IntegrityError, match="no SHA-256 was recorded") as caught:
        integrity_properties(table, files, FileDigests(), RUN)
    assert caught.value.code == "STG001" and not caught.value.transient
    metadata_dir = Path(table.metadata.location.removeprefix("file://")) / "metadata"
    assert not list(metadata_dir.glob("dativo-integrity-*"))


def test_expiry_carries_digests_of_files_still_live_into_a_base_manifest(table: Table) -> None:
    first = _commit(table, 0, 10, {**RUN, "run_id": "first"})
    _commit(table, 10, 10, {**RUN, "run_id": "second"})
    first_manifest = table.snapshot_by_id(first).summary.additional_properties[PROP_INTEGRITY]  # type: ignore[union-attr]
    assert first_manifest in retained_integrity_paths(table)
    txn = table.transaction()
    carry_forward_before_expiry(table, txn, {first})
    ExpireSnapshots(txn).by_id(first).commit()
    table = txn.commit_transaction()
    assert table.snapshot_by_id(first) is None
    base = table.properties[TABLE_PROP_INTEGRITY_BASE]
    retained = retained_integrity_paths(table)
    assert base in retained and first_manifest not in retained
    # The first run's file is still live: its digest and run survive the expiry of its snapshot.
    runs = sorted(d.run_id or "" for d in live_file_digests(table).values())
    assert runs == ["first", "second"]
    result = verify_table(table)
    assert result.count("ok") == 2 and not result.failed


def test_a_tampered_base_manifest_is_reported(table: Table) -> None:
    first = _commit(table, 0, 10)
    _commit(table, 10, 10)
    txn = table.transaction()
    carry_forward_before_expiry(table, txn, {first})
    ExpireSnapshots(txn).by_id(first).commit()
    table = txn.commit_transaction()
    base = Path(table.properties[TABLE_PROP_INTEGRITY_BASE].removeprefix("file://"))
    base.write_text(base.read_text().replace('"size":', '"size": '))
    result = verify_table(table)
    assert [p.kind for p in result.manifest_problems] == ["tampered"] and result.failed
    # Expiring more would launder the tampered base into a new one: refused.
    with pytest.raises(IntegrityError, match="tampered"):
        carry_forward_before_expiry(table, table.transaction(), {table.metadata.snapshots[0].snapshot_id})


def _dativo_table(tmp_path: Path) -> Table:
    """A table as dativo creates it: digests are recorded from its first commit on."""
    from dativo_dagster.iceberg.tables import Owner, Tables

    catalog = SqlCatalog("d", uri=f"sqlite:///{tmp_path}/d.db", warehouse=f"file://{tmp_path}/dwh")
    return Tables(catalog).ensure("n", "t", SCHEMA, Owner("t", "t/j/o"))


def test_a_digest_lost_to_another_tools_expiry_fails_verification(tmp_path: Path) -> None:
    table = _dativo_table(tmp_path)
    assert table.properties[TABLE_PROP_INTEGRITY_SINCE] == "0"
    first = _commit(table, 0, 10)
    _commit(table, 10, 10)
    # Expired by another engine's maintenance: the first manifest goes, no base carries it forward.
    table.maintenance.expire_snapshots().by_id(first).commit()
    table = table.refresh()
    (lost,) = [f for f in live_files(table) if f.snapshot_id == first]
    _flip(lost.path)  # and then altered: it must not pass as merely unverified
    result = verify_table(table)
    assert result.failed
    statuses = {check.path: check.status for check in result.files}
    assert statuses[lost.path] == "digest_lost" and result.count("ok") == 1
    (check,) = [c for c in result.files if c.status == "digest_lost"]
    assert "dativo maintain" in check.detail


def test_files_that_never_had_a_digest_stay_unverified_across_expiry(table: Table) -> None:
    from dativo_dagster.iceberg.tables import OWNER_PROPERTY, Owner, Tables

    table.append(pa.Table.from_batches([_rows(0, 5)]))  # before dativo wrote the table: no digest
    with table.transaction() as handover:
        handover.set_properties({OWNER_PROPERTY: "t/j/o"})
    catalog = table.catalog
    table = Tables(catalog).ensure("n", "t", SCHEMA, Owner("t", "t/j/o"))
    assert table.properties[TABLE_PROP_INTEGRITY_SINCE] == "2"
    older = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    _commit(table, 5, 5)
    table.append(pa.Table.from_batches([_rows(10, 5)]))  # another engine, after: no digest either
    foreign = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    _commit(table, 15, 5)
    result = verify_table(table)
    assert (result.count("ok"), result.count("unverified")) == (2, 2) and not result.failed
    # dativo's expiry records that the other engine's file never had a digest; the older file is
    # older than digests on this table.
    txn = table.transaction()
    carry_forward_before_expiry(table, txn, {older, foreign})
    ExpireSnapshots(txn).by_ids([older, foreign]).commit()
    table = txn.commit_transaction()
    result = verify_table(table)
    assert (result.count("ok"), result.count("unverified")) == (2, 2) and not result.failed


def _flip(path: str) -> None:
    local = Path(path.removeprefix("file://"))
    data = bytearray(local.read_bytes())
    data[len(data) // 2] ^= 0xFF
    local.write_bytes(bytes(data))


class _FailingIO(PyArrowFileIO):
    """A FileIO whose reads of data files fail with ``failure``."""

    def __init__(self, failure: Exception) -> None:
        super().__init__()
        self.failure = failure

    def new_input(self, location: str) -> Any:
        if "/data/" not in location:
            return super().new_input(location)
        failure = self.failure

        class Failing:
            def open(self, seekable: bool = True) -> Any:
                raise failure

        return Failing()


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        # PyArrow's S3 client: a missing bucket and rejected credentials are OSErrors with the AWS code.
        (
            OSError(
                "When reading information for key 'k' in bucket 'gone': AWS Error NO_SUCH_BUCKET during "
                "HeadObject operation: The specified bucket does not exist"
            ),
            "CFG001",
        ),
        (OSError("When reading information for key 'k' in bucket 'b': AWS Error ACCESS_DENIED"), "AUTH001"),
        (PermissionError(13, "Permission denied"), "CFG001"),
        (ConnectionResetError(104, "Connection reset by peer"), "STG001"),
    ],
)
def test_a_read_failure_that_is_not_a_missing_file_is_coded(table: Table, failure: Exception, code: str) -> None:
    _commit(table, 0, 10)
    table.io = _FailingIO(failure)
    with pytest.raises(DativoError) as raised:
        verify_table(table)
    assert raised.value.code == code


def test_a_missing_file_is_reported_missing(table: Table) -> None:
    _commit(table, 0, 10)
    table.io = _FailingIO(FileNotFoundError(2, "No such file or directory"))
    result = verify_table(table)
    assert result.count("missing") == 1 and result.failed


def test_verify_statuses_and_cli_failures_agree() -> None:
    from dativo_dagster.cli_verify import FAILURES

    assert FAILURES == FAILED_STATUSES


def test_the_hashing_stream_returns_the_bytes_each_write_wrote(tmp_path: Path) -> None:
    output = HashingOutputFile(PyArrowFileIO().new_output(f"file://{tmp_path}/out.bin"), FileDigests())
    with output.create(overwrite=True) as stream:
        assert stream.write(b"PAR1") == 4
        assert stream.write(memoryview(b"x" * 10)) == 10  # not the running total
        assert stream.tell() == 14


def test_a_base_manifest_without_its_recorded_sha256_is_tampered(table: Table) -> None:
    first = _commit(table, 0, 10)
    _commit(table, 10, 10)
    txn = table.transaction()
    carry_forward_before_expiry(table, txn, {first})
    ExpireSnapshots(txn).by_id(first).commit()
    table = txn.commit_transaction()
    with table.transaction() as edit:
        edit.remove_properties(TABLE_PROP_INTEGRITY_BASE_SHA256)
    result = verify_table(table.refresh())
    assert [p.kind for p in result.manifest_problems] == ["tampered"] and result.failed
