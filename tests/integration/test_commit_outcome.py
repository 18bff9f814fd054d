"""A commit whose outcome the catalog leaves unknown never deletes files its snapshot may reference;
a failure of the FileIO around a commit is always a coded error.

The catalog is made to fail after it committed (a REST gateway timeout once the commit is in:
``CommitStateUnknownException``; a connection reset on the way back), or instead of committing, or
the table cannot be reloaded afterwards. The write must report success when the snapshot landed
(exactly once: the cursor is in it), clean up and raise STG001 when it did not, and keep every
file when nobody can tell.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitStateUnknownException
from pyiceberg.io.pyarrow import PyArrowFileIO

from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg import integrity
from dativo_dagster.iceberg.commits import CommitOutcomeUnknown
from dativo_dagster.iceberg.integrity import PROP_INTEGRITY, verify_table
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter
from tests.integration.test_writer_guarantees import make_obj, write

TABLES = {"table": "items", "quarantine": "items__quarantine"}


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    return SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")


@contextmanager
def failing_commits(target: str, *, lands: bool, failure: Callable[[], BaseException]) -> Iterator[list[str]]:
    """Make the catalog's commits to table ``target`` raise ``failure()``, after committing if ``lands``.

    Yields the integrity manifests of the commits that failed.
    """
    original = SqlCatalog.commit_table
    failed: list[str] = []

    def commit_table(self: SqlCatalog, table: Any, requirements: Any, updates: Any) -> Any:
        if table.name()[-1] != target:
            return original(self, table, requirements, updates)
        for update in updates:
            snapshot = getattr(update, "snapshot", None)
            if snapshot is not None and snapshot.summary is not None:
                failed.append(snapshot.summary.additional_properties.get(PROP_INTEGRITY, ""))
        if lands:
            original(self, table, requirements, updates)
        raise failure()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SqlCatalog, "commit_table", commit_table)
        yield failed


def files_on_disk(tmp_path: Path, table: str) -> set[str]:
    """Data, delete and integrity-manifest files of the table in the warehouse."""
    root = tmp_path / "wh" / "acme" / table
    data = {p.name for p in (root / "data").rglob("*.parquet")} if (root / "data").exists() else set()
    return data | {p.name for p in (root / "metadata").glob("dativo-integrity-*.json")}


def gateway_timeout() -> Exception:
    return CommitStateUnknownException("504 Gateway Timeout after the catalog committed")


def connection_reset() -> Exception:
    return ConnectionResetError(104, "Connection reset by peer")


@pytest.mark.parametrize("which", sorted(TABLES))
@pytest.mark.parametrize("failure", [gateway_timeout, connection_reset])
def test_a_commit_that_landed_before_the_catalog_failed_is_a_success(
    catalog: SqlCatalog, which: str, failure: Callable[[], Exception]
) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated", max_rejected_rate=1.0)
    write(writer, obj, [1, 2, 3], amounts=["1.00", "bad", "3.00"])
    with failing_commits(TABLES[which], lands=True, failure=failure) as failed:
        result = write(writer, obj, [4, 5], previous=3, amounts=["4.00", "bad"], run_id="r2")
    assert len(failed) == 1
    assert result.committed and result.cursor is not None and result.cursor.value == 5
    table = catalog.load_table(("acme", TABLES[which]))
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary.additional_properties[PROP_INTEGRITY] == failed[0]  # type: ignore[union-attr]
    if which == "table":
        assert result.snapshot_id == snapshot.snapshot_id and result.integrity_manifest == failed[0]
    # Every file the committed snapshots reference is there, and matches its digest.
    for name in TABLES.values():
        verification = verify_table(catalog.load_table(("acme", name)))
        assert not verification.failed, verification
    items = catalog.load_table(("acme", "items"))
    assert sorted(items.scan().to_arrow().column("id").to_pylist()) == [1, 3, 4]
    found = read_table_cursor(items)
    assert found is not None and found.cursor is not None and found.cursor.value == 5  # exactly once


@pytest.mark.parametrize("which", sorted(TABLES))
def test_a_commit_that_did_not_land_cleans_up_and_is_transient(catalog: SqlCatalog, tmp_path: Path, which: str) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated", max_rejected_rate=1.0)
    write(writer, obj, [1, 2, 3], amounts=["1.00", "bad", "3.00"])
    before = {name: files_on_disk(tmp_path, name) for name in TABLES.values()}
    snapshots = {name: catalog.load_table(("acme", name)).current_snapshot() for name in TABLES.values()}
    with (
        failing_commits(TABLES[which], lands=False, failure=connection_reset) as failed,
        pytest.raises(StorageError) as raised,
    ):
        write(writer, obj, [4, 5], previous=3, amounts=["4.00", "bad"], run_id="r2")
    assert len(failed) == 1 and raised.value.transient
    assert catalog.load_table(("acme", TABLES[which])).current_snapshot() == snapshots[TABLES[which]]
    # Nothing of the failed commit is left behind (the quarantine commit before a failed main
    # commit did land: its files are the quarantine table's now).
    assert files_on_disk(tmp_path, "items") == before["items"]
    if which == "quarantine":
        assert files_on_disk(tmp_path, "items__quarantine") == before["items__quarantine"]


@pytest.mark.parametrize("which", sorted(TABLES))
def test_a_catalog_that_cannot_tell_keeps_the_files_even_when_the_commit_is_not_there_yet(
    catalog: SqlCatalog, tmp_path: Path, which: str
) -> None:
    """CommitStateUnknownException: a REST catalog may still apply the commit after the reload."""
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated", max_rejected_rate=1.0)
    write(writer, obj, [1, 2, 3], amounts=["1.00", "bad", "3.00"])
    before = files_on_disk(tmp_path, TABLES[which])
    with (
        failing_commits(TABLES[which], lands=False, failure=gateway_timeout) as failed,
        pytest.raises(CommitOutcomeUnknown) as raised,
    ):
        write(writer, obj, [4, 5], previous=3, amounts=["4.00", "bad"], run_id="r2")
    assert len(failed) == 1 and raised.value.transient
    # The attempt's manifest and data files stay: deleting them could break a commit that lands later.
    assert any(name.startswith("dativo-integrity-") for name in files_on_disk(tmp_path, TABLES[which]) - before)


@pytest.mark.parametrize("which", sorted(TABLES))
def test_files_are_kept_when_the_table_cannot_be_reloaded(
    catalog: SqlCatalog, tmp_path: Path, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated", max_rejected_rate=1.0)
    write(writer, obj, [1, 2, 3], amounts=["1.00", "bad", "3.00"])
    original_load = SqlCatalog.load_table
    committed = {"yes": False}

    def load_table(self: SqlCatalog, identifier: Any) -> Any:
        if committed["yes"]:
            raise ConnectionRefusedError(111, "Connection refused")
        return original_load(self, identifier)

    def outage() -> Exception:
        committed["yes"] = True  # the catalog goes away with the response
        return gateway_timeout()

    monkeypatch.setattr(SqlCatalog, "load_table", load_table)
    with failing_commits(TABLES[which], lands=True, failure=outage), pytest.raises(CommitOutcomeUnknown) as raised:
        write(writer, obj, [4, 5], previous=3, amounts=["4.00", "bad"], run_id="r2")
    monkeypatch.setattr(SqlCatalog, "load_table", original_load)
    assert raised.value.code == "STG001" and raised.value.transient
    for name in TABLES.values():
        verification = verify_table(catalog.load_table(("acme", name)))
        assert not verification.failed, verification
    # The retry reads the cursor the landed commit recorded: the rows are not loaded twice.
    found = read_table_cursor(catalog.load_table(("acme", "items")))
    assert found is not None and found.cursor is not None
    if which == "table":
        assert found.cursor.value == 5


def test_an_interruption_during_the_catalog_call_keeps_the_files(catalog: SqlCatalog) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated")
    write(writer, obj, [1, 2, 3])
    with failing_commits("items", lands=True, failure=KeyboardInterrupt), pytest.raises(KeyboardInterrupt):
        write(writer, obj, [4, 5], previous=3, run_id="r2")
    table = catalog.load_table(("acme", "items"))
    assert not verify_table(table).failed
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- failures of the FileIO


def azure_outage(*_: Any, **__: Any) -> Any:
    raise ServiceRequestError("Connection reset while uploading")


def test_a_manifest_write_failure_from_the_azure_sdk_is_coded_and_cleaned_up(
    catalog: SqlCatalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated")
    write(writer, obj, [1, 2, 3])
    before = files_on_disk(tmp_path, "items")
    monkeypatch.setattr(integrity, "_write_json", azure_outage)
    with pytest.raises(StorageError, match=r"integrity manifest of acme\.items.*ServiceRequestError") as raised:
        write(writer, obj, [4], previous=3, run_id="r2")
    assert raised.value.transient
    assert files_on_disk(tmp_path, "items") == before


@pytest.mark.parametrize("which", sorted(TABLES))
def test_a_cleanup_failure_never_replaces_the_original_error(
    catalog: SqlCatalog, tmp_path: Path, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated", max_rejected_rate=1.0)
    write(writer, obj, [1, 2, 3], amounts=["1.00", "bad", "3.00"])
    before = files_on_disk(tmp_path, TABLES[which])
    monkeypatch.setattr(PyArrowFileIO, "delete", azure_outage)
    with (
        failing_commits(TABLES[which], lands=False, failure=connection_reset),
        pytest.raises(StorageError),
    ):
        write(writer, obj, [4, 5], previous=3, amounts=["4.00", "bad"], run_id="r2")
    # The files could not be deleted: unreferenced orphans, which maintenance removes.
    assert files_on_disk(tmp_path, TABLES[which]) > before
