"""Table upkeep: compaction, snapshot expiry and orphan-file removal, each one Iceberg commit.

Merge runs leave many small data files and one position-delete file per touched data file, so a
table merged a hundred times reads much slower than the same rows freshly written. Upkeep brings
it back without changing a row or the cursor:

* **compact**: data files much smaller than the target file, or with position deletes, are read
  with their deletes applied and rewritten into target-sized files (bin-packed, streamed group by
  group); one REPLACE snapshot removes the old data files and the delete files that applied only
  to them and adds the new ones. It carries no ``dativo.run-id``, so every cursor reader walks past
  it, and ``dativo.maintenance=compact`` says what it is.
* **expire**: snapshots older than the retention are removed from the metadata, except the current
  one, the chain from it back to the snapshot holding the incremental cursor (the cursor reader
  walks that chain), the chains to the newest load and the newest reset (freshness and a reset's
  re-execution walk to them), the newest partition-run snapshot, branch and tag heads and the newest
  few. The replays whose snapshots leave the lineage are recorded in a table property in the same
  commit, so a repeated replay is still found committed.
* **orphans**: files under the table's own location (never a shared data path) that no retained snapshot or
  metadata file references, and that are older than a safety window (a load still writing has
  not referenced its files yet), are deleted.

A commit that loses a race with a load is retried: compaction replays its commit when every file
it rewrote is still live with the same delete files, and plans again otherwise; expiry plans
again. Files a failed compaction wrote are deleted. The pure planners (:func:`plan_compaction`,
:func:`plan_expiry`, :func:`select_orphans`) take plain facts, so they are tested on their own.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation

from dativo_dagster.compat.fsspec import fsspec_path
from dativo_dagster.compat.pyiceberg import ArrowScan, require_current_snapshot
from dativo_dagster.errors import ConfigError, ErrorClass, StorageError
from dativo_dagster.iceberg.deletes import MergeOnReadOverwrite, referenced_data_file
from dativo_dagster.iceberg.failures import COMMIT_ATTEMPTS, CommitConflict, raise_storage_failure, replaying_conflicts
from dativo_dagster.iceberg.files import delete_files, write_data_files
from dativo_dagster.iceberg.integrity import (
    FileDigests,
    carry_forward_before_expiry,
    delete_manifest,
    integrity_properties,
    retained_integrity_paths,
)
from dativo_dagster.iceberg.writer import PROP_REPLAY_ID
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_MAINTENANCE,
    PROP_PARTITION,
    PROP_RESET_KIND,
    PROP_RUN_ID,
    TABLE_PROP_EXPIRED_REPLAYS,
    expired_replays,
)

log = structlog.get_logger("dativo.iceberg")

SMALL_FILE_FRACTION = 0.75
"""A data file with fewer live rows than this share of the target file is compacted."""

DEFAULT_RETAIN_DAYS = 7.0
"""Snapshots younger than this are kept (time travel and audits within it keep working)."""

MIN_SNAPSHOTS_KEPT = 5
"""The newest snapshots of the current lineage kept whatever their age."""

DEFAULT_ORPHAN_AGE_HOURS = 72.0
"""Unreferenced files younger than this are left alone: a load may still be writing them."""

MIN_ORPHAN_AGE_HOURS = 1.0
"""The safety window cannot be shorter: a running load's files are unreferenced until it commits."""

COMPACT = "compact"


MAX_RETAIN_DAYS = 3650.0
"""The longest retention (as runner.yaml's ``maintenance.<tenant>.retain_days``)."""

MAX_ORPHAN_AGE_HOURS = 87600.0
"""The longest orphan safety window (ten years, as runner.yaml's ``orphan_age_hours``)."""


