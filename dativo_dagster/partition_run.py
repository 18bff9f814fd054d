"""One partition run of one object: read its window, replace exactly that window in one commit.

Like :func:`dativo_dagster.engine.ingest_object`, it knows nothing about Dagster. The incremental
cursor is never moved: the commit copies it (see :mod:`dativo_dagster.iceberg.window` for what a
window replace deletes, keeps and adds, and why it does not race the incremental runs).
"""

from __future__ import annotations

import time

import structlog

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.engine import DagsterState, ObjectResult, enforcer_for, start_cursor, total_rows
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.window import WindowRaceError
from dativo_dagster.iceberg.writer import IcebergWriter, WriteResult
from dativo_dagster.sources.base import ReadRequest, Source, TimeWindow

log = structlog.get_logger("dativo.engine")

RACE_ATTEMPTS = 3
"""Reads of a window an incremental run raced (each finding that run committed meanwhile)."""


def check_window_allowed(obj: ObjectPlan, source: Source, limit: int | None) -> None:
    """CFG001 when ``obj`` cannot run a partition (also checked when the configuration loads).

    Raises:
        ConfigError: the source cannot bound a read, the object has no cursor column, or a row
            limit was given (a partial window would replace the whole window).
    """
    if not source.reads_time_windows:
        raise ConfigError(f"{obj.label}: source type '{source.type}' cannot read a partition window")
    if obj.cursor_field is None:
        raise ConfigError(f"{obj.label}: a partitioned object needs a cursor column")
    if limit is not None:
        raise ConfigError(
            f"{obj.label}: a row limit cannot be combined with a partition (the window would be replaced "
            f"by {limit} rows)",
            hint="use --dry-run to preview",
        )


def ingest_window(
    obj: ObjectPlan,
    *,
    source: Source,
    writer: IcebergWriter,
    run_id: str,
    dagster: DagsterState,
    window: TimeWindow,
    started: float,
) -> ObjectResult:
    """Read ``obj``'s rows in ``window`` and replace that window of its table in one commit.

    A run that finds an incremental run committed rows that may lie in the window while it read
    reads the window again (up to :data:`RACE_ATTEMPTS` times), so it never deletes rows newer
    than its read.

    Raises:
        DativoError: as the engine handles them (the caller turns them into the result's error).
    """
    codec = source.cursor_codec(obj)
    base_enforcer = enforcer_for(obj, source)
    for attempt in range(1, RACE_ATTEMPTS + 1):
        reconciled = start_cursor(obj, writer, dagster)
        log.info(
            "object_started",
            window=window.label,
            attempt=attempt,
            cursor=reconciled.cursor.display(codec) if reconciled.cursor else None,
            origin=reconciled.origin,
        )
        request = ReadRequest(obj=obj, cursor=reconciled.cursor, between=window)
        extraction = source.read(request)
        try:
            result: WriteResult = writer.write(
                obj,
                iter(extraction),
                enforcer=base_enforcer.with_lineage(extraction.lineage),
                run_id=run_id,
                previous_cursor=reconciled.cursor,
                new_cursor=extraction.new_cursor,
                keys_unique=extraction.unique_keys,
                base_snapshot_id=reconciled.table_snapshot_id,
                window=window,
            )
        except WindowRaceError as exc:
            extraction.close()
            if attempt == RACE_ATTEMPTS:
                raise
            log.info("partition_raced", window=window.label, reason=exc.message)
            continue
        log.info(
            "object_finished",
            window=window.label,
            rows=result.rows_written,
            replaced=result.rows_replaced,
            rejected=result.rows_rejected,
            snapshot_id=result.snapshot_id,
            committed=result.committed,
            cursor=result.cursor.display(codec) if result.cursor else None,
        )
        return ObjectResult(
            obj=obj,
            write=result,
            reconciled=reconciled,
            source_stats=dict(extraction.stats.as_metadata()),
            total_rows=total_rows(writer, obj),
            duration_s=time.monotonic() - started,
            cursor_display=result.cursor.display(codec) if result.cursor else None,
            notes=list(extraction.stats.notes),
        )
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
