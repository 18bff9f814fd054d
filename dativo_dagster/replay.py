"""Replays: commit rows that failed before, once they conform (after a contract or mapping fix).

Two sources of rows:

* **quarantine** (``<table>__quarantine``): the rows are re-checked with the object's *current*
  contract; those that now conform are committed to the table and leave the quarantine, those
  that still fail stay with their new reason.
* **raw** (the raw pages a run kept, :mod:`~dativo_dagster.raw_pages`): the pages are parsed again
  with the source's *current* mapping and the rows committed (merged on the primary key for merge
  objects); rows failing the contract go to the quarantine (replacing that replay's earlier ones).

A replay's commit changes rows, never the cursor: its snapshot carries ``dativo.replay-id``,
``dativo.replayed-from`` and who and when, and no run id or cursor, so the incremental cursor logic
does not see it (the next run continues from the table's cursor).

Exactly once, across a kill at any instant. A quarantine replay spans two tables, which Iceberg
cannot commit together, so it goes in three steps, each one atomic commit:

1. *prepare*: in the quarantine table, the rows that now conform are set aside for replay ``R``
   (their ``_dativo_cursor_from`` becomes ``replay:R``, so no other replay takes them) and the
   reasons of the rows that still fail are updated;
2. *commit*: the set-aside rows go into the table, whose snapshot records ``dativo.replay-id=R``;
3. *finish*: the set-aside rows of ``R`` are deleted from the quarantine table.

Every replay starts by finishing the replays a killed process left prepared: when the table
already records ``R`` only step 3 is left, otherwise steps 2 and 3. A raw replay is one commit whose
id names the run (``raw-<run id>``): a table that records it is not written again.
Replays of one object are serialised by a lock file beside the raw pages.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from pyiceberg.expressions import BooleanExpression, EqualTo, In, IsNull, NotStartsWith, Or
from pyiceberg.table import Table

from dativo_dagster.config.models import WriteMode
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, StorageError
from dativo_dagster.iceberg.failures import COMMIT_ATTEMPTS, CommitConflict, raise_storage_failure
from dativo_dagster.iceberg.quarantine import commit_quarantine, commit_row_replace
from dativo_dagster.iceberg.writer import PROP_REPLAY_ID as WRITER_REPLAY_ID
from dativo_dagster.iceberg.writer import IcebergWriter, ReplayAlreadyCommitted, WriteResult
from dativo_dagster.raw_pages import read_index, read_page
from dativo_dagster.state import PROP_OBJECT, PROP_RUN_ID, expired_replays
from dativo_dagster.types import CURSOR_FROM_COLUMN, REASON_COLUMN, RUN_ID_COLUMN, ContractEnforcer

log = structlog.get_logger("dativo.replay")

PROP_REPLAY_ID = WRITER_REPLAY_ID
PROP_REPLAYED_FROM = "dativo.replayed-from"
PROP_REPLAY_RUN = "dativo.replay-run"
"""A raw replay: the run whose pages were parsed again."""
PROP_REPLAY_BY = "dativo.replay-by"
PROP_REPLAY_AT = "dativo.replay-at"
PROP_REPLAY_PHASE = "dativo.replay-phase"
"""On the quarantine table's snapshots: ``prepared`` (rows set aside) or ``finished`` (rows removed)."""

PENDING_PREFIX = "replay:"
"""``_dativo_cursor_from`` of quarantine rows set aside for a replay: ``replay:<replay id>``."""

ROW_COLUMN = "_dativo_replay_row"
"""Carried through the enforcer to tell which quarantine row each conforming or failing row is."""

FAULT_ENV = "DATIVO_FAULT_INJECT"
"""Test hook: ``replay_prepared`` or ``replay_committed`` kills the process at that instant
(the writer's ``before_commit``/``after_commit`` work inside the replay's table commit too)."""


def _fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        os._exit(137)  # simulates SIGKILL: no cleanup