def check_orphan_age(hours: float, where: str = "--orphan-age-hours") -> float:
    """``hours`` if it is a safe orphan window; CFG001 naming ``where`` otherwise."""
    if not hours >= MIN_ORPHAN_AGE_HOURS:
        raise ConfigError(
            f"{where}: {hours:g} h is shorter than the {MIN_ORPHAN_AGE_HOURS:g} h safety window; a load still "
            "writing has files no snapshot references yet, and removing them would lose its rows",
            hint=f"use at least {MIN_ORPHAN_AGE_HOURS:g} (default {DEFAULT_ORPHAN_AGE_HOURS:g})",
        )
    if not hours <= MAX_ORPHAN_AGE_HOURS:
        raise ConfigError(f"{where}: must be at most {MAX_ORPHAN_AGE_HOURS:g} hours (got {hours:g})")
    return hours


def check_retain_days(days: float, where: str = "--retain-days") -> float:
    """``days`` if it is a valid retention; CFG001 naming ``where`` otherwise."""
    if not 0 <= days <= MAX_RETAIN_DAYS:
        raise ConfigError(f"{where}: must be between 0 and {MAX_RETAIN_DAYS:g} days (got {days:g})")
    return days


class UnreadableDeletes(StorageError):
    """STG001: the table holds delete files pyiceberg cannot apply (equality deletes another engine
    wrote), so its rows cannot be read for compaction; the table is left as it is. Retrying
    does not help."""

    error_class = ErrorClass.PERMANENT


def _scan_tasks(table: Table) -> list[FileScanTask]:
    """The table's live data files with their delete files, or :class:`UnreadableDeletes`."""
    try:
        return list(table.scan().plan_files())
    except (ValueError, NotImplementedError) as exc:
        if "equality delete" not in str(exc).lower():
            raise
        raise UnreadableDeletes(
            f"{'.'.join(table.name())} has equality delete files (written by another engine), which dativo cannot "
            "apply: compaction was skipped for it",
            hint="compact the table with the engine that wrote the equality deletes (e.g. Spark rewrite_data_files)",
        ) from None


# --------------------------------------------------------------------------- compaction planning


@dataclass(frozen=True)
class FileFacts:
    """What the compaction planner knows of one live data file."""

    path: str
    rows: int
    """Live rows: the file's rows minus the positions its delete files remove."""
    delete_paths: frozenset[str] = frozenset()
    """The delete files applying to it."""


def select_for_compaction(
    files: Sequence[FileFacts], target_rows: int, small_fraction: float = SMALL_FILE_FRACTION
) -> list[FileFacts]:
    """Data files worth rewriting: with delete files attached, or smaller than ``small_fraction`` of
    the target."""
    return [f for f in files if f.delete_paths or f.rows < small_fraction * target_rows]


def pack_groups(files: Sequence[FileFacts], target_rows: int) -> list[list[FileFacts]]:
    """Bin-pack files into groups of at most ``target_rows`` live rows (first fit, largest first).

    A file larger than the target gets a group of its own; each group becomes one or more new
    files of about the target size.
    """
    groups: list[list[FileFacts]] = []
    totals: list[int] = []
    for facts in sorted(files, key=lambda f: (-f.rows, f.path)):
        for index, total in enumerate(totals):
            if total + facts.rows <= target_rows:
                groups[index].append(facts)
                totals[index] += facts.rows
                break
        else:
            groups.append([facts])
            totals.append(facts.rows)
    return groups


def plan_compaction(
    files: Sequence[FileFacts], target_rows: int, small_fraction: float = SMALL_FILE_FRACTION
) -> list[list[FileFacts]]:
    """The groups to rewrite: selected files, bin-packed, without groups that would gain nothing
    (a lone file with no delete file would be rewritten as itself)."""
    if target_rows < 1:
        raise ValueError("target_rows must be at least 1")
    groups = pack_groups(select_for_compaction(files, target_rows, small_fraction), target_rows)
    return [group for group in groups if len(group) > 1 or group[0].delete_paths]


# --------------------------------------------------------------------------- expiry planning


@dataclass(frozen=True)
class SnapshotFacts:
    """What the expiry planner knows of one snapshot."""

    snapshot_id: int
    parent_id: int | None
    timestamp_ms: int
    props: dict[str, str] = field(default_factory=dict)

    @property
    def incremental_run(self) -> bool:
        """Committed by an incremental dativo run or a reset: it holds the cursor."""
        return PROP_RUN_ID in self.props and PROP_PARTITION not in self.props

    @property
    def partition_run(self) -> bool:
        """Committed by a partition run (it carries a copy of the cursor)."""
        return PROP_RUN_ID in self.props and PROP_PARTITION in self.props


