"""Replacing one time window of a table: what a partition run deletes, keeps and adds.

A partition run reads the source rows whose cursor lies in ``[start, end)`` and replaces exactly
that window in one commit. For objects merged on a primary key a row can move between windows
(its ``updated_at`` changed), so replacing a window also looks at the run's keys elsewhere:

* a live row whose cursor lies in the window is removed (the run's rows are the window now, so a
  row deleted at the source, or moved out of the window, leaves it);
* a live row with one of the run's keys and a cursor *before* the window is an older version of a
  row the run read: it is removed too (one row per key);
* a live row with one of the run's keys and a cursor *at or after* the window's end is a newer
  version (an incremental run loaded it after the row was updated): it stays, and the run's older
  copy of that key is dropped from the run's files.

So the result does not depend on the order in which partition runs and incremental runs commit:
the newest version of each key wins, and every window holds what its last partition run read.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Or,
)
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.files import delete_files, rewrite_rows
from dativo_dagster.iceberg.integrity import FileDigests
from dativo_dagster.iceberg.merge import FILTER_PRUNING_MAX_KEYS, MergePlan, TouchedFile, _deleted_positions, key_array
from dativo_dagster.sources.base import TimeWindow
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound, row_filter
from dativo_dagster.state import PROP_CURSOR, CursorState


class WindowRaceError(StorageError):
    """An incremental run committed rows of the window while a partition run was reading it."""


def window_mask(column: pa.Array | pa.ChunkedArray, window: TimeWindow) -> pa.Array:
    """True for rows whose value lies in ``[start, end)`` (False for nulls).

    A date column is compared with the window's local dates (:meth:`TimeWindow.dates`).
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    start, end = window.bounds(pa.types.is_date(column.type))
    after_start = row_filter(column, start, True)
    before_end = pc.invert(row_filter(column, end, True))
    return pc.and_(after_start, before_end)