@dataclass
class ReplayOutcome:
    """What one replay did (or, with ``dry_run``, would do).

    Attributes:
        replay_id: Its id (``None`` when there was nothing to replay).
        source: ``quarantine`` or ``raw``.
        rows_committed: Rows committed to the table by this replay.
        rows_still_failing: Rows that still violate the contract (left in, or sent to, the quarantine).
        snapshot_id: The table snapshot that holds the replayed rows.
        already_committed: The replay was committed before (nothing was written again).
        finished: Replays a killed process had left half done, completed now (their ids).
        reasons: The most frequent reasons of the rows that still fail, with their counts.
        dry_run: Nothing was written.
        pages: Raw pages that held rows of the object (a raw replay).
        rows_superseded: Conforming rows not committed because the table holds a newer version of their key.
        rows_left_for_next_run: Quarantined rows of runs that committed nothing (a QUAL001 failure, a
            crash): their cursor did not move, so the next run reads them again; never replayed.
    """

    replay_id: str | None
    source: str
    rows_committed: int = 0
    rows_still_failing: int = 0
    snapshot_id: int | None = None
    already_committed: bool = False
    finished: list[str] = field(default_factory=list)
    reasons: list[tuple[str, int]] = field(default_factory=list)
    dry_run: bool = False
    pages: int = 0
    rows_superseded: int = 0
    rows_left_for_next_run: int = 0


def replayable(obj: ObjectPlan) -> ObjectPlan:
    """``obj`` as a replay writes it: a full-refresh object's rows are added (merged on the key when
    it has one), never replacing the table."""
    if obj.write_mode is not WriteMode.OVERWRITE:
        return obj
    mode = WriteMode.MERGE if obj.primary_key else WriteMode.APPEND
    import dataclasses

    return dataclasses.replace(obj, config=obj.config.model_copy(update={"write_mode": mode}))


def committed_run_ids(table: Table | None) -> set[str]:
    """Ids of the runs (and replays) that committed a snapshot in the table's lineage."""
    found: set[str] = set()
    snapshot = table.current_snapshot() if table is not None else None
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_RUN_ID in props:
            found.add(props[PROP_RUN_ID])
        if PROP_REPLAY_ID in props:
            found.add(f"replay-{props[PROP_REPLAY_ID]}")
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None and table is not None else None
    return found


def replay_snapshot(table: Table | None, replay_id: str) -> int | None:
    """The snapshot that committed replay ``replay_id`` (in the table's lineage, or recorded by
    snapshot expiry when it removed it), or None."""
    snapshot = table.current_snapshot() if table is not None else None
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get(PROP_REPLAY_ID) == replay_id and PROP_RUN_ID not in props:
            return snapshot.snapshot_id
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None and table is not None else None
    # Snapshot expiry records the replays whose snapshots it removed.
    return expired_replays(table.metadata.properties).get(replay_id) if table is not None else None