def protected_snapshots(
    snapshots: Sequence[SnapshotFacts], current_id: int | None, ref_heads: Iterable[int], min_keep: int
) -> set[int]:
    """Snapshots expiry never removes, whatever their age.

    The current snapshot; the chain from it back to (and including) the newest snapshot with the
    incremental cursor, which the cursor reader walks; the chains back to the newest load that is
    not a reset (freshness) and to the newest reset (a reset's re-execution finds it and does not
    reset again); the newest partition-run snapshot (the
    cursor when only partition runs are left); branch and tag heads; the newest ``min_keep`` of the
    current lineage.
    """
    by_id = {s.snapshot_id: s for s in snapshots}
    keep = {head for head in ref_heads if head in by_id}
    lineage: list[SnapshotFacts] = []
    snapshot = by_id.get(current_id) if current_id is not None else None
    while snapshot is not None:
        lineage.append(snapshot)
        snapshot = by_id.get(snapshot.parent_id) if snapshot.parent_id is not None else None
    keep.update(s.snapshot_id for s in lineage[: max(min_keep, 1)])
    cursor_at = next((index for index, s in enumerate(lineage) if s.incremental_run), None)
    if cursor_at is not None:
        keep.update(s.snapshot_id for s in lineage[: cursor_at + 1])
    # The freshness check's last load and a reset's re-execution check walk to the newest load
    # that was not a reset and to the newest reset: their chains stay walkable too.
    for wanted in (
        lambda s: PROP_RUN_ID in s.props and PROP_RESET_KIND not in s.props,
        lambda s: PROP_RESET_KIND in s.props,
    ):
        found_at = next((index for index, s in enumerate(lineage) if wanted(s)), None)
        if found_at is not None:
            keep.update(s.snapshot_id for s in lineage[: found_at + 1])
    newest_partition = next((index for index, s in enumerate(lineage) if s.partition_run), None)
    if newest_partition is not None:
        if cursor_at is None and lineage[newest_partition].props.get(PROP_CURSOR, "null") != "null":
            # The cursor lives only in that partition snapshot's copy: keep the walk to it intact.
            keep.update(s.snapshot_id for s in lineage[: newest_partition + 1])
        keep.add(lineage[newest_partition].snapshot_id)
    return keep


def plan_expiry(
    snapshots: Sequence[SnapshotFacts],
    current_id: int | None,
    ref_heads: Iterable[int],
    now_ms: int,
    retain_days: float,
    min_keep: int = MIN_SNAPSHOTS_KEPT,
) -> list[int]:
    """Ids of the snapshots to expire: older than the retention and not protected, oldest first."""
    cutoff = now_ms - int(retain_days * 86_400_000)
    keep = protected_snapshots(snapshots, current_id, ref_heads, min_keep)
    old = [s for s in snapshots if s.timestamp_ms < cutoff and s.snapshot_id not in keep]
    return [s.snapshot_id for s in sorted(old, key=lambda s: (s.timestamp_ms, s.snapshot_id))]


# --------------------------------------------------------------------------- orphan planning


@dataclass(frozen=True)
class ListedFile:
    """A file found under the table's directories (path as the file system names it)."""

    path: str
    size: int
    modified_s: float | None


def select_orphans(listed: Iterable[ListedFile], referenced: set[str], older_than_s: float) -> list[ListedFile]:
    """Files no retained metadata references, last modified before ``older_than_s`` (epoch seconds).

    A file whose modification time is unknown is never selected.
    """
    return [f for f in listed if f.path not in referenced and f.modified_s is not None and f.modified_s < older_than_s]


# --------------------------------------------------------------------------- results


