"""The streaming, exactly-once Iceberg writer.

One run of one object becomes exactly one Iceberg commit on the object's table, whose snapshot
summary carries the new cursor and the run id. Data files are written while the source streams
(bounded memory); nothing is visible to readers until that single commit, and a run that dies
before it leaves only unreferenced files (cleaned up when the failure is seen in-process).

Write modes:

* ``append``    fast-append the new files.
* ``overwrite`` one OVERWRITE snapshot that removes every live file and adds the new ones, so a
  reader sees the old table or the new one, never an empty or half table.
* ``merge``     upsert on the primary key: rows of this run replace rows with the same key. Files
  whose key range cannot contain an incoming key are skipped using manifest bounds; candidate
  files are probed on the key columns only. Replaced rows are dropped with Iceberg v2
  position-delete files (merge-on-read, cost follows the delta), or by rewriting the file when
  most of its rows are replaced (copy-on-write).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.snapshots import Operation
from pyiceberg.types import PrimitiveType

from dativo_dagster.config.models import WriteMode
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import DativoError, QualityError, StorageError
from dativo_dagster.iceberg.deletes import MergeOnReadOverwrite, write_position_delete_file
from dativo_dagster.iceberg.schema import apply_schema_changes, plan_schema_changes
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_CURSOR_FIELD,
    PROP_OBJECT,
    PROP_ROWS,
    PROP_RUN_ID,
    PROP_STRATEGY,
    CursorState,
    TableCursor,
    check_forward,
)
from dativo_dagster.types import ContractEnforcer, EnforcedBatch

log = structlog.get_logger("dativo.iceberg")

FAULT_ENV = "DATIVO_FAULT_INJECT"
"""Test hook: ``before_commit`` or ``after_commit`` kills the process at that instant."""

DEFAULT_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "write.parquet.compression-level": "1",
}


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


def read_table_cursor(table: Table) -> TableCursor | None:
    """Latest dativo cursor recorded in the table's snapshot lineage (current snapshot backwards)."""
    snapshot = table.current_snapshot()
    ancestors: list[int] = []
    found = None
    while snapshot is not None:
        ancestors.append(snapshot.snapshot_id)
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if found is None and PROP_RUN_ID in props:
            found = (snapshot, props)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    if found is None:
        return None
    snap, props = found
    raw = props.get(PROP_CURSOR)
    cursor = None
    if raw and raw != "null":
        cursor = CursorState.from_json(raw, where=f"snapshot {snap.snapshot_id} of {'.'.join(table.name())}")
    return TableCursor(
        cursor=cursor,
        snapshot_id=snap.snapshot_id,
        run_id=props.get(PROP_RUN_ID),
        ancestor_ids=frozenset(ancestors),
    )


