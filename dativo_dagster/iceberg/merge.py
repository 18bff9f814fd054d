"""Upserts on a key: which live rows a run replaces, and how (delete files or rewrites).

A merge must cost what its delta costs. Files whose key bounds cannot hold an incoming key are
skipped using manifest statistics; candidate files are probed on the key columns only. A file
where most rows are replaced (and that has no delete files yet) is rewritten without them
(copy-on-write); elsewhere the replaced positions go to a position-delete file (merge-on-read).
"""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.types import PrimitiveType

from dativo_dagster.compat.pyiceberg import ArrowScan, _read_deletes
from dativo_dagster.iceberg.deletes import write_position_delete_file
from dativo_dagster.iceberg.files import delete_files, rewrite_rows
from dativo_dagster.iceberg.integrity import FileDigests

log = structlog.get_logger("dativo.iceberg")

REWRITE_FRACTION = 0.5
"""A merge rewrites a data file (instead of adding a position-delete file) when it replaces at
least this share of the file's rows and the file has no delete files yet."""

UNCHANGED_CHECK_MAX_ROWS = 200_000
"""Largest merge for which re-read rows are compared with the table to skip a no-op commit."""

ORDER_COLUMN = "__dativo_order"
"""Scratch column ordering duplicate keys by arrival while de-duplicating a run (never stored)."""


def key_array(table_or_batch: pa.Table | pa.RecordBatch, key_columns: tuple[str, ...]) -> pa.Array:
    """One comparable array per row: the key itself, or a joined text key for composite keys."""
    if len(key_columns) == 1:
        column = table_or_batch.column(key_columns[0])
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        return column
    parts = []
    for name in key_columns:
        column = table_or_batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if isinstance(column.type, pa.BaseExtensionType):
            column = column.storage
        parts.append(pc.cast(column, pa.string()))
    return pc.binary_join_element_wise(*parts, "\x1f")


def duplicated_values(values: pa.Array) -> pa.Array:
    """Distinct values occurring more than once, found by sorting (no hash table of every key)."""
    if len(values) < 2:
        return values.slice(0, 0)
    ordered = values.take(pc.sort_indices(values))
    repeats = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    return pc.unique(pc.filter(ordered.slice(1), repeats))


@dataclass
class TouchedFile:
    """A live data file holding rows the merge replaces."""

    task: FileScanTask
    positions: pa.Array  # live row positions (in the data file) that the merge replaces
    has_deletes: bool


@dataclass
class MergePlan:
    """Rows a merge replaces and the files that carry it out (written by :func:`apply_merge`)."""

    touched: list[TouchedFile] = field(default_factory=list)
    rows_replaced: int = 0
    replaced_files: list[DataFile] = field(default_factory=list)
    replacement_files: list[DataFile] = field(default_factory=list)
    delete_files: list[DataFile] = field(default_factory=list)

    def written_files(self) -> list[DataFile]:
        """Files this plan wrote (to delete if its commit does not happen)."""
        return [*self.replacement_files, *self.delete_files]


def dedupe_new_files(
    table: Table,
    metadata: TableMetadata,
    files: list[DataFile],
    all_keys: pa.Array,
    key_columns: tuple[str, ...],
    cursor_field: str | None,
    *,
    digests: FileDigests | None = None,
) -> tuple[list[DataFile], int]:
    """A key read twice in one run (lookback overlap, boundary rows) keeps its latest version.

    Latest means highest cursor value; without a cursor column, the last file written wins.
    Only files holding duplicated keys are rewritten (their digests recorded in ``digests``), so
    the common case costs one ``unique``.

    Returns:
        The run's files after de-duplication and the number of rows dropped.
    """
    duplicated = duplicated_values(all_keys)
    if not len(duplicated):
        return files, 0
    io = table.io
    keep: list[DataFile] = []
    dup_rows: list[pa.Table] = []
    dropped = 0
    for index, data_file in enumerate(files):
        with io.new_input(data_file.file_path).open() as stream:
            data = pq.read_table(stream)
        is_dup = pc.is_in(key_array(data, key_columns), value_set=duplicated)
        if not pc.any(is_dup).as_py():
            keep.append(data_file)
            continue
        order = pc.add(pa.array(range(data.num_rows), pa.int64()), index << 32)
        dups = data.append_column(ORDER_COLUMN, order).filter(is_dup)
        dup_rows.append(dups)
        rest = data.filter(pc.invert(is_dup))
        dropped += dups.num_rows
        keep.extend(rewrite_rows(table, metadata, rest, digests=digests))
        delete_files(table, [data_file.file_path])
    candidates = pa.concat_tables(dup_rows)
    sort_keys = [(cursor_field, "descending")] if cursor_field else []
    sort_keys.append((ORDER_COLUMN, "descending"))
    candidates = candidates.sort_by(sort_keys)
    key_values = key_array(candidates, key_columns)
    # index_in gives the first position of each distinct key within the sorted rows
    positions = pc.index_in(key_values, value_set=key_values)
    first_of_key = pc.equal(positions, pa.array(range(len(key_values)), pa.int32()))
    winners = candidates.filter(first_of_key).drop_columns([ORDER_COLUMN])
    dropped -= winners.num_rows
    keep.extend(rewrite_rows(table, metadata, winners, digests=digests))
    return keep, dropped


FILTER_PRUNING_MAX_KEYS = 1_000
"""Up to this many distinct keys, files are pruned with an ``In`` scan filter (Iceberg evaluates it
against each file's statistics, string prefixes included); beyond, by the keys' min/max."""


