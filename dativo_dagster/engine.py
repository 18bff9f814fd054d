"""One run of one object: reconcile the cursor, stream from the source, commit to Iceberg.

This is the code path shared by the Dagster assets and the ``dativo`` CLI. It knows nothing
about Dagster: the caller passes the cursor Dagster last recorded (if any) and turns the
:class:`ObjectResult` into events.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import structlog

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError, UnexpectedError
from dativo_dagster.iceberg.deletes import referenced_data_file
from dativo_dagster.iceberg.tables import read_table_cursor
from dativo_dagster.iceberg.writer import IcebergWriter, WriteResult
from dativo_dagster.logs import log_context
from dativo_dagster.quarantine_view import PREVIEW_ROWS
from dativo_dagster.sources.base import Extraction, ReadRequest, Slice, Source, TimeWindow
from dativo_dagster.state import CursorState, ReconciledCursor, reconcile_cursor
from dativo_dagster.types import ContractEnforcer, check_table_schema

if TYPE_CHECKING:
    from dativo_dagster.resets import ResetRequest

log = structlog.get_logger("dativo.engine")

ARROW_POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_system_allocator_for_arrow() -> None:
    """Allocate Arrow buffers with the C library's allocator, unless ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise.

    A run turns parsed rows (Python objects) into Arrow batches and lets both go batch after batch.
    With Arrow's own pool (mimalloc) the two kinds of memory live in separate heaps that each keep
    what they freed, so the process grew with the pace of the stream: a 70,000-object Stripe load
    peaked at 316-331 MB against 278 MB with the system allocator, and a 2,000,000-row CSV load was
    no slower (benchmarks/api_extract.py, csv_to_iceberg.py).
    """
    if not os.environ.get(ARROW_POOL_ENV):
        pa.set_memory_pool(pa.system_memory_pool())
    _limit_malloc_arenas()


_M_ARENA_MAX = -8  # glibc's mallopt parameter number


def _limit_malloc_arenas() -> None:
    """Two malloc arenas (glibc), unless ``MALLOC_ARENA_MAX`` is set.

    Each thread that contends for the allocator gets an arena of its own (up to eight per core),
    and each arena keeps what its thread freed: page chains, object workers and Dagster's threads
    made the same Stripe load peak 19 MB higher (300 MB against 281 MB with two arenas).
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc (musl, say): it has no arenas to limit
    libc.mallopt(_M_ARENA_MAX, 2)


use_system_allocator_for_arrow()


@dataclass(frozen=True)
class DagsterState:
    """What Dagster last recorded for an asset (from its latest materialization)."""

    cursor: CursorState | None = None
    snapshot_id: int | None = None


@dataclass
class ObjectResult:
    """Outcome of one object in one run."""

    obj: ObjectPlan
    write: WriteResult | None
    reconciled: ReconciledCursor
    source_stats: dict[str, float] = field(default_factory=dict)
    total_rows: int | None = None
    error: DativoError | None = None
    dry_run: bool = False
    duration_s: float = 0.0
    cursor_display: str | None = None
    notes: list[str] = field(default_factory=list)


def enforcer_for(obj: ObjectPlan, source: Source) -> ContractEnforcer:
    """The contract enforcer for ``obj``: its schema contract, else the discovered schema.

    Raises:
        ConfigError: CFG001 naming a column Iceberg cannot hold (checked before any table exists).
    """
    if obj.contract is not None:
        enforcer = ContractEnforcer.for_contract(obj.contract, obj.primary_key)
    else:
        discovered = source.discover_schema(obj)
        required = set(obj.primary_key)
        fields = [f.with_nullable(f.nullable and f.name not in required) for f in discovered]
        enforcer = ContractEnforcer(pa.schema(fields, metadata=discovered.metadata), primary_key=obj.primary_key)
    check_table_schema(enforcer.schema, obj.label)
    return enforcer


def check_limit_allowed(obj: ObjectPlan, source: Source, limit: int) -> None:
    """A row limit must never lose rows: refuse it where stopping early would.

    Raises:
        ConfigError: for a full refresh (the table would be replaced by ``limit`` rows) and for
            sources that do not read in cursor order (rows before the new cursor could be skipped).
    """
    if obj.strategy is Strategy.FULL_REFRESH:
        raise ConfigError(
            f"{obj.label}: a row limit with full_refresh would replace the table with {limit} rows",
            hint="use --dry-run to preview",
        )
    if not source.ordered_by_cursor:
        raise ConfigError(
            f"{obj.label}: source type '{source.type}' does not read in cursor order, so a row limit could skip rows",
            hint="use --dry-run to preview",
        )