def _key_array(table_or_batch: pa.Table | pa.RecordBatch, key_columns: tuple[str, ...]) -> pa.Array:
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
        self.table_properties = {**DEFAULT_TABLE_PROPERTIES, **(table_properties or {})}
        self.target_file_rows = target_file_rows
        self._create_lock = threading.Lock()

    # ------------------------------------------------------------------ tables

    def load_table(self, namespace: str, name: str) -> Table | None:
        """The table, or None if it does not exist."""
        try:
            return self.catalog.load_table((namespace, name))
        except NoSuchTableError:
            return None
        except Exception as exc:
            raise StorageError(f"cannot load table {namespace}.{name}: {type(exc).__name__}: {exc}") from None

    def ensure_table(self, namespace: str, name: str, schema: pa.Schema) -> Table:
        """Load the table or create it (and its namespace) from ``schema``."""
        table = self.load_table(namespace, name)
        if table is not None:
            return table
        # Objects of one job run in threads; creating the shared namespace must not race.
        with self._create_lock:
            try:
                self.catalog.create_namespace_if_not_exists(namespace)
                return self.catalog.create_table_if_not_exists(
                    (namespace, name), schema=schema, properties=self.table_properties
                )
            except Exception as exc:
                raise StorageError(
                    f"cannot create table {namespace}.{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
                ) from None

    # ------------------------------------------------------------------ write

    def write(
        self,
        obj: ObjectPlan,
        batches: Iterator[pa.RecordBatch],
        *,
        enforcer: ContractEnforcer,
        run_id: str,
        previous_cursor: CursorState | None,
        new_cursor: Any,
        keys_unique: bool = False,
        replaces: tuple[str, Any] | None = None,
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

        Raises:
            QualityError: QUAL001 when the rejected-row rate exceeds the object's threshold.
            StorageError: STG001 when the catalog or file IO fails.
        """
        started = time.monotonic()
        namespace, name = obj.table_identifier
        label = f"{namespace}.{name}"
        target_schema = enforcer.schema
        table = self.ensure_table(namespace, name, target_schema)
        changes = plan_schema_changes(table.schema().as_arrow(), target_schema, table=label)
        txn = table.transaction()
        if changes:
            with txn.update_schema() as update:
                apply_schema_changes(update, changes)

        stats = _StreamStats()
        quarantine: list[pa.RecordBatch] = []
        merge_keys: list[pa.Array] = []
        is_merge = obj.write_mode is WriteMode.MERGE
        # Keys are kept (8 bytes a row for an integer key) only when something will use them:
        # replacing rows already in the table, or de-duplicating a stream that may repeat keys.
        collect_keys = is_merge and (table.current_snapshot() is not None or not keys_unique)

        def conforming() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                stats.read += batch.num_rows
                enforced: EnforcedBatch = enforcer.enforce(batch, run_id)
                if enforced.rejected is not None:
                    stats.rejected += enforced.rejected_rows
                    quarantine.append(enforced.rejected)
                good = enforced.good
                if good.num_rows:
                    stats.written += good.num_rows
                    if collect_keys:
                        merge_keys.append(_key_array(good, obj.primary_key))
                    yield good

        new_files: list[DataFile] = []
        replacement_files: list[DataFile] = []
        delete_files: list[DataFile] = []
        try:
            new_files = self._write_files(table, txn, target_schema, conforming())
            cursor = new_cursor()
            check_forward(previous_cursor, cursor, label=obj.label)
            quarantine_name = None
            if quarantine:
                quarantine_name = self._commit_quarantine(obj, enforcer, quarantine, run_id)
            if stats.read and stats.rejected / stats.read > obj.max_rejected_rate:
                raise QualityError(
                    f"{obj.label}: {stats.rejected} of {stats.read} rows ({stats.rejected / stats.read:.1%}) "
                    f"violate the contract, above the {obj.max_rejected_rate:.1%} threshold; nothing was "
                    f"committed to {label}",
                    hint=f"inspect {namespace}.{obj.quarantine_table} (column _dativo_reason)",
                )

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
                )

            unchanged = (
                stats.written == 0
                and not changes
                and obj.write_mode is not WriteMode.OVERWRITE
                and (cursor == previous_cursor)
            )
            if unchanged:
                return nothing_committed()
            merge = _MergePlan()
            if is_merge and merge_keys:
                all_keys = pa.chunked_array(merge_keys).combine_chunks()
                merge_keys.clear()
                if not keys_unique:
                    new_files, dropped = self._dedupe_new_files(
                        table, txn, new_files, all_keys, obj.primary_key, obj.cursor_field
                    )
                    stats.written -= dropped
                if table.current_snapshot() is not None:
                    merge = self._plan_merge(txn, table, all_keys, obj.primary_key)
                del all_keys
                if (
                    merge.rows_replaced == stats.written
                    and stats.written <= UNCHANGED_CHECK_MAX_ROWS
                    and cursor == previous_cursor
                    and not changes
                    and _same_rows(_read_files(table, new_files), self._removed_rows(table, merge), obj.primary_key)
                ):
                    # A lookback window re-read rows that are already there, unchanged: committing
                    # would only add a snapshot that replaces rows with identical copies.
                    self._delete_uncommitted(table, new_files)
                    return nothing_committed()
                self._apply_merge(txn, table, merge)
                replacement_files = merge.replacement_files
                delete_files = merge.delete_files
            elif replaces is not None:
                # Rows of sources re-read this run (a changed file) replace their earlier rows.
                column, replaced_values = replaces
                values = list(replaced_values())
                if values and table.current_snapshot() is not None and column in table.schema().column_names:
                    merge = self._plan_merge(txn, table, pa.array(values, pa.string()), (column,))
                    self._apply_merge(txn, table, merge)
                    replacement_files = merge.replacement_files
                    delete_files = merge.delete_files
            props = {
                PROP_RUN_ID: run_id,
                PROP_OBJECT: obj.label,
                PROP_STRATEGY: obj.strategy.value,
                PROP_CURSOR_FIELD: obj.cursor_field or "",
                PROP_CURSOR: cursor.to_json() if cursor else "null",
                PROP_ROWS: str(stats.written),
            }
            snapshot_id = self._commit(
                txn,
                table,
                obj.write_mode,
                new_files + replacement_files,
                merge.replaced_files,
                delete_files,
                props,
                label,
            )
        except BaseException:
            self._delete_uncommitted(table, new_files + replacement_files + delete_files)
            raise
        return WriteResult(
            table=label,
            rows_written=stats.written,
            rows_rejected=stats.rejected,
            rows_read=stats.read,
            snapshot_id=snapshot_id,
            committed=True,
            cursor=cursor,
            data_files=len(new_files),
            bytes_written=sum(f.file_size_in_bytes for f in new_files + replacement_files + delete_files),
            rows_replaced=merge.rows_replaced,
            files_rewritten=len(merge.replaced_files),
            delete_files=len(delete_files),
            schema_changes=[f"{c.kind.value} {c.column} {c.detail}".strip() for c in changes],
            quarantine_table=quarantine_name,
            duration_s=time.monotonic() - started,
            schema=target_schema,
        )

    def _write_files(
        self, table: Table, txn: Transaction, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> list[DataFile]:
        """Stream batches into Parquet data files, rolling a new file every ``target_file_rows`` rows.

        Each batch is written as it arrives (one row group per batch), so memory holds one batch
        and the Parquet writer's buffers — never a whole file, let alone the table.
        """
        files: list[DataFile] = []
        writer = _RollingParquetWriter(table, txn, schema, self.target_file_rows)
        try:
            for batch in batches:
                for closed in writer.write(batch):
                    files.append(closed)
                    log.info("rows_staged", rows=closed.record_count, files=len(files))
            last = writer.close()
            if last is not None:
                files.append(last)
                log.info("rows_staged", rows=last.record_count, files=len(files))
        except DativoError:
            writer.abort()
            self._delete_uncommitted(table, files)
            raise
        except Exception as exc:
            writer.abort()
            self._delete_uncommitted(table, files)
            if isinstance(exc, (OSError, pa.ArrowException)):
                raise StorageError(f"writing data files failed: {type(exc).__name__}: {exc}") from None
            raise
        except BaseException:
            writer.abort()
            self._delete_uncommitted(table, files)
            raise
        return files

    def _dedupe_new_files(
        self,
        table: Table,
        txn: Transaction,
        files: list[DataFile],
        all_keys: pa.Array,
        key_columns: tuple[str, ...],
        cursor_field: str | None,
    ) -> tuple[list[DataFile], int]:
        """A key read twice in one run (lookback overlap, boundary rows) keeps its latest version.

        Latest means highest cursor value; without a cursor column, the last file written wins.
        Only files holding duplicated keys are rewritten, so the common case costs one ``unique``.
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
            is_dup = pc.is_in(_key_array(data, key_columns), value_set=duplicated)
            if not pc.any(is_dup).as_py():
                keep.append(data_file)
                continue
            order = pc.add(pa.array(range(data.num_rows), pa.int64()), index << 32)
            dups = data.append_column("__dativo_order", order).filter(is_dup)
            dup_rows.append(dups)
            rest = data.filter(pc.invert(is_dup))
            dropped += dups.num_rows
            if rest.num_rows:
                keep.extend(_dataframe_to_data_files(txn.table_metadata, rest, io))
            io.delete(data_file.file_path)
        candidates = pa.concat_tables(dup_rows)
        sort_keys = [(cursor_field, "descending")] if cursor_field else []
        sort_keys.append(("__dativo_order", "descending"))
        candidates = candidates.sort_by(sort_keys)
        key_values = _key_array(candidates, key_columns)
        # index_in gives the first position of each distinct key within the sorted rows
        positions = pc.index_in(key_values, value_set=key_values)
        first_of_key = pc.equal(positions, pa.array(range(len(key_values)), pa.int32()))
        winners = candidates.filter(first_of_key).drop_columns(["__dativo_order"])
        dropped -= winners.num_rows
        keep.extend(_dataframe_to_data_files(txn.table_metadata, winners, io))
        return keep, dropped

    def _plan_merge(
        self,
        txn: Transaction,
        table: Table,
        incoming: pa.Array,
        key_columns: tuple[str, ...],
    ) -> _MergePlan:
        """Find the live rows an upsert replaces, file by file, reading only the key columns.

        Files whose key bounds cannot hold an incoming key are skipped. A file where most rows
        are replaced (and that has no delete files yet) is rewritten without them; elsewhere the
        replaced positions go to a position-delete file, so cost follows the delta.
        """
        plan = _MergePlan()
        if table.current_snapshot() is None or not len(incoming):
            return plan
        io = table.io
        lower = upper = None
        single_key_field_id = None
        if len(key_columns) == 1:
            lower, upper = pc.min_max(incoming).values()
            single_key_field_id = table.schema().find_field(key_columns[0]).field_id
        candidates = [
            task
            for task in table.scan().plan_files()
            if single_key_field_id is None or _may_contain(task.file, single_key_field_id, lower, upper, table)
        ]

        def probe(task: FileScanTask) -> _TouchedFile | None:
            data_file = task.file
            with io.new_input(data_file.file_path).open() as stream:
                keys = pq.read_table(stream, columns=list(key_columns))
            hits = pc.is_in(_key_array(keys, key_columns), value_set=incoming)
            if not pc.any(hits).as_py():
                return None
            positions = pc.indices_nonzero(hits)
            deleted = _deleted_positions(io, task.delete_files, data_file.file_path)
            if deleted is not None:
                # a key seen at a position deleted by an earlier merge is an old version
                positions = pc.filter(positions, pc.invert(pc.is_in(positions, value_set=deleted)))
            if not len(positions):
                return None
            return _TouchedFile(task, positions, has_deletes=deleted is not None)

        # Files are probed in parallel: Parquet decoding and the set lookup release the GIL.
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for touched in pool.map(probe, candidates):
                if touched is not None:
                    plan.touched.append(touched)
                    plan.rows_replaced += len(touched.positions)
        return plan

    def _removed_rows(self, table: Table, plan: _MergePlan) -> pa.Table:
        """The live rows a merge would replace (raw file columns, for the no-op check)."""
        parts = []
        for touched in plan.touched:
            with table.io.new_input(touched.task.file.file_path).open() as stream:
                parts.append(pq.read_table(stream).take(touched.positions))
        return pa.concat_tables(parts, promote_options="default")

    def _apply_merge(self, txn: Transaction, table: Table, plan: _MergePlan) -> None:
        """Turn the plan into rewritten files (dense hits) and position-delete files (sparse hits)."""
        from pyiceberg.expressions import AlwaysTrue
        from pyiceberg.io.pyarrow import ArrowScan

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
                if kept.num_rows:
                    plan.replacement_files.extend(_dataframe_to_data_files(txn.table_metadata, kept, table.io))
            else:
                plan.delete_files.append(write_position_delete_file(table, data_file, touched.positions))

    def _commit(
        self,
        txn: Transaction,
        table: Table,
        mode: WriteMode,
        add: list[DataFile],
        remove: list[DataFile],
        deletes: list[DataFile],
        props: dict[str, str],
        label: str,
    ) -> int | None:
        try:
            if mode is WriteMode.OVERWRITE:
                remove = [task.file for task in table.scan().plan_files()] if table.current_snapshot() else []
            if deletes:
                producer = MergeOnReadOverwrite(
                    operation=Operation.OVERWRITE, transaction=txn, io=table.io, snapshot_properties=props
                )
                with producer:
                    for data_file in remove:
                        producer.delete_data_file(data_file)
                    for data_file in add:
                        producer.append_data_file(data_file)
                    for delete_file in deletes:
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
            committed = txn.commit_transaction()
            _fault_point("after_commit")
        except CommitFailedException as exc:
            raise StorageError(f"commit to {label} conflicted with another writer: {exc}") from None
        except DativoError:
            raise
        except Exception as exc:
            raise StorageError(f"commit to {label} failed: {type(exc).__name__}: {exc}") from None
        snapshot = committed.current_snapshot()
        return snapshot.snapshot_id if snapshot else None

    def _commit_quarantine(
        self, obj: ObjectPlan, enforcer: ContractEnforcer, batches: list[pa.RecordBatch], run_id: str
    ) -> str:
        """Append rejected rows to ``<table>__quarantine`` (committed before the main table)."""
        namespace = obj.namespace
        name = obj.quarantine_table
        schema = enforcer.quarantine_schema()
        table = self.ensure_table(namespace, name, schema)
        data = pa.Table.from_batches(batches, schema=schema)
        try:
            with table.transaction() as txn:
                changes = plan_schema_changes(table.schema().as_arrow(), schema, table=f"{namespace}.{name}")
                if changes:
                    with txn.update_schema() as update:
                        apply_schema_changes(update, changes)
                txn.append(data, snapshot_properties={PROP_RUN_ID: run_id, PROP_OBJECT: obj.label})
        except DativoError:
            raise
        except Exception as exc:
            raise StorageError(f"writing quarantine rows to {namespace}.{name} failed: {exc}") from None
        return f"{namespace}.{name}"

    @staticmethod
    def _delete_uncommitted(table: Table, files: list[DataFile]) -> None:
        for data_file in files:
            # Best effort: a file we fail to delete is an unreferenced orphan, never visible data.
            with contextlib.suppress(Exception):
                table.io.delete(data_file.file_path)


ROW_GROUP_ROWS = 131_072
"""Rows gathered into one Parquet row group before it is written."""

DICTIONARY_MAX_DISTINCT = 0.1
"""A flat column is dictionary-encoded when its first row group has at most this share of distinct
values. Dictionary-encoding a near-unique column (ids, timestamps, e-mails) costs about 4x the
encoding time and yields larger files than plain encoding plus zstd."""

DICTIONARY_MIN_ROWS = 1_000
"""Below this many rows in the first row group there is too little to judge: keep the default."""

DICTIONARY_SAMPLE_ROWS = 32_768
"""Rows of the first row group whose distinct values are counted (counting is a hash per value)."""


def dictionary_columns(data: pa.Table) -> list[str] | None:
    """Parquet column paths worth dictionary-encoding, judged from ``data`` (None: all columns).

    Flat columns are chosen by their share of distinct values; nested columns keep dictionary
    encoding for every leaf.
    """
    if data.num_rows < DICTIONARY_MIN_ROWS:
        return None
    sample = data.slice(0, DICTIONARY_SAMPLE_ROWS)
    chosen: list[str] = []
    for data_field, column in zip(sample.schema, sample.columns, strict=True):
        if pa.types.is_nested(data_field.type):
            chosen.extend(_leaf_paths(data_field.name, data_field.type))
            continue
        values = column.combine_chunks()
        if isinstance(values.type, pa.BaseExtensionType):
            values = values.storage
        if pc.count_distinct(values).as_py() <= DICTIONARY_MAX_DISTINCT * sample.num_rows:
            chosen.append(data_field.name)
    return chosen


def _leaf_paths(prefix: str, data_type: pa.DataType) -> list[str]:
    """Parquet leaf column paths of a nested Arrow type (pyarrow's compliant nested naming)."""
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type) or pa.types.is_fixed_size_list(data_type):
        return _leaf_paths(f"{prefix}.list.element", data_type.value_type)
    if pa.types.is_map(data_type):
        return _leaf_paths(f"{prefix}.key_value.key", data_type.key_type) + _leaf_paths(
            f"{prefix}.key_value.value", data_type.item_type
        )
    if pa.types.is_struct(data_type):
        return [path for child in data_type for path in _leaf_paths(f"{prefix}.{child.name}", child.type)]
    return [prefix]