@contextmanager
def object_lock(directory: Path, obj: ObjectPlan) -> Iterator[None]:
    """One replay of an object at a time (on this host): a lock file beside its raw pages.

    Raises:
        ConfigError: CFG001 when another replay of the object holds the lock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".{obj.name}.replay.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"{obj.label}: another replay of this object is running", hint="wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _props(replay_id: str, source: str, by: str, **extra: str) -> dict[str, str]:
    return {PROP_REPLAY_ID: replay_id, PROP_REPLAYED_FROM: source, PROP_REPLAY_BY: by, PROP_REPLAY_AT: _now(), **extra}


def _top_reasons(reasons: list[str], limit: int = 5) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]


# --------------------------------------------------------------------------- quarantine


def text_enforcer(base: ContractEnforcer, production: Table | None, quarantine: pa.Schema) -> ContractEnforcer:
    """The enforcer for quarantined rows: the contract's columns read by their table names (the
    quarantine holds them as text under those names), with the table's lineage columns the
    quarantine holds too, and the row number."""
    lineage = []
    if production is not None:
        for table_field in production.schema().as_arrow():
            if (
                table_field.name.startswith("_dativo_")
                and table_field.name in quarantine.names
                and base.schema.get_field_index(table_field.name) < 0
            ):
                lineage.append(table_field)
    plain = ContractEnforcer(base.schema, {}, base.primary_key)
    return plain.with_lineage([*lineage, pa.field(ROW_COLUMN, pa.int64())])


def _checked(enforcer: ContractEnforcer, rows: pa.Table) -> tuple[pa.Table, dict[int, str]]:
    """The conforming rows (typed, with the row numbers) and, by row number, why the others fail."""
    numbered = rows.append_column(ROW_COLUMN, pa.array(range(rows.num_rows), pa.int64()))
    good: list[pa.RecordBatch] = []
    failing: dict[int, str] = {}
    for batch in numbered.to_batches(max_chunksize=10_000):
        enforced = enforcer.enforce(batch, "replay")
        good.append(enforced.good)
        if enforced.rejected is not None:
            numbers = enforced.rejected.column(ROW_COLUMN).to_pylist()
            reasons = enforced.rejected.column(REASON_COLUMN).to_pylist()
            for number, reason in zip(numbers, reasons, strict=True):
                failing[int(number)] = reason
    return pa.Table.from_batches(good, schema=enforcer.schema), failing


def _without_row_column(rows: pa.Table) -> pa.Table:
    return rows.drop_columns([ROW_COLUMN]) if ROW_COLUMN in rows.column_names else rows


def _read(table: Table, label: str) -> pa.Table:
    try:
        return table.scan().to_arrow()
    except Exception as exc:
        raise_storage_failure(exc, f"reading {label}")
        raise


def _pending(rows: pa.Table) -> pa.Array:
    """Mask of the rows set aside for a replay."""
    if CURSOR_FROM_COLUMN not in rows.column_names:
        return pa.array([False] * rows.num_rows)
    return pc.fill_null(pc.starts_with(rows.column(CURSOR_FROM_COLUMN), PENDING_PREFIX), False)


def _rewrite_quarantine(
    obj: ObjectPlan,
    table: Table,
    label: str,
    condition: BooleanExpression,
    data: pa.Table | None,
    props: dict[str, str],
) -> None:
    """Replace the quarantine rows matching ``condition`` by ``data`` in one commit; a commit that
    loses a race with another writer raises :class:`CommitConflict` (the caller reads again)."""
    # The integrity manifest records the run as the writer's do (tenant, job, object's name).
    run = {
        "run_id": f"replay-{props[PROP_REPLAY_ID]}",
        "tenant": obj.tenant,
        "job": obj.job,
        "object": obj.name,
        "operation": f"replay {props.get(PROP_REPLAY_PHASE, '')}".strip(),
    }
    commit_row_replace(table, table.transaction(), data, condition, props, run, label)


def _equal(column: str, value: str) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg, arg-type]


def _not_pending() -> BooleanExpression:
    return Or(IsNull(CURSOR_FROM_COLUMN), NotStartsWith(CURSOR_FROM_COLUMN, PENDING_PREFIX))  # type: ignore[call-arg, arg-type]


def replay_quarantine(
    obj: ObjectPlan,
    writer: IcebergWriter,
    base: ContractEnforcer,
    *,
    by: str,
    dry_run: bool = False,
    replay_id: str | None = None,
) -> ReplayOutcome:
    """Commit the quarantined rows of ``obj`` that conform to the current contract, exactly once.

    Args:
        obj: The object.
        writer: The writer of the object's target.
        base: The object's current contract (:func:`~dativo_dagster.engine.enforcer_for`).
        by: Who asked (recorded in the snapshots).
        dry_run: Only count what would be committed.
        replay_id: The new replay's id (default: a fresh one).

    Raises:
        StorageError: STG001 when the catalog fails, or other writers kept committing first.
    """
    obj = replayable(obj)
    namespace = obj.namespace
    label = f"{namespace}.{obj.quarantine_table}"
    outcome = ReplayOutcome(replay_id=None, source="quarantine", dry_run=dry_run)
    quarantine = writer.load_table(namespace, obj.quarantine_table)
    if quarantine is None or quarantine.current_snapshot() is None:
        return outcome
    if CURSOR_FROM_COLUMN not in quarantine.schema().column_names:
        raise ConfigError(
            f"{label} predates replays (it has no {CURSOR_FROM_COLUMN} column)",
            hint="run the object once so that its quarantine table is brought up to date",
        )
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return _replay_quarantine_once(obj, writer, base, quarantine, label, by, dry_run, replay_id, outcome)
        except CommitConflict as exc:
            if attempt == COMMIT_ATTEMPTS:
                raise StorageError(
                    f"replaying {label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}"
                ) from None
            log.info("replay_conflict_retried", table=label, attempt=attempt)
            quarantine = quarantine.refresh()
    raise AssertionError("unreachable")  # pragma: no cover


def _replay_quarantine_once(
    obj: ObjectPlan,
    writer: IcebergWriter,
    base: ContractEnforcer,
    quarantine: Table,
    label: str,
    by: str,
    dry_run: bool,
    replay_id: str | None,
    outcome: ReplayOutcome,
) -> ReplayOutcome:
    rows = _read(quarantine, label)
    production = writer.load_table(*obj.table_identifier)
    enforcer = text_enforcer(base, production, quarantine.schema().as_arrow())
    pending = _pending(rows)
    if not dry_run:
        for leftover in sorted(
            {str(v)[len(PENDING_PREFIX) :] for v in rows.filter(pending).column(CURSOR_FROM_COLUMN).to_pylist()}
        ):
            _finish(obj, writer, enforcer, quarantine, label, leftover, by)
            outcome.finished.append(leftover)
            quarantine = quarantine.refresh()
        if outcome.finished:
            rows = _read(quarantine, label)
            pending = _pending(rows)
    waiting = rows.filter(pc.invert(pending))
    # A run that failed (QUAL001, a crash) committed nothing and left its cursor where it was: the
    # next run reads its rows again, so replaying its rejections would load them twice.
    committed = committed_run_ids(production)
    if RUN_ID_COLUMN in waiting.column_names:
        from_committed = pc.fill_null(
            pc.is_in(waiting.column(RUN_ID_COLUMN), value_set=pa.array(sorted(committed), pa.string())), False
        )
        outcome.rows_left_for_next_run = waiting.num_rows - int(pc.sum(from_committed).as_py() or 0)
        waiting = waiting.filter(from_committed)
    if waiting.num_rows == 0:
        return outcome
    good, failing = _checked(enforcer, waiting)
    if dry_run:
        good, outcome.rows_superseded = newer_in_table(obj, production, good)
    outcome.rows_committed = good.num_rows
    outcome.rows_still_failing = len(failing)
    outcome.reasons = _top_reasons(list(failing.values()))
    if dry_run or (good.num_rows == 0 and _same_reasons(waiting, failing)):
        return outcome
    new_id = replay_id or uuid.uuid4().hex[:12]
    outcome.replay_id = new_id
    # Step 1: set the conforming rows aside for this replay, and record the still-failing rows' new reasons.
    marks = [f"{PENDING_PREFIX}{new_id}" if i not in failing else None for i in range(waiting.num_rows)]
    cursor_from = pc.coalesce(pa.array(marks, pa.string()), waiting.column(CURSOR_FROM_COLUMN))
    reasons = [failing.get(i, old) for i, old in enumerate(waiting.column(REASON_COLUMN).to_pylist())]
    prepared = waiting.set_column(
        waiting.schema.get_field_index(CURSOR_FROM_COLUMN), waiting.schema.field(CURSOR_FROM_COLUMN), cursor_from
    )
    prepared = prepared.set_column(
        prepared.schema.get_field_index(REASON_COLUMN),
        prepared.schema.field(REASON_COLUMN),
        pa.array(reasons, prepared.schema.field(REASON_COLUMN).type),
    )
    _rewrite_quarantine(
        obj,
        quarantine,
        label,
        _not_pending(),
        prepared,
        {PROP_OBJECT: obj.label, PROP_REPLAY_ID: new_id, PROP_REPLAY_PHASE: "prepared"},
    )
    _fault_point("replay_prepared")
    # Steps 2 and 3, as a re-run after a kill would do them.
    result, outcome.rows_superseded = _finish(obj, writer, enforcer, quarantine.refresh(), label, new_id, by)
    outcome.snapshot_id = result.snapshot_id if result is not None and result.committed else None
    outcome.rows_committed = result.rows_written if result is not None else 0
    return outcome


def newer_in_table(obj: ObjectPlan, production: Table | None, rows: pa.Table) -> tuple[pa.Table, int]:
    """``rows`` without those the table already holds a newer (or the same) version of, and how many.

    A merge object's key may have been loaded again since its row was quarantined or its page kept:
    replaying the older version would overwrite the newer one. Compared on the cursor column (objects
    with one key column and a cursor; others are returned whole).
    """
    key, cursor = (obj.primary_key[0], obj.cursor_field) if len(obj.primary_key) == 1 else (None, None)
    if (
        obj.write_mode is not WriteMode.MERGE
        or key is None
        or cursor is None
        or production is None
        or production.current_snapshot() is None
        or not rows.num_rows
        or not {key, cursor} <= set(rows.column_names)
        or not {key, cursor} <= set(production.schema().column_names)
    ):
        return rows, 0
    keys = pc.unique(rows.column(key)).to_pylist()
    try:
        existing = production.scan(row_filter=In(key, keys), selected_fields=(key, cursor)).to_arrow()  # type: ignore[call-arg, arg-type]
    except Exception as exc:
        raise_storage_failure(exc, f"reading {'.'.join(production.name())}")
        raise
    latest: dict[Any, Any] = {}
    for k, c in zip(existing.column(key).to_pylist(), existing.column(cursor).to_pylist(), strict=True):
        if c is not None and (k not in latest or c > latest[k]):
            latest[k] = c
    keep = [
        k not in latest or (c is not None and c > latest[k])
        for k, c in zip(rows.column(key).to_pylist(), rows.column(cursor).to_pylist(), strict=True)
    ]
    kept = rows.filter(pa.array(keep, pa.bool_()))
    return kept, rows.num_rows - kept.num_rows


def _same_reasons(rows: pa.Table, failing: dict[int, str]) -> bool:
    return all(rows.column(REASON_COLUMN)[i].as_py() == reason for i, reason in failing.items())


def _finish(
    obj: ObjectPlan,
    writer: IcebergWriter,
    enforcer: ContractEnforcer,
    quarantine: Table,
    label: str,
    replay_id: str,
    by: str,
) -> tuple[WriteResult | None, int]:
    """Steps 2 and 3 of replay ``replay_id``: commit its set-aside rows unless the table already
    records it, then remove them from the quarantine (rows that no longer conform go back to it)."""
    mark = f"{PENDING_PREFIX}{replay_id}"
    rows = _read(quarantine, label)
    rows = rows.filter(pc.fill_null(pc.equal(rows.column(CURSOR_FROM_COLUMN), mark), False))
    good, failing = _checked(enforcer, rows)
    result = None
    production = writer.load_table(*obj.table_identifier)
    good, superseded = newer_in_table(obj, production, good)
    if superseded:
        log.info("replay_rows_superseded", object=obj.label, replay_id=replay_id, rows=superseded)
    if replay_snapshot(production, replay_id) is None and good.num_rows:
        writing = ContractEnforcer(
            pa.schema([f for f in enforcer.schema if f.name != ROW_COLUMN], metadata=enforcer.schema.metadata),
            {},
            enforcer.primary_key,
        )
        try:
            result = writer.write(
                obj,
                iter(_without_row_column(good).to_batches()),
                enforcer=writing,
                run_id=f"replay-{replay_id}",
                previous_cursor=None,
                new_cursor=lambda: None,
                replay_properties=_props(replay_id, "quarantine", by),
            )
            log.info("replay_committed", object=obj.label, replay_id=replay_id, rows=result.rows_written)
        except ReplayAlreadyCommitted:
            # Another process finished this replay first (it found it half done): only step 3 is left.
            log.info("replay_committed_elsewhere", object=obj.label, replay_id=replay_id)
    _fault_point("replay_committed")
    back = None
    if failing:
        back = rows.take(sorted(failing))
        back = back.set_column(
            back.schema.get_field_index(REASON_COLUMN),
            back.schema.field(REASON_COLUMN),
            pa.array([failing[i] for i in sorted(failing)], back.schema.field(REASON_COLUMN).type),
        )
        back = back.set_column(
            back.schema.get_field_index(CURSOR_FROM_COLUMN),
            back.schema.field(CURSOR_FROM_COLUMN),
            pa.array([""] * back.num_rows, pa.string()),
        )
    _rewrite_quarantine(
        obj,
        quarantine,
        label,
        _equal(CURSOR_FROM_COLUMN, mark),
        back,
        {PROP_OBJECT: obj.label, PROP_REPLAY_ID: replay_id, PROP_REPLAY_PHASE: "finished"},
    )
    return result, superseded


# --------------------------------------------------------------------------- raw pages


def raw_replay_id(run_id: str) -> str:
    """The id of the replay of a run's raw pages (one per run: a second replay finds it)."""
    return f"raw-{run_id}"