def before_window(column: pa.Array | pa.ChunkedArray, window: TimeWindow) -> pa.Array:
    """True for rows whose value lies before the window's start, or is null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    start, _ = window.bounds(pa.types.is_date(column.type))
    return pc.invert(row_filter(column, start, True))


def _literal(value: dt.datetime, field_type: Any) -> str:
    if isinstance(field_type, TimestampType):
        return value.replace(tzinfo=None).isoformat()
    return value.isoformat()


def window_expression(table: Table, field: str, window: TimeWindow) -> BooleanExpression:
    """Iceberg row filter of the window (prunes files by their column statistics)."""
    field_type = table.schema().find_field(field).field_type
    if not isinstance(field_type, (DateType, TimestampType, TimestamptzType)):
        return AlwaysTrue()
    if isinstance(field_type, DateType):
        first, after_last = window.dates()
        return And(
            GreaterThanOrEqual(field, first.isoformat()),  # type: ignore[call-arg, arg-type]
            LessThan(field, after_last.isoformat()),  # type: ignore[call-arg, arg-type]
        )
    start, end = window.utc()
    return And(
        GreaterThanOrEqual(field, _literal(start, field_type)),  # type: ignore[call-arg, arg-type]
        LessThan(field, _literal(end, field_type)),  # type: ignore[call-arg, arg-type]
    )


def plan_window_replace(
    table: Table, field: str, window: TimeWindow, incoming: pa.Array | None, key_columns: tuple[str, ...]
) -> tuple[MergePlan, pa.Array | None]:
    """The live rows a window replace removes, and the run's keys a newer live row shadows.

    Args:
        table: The table (its current snapshot).
        field: The cursor column.
        window: The partition window.
        incoming: The run's keys (None: nothing is matched by key).
        key_columns: The primary key.

    Returns:
        The plan (positions to remove per data file) and the keys whose live row is newer than
        the window (the run must not write its copy of them), or None.
    """
    plan = MergePlan()
    if table.current_snapshot() is None or field not in table.schema().column_names:
        return plan, None
    row_filter_expr: BooleanExpression = window_expression(table, field, window)
    keyed = incoming is not None and len(incoming) > 0 and bool(key_columns)
    if keyed:
        assert incoming is not None
        distinct = pc.unique(incoming)
        if (
            len(key_columns) == 1
            and len(distinct) <= FILTER_PRUNING_MAX_KEYS
            and not isinstance(distinct.type, pa.BaseExtensionType)
        ):
            keys_expr = In(key_columns[0], distinct.to_pylist())  # type: ignore[call-arg, arg-type]
            row_filter_expr = Or(row_filter_expr, keys_expr)
        elif len(key_columns) == 1 and (pa.types.is_integer(distinct.type) or pa.types.is_string(distinct.type)):
            # many keys: files whose key bounds cannot hold any of them are skipped
            low, high = (value.as_py() for value in pc.min_max(distinct).values())
            key_range = And(
                GreaterThanOrEqual(key_columns[0], low),  # type: ignore[call-arg, arg-type]
                LessThanOrEqual(key_columns[0], high),  # type: ignore[call-arg, arg-type]
            )
            row_filter_expr = Or(row_filter_expr, key_range)
        else:
            row_filter_expr = AlwaysTrue()
    candidates = list(table.scan(row_filter=row_filter_expr).plan_files())
    columns = list(dict.fromkeys([*key_columns, field])) if keyed else [field]
    io = table.io

    def probe(task: FileScanTask) -> tuple[TouchedFile | None, pa.Array | None]:
        data_file = task.file
        with io.new_input(data_file.file_path).open() as stream:
            data = pq.read_table(stream, columns=columns)
        cursor = data.column(field)
        remove = window_mask(cursor, window)
        shadowed = None
        newer = None
        if keyed:
            hits = pc.is_in(key_array(data, key_columns), value_set=incoming)
            remove = pc.or_(remove, pc.and_(hits, before_window(cursor, window)))
            newer = pc.and_(hits, pc.invert(pc.or_(window_mask(cursor, window), before_window(cursor, window))))
        deleted = _deleted_positions(io, task.delete_files, data_file.file_path)
        if deleted is not None:
            live = pc.invert(pc.is_in(pa.array(range(data.num_rows), pa.int64()), value_set=deleted))
            remove = pc.and_(remove, live)
            if newer is not None:
                newer = pc.and_(newer, live)
        if newer is not None and pc.any(newer).as_py():
            shadowed = pc.filter(key_array(data, key_columns), newer)
        positions = pc.indices_nonzero(remove)
        touched = TouchedFile(task, positions, has_deletes=deleted is not None) if len(positions) else None
        return touched, shadowed

    shadowed_parts: list[pa.Array] = []
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for touched, shadowed in pool.map(probe, candidates):
            if touched is not None:
                plan.touched.append(touched)
                plan.rows_replaced += len(touched.positions)
            if shadowed is not None:
                shadowed_parts.append(shadowed)
    shadowed_keys = pa.chunked_array(shadowed_parts).combine_chunks() if shadowed_parts else None
    return plan, shadowed_keys


def drop_keys(
    table: Table,
    metadata: TableMetadata,
    files: list[DataFile],
    keys: pa.Array,
    key_columns: tuple[str, ...],
    *,
    digests: FileDigests | None = None,
) -> tuple[list[DataFile], int]:
    """The run's (uncommitted) files without the rows of ``keys``; the files rewritten are deleted.

    The SHA-256 of every file written is recorded in ``digests``.

    Returns:
        The files to commit and the number of rows dropped.
    """
    kept: list[DataFile] = []
    dropped = 0
    for data_file in files:
        with table.io.new_input(data_file.file_path).open() as stream:
            data = pq.read_table(stream)
        hits = pc.is_in(key_array(data, key_columns), value_set=keys)
        count = pc.sum(hits).as_py() or 0
        if not count:
            kept.append(data_file)
            continue
        rest = data.filter(pc.invert(hits))
        dropped += count
        kept.extend(rewrite_rows(table, metadata, rest, digests=digests))
        delete_files(table, [data_file.file_path])
    return kept, dropped


def incremental_reach(obj: ObjectPlan, cursor: CursorState | None) -> dt.datetime | None:
    """The earliest cursor value an incremental read from ``cursor`` can load (None: any).

    The incremental read starts at the cursor minus the lookback; naive values are UTC.
    """
    codec = CursorCodec(unit=obj.config.incremental.cursor_unit)
    value, _ = lower_bound(obj.strategy, cursor, obj.config.incremental.lookback_days, codec)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), tzinfo=dt.timezone.utc)
    return None


def check_window_race(
    obj: ObjectPlan,
    window: TimeWindow,
    base_snapshot_id: int | None,
    latest_snapshot_id: int | None,
    base_cursor: CursorState | None,
    label: str,
    committed_since: Sequence[Mapping[str, str]] = (),
) -> None:
    """WindowRaceError if an incremental run committed, since the partition's read began, rows
    that may lie in the window (they may be newer than the partition read, which would delete them).

    An incremental run loads rows from its cursor minus the lookback on: a window ending at or
    before that point cannot be touched by it, so old partitions never wait for the schedule.
    A reset (``dativo run --full-refresh``, ``dativo reset --to``) committed meanwhile moves that
    point back, so the reach is taken from the lowest cursor any commit since the read began
    carries (a null cursor reaches everything).

    Args:
        obj: The object.
        window: The partition window.
        base_snapshot_id: The newest incremental (non-partition) dativo snapshot when the read began.
        latest_snapshot_id: The newest one now.
        base_cursor: The cursor of ``base_snapshot_id``.
        label: The table, for messages.
        committed_since: Summary properties of the incremental dativo snapshots (and resets)
            committed after ``base_snapshot_id`` (see :func:`~dativo_dagster.iceberg.tables.dativo_summaries_since`).
    """
    if latest_snapshot_id == base_snapshot_id:
        return
    reach = incremental_reach(obj, base_cursor)
    for props in committed_since:
        if reach is None:
            break
        raw = props.get(PROP_CURSOR)
        cursor = None
        if raw and raw != "null":
            cursor = CursorState.from_json(raw, where=f"a snapshot of {label}")
        committed_reach = incremental_reach(obj, cursor)
        reach = None if committed_reach is None else min(reach, committed_reach)
    if reach is not None and window.end <= reach:
        return
    raise WindowRaceError(
        f"{obj.label}: an incremental run committed {label} (snapshot {latest_snapshot_id}) while partition "
        f"{window.label} was read, and may have loaded rows of that window; nothing was committed",
        hint="the partition is read again",
    )