_UNDECIDED = object()


class _RollingParquetWriter:
    """Writes batches to Parquet data files of the table, one row group per batch."""

    def __init__(self, table: Table, txn: Transaction, schema: pa.Schema, target_rows: int) -> None:
        from pyiceberg.io.fileformat import FileFormatFactory
        from pyiceberg.io.pyarrow import pyarrow_to_schema
        from pyiceberg.manifest import FileFormat
        from pyiceberg.table.locations import load_location_provider

        self._table = table
        self._metadata = txn.table_metadata
        self._file_schema = self._metadata.schema()
        self._task_schema = pyarrow_to_schema(
            schema, name_mapping=self._file_schema.name_mapping, format_version=self._metadata.format_version
        )
        self._locations = load_location_provider(self._metadata.location, self._metadata.properties)
        self._target_rows = target_rows
        self._format_model = FileFormatFactory.get(FileFormat.PARQUET)
        self._write_uuid = uuid.uuid4()
        self._counter = itertools.count(0)
        self._current: Any = None
        self._output: Any = None
        self._path = ""
        self._rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._open_paths: list[str] = []
        self._dictionary: Any = _UNDECIDED

    def _open(self) -> None:
        from pyiceberg.io.pyarrow import ParquetFormatWriter

        name = f"00000-{next(self._counter)}-{self._write_uuid}.parquet"
        self._path = self._locations.new_data_location(name)
        self._output = self._table.io.new_output(self._path)
        self._current = ParquetFormatWriter(self._output, self._file_schema, self._metadata.properties)
        self._open_paths.append(self._path)
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> list[DataFile]:
        """Buffer one batch (split at file boundaries); returns the files it completed.

        Batches are gathered into row groups of about ``ROW_GROUP_ROWS`` rows: small row groups
        make Parquet slow to read, large ones cost memory.
        """
        from pyiceberg.io.pyarrow import _to_requested_schema

        finished: list[DataFile] = []
        while batch.num_rows:
            if self._current is None:
                self._open()
            take = min(batch.num_rows, self._target_rows - self._rows - self._pending_rows)
            part = batch.slice(0, take) if take < batch.num_rows else batch
            self._pending.append(
                _to_requested_schema(
                    requested_schema=self._file_schema,
                    file_schema=self._task_schema,
                    batch=part,
                    include_field_ids=True,
                    format_model=self._format_model,
                )
            )
            self._pending_rows += take
            batch = batch.slice(take)
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()
            if self._rows + self._pending_rows >= self._target_rows:
                done = self.close()
                if done is not None:
                    finished.append(done)
        return finished

    def _flush(self) -> None:
        if self._pending:
            data = pa.Table.from_batches(self._pending)
            if self._dictionary is _UNDECIDED:
                # Decided once per write from the first row group, so every file of it agrees.
                self._dictionary = dictionary_columns(data)
            if self._dictionary is not None and not self._rows:
                # ParquetFormatWriter opens its pyarrow writer on the first write, with these kwargs.
                self._current._parquet_writer_kwargs["use_dictionary"] = self._dictionary
            self._current.write(data)
            self._rows += self._pending_rows
            self._pending = []
            self._pending_rows = 0

    def close(self) -> DataFile | None:
        """Finish the open file and describe it (None if no file is open)."""
        from pyiceberg.manifest import FileFormat
        from pyiceberg.typedef import Record

        if self._current is None:
            return None
        self._flush()
        statistics = self._current.close()
        data_file = DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self._path,
            file_format=FileFormat.PARQUET,
            partition=Record(),
            file_size_in_bytes=len(self._output),
            sort_order_id=None,
            spec_id=self._metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )
        self._current = None
        self._rows = 0
        self._open_paths.remove(self._path)
        return data_file

    def abort(self) -> None:
        """Drop a half-written file."""
        for path in self._open_paths:
            with contextlib.suppress(Exception):
                self._table.io.delete(path)
        self._open_paths.clear()
        self._pending = []
        self._current = None


