"""The streaming, exactly-once Iceberg writer.

One run of one object becomes exactly one Iceberg commit on the object's table, whose snapshot
summary carries the new cursor and the run id. Data files are written while the source streams
(bounded memory, :mod:`~dativo_dagster.iceberg.files`); nothing is visible to readers until that
single commit, and a run that dies before it leaves only unreferenced files.

Write modes:

* ``append``    fast-append the new files.
* ``overwrite`` one OVERWRITE snapshot that removes every live file and adds the new ones, so a
  reader sees the old table or the new one, never an empty or half table.
* ``merge``     upsert on the primary key (:mod:`~dativo_dagster.iceberg.merge`): rows of this run
  replace rows with the same key, through position-delete files or file rewrites.

A commit that conflicts with another writer is not a reason to read the source again: the table
is refreshed and the staged files are committed on top of it, unless the other writer was another
run of the same object (its snapshot carries a dativo cursor), in which case this run's rows may
overlap that run's and nothing is committed (STG001, transient: the retry continues from the
other run's cursor).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.schema import Schema
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Operation

from dativo_dagster.config.models import WriteMode
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import QualityError, StorageError
from dativo_dagster.iceberg.commits import CommitAttempt
from dativo_dagster.iceberg.deletes import MergeOnReadOverwrite
from dativo_dagster.iceberg.failures import (
    COMMIT_ATTEMPTS,
    CommitConflict,
    raise_storage_failure,
    replaying_conflicts,
)
from dativo_dagster.iceberg.files import (
    delete_files as delete_uncommitted,
)
from dativo_dagster.iceberg.files import (
    dictionary_columns,
    read_data_files,
    write_data_files,
)
from dativo_dagster.iceberg.integrity import (
    PROP_INTEGRITY,
    FileDigests,
    delete_manifest,
    integrity_properties,
)
from dativo_dagster.iceberg.merge import (
    UNCHANGED_CHECK_MAX_ROWS,
    MergePlan,
    apply_merge,
    dedupe_new_files,
    key_array,
    plan_merge,
    removed_rows,
    same_rows,
)
from dativo_dagster.iceberg.quarantine import commit_quarantine
from dativo_dagster.iceberg.schema import SchemaChange, apply_schema_changes, plan_schema_changes
from dativo_dagster.iceberg.tables import (
    DEFAULT_TABLE_PROPERTIES,
    Owner,
    Tables,
    dativo_summaries_since,
    latest_dativo_snapshot_id,
    read_table_cursor,
)
from dativo_dagster.iceberg.window import check_window_race, drop_keys, plan_window_replace, window_mask
from dativo_dagster.quarantine_view import PREVIEW_ROWS, quarantine_records
from dativo_dagster.sources.base import TimeWindow
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_CURSOR_FIELD,
    PROP_OBJECT,
    PROP_PARTITION,
    PROP_ROWS,
    PROP_RUN_ID,
    PROP_STRATEGY,
    CursorState,
    expired_replays,
)
from dativo_dagster.types import ContractEnforcer, EnforcedBatch

__all__ = [
    "DEFAULT_TABLE_PROPERTIES",
    "IcebergWriter",
    "WriteResult",
    "dictionary_columns",
    "read_table_cursor",
]

log = structlog.get_logger("dativo.iceberg")

FAULT_ENV = "DATIVO_FAULT_INJECT"
"""Test hook: ``before_commit`` or ``after_commit`` kills the process at that instant."""

BASE_UNKNOWN: Any = object()
"""``base_snapshot_id`` default: take the table's latest dativo snapshot when the write starts."""


def _fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        # Simulates SIGKILL: no cleanup, no finally blocks, no Dagster event.
        os._exit(137)


@dataclass
class WriteResult:
    """What one write committed."""

    table: str
    rows_written: int
    rows_rejected: int
    rows_read: int
    snapshot_id: int | None
    committed: bool
    cursor: CursorState | None
    data_files: int = 0
    bytes_written: int = 0
    rows_replaced: int = 0
    files_rewritten: int = 0
    delete_files: int = 0
    schema_changes: list[str] = field(default_factory=list)
    quarantine_table: str | None = None
    duration_s: float = 0.0
    schema: pa.Schema | None = None
    commit_attempts: int = 0
    quarantine_sample: list[dict[str, Any]] = field(default_factory=list)
    """The first rows this write quarantined (see :func:`~dativo_dagster.quarantine_view.quarantine_records`)."""
    integrity_manifest: str | None = None
    """Location of the committed snapshot's integrity manifest (:mod:`~dativo_dagster.iceberg.integrity`)."""
    integrity_files: int = 0
    """Files (data and delete) whose SHA-256 the manifest records."""