@dataclass
class CompactionResult:
    """What compaction did (or, with ``dry_run``, would do) to one table."""

    data_files_before: int = 0
    data_files_after: int = 0
    delete_files_before: int = 0
    delete_files_after: int = 0
    files_rewritten: int = 0
    files_written: int = 0
    delete_files_folded: int = 0
    rows_rewritten: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    snapshot_id: int | None = None
    commit_attempts: int = 0
    dry_run: bool = False


@dataclass
class ExpiryResult:
    """Snapshots expiry removed (or would remove)."""

    snapshots_before: int = 0
    snapshots_expired: int = 0
    snapshots_after: int = 0
    expired_ids: list[int] = field(default_factory=list)
    dry_run: bool = False


@dataclass
class OrphanResult:
    """Unreferenced files orphan removal deleted (or would delete)."""

    files_listed: int = 0
    orphans_removed: int = 0
    bytes_removed: int = 0
    young_unreferenced: int = 0
    """Unreferenced files left because they are inside the safety window."""
    unknown_age: int = 0
    """Unreferenced files left because the file system gave no modification time."""
    skipped: str | None = None
    """Why nothing was listed or deleted (the table's files may share a path with other tables)."""
    dry_run: bool = False


# --------------------------------------------------------------------------- compaction


@dataclass
class _Compaction:
    groups: list[list[FileFacts]]
    tasks: dict[str, FileScanTask]
    written: list[DataFile] = field(default_factory=list)
    integrity: dict[str, str] = field(default_factory=dict)
    outcome_unknown: bool = False
    """The catalog may have committed the last attempt: its files must stay (orphans at worst)."""

    def removed_delete_files(self) -> list[DataFile]:
        """The delete files applying only to data files being rewritten (folded into the new files)."""
        found: dict[str, DataFile] = {}
        for group in self.groups:
            for facts in group:
                for delete_file in self.tasks[facts.path].delete_files:
                    if referenced_data_file(delete_file) == facts.path:
                        found[delete_file.file_path] = delete_file
        return list(found.values())


def _live_facts(table: Table) -> tuple[list[FileFacts], dict[str, FileScanTask]]:
    facts = []
    tasks = {}
    metadata = table.metadata
    default_spec = metadata.default_spec_id
    for task in _scan_tasks(table):
        data_file = task.file
        if len(data_file.partition) or data_file.spec_id != default_spec:
            continue  # dativo's tables are unpartitioned; files of another layout are left as they are
        deleted = sum(d.record_count for d in task.delete_files if referenced_data_file(d) == data_file.file_path)
        facts.append(
            FileFacts(
                path=data_file.file_path,
                rows=max(data_file.record_count - deleted, 0),
                delete_paths=frozenset(d.file_path for d in task.delete_files),
            )
        )
        tasks[data_file.file_path] = task
    return facts, tasks


def _still_live(table: Table, plan: _Compaction) -> bool:
    """Every file the plan rewrites is still live with the same delete files (then the written
    files are still exactly its rows)."""
    live = {task.file.file_path: frozenset(d.file_path for d in task.delete_files) for task in _scan_tasks(table)}
    return all(live.get(f.path) == f.delete_paths for group in plan.groups for f in group)