@dataclass
class _TouchedFile:
    task: FileScanTask
    positions: pa.Array  # live row positions (in the data file) that the merge replaces
    has_deletes: bool


@dataclass
class _MergePlan:
    touched: list[_TouchedFile] = field(default_factory=list)
    rows_replaced: int = 0
    replaced_files: list[DataFile] = field(default_factory=list)
    replacement_files: list[DataFile] = field(default_factory=list)
    delete_files: list[DataFile] = field(default_factory=list)


def duplicated_values(values: pa.Array) -> pa.Array:
    """Distinct values occurring more than once, found by sorting (no hash table of every key)."""
    if len(values) < 2:
        return values.slice(0, 0)
    ordered = values.take(pc.sort_indices(values))
    repeats = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    return pc.unique(pc.filter(ordered.slice(1), repeats))


def _deleted_positions(io: Any, delete_files: set[DataFile], file_path: str) -> pa.Array | None:
    """Positions of ``file_path`` already deleted by position-delete files (None if none)."""
    from pyiceberg.io.pyarrow import _read_deletes

    found = []
    for delete_file in delete_files:
        if delete_file.content == DataFileContent.POSITION_DELETES:
            positions = _read_deletes(io, delete_file).get(file_path)
            if positions is not None:
                found.append(positions)
    if not found:
        return None
    return pa.chunked_array([c for p in found for c in p.chunks], pa.int64()).combine_chunks()