@dataclass
class _StreamStats:
    read: int = 0
    written: int = 0
    rejected: int = 0


@dataclass
class _Staged:
    """Everything one commit needs, prepared once and replayable on a refreshed table."""

    obj: ObjectPlan
    mode: WriteMode
    owner: Owner
    label: str
    schema: pa.Schema
    changes: list[SchemaChange]
    file_schema: Schema
    files: list[DataFile]
    keys: pa.Array | None
    replaced_column: str | None
    props: dict[str, str]
    base_snapshot_id: int | None
    merge: MergePlan = field(default_factory=MergePlan)
    merge_planned: bool = False
    window: TimeWindow | None = None
    # A partition run: the incremental cursor when its read began (for the race check), and
    # the one its commit copied.
    base_cursor: CursorState | None = None
    copied_cursor: CursorState | None = None
    rows_dropped: int = 0  # the run's rows a newer live version of the same key shadowed
    # SHA-256 of every file this write produced, and the run metadata its integrity manifest records.
    digests: FileDigests = field(default_factory=FileDigests)
    run: dict[str, str] = field(default_factory=dict)
    # The integrity properties of the latest commit attempt (its manifest is deleted if superseded).
    integrity: dict[str, str] = field(default_factory=dict)
    integrity_files: int = 0
    # The latest attempt's catalog call: while it may have landed, its files must not be deleted.
    attempt: CommitAttempt | None = None

    @property
    def may_have_landed(self) -> bool:
        """True if the latest commit attempt may be in the table (its files are then kept)."""
        return self.attempt is not None and self.attempt.may_have_landed


