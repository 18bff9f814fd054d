"""The Iceberg side of a reset: one snapshot that changes no rows and carries the reset's summary.

pyiceberg 0.12 commits a fast append without data files as a snapshot of its own: it keeps every
manifest of its parent (data and delete files alike), so the table's rows and totals are those of
the parent, and its summary holds the properties given. That is the whole reset: readers see the
same rows, and the snapshot history records the new cursor and who set it.
"""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.failures import COMMIT_ATTEMPTS, CommitConflict, raise_storage_failure, replaying_conflicts


def commit_reset(table: Table, properties: Callable[[Table], dict[str, str]], label: str) -> tuple[int, dict[str, str]]:
    """Commit a snapshot without data changes whose summary is ``properties(table)``.

    ``properties`` is called again on the refreshed table after a conflict, so what the reset
    records (the cursor it moves from) is what the table held when the reset committed.

    Returns:
        The new snapshot's id and the properties it carries.

    Raises:
        StorageError: STG001 when the catalog fails, or other writers committed first
            ``COMMIT_ATTEMPTS`` times.
    """
    try:
        for attempt in replaying_conflicts():
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    table = _refreshed(table, label)
                props = properties(table)
                return _commit_once(table, props, label), props
    except CommitConflict as exc:
        raise StorageError(
            f"recording a reset of {label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}"
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


def _refreshed(table: Table, label: str) -> Table:
    try:
        return table.refresh()
    except Exception as exc:
        raise_storage_failure(exc, f"refreshing {label}")
        raise  # unreachable: raise_storage_failure always raises


def _commit_once(table: Table, props: dict[str, str], label: str) -> int:
    try:
        txn = table.transaction()
        with txn.update_snapshot(snapshot_properties=props).fast_append():
            pass  # no files: the snapshot records the reset and nothing else
        committed = txn.commit_transaction()
    except CommitFailedException as exc:
        raise CommitConflict(str(exc)) from exc
    except Exception as exc:
        raise_storage_failure(exc, f"recording a reset of {label}")
        raise  # unreachable: raise_storage_failure always raises
    snapshot = committed.current_snapshot()
    assert snapshot is not None
    return snapshot.snapshot_id