def plan_merge(table: Table, incoming: pa.Array, key_columns: tuple[str, ...]) -> MergePlan:
    """Find the live rows an upsert replaces, file by file, reading only the key columns."""
    plan = MergePlan()
    if table.current_snapshot() is None or not len(incoming):
        return plan
    io = table.io
    lower = upper = None
    single_key_field_id = None
    if len(key_columns) == 1:
        distinct = pc.unique(incoming)
        if len(distinct) <= FILTER_PRUNING_MAX_KEYS and not isinstance(distinct.type, pa.BaseExtensionType):
            from pyiceberg.expressions import In

            row_filter = In(key_columns[0], distinct.to_pylist())  # type: ignore[call-arg, arg-type]
            candidates = list(table.scan(row_filter=row_filter).plan_files())
        else:
            lower, upper = pc.min_max(incoming).values()
            single_key_field_id = table.schema().find_field(key_columns[0]).field_id
            candidates = [
                task
                for task in table.scan().plan_files()
                if _may_contain(task.file, single_key_field_id, lower, upper, table)
            ]
    else:
        candidates = list(table.scan().plan_files())

    def probe(task: FileScanTask) -> TouchedFile | None:
        data_file = task.file
        with io.new_input(data_file.file_path).open() as stream:
            keys = pq.read_table(stream, columns=list(key_columns))
        hits = pc.is_in(key_array(keys, key_columns), value_set=incoming)
        if not pc.any(hits).as_py():
            return None
        positions = pc.indices_nonzero(hits)
        deleted = _deleted_positions(io, task.delete_files, data_file.file_path)
        if deleted is not None:
            # a key seen at a position deleted by an earlier merge is an old version
            positions = pc.filter(positions, pc.invert(pc.is_in(positions, value_set=deleted)))
        if not len(positions):
            return None
        return TouchedFile(task, positions, has_deletes=deleted is not None)

    # Files are probed in parallel: Parquet decoding and the set lookup release the GIL.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for touched in pool.map(probe, candidates):
            if touched is not None:
                plan.touched.append(touched)
                plan.rows_replaced += len(touched.positions)
    return plan


def removed_rows(table: Table, plan: MergePlan) -> pa.Table:
    """The live rows a merge would replace (raw file columns, for the no-op check)."""
    parts = []
    for touched in plan.touched:
        with table.io.new_input(touched.task.file.file_path).open() as stream:
            parts.append(pq.read_table(stream).take(touched.positions))
    return pa.concat_tables(parts, promote_options="default")


def apply_merge(table: Table, metadata: TableMetadata, plan: MergePlan, *, digests: FileDigests | None = None) -> None:
    """Turn the plan into rewritten files (dense hits) and position-delete files (sparse hits).

    The SHA-256 of every file written is recorded in ``digests``.
    """
    from pyiceberg.expressions import AlwaysTrue

    full_scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for touched in plan.touched:
        data_file = touched.task.file
        dense = len(touched.positions) >= REWRITE_FRACTION * data_file.record_count
        if dense and not touched.has_deletes:
            data = full_scan.to_table([touched.task])
            keep = pc.invert(pc.is_in(pa.array(range(data.num_rows), pa.int64()), value_set=touched.positions))
            kept = data.filter(keep)
            del data
            plan.replaced_files.append(data_file)
            plan.replacement_files.extend(rewrite_rows(table, metadata, kept, digests=digests))
        else:
            plan.delete_files.append(write_position_delete_file(table, data_file, touched.positions, digests=digests))


def same_rows(incoming: pa.Table, existing: pa.Table, key_columns: tuple[str, ...]) -> bool:
    """True if both tables hold exactly the same rows (compared in key order)."""
    if incoming.num_rows != existing.num_rows or set(incoming.column_names) != set(existing.column_names):
        return False
    try:
        incoming = incoming.select(existing.column_names).cast(existing.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
        return False
    order = [(name, "ascending") for name in key_columns]
    return bool(incoming.sort_by(order).equals(existing.sort_by(order)))


def _deleted_positions(io: Any, delete_files: set[DataFile], file_path: str) -> pa.Array | None:
    """Positions of ``file_path`` already deleted by position-delete files (None if none)."""
    found = []
    for delete_file in delete_files:
        if delete_file.content == DataFileContent.POSITION_DELETES:
            positions = _read_deletes(io, delete_file).get(file_path)
            if positions is not None:
                found.append(positions)
    if not found:
        return None
    return pa.chunked_array([c for p in found for c in p.chunks], pa.int64()).combine_chunks()


def _may_contain(data_file: DataFile, field_id: int, lower: Any, upper: Any, table: Table) -> bool:
    """Manifest bounds check: can this file hold any key in [lower, upper]? (True when unsure.)"""
    from pyiceberg.conversions import from_bytes

    lowers = data_file.lower_bounds or {}
    uppers = data_file.upper_bounds or {}
    if field_id not in lowers or field_id not in uppers:
        return True
    iceberg_type = cast(PrimitiveType, table.schema().find_field(field_id).field_type)
    try:
        file_lower = from_bytes(iceberg_type, lowers[field_id])
        file_upper = from_bytes(iceberg_type, uppers[field_id])
    except (ValueError, TypeError, struct.error, UnicodeDecodeError) as exc:
        # Bounds another engine wrote in a form we do not decode: probe the file instead.
        log.debug("bounds_unreadable", file=data_file.file_path.rsplit("/", 1)[-1], reason=str(exc))
        return True
    low, high = lower.as_py(), upper.as_py()
    if isinstance(file_lower, str) or isinstance(low, str):
        # String bounds may be truncated prefixes; only trust them as a loose range.
        return True
    try:
        return not (file_upper < low or file_lower > high)
    except TypeError:
        return True  # bounds of another type than the keys (a widened column): probe