def _table_arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of the table's current schema, as the table's readers see it."""
    return table.schema().as_arrow()


def conform_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly the columns and types of ``schema``.

    Files written under an earlier schema lack the columns added since (they read as nulls) and
    may carry narrower or differently encoded types (``string`` against ``large_string``, ``int``
    against a widened ``long``); one writer takes batches of one schema only.
    """
    columns = []
    for target in schema:
        index = batch.schema.get_field_index(target.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, target.type))
            continue
        column = batch.column(index)
        columns.append(column if column.type == target.type else column.cast(target.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _group_batches(table: Table, tasks: list[FileScanTask], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The live rows of ``tasks`` (their deletes applied), one file at a time, each batch in the
    table's current schema whatever schema its file was written under."""
    from pyiceberg.expressions import AlwaysTrue

    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for task in tasks:
        for batch in scan.to_record_batches([task]):
            yield conform_batch(batch, schema)


def _write_groups(table: Table, plan: _Compaction, target_rows: int, digests: FileDigests) -> None:
    schema = _table_arrow_schema(table)
    for group in plan.groups:
        batches = _group_batches(table, [plan.tasks[f.path] for f in group], schema)
        first = next(batches, None)
        if first is None:
            continue  # every row of the group was deleted: the files go, nothing replaces them

        def stream(head: pa.RecordBatch = first, rest: Iterator[pa.RecordBatch] = batches) -> Iterator[pa.RecordBatch]:
            yield head
            yield from rest

        plan.written.extend(write_data_files(table, table.metadata, schema, stream(), target_rows, digests=digests))


def _commit_compaction(table: Table, plan: _Compaction, digests: FileDigests, label: str) -> int | None:
    removed = [plan.tasks[f.path].file for group in plan.groups for f in group]
    # The integrity manifest lists exactly what this attempt adds (an earlier attempt's is dropped).
    delete_manifest(table, plan.integrity)
    plan.integrity = {}
    run = {
        "operation": COMPACT,
        "rows": str(sum(f.record_count for f in plan.written)),
        "files": str(len(plan.written)),
    }
    try:
        plan.integrity = integrity_properties(table, plan.written, digests, run)
    except OSError as exc:
        raise_storage_failure(exc, f"writing the integrity manifest of {label}")
    props = {PROP_MAINTENANCE: COMPACT, **plan.integrity}
    try:
        txn = table.transaction()
        producer = MergeOnReadOverwrite(
            operation=Operation.REPLACE, transaction=txn, io=table.io, snapshot_properties=props
        )
        with producer:
            for data_file in removed:
                producer.delete_data_file(data_file)
            for data_file in plan.written:
                producer.append_data_file(data_file)
            for delete_file in plan.removed_delete_files():
                producer.remove_delete_file(delete_file)
        committed = txn.commit_transaction()
    except CommitFailedException as exc:
        raise CommitConflict(str(exc)) from exc
    except Exception as exc:
        plan.outcome_unknown = isinstance(exc, CommitStateUnknownException)
        raise_storage_failure(exc, f"compaction commit to {label}")
        raise
    snapshot = committed.current_snapshot()
    return snapshot.snapshot_id if snapshot is not None else None


def compact_table(
    table: Table,
    *,
    target_rows: int,
    small_fraction: float = SMALL_FILE_FRACTION,
    dry_run: bool = False,
) -> CompactionResult:
    """Rewrite small data files and data files with position deletes into target-sized files.

    One REPLACE snapshot (``dativo.maintenance=compact``, no run id, no cursor): readers see the
    same rows before and after. A load that commits first makes this commit replay on the new
    metadata when the rewritten files are untouched, or plan again when they changed.

    Raises:
        StorageError: STG001 when the warehouse fails or loads kept winning every attempt.
    """
    label = ".".join(table.name())
    result = CompactionResult(dry_run=dry_run)
    plan: _Compaction | None = None
    digests = FileDigests()
    committed = False
    try:
        for attempt in replaying_conflicts():
            with attempt:
                result.commit_attempts = attempt.retry_state.attempt_number
                if result.commit_attempts > 1:
                    table = table.refresh()
                    if plan is not None and not _still_live(table, plan):
                        log.info("compaction_replanned", table=label)
                        delete_files(table, [f.file_path for f in plan.written])
                        delete_manifest(table, plan.integrity)
                        plan = None
                        digests = FileDigests()
                    else:
                        log.info("commit_conflict_replayed", table=label)
                facts, tasks = _live_facts(table)
                if plan is None:
                    groups = plan_compaction(facts, target_rows, small_fraction)
                    plan = _Compaction(groups, tasks)
                    _describe_before(result, table, facts, tasks)
                    if dry_run or not groups:
                        _describe_after(result, plan, facts, written=not dry_run)
                        return result
                    _write_groups(table, plan, target_rows, digests)
                else:
                    plan.tasks = tasks  # the same files, as the refreshed metadata lists them
                    _describe_before(result, table, facts, tasks)
                result.snapshot_id = _commit_compaction(table, plan, digests, label)
                committed = True
                _describe_after(result, plan, facts, written=True)
                return result
    except CommitConflict as exc:
        raise StorageError(
            f"compaction of {label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}; nothing was changed",
            hint="run maintenance again when loads are quieter",
        ) from None
    finally:
        if not committed and plan is not None and not plan.outcome_unknown:
            delete_files(table, [f.file_path for f in plan.written])
            delete_manifest(table, plan.integrity)
    raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


def _describe_before(
    result: CompactionResult, table: Table, facts: list[FileFacts], tasks: dict[str, FileScanTask]
) -> None:
    result.data_files_before = len(facts)
    result.delete_files_before = len({d for f in facts for d in f.delete_paths})
    result.bytes_before = sum(t.file.file_size_in_bytes for t in tasks.values()) + sum(
        {d.file_path: d.file_size_in_bytes for t in tasks.values() for d in t.delete_files}.values()
    )


def _describe_after(result: CompactionResult, plan: _Compaction, facts: list[FileFacts], *, written: bool) -> None:
    rewritten = {f.path for group in plan.groups for f in group}
    folded = plan.removed_delete_files()
    result.files_rewritten = len(rewritten)
    result.rows_rewritten = sum(f.rows for group in plan.groups for f in group)
    result.delete_files_folded = len(folded)
    result.files_written = len(plan.written)
    every_delete = {d for f in facts for d in f.delete_paths}
    result.delete_files_after = len(every_delete - {d.file_path for d in folded}) if written else len(every_delete)
    if written:
        result.data_files_after = len(facts) - len(rewritten) + len(plan.written)
        removed_bytes = sum(plan.tasks[p].file.file_size_in_bytes for p in rewritten) + sum(
            d.file_size_in_bytes for d in folded
        )
        result.bytes_after = result.bytes_before - removed_bytes + sum(f.file_size_in_bytes for f in plan.written)
    else:
        result.data_files_after = result.data_files_before
        result.bytes_after = result.bytes_before


# --------------------------------------------------------------------------- expiry


def _snapshot_facts(table: Table) -> list[SnapshotFacts]:
    return [
        SnapshotFacts(
            snapshot_id=s.snapshot_id,
            parent_id=s.parent_snapshot_id,
            timestamp_ms=s.timestamp_ms,
            props=dict(s.summary.additional_properties) if s.summary else {},
        )
        for s in table.metadata.snapshots
    ]


def replays_leaving_lineage(table: Table, expiring: set[int]) -> dict[str, int]:
    """Replays (replay id to snapshot id) committed in the current lineage that the lineage will no
    longer reach once ``expiring`` is removed: the walk stops at the first removed snapshot."""
    found: dict[str, int] = {}
    reachable = True
    snapshot = table.current_snapshot()
    while snapshot is not None:
        reachable = reachable and snapshot.snapshot_id not in expiring
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if not reachable and PROP_REPLAY_ID in props and PROP_RUN_ID not in props:
            found.setdefault(props[PROP_REPLAY_ID], snapshot.snapshot_id)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return found


def expire_snapshots(
    table: Table,
    *,
    retain_days: float = DEFAULT_RETAIN_DAYS,
    min_keep: int = MIN_SNAPSHOTS_KEPT,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> ExpiryResult:
    """Remove snapshots older than ``retain_days`` (see :func:`protected_snapshots`) in one commit.

    The commit requires the main branch to be where the plan saw it: a load committing meanwhile
    makes it plan again on the new metadata.

    Raises:
        StorageError: STG001 when the catalog fails or loads kept winning every attempt.
    """
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    label = ".".join(table.name())
    now_ms = int((now or dt.datetime.now(dt.timezone.utc)).timestamp() * 1000)
    result = ExpiryResult(dry_run=dry_run)
    try:
        for attempt in replaying_conflicts():
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    table = table.refresh()
                current = table.current_snapshot()
                current_id = current.snapshot_id if current is not None else None
                heads = {ref.snapshot_id for ref in table.metadata.refs.values()}
                expiring = plan_expiry(_snapshot_facts(table), current_id, heads, now_ms, retain_days, min_keep)
                result.snapshots_before = len(table.metadata.snapshots)
                result.expired_ids = expiring
                result.snapshots_expired = len(expiring)
                result.snapshots_after = result.snapshots_before - len(expiring)
                if dry_run or not expiring:
                    return result
                try:
                    txn = table.transaction()
                    require_current_snapshot(txn, current_id)
                    carry_forward_before_expiry(table, txn, set(expiring))
                    replays = replays_leaving_lineage(table, set(expiring))
                    if replays:
                        recorded = {**expired_replays(table.metadata.properties), **replays}
                        txn.set_properties({TABLE_PROP_EXPIRED_REPLAYS: json.dumps(recorded, sort_keys=True)})
                    ExpireSnapshots(txn).by_ids(expiring).commit()
                    txn.commit_transaction()
                except CommitFailedException as exc:
                    raise CommitConflict(str(exc)) from exc
                except Exception as exc:
                    raise_storage_failure(exc, f"snapshot expiry on {label}")
                    raise
                return result
    except CommitConflict as exc:
        raise StorageError(
            f"snapshot expiry on {label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}; "
            "nothing was changed",
            hint="run maintenance again when loads are quieter",
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- orphans


@dataclass(frozen=True)
class _Storage:
    """How orphan removal sees the table's storage: its paths, listings and deletes, all named
    the way the file system names them."""

    path: Callable[[str], str]
    """An Iceberg location (or a path) as the file system names it."""
    list: Callable[[str], list[ListedFile]]
    """Every file under a directory (recursively; nothing when it does not exist)."""
    delete: Callable[[str], None]


def _storage(table: Table) -> _Storage:
    """The table's storage through its own FileIO (the same credentials its reads and writes use)."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    io = table.io
    scheme, netloc, _ = PyArrowFileIO.parse_location(table.location())
    if isinstance(io, PyArrowFileIO):
        filesystem = io.fs_by_scheme(scheme, netloc)
        return _Storage(
            path=lambda location: PyArrowFileIO.parse_location(location)[2],
            list=lambda base: _list_pyarrow(filesystem, base),
            delete=filesystem.delete_file,
        )
    fs = io.get_fs(scheme)  # type: ignore[attr-defined]  # FsspecFileIO
    return _Storage(
        path=lambda location: fsspec_path(fs, location),
        list=lambda base: _list_fsspec(fs, base),
        delete=fs.rm_file,
    )


def _within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or under it (both as the file system names them)."""
    path = path.rstrip("/")
    return path == root or path.startswith(root + "/")


def _list_pyarrow(filesystem: Any, base: str) -> list[ListedFile]:
    import pyarrow.fs as pafs

    found = []
    for info in filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        modified = info.mtime.timestamp() if info.mtime is not None else None
        found.append(ListedFile(path=info.path, size=info.size or 0, modified_s=modified))
    return found


def _list_fsspec(fs: Any, base: str) -> list[ListedFile]:
    try:
        entries = fs.find(base, detail=True)
    except FileNotFoundError:
        return []
    return [
        ListedFile(path=name, size=int(info.get("size") or 0), modified_s=fsspec_modified(info))
        for name, info in entries.items()
        if info.get("type", "file") == "file"
    ]


def fsspec_modified(info: Mapping[str, Any]) -> float | None:
    """A file's modification time (epoch seconds) from an fsspec listing entry, or None.

    Each implementation names it its own way: adlfs ``last_modified``, s3fs ``LastModified``,
    the local file system ``mtime``; a datetime, epoch seconds or an ISO-8601 text.
    """
    for key in ("last_modified", "LastModified", "mtime", "modified", "updated"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, dt.datetime):
            return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
            return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)).timestamp()
    return None


def referenced_locations(table: Table) -> set[str]:
    """Every file the table's retained metadata references: metadata files (current and logged),
    manifest lists, manifests, the data and delete files live in any retained snapshot, statistics
    files, and the integrity manifests. (A file a retained snapshot only records as removed was
    live in an expired one: no retained snapshot reads it.)"""
    metadata = table.metadata
    found: set[str] = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    found.update(s.statistics_path for s in metadata.statistics)
    found.update(s.statistics_path for s in metadata.partition_statistics)
    seen_manifests: set[str] = set()
    for snapshot in metadata.snapshots:
        found.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            found.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                found.add(entry.data_file.file_path)
    found.update(retained_integrity_paths(table))
    return found


def remove_orphans(
    table: Table,
    *,
    older_than_hours: float = DEFAULT_ORPHAN_AGE_HOURS,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> OrphanResult:
    """Delete files under the table's data and metadata directories that nothing references and
    that are older than ``older_than_hours`` (at least :data:`MIN_ORPHAN_AGE_HOURS`).

    Raises:
        ConfigError: CFG001 when the window is shorter than the minimum.
        StorageError: STG001 when listing or deleting fails.
    """
    check_orphan_age(older_than_hours)
    label = ".".join(table.name())
    cutoff = (now or dt.datetime.now(dt.timezone.utc)).timestamp() - older_than_hours * 3600
    result = OrphanResult(dry_run=dry_run)
    try:
        storage = _storage(table)
        location = table.location().rstrip("/")
        root = storage.path(location).rstrip("/")
        properties = table.metadata.properties
        outside = sorted(
            f"{key}={value}"
            for key in ("write.data.path", "write.metadata.path", "write.object-storage.path")
            if (value := properties.get(key)) is not None and not _within(storage.path(value), root)
        )
        if outside:
            # Files there may belong to other tables sharing the path: what this table does not
            # reference is not necessarily an orphan. Nothing is listed or deleted.
            result.skipped = (
                f"orphan removal skipped: {', '.join(outside)} is outside the table's location "
                f"{table.location()}, where files of other tables may live"
            )
            log.warning("orphan_removal_skipped", table=label, reason=result.skipped)
            return result
        bases = {
            storage.path(properties.get("write.data.path", f"{location}/data")).rstrip("/"),
            storage.path(properties.get("write.metadata.path", f"{location}/metadata")).rstrip("/"),
        }
        # Only ever under the table's own location, whatever else the listing returned.
        listed = [f for base in sorted(bases) for f in storage.list(base) if _within(f.path, root)]
        # References are read after listing: a file committed meanwhile is referenced by then.
        table = table.refresh()
        referenced = {storage.path(path) for path in referenced_locations(table)}
        unreferenced = [f for f in listed if f.path not in referenced]
        orphans = select_orphans(unreferenced, referenced, cutoff)
        result.files_listed = len(listed)
        result.unknown_age = sum(1 for f in unreferenced if f.modified_s is None)
        result.young_unreferenced = len(unreferenced) - len(orphans) - result.unknown_age
        result.orphans_removed = len(orphans)
        result.bytes_removed = sum(f.size for f in orphans)
        if result.unknown_age:
            log.warning("orphan_age_unknown", table=label, files=result.unknown_age)
        if dry_run:
            return result
        for orphan in orphans:
            try:
                storage.delete(orphan.path)
            except FileNotFoundError:
                continue
        if orphans:
            log.info("orphans_removed", table=label, files=len(orphans), bytes=result.bytes_removed)
    except Exception as exc:
        raise_storage_failure(exc, f"orphan-file removal on {label}")
        raise
    return result


__all__ = [
    "DEFAULT_ORPHAN_AGE_HOURS",
    "DEFAULT_RETAIN_DAYS",
    "MAX_ORPHAN_AGE_HOURS",
    "MAX_RETAIN_DAYS",
    "MIN_ORPHAN_AGE_HOURS",
    "MIN_SNAPSHOTS_KEPT",
    "SMALL_FILE_FRACTION",
    "CompactionResult",
    "ExpiryResult",
    "FileFacts",
    "ListedFile",
    "OrphanResult",
    "SnapshotFacts",
    "UnreadableDeletes",
    "check_orphan_age",
    "check_retain_days",
    "compact_table",
    "expire_snapshots",
    "pack_groups",
    "plan_compaction",
    "plan_expiry",
    "protected_snapshots",
    "referenced_locations",
    "remove_orphans",
    "select_for_compaction",
    "select_orphans",
]