@dataclass
class _StreamStats:
    read: int = 0
    written: int = 0
    rejected: int = 0


REWRITE_FRACTION = 0.5
"""A merge rewrites a data file (instead of adding a position-delete file) when it replaces at
least this share of the file's rows and the file has no delete files yet."""

UNCHANGED_CHECK_MAX_ROWS = 200_000
"""Largest merge for which re-read rows are compared with the table to skip a no-op commit."""


def _read_files(table: Table, files: list[DataFile]) -> pa.Table:
    parts = []
    for data_file in files:
        with table.io.new_input(data_file.file_path).open() as stream:
            parts.append(pq.read_table(stream))
    return pa.concat_tables(parts) if parts else pa.table({})


def _same_rows(incoming: pa.Table, existing: pa.Table, key_columns: tuple[str, ...]) -> bool:
    """True if both tables hold exactly the same rows (compared in key order)."""
    if incoming.num_rows != existing.num_rows or set(incoming.column_names) != set(existing.column_names):
        return False
    try:
        incoming = incoming.select(existing.column_names).cast(existing.schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError):
        return False
    order = [(name, "ascending") for name in key_columns]
    return bool(incoming.sort_by(order).equals(existing.sort_by(order)))


def _may_contain(data_file: DataFile, field_id: int, lower: Any, upper: Any, table: Table) -> bool:
    """Manifest bounds check: can this file hold any key in [lower, upper]?"""
    from pyiceberg.conversions import from_bytes

    lowers = data_file.lower_bounds or {}
    uppers = data_file.upper_bounds or {}
    if field_id not in lowers or field_id not in uppers:
        return True
    iceberg_type = cast(PrimitiveType, table.schema().find_field(field_id).field_type)
    try:
        file_lower = from_bytes(iceberg_type, lowers[field_id])
        file_upper = from_bytes(iceberg_type, uppers[field_id])
        low, high = lower.as_py(), upper.as_py()
        if isinstance(file_lower, str) or isinstance(low, str):
            # String bounds may be truncated prefixes; only trust them as a loose range.
            return True
        return not (file_upper < low or file_lower > high)
    except Exception:
        return True
