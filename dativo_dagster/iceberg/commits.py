"""Committing a transaction whose outcome the catalog may leave unknown.

A catalog can fail after it committed: a REST catalog's 5xx or a gateway timeout once the commit
is in (pyiceberg's ``CommitStateUnknownException``), a connection dropped while the SQL catalog's
transaction commits. Only a refusal (``CommitFailedException``, or pyiceberg's own
``ValidationException``) proves that the snapshot is not in the table. Deleting the files of a
commit that did land would leave the table referencing files that no longer exist, so every
dativo commit that adds files goes through :class:`CommitAttempt`:

* refused: the snapshot is not in the table; the caller may delete the attempt's files
  (:class:`~dativo_dagster.iceberg.failures.CommitConflict`, replayed or reported);
* any other failure: the table is reloaded and its snapshots searched for the attempt's marker,
  the location of its integrity manifest (a fresh name per attempt):

  - found: the commit landed; it is a success (its snapshot holds the run's cursor, so the run
    is committed exactly once);
  - not found: it did not land; the caller may delete the files, and the error is the coded one
    of the original failure (STG001, transient) — unless the catalog itself said the outcome is
    unknown (``CommitStateUnknownException``): it may still apply the commit later, so the files
    are kept and the error is :class:`CommitOutcomeUnknown`;
  - the table cannot be reloaded: nobody can tell; STG001 (transient), and the files stay where
    they are (unreferenced orphans at worst, which table maintenance removes).

An interruption (``KeyboardInterrupt``, a Dagster termination) during the catalog call leaves the
outcome unknown too: it propagates unchanged and the files are kept.
"""

from __future__ import annotations

import structlog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException, ValidationException
from pyiceberg.table import Table, Transaction

from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.failures import CommitConflict, storage_failure
from dativo_dagster.iceberg.integrity import PROP_INTEGRITY

log = structlog.get_logger("dativo.iceberg")


class CommitOutcomeUnknown(StorageError):
    """STG001, transient: the catalog failed during a commit and the table could not be reloaded to
    tell whether the commit landed; the commit's files are kept (the retry finds the table as it is)."""


class CommitAttempt:
    """One commit of a transaction whose snapshot summary carries ``dativo.integrity`` = ``marker``.

    Args:
        table: The table the transaction belongs to (reloaded to settle an unknown outcome).
        marker: The location of the attempt's integrity manifest (unique to this attempt).
        what: What is being committed, for error messages (``"commit to acme.orders"``).

    Attributes:
        may_have_landed: False until the catalog is called; then True unless the commit was refused
            or the reloaded table proved that it did not land. While True, nothing the commit
            references may be deleted.
    """

    def __init__(self, table: Table, marker: str, what: str) -> None:
        self.table = table
        self.marker = marker
        self.what = what
        self.may_have_landed = False

    def commit(self, txn: Transaction) -> int | None:
        """Commit ``txn``; the id of the snapshot that carries the marker.

        Raises:
            CommitConflict: the catalog refused the commit (another writer was first).
            CommitOutcomeUnknown: the catalog failed and the table could not be reloaded.
            DativoError: the catalog failed and the commit did not land (the original failure, coded).
        """
        self.may_have_landed = True
        try:
            committed = txn.commit_transaction()
        except CommitFailedException as exc:
            self.may_have_landed = False
            raise CommitConflict(str(exc)) from exc
        except ValidationException:
            self.may_have_landed = False
            raise
        except Exception as exc:
            return self._settle(exc)
        snapshot = committed.current_snapshot()
        return snapshot.snapshot_id if snapshot is not None else None

    def _settle(self, failure: Exception) -> int:
        """The snapshot id if the failed commit landed after all; raises otherwise."""
        label = ".".join(self.table.name())
        try:
            reloaded = self.table.refresh()
        except Exception as exc:
            log.warning(
                "commit_outcome_unknown",
                table=label,
                failure=type(failure).__name__,
                reload_failure=type(exc).__name__,
            )
            raise CommitOutcomeUnknown(
                f"{self.what} failed ({type(failure).__name__}) and {label} could not be reloaded "
                f"({type(exc).__name__}) to tell whether the commit landed; its files were kept",
                hint="the retry reads the table's cursor: a commit that landed is not loaded twice",
            ) from None
        for snapshot in reloaded.metadata.snapshots:
            summary = snapshot.summary.additional_properties if snapshot.summary is not None else {}
            if summary.get(PROP_INTEGRITY) == self.marker:
                log.warning(
                    "commit_landed_despite_error",
                    table=label,
                    snapshot_id=snapshot.snapshot_id,
                    failure=type(failure).__name__,
                )
                return snapshot.snapshot_id
        if isinstance(failure, CommitStateUnknownException):
            # A REST catalog said it cannot tell: it may still apply the commit after this reload,
            # so its files stay (orphans at worst, removed by table maintenance).
            log.warning("commit_not_found_yet", table=label, failure=type(failure).__name__)
            raise CommitOutcomeUnknown(
                f"{self.what}: the catalog could not tell whether the commit landed "
                f"({type(failure).__name__}) and {label} does not show it yet; its files were kept",
                hint="the retry reads the table's cursor: a commit that lands later is not loaded twice",
            ) from None
        self.may_have_landed = False
        log.info("commit_did_not_land", table=label, failure=type(failure).__name__)
        mapped = storage_failure(failure, self.what)
        if mapped is None:
            raise failure  # not a known storage failure: a bug, with its traceback
        raise mapped from None