def start_cursor(obj: ObjectPlan, writer: IcebergWriter, dagster: DagsterState) -> ReconciledCursor:
    """Reconcile Dagster's record with the table's snapshot history (the table wins)."""
    table = writer.load_table(*obj.table_identifier)
    table_cursor = read_table_cursor(table) if table is not None else None
    # The dativo snapshot this run starts from, whatever the cursor: the commit checks that no
    # other run of the object committed after it.
    base_snapshot_id = table_cursor.snapshot_id if table_cursor is not None else None
    if table_cursor is not None and table_cursor.cursor is not None:
        stored = table_cursor.cursor
        if stored.strategy is not obj.strategy or stored.field != obj.cursor_field:
            log.warning(
                "cursor_strategy_changed",
                stored=f"{stored.strategy.value}:{stored.field}",
                configured=f"{obj.strategy.value}:{obj.cursor_field}",
            )
            table_cursor = None
    initial = None
    initial_value = obj.config.incremental.initial_value
    if initial_value is not None:
        initial = CursorState(strategy=obj.strategy, field=obj.cursor_field, value=initial_value)
    reconciled = reconcile_cursor(
        dagster_cursor=dagster.cursor,
        dagster_snapshot_id=dagster.snapshot_id,
        table=table_cursor,
        table_exists=table is not None,
        initial=initial,
    )
    return dataclasses.replace(reconciled, table_snapshot_id=base_snapshot_id)