def replay_raw(
    obj: ObjectPlan,
    writer: IcebergWriter,
    source: Any,
    enforcer: ContractEnforcer,
    directory: Path,
    *,
    by: str,
    dry_run: bool = False,
) -> ReplayOutcome:
    """Parse the raw pages of one run again with the source's current mapping and commit the rows once.

    Args:
        obj: The object.
        writer: The writer of the object's target.
        source: The object's API source (:meth:`~dativo_dagster.api.source.ApiSource.rows_from_page`).
        enforcer: The object's current contract.
        directory: The run's raw pages (:func:`~dativo_dagster.raw_pages.run_dir`).
        by: Who asked.
        dry_run: Only count what would be committed.
    """
    obj = replayable(obj)
    run_id = directory.name
    replay_id = raw_replay_id(run_id)
    outcome = ReplayOutcome(replay_id=replay_id, source="raw", dry_run=dry_run)
    production = writer.load_table(*obj.table_identifier)
    found = replay_snapshot(production, replay_id)
    if found is not None:
        outcome.already_committed = True
        outcome.snapshot_id = found
        return outcome
    batches: list[pa.RecordBatch] = []
    for entry in read_index(directory):
        if not entry.ok:
            continue  # a failed exchange holds no rows (it is kept to show what went wrong)
        batch = source.rows_from_page(obj, read_page(directory, entry))
        if batch is not None and batch.num_rows:
            outcome.pages += 1
            batches.append(batch)
    good: list[pa.RecordBatch] = []
    rejected: list[pa.RecordBatch] = []
    for batch in batches:
        enforced = enforcer.enforce(batch, replay_id)
        if enforced.good.num_rows:
            good.append(enforced.good)
        if enforced.rejected is not None:
            rejected.append(enforced.rejected)
    if good:
        kept, outcome.rows_superseded = newer_in_table(obj, production, pa.Table.from_batches(good))
        good = kept.to_batches()
    outcome.rows_committed = sum(b.num_rows for b in good)
    outcome.rows_still_failing = sum(b.num_rows for b in rejected)
    outcome.reasons = _top_reasons([r for b in rejected for r in b.column(REASON_COLUMN).to_pylist()])
    if dry_run:
        return outcome
    if rejected:
        # Replaces this replay's earlier rejections (same range): a re-run does not repeat them.
        commit_quarantine(writer.tables, obj, enforcer, rejected, replay_id, f"raw:{run_id}")
    if not good:
        return outcome
    try:
        result = writer.write(
            obj,
            iter(good),
            enforcer=enforcer,
            run_id=replay_id,
            previous_cursor=None,
            new_cursor=lambda: None,
            replay_properties=_props(replay_id, "raw", by, **{PROP_REPLAY_RUN: run_id}),
        )
    except ReplayAlreadyCommitted:
        outcome.already_committed = True
        outcome.rows_committed = 0
        outcome.snapshot_id = replay_snapshot(writer.load_table(*obj.table_identifier), replay_id)
        return outcome
    outcome.rows_committed = result.rows_written
    outcome.snapshot_id = result.snapshot_id
    return outcome