class IcebergWriter:
    """Writes extraction streams into Iceberg tables of one catalog.

    Args:
        catalog: An open pyiceberg catalog (one per target per run; never a module global).
        table_properties: Extra properties for tables this writer creates.
        target_file_rows: Roll a new data file after this many rows (bounds memory per file).
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        table_properties: dict[str, str] | None = None,
        target_file_rows: int = 1_000_000,
    ) -> None:
        self.catalog = catalog
        self.tables = Tables(catalog, table_properties)
        self.table_properties = self.tables.table_properties
        self.target_file_rows = target_file_rows

    # ------------------------------------------------------------------ tables

    def load_table(self, namespace: str, name: str) -> Table | None:
        """The table, or None if it does not exist."""
        return self.tables.load(namespace, name)

    def ensure_table(self, namespace: str, name: str, schema: pa.Schema, owner: Owner) -> Table:
        """Load the table or create it (and its namespace) for ``owner``; CFG001 if someone else owns it."""
        return self.tables.ensure(namespace, name, schema, owner)

    # ------------------------------------------------------------------ write

    def write(
        self,
        obj: ObjectPlan,
        batches: Iterator[pa.RecordBatch],
        *,
        enforcer: ContractEnforcer,
        run_id: str,
        previous_cursor: CursorState | None,
        new_cursor: Callable[[], CursorState | None],
        keys_unique: bool = False,
        replaces: tuple[str, Callable[[], list[str]]] | None = None,
        base_snapshot_id: int | None = BASE_UNKNOWN,
        full_refresh: bool = False,
        window: TimeWindow | None = None,
        source_unchanged: bool = False,
        replay_properties: dict[str, str] | None = None,
    ) -> WriteResult:
        """Stream ``batches`` into ``obj``'s table in one commit.

        Args:
            obj: The object being written.
            batches: Source batches (any schema the enforcer can cast).
            enforcer: Casts to the table schema and splits off rejected rows.
            run_id: Dagster run id, recorded in the snapshot summary.
            previous_cursor: Cursor the read started from (for the forward-only check).
            new_cursor: Zero-argument callable returning the cursor reached, called after the
                stream is drained.
            keys_unique: The source guarantees one row per key (skips in-run de-duplication).
            replaces: ``(column, values)``: rows whose ``column`` is in ``values()`` are replaced.
            base_snapshot_id: The dativo snapshot ``previous_cursor`` was read from (None: the
                table had none). If another run of the object commits after it, this write commits
                nothing (its rows may overlap that run's).
            full_refresh: The stream is a complete copy of the object: it replaces the table.
            source_unchanged: The source did not change since the copy in the table: the (empty)
                stream commits nothing, whatever the write mode.
            window: A partition run: the stream holds the rows whose cursor lies in this window,
                and replaces exactly that window (:mod:`~dativo_dagster.iceberg.window`). The
                incremental cursor is copied into the snapshot unchanged; ``base_snapshot_id``
                and ``previous_cursor`` are the incremental state when the read began.
            replay_properties: A replay's commit (:mod:`~dativo_dagster.replay`): its snapshot
                carries these properties instead of a run's (no run id, no cursor), so the
                incremental cursor logic never sees it; ``new_cursor`` should return
                ``previous_cursor``.

        Raises:
            QualityError: QUAL001 when the rejected-row rate exceeds the object's threshold, or a
                full refresh would empty the table.
            StorageError: STG001 when the catalog or file IO fails, or another run of the object
                committed first; WindowRaceError (STG001) when an incremental run committed rows
                that may lie in the partition window while it was read.
            ConfigError: CFG001 when the table or namespace belongs to someone else, or the
                warehouse is not writable.
        """
        started = time.monotonic()
        namespace, name = obj.table_identifier
        label = f"{namespace}.{name}"
        owner = Owner(obj.tenant, obj.owner)
        target_schema = enforcer.schema
        self.tables.check_namespace(namespace, owner)
        table = self.tables.ensure(namespace, name, target_schema, owner)
        if base_snapshot_id is BASE_UNKNOWN:
            base_snapshot_id = latest_dativo_snapshot_id(table)
        _check_start(table, base_snapshot_id, obj, label, window, previous_cursor)
        changes = plan_schema_changes(table.schema().as_arrow(), target_schema, table=label)
        txn = table.transaction()
        if changes:
            with txn.update_schema() as update:
                apply_schema_changes(update, changes)

        stats = _StreamStats()
        quarantine: list[pa.RecordBatch] = []
        merge_keys: list[pa.Array] = []
        mode = WriteMode.OVERWRITE if full_refresh else obj.write_mode
        is_merge = mode is WriteMode.MERGE
        # A full refresh of a merge object (a reset, an API's retention fallback) still holds one
        # row per key: a stream that may repeat keys is de-duplicated before it replaces the table.
        dedupe_refresh = (
            mode is WriteMode.OVERWRITE
            and obj.write_mode is WriteMode.MERGE
            and bool(obj.primary_key)
            and not keys_unique
        )
        # Keys are kept (8 bytes a row for an integer key) only when something will use them:
        # replacing rows already in the table, or de-duplicating a stream that may repeat keys.
        # A partition run always keeps them: its window replace matches the run's keys elsewhere.
        collect_keys = (
            is_merge and (table.current_snapshot() is not None or not keys_unique or window is not None)
        ) or dedupe_refresh
        in_window = _window_filter(obj, window)

        def conforming() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                stats.read += batch.num_rows
                enforced: EnforcedBatch = enforcer.enforce(batch, run_id)
                if enforced.rejected is not None:
                    stats.rejected += enforced.rejected_rows
                    quarantine.append(enforced.rejected)
                good = enforced.good
                if in_window is not None and good.num_rows:
                    good = in_window(good)
                if good.num_rows:
                    stats.written += good.num_rows
                    if collect_keys:
                        merge_keys.append(key_array(good, obj.primary_key))
                    yield good

        metadata = txn.table_metadata
        new_files: list[DataFile] = []
        staged: _Staged | None = None
        digests = FileDigests()
        try:
            new_files = write_data_files(
                table, metadata, target_schema, conforming(), self.target_file_rows, digests=digests
            )
            # STATE001 if it moved backwards (the source's codec decides). A partition run leaves the
            # cursor as it is: the commit copies the table's cursor of that moment.
            cursor = new_cursor() if window is None else previous_cursor
            # Sources re-read this run (a rewritten file): their earlier rows, and earlier
            # rejections, are replaced by this run's.
            replaced = (replaces[0], list(replaces[1]())) if replaces is not None else None
            quarantine_name = None
            sample: list[dict[str, Any]] = []
            if quarantine:
                cursor_from = previous_cursor.to_json() if previous_cursor is not None else ""
                if window is not None:  # a partition's re-run replaces that partition's rejections
                    cursor_from = f"partition:{window.label}"
                quarantine_name = commit_quarantine(
                    self.tables, obj, enforcer, quarantine, run_id, cursor_from, replaced
                )
                sample = quarantine_records(quarantine, PREVIEW_ROWS)
            if stats.read and stats.rejected / stats.read > obj.max_rejected_rate:
                raise QualityError(
                    f"{obj.label}: {stats.rejected} of {stats.read} rows ({stats.rejected / stats.read:.1%}) "
                    f"violate the contract, above the {obj.max_rejected_rate:.1%} threshold; nothing was "
                    f"committed to {label}",
                    hint=f"inspect {namespace}.{obj.quarantine_table} (column _dativo_reason)",
                    rows_read=stats.read,
                    rows_rejected=stats.rejected,
                    quarantine_sample=sample,
                    quarantine_table=quarantine_name,
                )
            if source_unchanged and stats.read == 0:
                # Nothing was read because nothing changed: whatever the contract's schema says
                # now, the table keeps its copy (an overwrite with no rows would empty it).
                return WriteResult(
                    table=label,
                    rows_written=0,
                    rows_rejected=0,
                    rows_read=0,
                    snapshot_id=current.snapshot_id if (current := table.current_snapshot()) else None,
                    committed=False,
                    cursor=previous_cursor,
                    duration_s=time.monotonic() - started,
                    schema=target_schema,
                )
            if mode is WriteMode.OVERWRITE and stats.written == 0:
                _refuse_emptying(table, obj, stats.read, label)

            def nothing_committed() -> WriteResult:
                current = table.current_snapshot()
                return WriteResult(
                    table=label,
                    rows_written=0,
                    rows_rejected=stats.rejected,
                    rows_read=stats.read,
                    snapshot_id=current.snapshot_id if current else None,
                    committed=False,
                    cursor=cursor,
                    quarantine_table=quarantine_name,
                    duration_s=time.monotonic() - started,
                    schema=target_schema,
                    quarantine_sample=sample,
                )

            unchanged = (
                stats.written == 0
                and not changes
                and mode is not WriteMode.OVERWRITE
                and (cursor == previous_cursor)
                and window is None
            )
            if unchanged:
                return nothing_committed()
            keys = None
            replaced_column = None
            if is_merge and merge_keys:
                keys = pa.chunked_array(merge_keys).combine_chunks()
                merge_keys.clear()
                if not keys_unique:
                    new_files, dropped = dedupe_new_files(
                        table, metadata, new_files, keys, obj.primary_key, obj.cursor_field, digests=digests
                    )
                    stats.written -= dropped
            elif dedupe_refresh and merge_keys:
                all_keys = pa.chunked_array(merge_keys).combine_chunks()
                merge_keys.clear()
                new_files, dropped = dedupe_new_files(
                    table, metadata, new_files, all_keys, obj.primary_key, obj.cursor_field, digests=digests
                )
                stats.written -= dropped
            elif (
                replaced is not None
                and replaced[1]
                and replaced[0] in table.schema().column_names
                and mode is not WriteMode.OVERWRITE  # an overwrite replaces every row anyway
            ):
                keys = pa.array(replaced[1], pa.string())
                replaced_column = replaced[0]
            staged = _Staged(
                obj=obj,
                mode=mode,
                owner=owner,
                label=label,
                schema=target_schema,
                changes=changes,
                file_schema=metadata.schema(),
                files=new_files,
                keys=keys,
                replaced_column=replaced_column,
                props={
                    PROP_RUN_ID: run_id,
                    PROP_OBJECT: obj.label,
                    PROP_STRATEGY: obj.strategy.value,
                    PROP_CURSOR_FIELD: obj.cursor_field or "",
                    PROP_CURSOR: cursor.to_json() if cursor else "null",
                    PROP_ROWS: str(stats.written),
                }
                if replay_properties is None
                else {PROP_OBJECT: obj.label, PROP_ROWS: str(stats.written), **replay_properties},
                base_snapshot_id=base_snapshot_id,
                window=window,
                base_cursor=previous_cursor,
                digests=digests,
                run={
                    "run_id": run_id,
                    "tenant": obj.tenant,
                    "job": obj.job,
                    "object": obj.name,
                    "cursor_before": previous_cursor.to_json() if previous_cursor is not None else "null",
                    "operation": "partition" if window is not None else mode.value,
                },
            )
            if window is not None:
                staged.props[PROP_PARTITION] = window.label
            if (
                window is None
                and is_merge
                and keys is not None
                and table.current_snapshot() is not None
                and stats.written <= UNCHANGED_CHECK_MAX_ROWS
                and cursor == previous_cursor
                and not changes
            ):
                staged.merge = plan_merge(table, keys, obj.primary_key)
                staged.merge_planned = True
                if staged.merge.rows_replaced == stats.written and same_rows(
                    read_data_files(table, new_files), removed_rows(table, staged.merge), obj.primary_key
                ):
                    # A lookback window re-read rows that are already there, unchanged: committing
                    # would only add a snapshot that replaces rows with identical copies.
                    delete_uncommitted(table, [f.file_path for f in new_files])
                    return nothing_committed()
            snapshot_id, attempts = self._commit(table, txn, staged)
        except BaseException:
            if staged is not None and staged.may_have_landed:
                # The catalog may hold the snapshot that references these files: deleting them
                # would break the table. Unreferenced, they are orphans that maintenance removes.
                log.warning("commit_files_kept", table=label, reason="the commit's outcome is unknown")
                raise
            written = [f.file_path for f in new_files]
            if staged is not None:
                written += [f.file_path for f in staged.files + staged.merge.written_files()]
                delete_manifest(table, staged.integrity)
            delete_uncommitted(table, list(dict.fromkeys(written)))
            raise
        merge = staged.merge
        if window is not None:
            cursor = staged.copied_cursor  # the incremental cursor, as the commit copied it
        return WriteResult(
            table=label,
            rows_written=stats.written - staged.rows_dropped,
            rows_rejected=stats.rejected,
            rows_read=stats.read,
            snapshot_id=snapshot_id,
            committed=True,
            cursor=cursor,
            data_files=len(staged.files),
            bytes_written=sum(f.file_size_in_bytes for f in staged.files + merge.written_files()),
            rows_replaced=merge.rows_replaced,
            files_rewritten=len(merge.replaced_files),
            delete_files=len(merge.delete_files),
            schema_changes=[f"{c.kind.value} {c.column} {c.detail}".strip() for c in changes],
            quarantine_table=quarantine_name,
            duration_s=time.monotonic() - started,
            schema=target_schema,
            commit_attempts=attempts,
            quarantine_sample=sample,
            integrity_manifest=staged.integrity.get(PROP_INTEGRITY),
            integrity_files=staged.integrity_files,
        )

    # ------------------------------------------------------------------ commit

    def _commit(self, table: Table, txn: Transaction, staged: _Staged) -> tuple[int | None, int]:
        """Commit the staged write, refreshing and replaying it when another writer got there first."""
        attempts = 0
        try:
            for attempt in replaying_conflicts():
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    if attempts > 1:
                        table, txn = self._replay_on(table.refresh(), staged)
                    return self._commit_once(table, txn, staged), attempts
        except CommitConflict as exc:
            raise StorageError(
                f"commit to {staged.label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}"
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises

    def _replay_on(self, table: Table, staged: _Staged) -> tuple[Table, Transaction]:
        """A fresh transaction on the refreshed table that reproduces the staged schema and merge."""
        log.info("commit_conflict_replayed", table=staged.label)
        replay_id = staged.props.get(PROP_REPLAY_ID)
        if replay_id is not None and replay_commit(table, replay_id) is not None:
            # The conflicting writer was another process finishing this very replay: committing
            # again would load its rows twice. (The staged files are removed as for any failure.)
            raise ReplayAlreadyCommitted(replay_id)
        _check_start(table, staged.base_snapshot_id, staged.obj, staged.label, staged.window, staged.base_cursor)
        txn = table.transaction()
        changes = plan_schema_changes(table.schema().as_arrow(), staged.schema, table=staged.label)
        if changes:
            with txn.update_schema() as update:
                apply_schema_changes(update, changes)
        if txn.table_metadata.schema().as_struct() != staged.file_schema.as_struct():
            # The data files carry the field ids of the schema they were written with.
            raise StorageError(
                f"{staged.obj.label}: the schema of {staged.label} changed while this run was writing; "
                "nothing was committed",
                hint="the retry writes with the new schema",
            )
        # Earlier attempts' merge files referred to the old snapshot: drop them and plan again.
        delete_uncommitted(table, [f.file_path for f in staged.merge.written_files()])
        staged.merge = MergePlan()
        staged.merge_planned = False
        return table, txn

    def _commit_once(self, table: Table, txn: Transaction, staged: _Staged) -> int | None:
        obj = staged.obj
        if staged.window is not None:
            _stage_window_replace(table, txn, staged)
        elif staged.keys is not None and table.current_snapshot() is not None:
            if not staged.merge_planned:
                key_columns = obj.primary_key if staged.replaced_column is None else (staged.replaced_column,)
                staged.merge = plan_merge(table, staged.keys, key_columns)
                staged.merge_planned = True
            apply_merge(table, txn.table_metadata, staged.merge, digests=staged.digests)
        merge = staged.merge
        add = staged.files + merge.replacement_files
        remove = list(merge.replaced_files)
        if staged.mode is WriteMode.OVERWRITE and table.current_snapshot() is not None:
            remove = [task.file for task in table.scan().plan_files()]
        # The manifest lists exactly what this attempt adds: an earlier attempt's (planned on an
        # older snapshot) is superseded, and only the committed snapshot ever references one.
        delete_manifest(table, staged.integrity)
        staged.integrity = {}
        added = [*add, *merge.delete_files]
        run = {
            **staged.run,
            "cursor_after": staged.props.get(PROP_CURSOR, "null"),
            "rows": staged.props.get(PROP_ROWS, "0"),
            "files": str(len(added)),
        }
        try:
            staged.integrity = integrity_properties(table, added, staged.digests, run)
        except Exception as exc:
            # Any FileIO's failure (an Azure SDK error through adlfs is no OSError); coded errors
            # (IntegrityError) pass unchanged.
            raise_storage_failure(exc, f"writing the integrity manifest of {staged.label}")
        staged.integrity_files = len(added)
        props = {**staged.props, **staged.integrity}
        staged.attempt = CommitAttempt(table, staged.integrity[PROP_INTEGRITY], f"commit to {staged.label}")
        try:
            if merge.delete_files:
                producer = MergeOnReadOverwrite(
                    operation=Operation.OVERWRITE, transaction=txn, io=table.io, snapshot_properties=props
                )
                with producer:
                    for data_file in remove:
                        producer.delete_data_file(data_file)
                    for data_file in add:
                        producer.append_data_file(data_file)
                    for delete_file in merge.delete_files:
                        producer.add_delete_file(delete_file)
            elif remove:
                with txn.update_snapshot(snapshot_properties=props).overwrite() as overwrite:
                    for data_file in remove:
                        overwrite.delete_data_file(data_file)
                    for data_file in add:
                        overwrite.append_data_file(data_file)
            else:
                with txn.update_snapshot(snapshot_properties=props).fast_append() as append:
                    for data_file in add:
                        append.append_data_file(data_file)
            _fault_point("before_commit")
        except CommitFailedException as exc:
            raise CommitConflict(str(exc)) from exc
        except Exception as exc:
            raise_storage_failure(exc, f"commit to {staged.label}")
        # From here on a failure may come after the catalog committed (CommitAttempt settles it).
        snapshot_id = staged.attempt.commit(txn)
        _fault_point("after_commit")
        return snapshot_id


PROP_REPLAY_ID = "dativo.replay-id"
"""Snapshot property naming the replay (:mod:`~dativo_dagster.replay`) whose rows the snapshot committed."""


class ReplayAlreadyCommitted(Exception):
    """Another process committed this replay while this one was writing it: nothing more to commit."""

    def __init__(self, replay_id: str) -> None:
        super().__init__(f"replay {replay_id} was committed by another process")
        self.replay_id = replay_id


def snapshot_with(table: Table, prop: str, value: str) -> int | None:
    """The snapshot in the table's lineage whose summary has ``prop`` = ``value``, or None."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get(prop) == value:
            return snapshot.snapshot_id
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None


def replay_commit(table: Table, replay_id: str) -> int | None:
    """The snapshot that committed replay ``replay_id``: in the table's lineage, or recorded by
    snapshot expiry when it removed that snapshot (:data:`TABLE_PROP_EXPIRED_REPLAYS`); or None."""
    found = snapshot_with(table, PROP_REPLAY_ID, replay_id)
    if found is not None:
        return found
    return expired_replays(table.metadata.properties).get(replay_id)


def _check_start(
    table: Table,
    base_snapshot_id: int | None,
    obj: ObjectPlan,
    label: str,
    window: TimeWindow | None,
    base_cursor: CursorState | None,
) -> None:
    """The base check of an incremental write, or the race check of a partition write."""
    if window is None:
        _check_base(table, base_snapshot_id, obj, label)
    else:
        check_window_race(
            obj,
            window,
            base_snapshot_id,
            latest_dativo_snapshot_id(table),
            base_cursor,
            label,
            committed_since=dativo_summaries_since(table, base_snapshot_id),
        )


def _window_filter(obj: ObjectPlan, window: TimeWindow | None) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
    """For a partition run: keep only rows in the window (a source that read past it must not
    make the replace delete rows of another window's)."""
    field_name = obj.cursor_field
    if window is None or field_name is None:
        return None

    def keep(batch: pa.RecordBatch) -> pa.RecordBatch:
        if field_name not in batch.schema.names:
            return batch
        inside = batch.filter(window_mask(batch.column(field_name), window))
        if inside.num_rows != batch.num_rows:
            log.warning("rows_outside_partition_dropped", object=obj.label, rows=batch.num_rows - inside.num_rows)
        return inside

    return keep


def _stage_window_replace(table: Table, txn: Transaction, staged: _Staged) -> None:
    """Plan a partition's window replace on ``table`` and copy its incremental cursor unchanged."""
    obj = staged.obj
    assert staged.window is not None and obj.cursor_field is not None
    if not staged.merge_planned:
        plan, shadowed = plan_window_replace(table, obj.cursor_field, staged.window, staged.keys, obj.primary_key)
        if shadowed is not None and len(shadowed):
            staged.files, dropped = drop_keys(
                table, txn.table_metadata, staged.files, shadowed, obj.primary_key, digests=staged.digests
            )
            staged.rows_dropped += dropped
            staged.props[PROP_ROWS] = str(int(staged.props[PROP_ROWS]) - dropped)
        staged.merge = plan
        staged.merge_planned = True
    apply_merge(table, txn.table_metadata, staged.merge, digests=staged.digests)
    current = read_table_cursor(table)
    staged.copied_cursor = current.cursor if current is not None else None
    staged.props[PROP_CURSOR] = staged.copied_cursor.to_json() if staged.copied_cursor is not None else "null"


def _check_base(table: Table, base_snapshot_id: int | None, obj: ObjectPlan, label: str) -> None:
    """STG001 (transient) if another run of this object committed since this run read its cursor."""
    latest = latest_dativo_snapshot_id(table)
    if latest != base_snapshot_id:
        raise StorageError(
            f"{obj.label}: another run committed {label} (snapshot {latest}) while this run was reading; "
            "nothing was committed, so no row is loaded twice",
            hint="the retry continues from that run's cursor",
        )


def _refuse_emptying(table: Table, obj: ObjectPlan, rows_read: int, label: str) -> None:
    """A full refresh that would leave a table with rows empty needs the object's consent."""
    if obj.allow_empty_refresh:
        return
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
    if int(summary.get("total-records", "0") or 0) == 0:
        return
    what = "no rows" if rows_read == 0 else f"{rows_read} rows, none of them valid"
    raise QualityError(
        f"{obj.label}: the source returned {what}; a full refresh would empty {label}, so nothing was committed",
        hint="if the source is empty on purpose, set quality.allow_empty_refresh: true on the object",
    )