def ingest_object(
    obj: ObjectPlan,
    *,
    source: Source,
    writer: IcebergWriter,
    run_id: str,
    dagster: DagsterState | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    reset: ResetRequest | None = None,
    reset_by: str = "dagster",
    window: TimeWindow | None = None,
    root_run_id: str | None = None,
    start: ReconciledCursor | None = None,
) -> ObjectResult:
    """Extract ``obj`` from its committed cursor and commit it, rows and cursor together.

    One commit for the whole read, or, when the source proposes slices (a long API backfill), one
    commit per slice, each carrying its own cursor, so a run killed mid-way resumes at the last
    committed slice.

    With ``reset``, the run first records the reset on the table (once per run and its
    re-executions, which share ``root_run_id``; audited as ``reset_by``; see
    :mod:`~dativo_dagster.resets`) and then loads from there. After a full-refresh
    reset, the first commit replaces the table's rows.

    With ``window`` (a partition run) it reads the rows whose cursor lies in the window instead
    and replaces exactly that window, leaving the cursor where it is
    (:func:`dativo_dagster.partition_run.ingest_window`).

    With ``start`` (a scratch run, :mod:`~dativo_dagster.scratch`) the run starts from that cursor
    instead of the one its table and Dagster record.

    Errors are returned in ``ObjectResult.error`` when they are :class:`DativoError`; anything
    else propagates (an unclassified bug must not look like a handled failure).
    """
    started = time.monotonic()
    with log_context(tenant=obj.tenant, job=obj.job, object=obj.name, run_id=run_id):
        reconciled = ReconciledCursor(None, "none", "not started")
        codec = source.cursor_codec(obj)
        stats: dict[str, float] = {}
        notes: list[str] = []
        try:
            if window is not None and not dry_run:
                from dativo_dagster.partition_run import check_window_allowed, ingest_window

                if reset is not None:
                    raise ConfigError(
                        f"{obj.label}: a reset moves the incremental cursor; a partition run never does",
                        hint="launch the reset without a partition key (or use `dativo reset`)",
                    )
                check_window_allowed(obj, source, limit)
                return ingest_window(
                    obj,
                    source=source,
                    writer=writer,
                    run_id=run_id,
                    dagster=dagster or DagsterState(),
                    window=window,
                    started=started,
                )
            if limit is not None and not dry_run:
                check_limit_allowed(obj, source, limit)
            if reset is not None and not dry_run:
                from dativo_dagster.resets import apply_reset

                applied = apply_reset(obj, writer, codec, reset, by=reset_by, run_id=run_id, root_run_id=root_run_id)
                notes.append(applied.note)
            reconciled = start if start is not None else start_cursor(obj, writer, dagster or DagsterState())
            if limit is not None and not dry_run and reconciled.full_refresh:
                raise ConfigError(
                    f"{obj.label}: a full refresh is pending (reset); a row limit would replace the table with "
                    f"{limit} rows",
                    hint="run without a limit",
                )
            log.info(
                "object_started",
                cursor=reconciled.cursor.display(codec) if reconciled.cursor else None,
                origin=reconciled.origin,
                note=reconciled.note,
            )
            base_enforcer = enforcer_for(obj, source)
            request = ReadRequest(obj=obj, cursor=reconciled.cursor, limit=limit, between=window)
            planned = source.plan_slices(request) if window is None else None
            slices: list[Slice | None] = list(planned) if planned else [None]
            if dry_run:
                return _dry_run(obj, source, request, slices, base_enforcer, reconciled, run_id, started)
            cursor = reconciled.cursor
            base_snapshot_id = reconciled.table_snapshot_id
            # A full-refresh reset: the first commit replaces the table's rows, whatever the write mode.
            replace_table = reconciled.full_refresh
            result: WriteResult | None = None
            # A source streaming from a process that marks its own commit points (a Singer tap's
            # STATE messages) hands over one extraction per checkpoint, each committed before the
            # next is read: a run killed in between resumes from the last committed checkpoint.
            checkpointed = source.read_checkpointed(request) if window is None and not planned else None
            pieces: Iterator[tuple[Slice | None, Extraction | None]] = (
                ((None, ready) for ready in checkpointed)
                if checkpointed is not None
                else ((piece, None) for piece in slices)
            )
            try:
                for number, (piece, ready) in enumerate(pieces, start=1):
                    extraction = ready or source.read(dataclasses.replace(request, cursor=cursor, window=piece))
                    part = _commit_part(
                        obj,
                        writer,
                        extraction,
                        base_enforcer,
                        run_id=run_id,
                        cursor=cursor,
                        base_snapshot_id=base_snapshot_id,
                        replace_table=replace_table,
                        stats=stats,
                        notes=notes,
                    )
                    result = part if result is None else _combined(result, part)
                    cursor = part.cursor
                    if part.committed:
                        base_snapshot_id = part.snapshot_id
                        replace_table = False
                    if piece is not None or checkpointed is not None:
                        counter = "slices" if piece is not None else "checkpoints"
                        stats[counter] = stats.get(counter, 0) + 1
                        log.info(
                            "slice_committed" if piece is not None else "checkpoint_committed",
                            slice=(piece.label if piece is not None else "") or number,
                            of=len(slices) if piece is not None else None,
                            rows=part.rows_written,
                            cursor=cursor.display(codec) if cursor else None,
                        )
            finally:
                if checkpointed is not None:
                    close = getattr(checkpointed, "close", None)
                    if close is not None:
                        close()  # stops the source's process when a commit failed
            if result is None:
                raise UnexpectedError(f"{obj.label}: the source produced no extraction at all")
            total = total_rows(writer, obj)
            log.info(
                "object_finished",
                rows=result.rows_written,
                rejected=result.rows_rejected,
                snapshot_id=result.snapshot_id,
                committed=result.committed,
                cursor=result.cursor.display(codec) if result.cursor else None,
            )
            return ObjectResult(
                obj=obj,
                write=result,
                reconciled=reconciled,
                source_stats=stats,
                total_rows=total,
                duration_s=time.monotonic() - started,
                cursor_display=result.cursor.display(codec) if result.cursor else None,
                notes=notes,
            )
        except DativoError as exc:
            log.error("object_failed", code=exc.code, error=str(exc), error_class=exc.error_class.value)
            return ObjectResult(
                obj=obj,
                write=None,
                reconciled=reconciled,
                error=exc,
                duration_s=time.monotonic() - started,
                source_stats=stats,
                notes=notes,
            )


def _commit_part(
    obj: ObjectPlan,
    writer: IcebergWriter,
    extraction: Extraction,
    base_enforcer: ContractEnforcer,
    *,
    run_id: str,
    cursor: CursorState | None,
    base_snapshot_id: int | None,
    replace_table: bool,
    stats: dict[str, float],
    notes: list[str],
) -> WriteResult:
    """Commit one extraction (the whole read, a slice or a checkpoint) after the ones before it.

    ``replace_table``: this commit replaces the table's rows (the first commit of a full-refresh
    reset); ``base_snapshot_id``: the snapshot the commit must follow (no other run committed since).
    """
    enforcer = base_enforcer.with_lineage(extraction.lineage)
    part = writer.write(
        obj,
        iter(extraction),
        enforcer=enforcer,
        run_id=run_id,
        previous_cursor=cursor,
        new_cursor=extraction.new_cursor,
        keys_unique=extraction.unique_keys,
        replaces=extraction.replaces,
        base_snapshot_id=base_snapshot_id,
        full_refresh=extraction.full_refresh or replace_table,
        source_unchanged=extraction.unchanged and not replace_table,
    )
    _add_stats(stats, extraction.stats.as_metadata())
    notes.extend(n for n in extraction.stats.notes if n not in notes)
    return part


def _add_stats(total: dict[str, float], part: dict[str, float]) -> None:
    for name, value in part.items():
        total[name] = round(total.get(name, 0) + value, 3)


def _combined(first: WriteResult, then: WriteResult) -> WriteResult:
    """Two slices' results as one: counts added, the later snapshot, cursor and schema."""
    return dataclasses.replace(
        then,
        rows_written=first.rows_written + then.rows_written,
        rows_rejected=first.rows_rejected + then.rows_rejected,
        rows_read=first.rows_read + then.rows_read,
        snapshot_id=then.snapshot_id if then.committed else first.snapshot_id,
        committed=first.committed or then.committed,
        data_files=first.data_files + then.data_files,
        bytes_written=first.bytes_written + then.bytes_written,
        rows_replaced=first.rows_replaced + then.rows_replaced,
        files_rewritten=first.files_rewritten + then.files_rewritten,
        delete_files=first.delete_files + then.delete_files,
        schema_changes=first.schema_changes + then.schema_changes,
        quarantine_table=then.quarantine_table or first.quarantine_table,
        quarantine_sample=(first.quarantine_sample + then.quarantine_sample)[:PREVIEW_ROWS],
        duration_s=first.duration_s + then.duration_s,
        commit_attempts=first.commit_attempts + then.commit_attempts,
        integrity_manifest=then.integrity_manifest if then.committed else first.integrity_manifest,
        integrity_files=first.integrity_files + then.integrity_files,
    )


def _dry_run(
    obj: ObjectPlan,
    source: Source,
    request: ReadRequest,
    slices: list[Slice | None],
    base_enforcer: ContractEnforcer,
    reconciled: ReconciledCursor,
    run_id: str,
    started: float,
) -> ObjectResult:
    """Read every slice and enforce the contract, writing nothing: what a run would load."""
    read = rejected = 0
    cursor = reconciled.cursor
    stats: dict[str, float] = {}
    enforcer = base_enforcer
    for window in slices:
        extraction = source.read(dataclasses.replace(request, cursor=cursor, window=window))
        enforcer = base_enforcer.with_lineage(extraction.lineage)
        for batch in extraction:
            enforced = enforcer.enforce(batch, run_id)
            read += batch.num_rows
            rejected += enforced.rejected_rows
        cursor = extraction.new_cursor()
        _add_stats(stats, extraction.stats.as_metadata())
    preview = WriteResult(
        table=".".join(obj.table_identifier),
        rows_written=read - rejected,
        rows_rejected=rejected,
        rows_read=read,
        snapshot_id=None,
        committed=False,
        cursor=cursor,
        schema=enforcer.schema,
    )
    return ObjectResult(
        obj=obj,
        write=preview,
        reconciled=reconciled,
        source_stats=stats,
        dry_run=True,
        duration_s=time.monotonic() - started,
    )


def total_rows(writer: IcebergWriter, obj: ObjectPlan) -> int | None:
    """Live rows in the table: from the snapshot summary, or counted when position deletes exist."""
    table = writer.load_table(*obj.table_identifier)
    snapshot = table.current_snapshot() if table is not None else None
    if table is None or snapshot is None or snapshot.summary is None:
        return 0 if table is not None else None
    summary = snapshot.summary.additional_properties
    if int(summary.get("total-position-deletes", "0")) == 0:
        total = summary.get("total-records")
        return int(total) if total is not None else None
    # total-records still counts rows hidden by position deletes. Each delete file dativo writes
    # names one data file and distinct live positions, so live rows follow from manifests alone;
    # a delete file that spans several data files (another engine's) falls back to counting.
    live = 0
    for task in table.scan().plan_files():
        deleted = 0
        for delete_file in task.delete_files:
            if referenced_data_file(delete_file) != task.file.file_path:
                column = obj.primary_key[0] if obj.primary_key else table.schema().fields[0].name
                reader = table.scan(selected_fields=(column,)).to_arrow_batch_reader()
                return sum(batch.num_rows for batch in reader)
            deleted += delete_file.record_count
        live += task.file.record_count - deleted
    return live
