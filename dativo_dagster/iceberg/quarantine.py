"""Rejected rows, kept exactly once in ``<table>__quarantine``.

A run's rejected rows are committed before its main commit (so a QUAL001 run still shows the
operator why it failed). If that run then fails or is retried, the retry reads the same range
again and rejects the same rows: a plain append would repeat them on every attempt. Instead each
quarantine commit *replaces* the rows an earlier attempt of the same range left (rows with the
same ``_dativo_cursor_from``) and, for objects with a primary key, the earlier rejections of the
same keys (a lookback window re-reading a row that is still bad), in one overwrite.

Quarantine files are written like the object's own (:func:`commit_row_replace`): through the
hashing writer, with an integrity manifest named by the snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In, Or
from pyiceberg.expressions.visitors import bind
from pyiceberg.io.pyarrow import expression_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from dativo_dagster.compat.pyiceberg import ArrowScan
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.commits import CommitAttempt
from dativo_dagster.iceberg.failures import COMMIT_ATTEMPTS, CommitConflict, raise_storage_failure, replaying_conflicts
from dativo_dagster.iceberg.files import delete_files, rewrite_rows, write_data_files
from dativo_dagster.iceberg.integrity import PROP_INTEGRITY, FileDigests, delete_manifest, integrity_properties
from dativo_dagster.iceberg.schema import apply_schema_changes, plan_schema_changes
from dativo_dagster.iceberg.tables import Owner, Tables
from dativo_dagster.state import PROP_OBJECT, PROP_RUN_ID
from dativo_dagster.types import CURSOR_FROM_COLUMN, KEY_COLUMN, ContractEnforcer


def commit_quarantine(
    tables: Tables,
    obj: ObjectPlan,
    enforcer: ContractEnforcer,
    batches: list[pa.RecordBatch],
    run_id: str,
    cursor_from: str,
    replaced: tuple[str, list[str]] | None = None,
) -> str:
    """Commit ``batches`` of rejected rows, replacing earlier rejections of the same range or keys.

    Args:
        tables: The catalog's tables.
        obj: The object whose rows were rejected.
        enforcer: Gives the quarantine schema.
        batches: Rejected rows (quarantine schema).
        run_id: The run, recorded in the snapshot.
        cursor_from: The cursor the read started from (``""`` for none): identifies the range.
        replaced: ``(lineage column, values)``: sources re-read this run (a rewritten file), whose
            earlier rejections are replaced too.

    Returns:
        ``namespace.table`` of the quarantine table.
    """
    namespace, name = obj.namespace, obj.quarantine_table
    schema = enforcer.quarantine_schema()
    owner = Owner(obj.tenant, obj.owner)
    data = pa.Table.from_batches(batches, schema=schema)
    index = schema.get_field_index(CURSOR_FROM_COLUMN)
    data = data.set_column(index, schema.field(index), pa.array([cursor_from] * data.num_rows, pa.string()))
    keys = pc.unique(pc.drop_null(data.column(KEY_COLUMN).combine_chunks())).to_pylist()
    table = tables.ensure(namespace, name, schema, owner)
    label = f"{namespace}.{name}"
    try:
        for attempt in replaying_conflicts():
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    table = table.refresh()
                _replace(table, data, schema, keys, cursor_from, run_id, obj, label, replaced)
    except CommitConflict as exc:
        raise StorageError(
            f"writing quarantine rows to {label} conflicted with other writers {COMMIT_ATTEMPTS} times: {exc}"
        ) from None
    return label


def _replace(
    table: Table,
    data: pa.Table,
    schema: pa.Schema,
    keys: list[str],
    cursor_from: str,
    run_id: str,
    obj: ObjectPlan,
    label: str,
    replaced: tuple[str, list[str]] | None,
) -> None:
    existing = set(table.schema().column_names)
    txn = table.transaction()
    changes = plan_schema_changes(table.schema().as_arrow(), schema, table=label)
    if changes:
        with txn.update_schema() as update:
            apply_schema_changes(update, changes)
    condition = _replaced_rows(existing, keys, cursor_from, replaced) if table.current_snapshot() is not None else None
    run = {
        "run_id": run_id,
        "tenant": obj.tenant,
        "job": obj.job,
        "object": obj.name,
        "cursor_before": cursor_from,
        "operation": "quarantine",
    }
    commit_row_replace(
        table, txn, data, condition, {PROP_RUN_ID: run_id, PROP_OBJECT: obj.label}, run, f"quarantine rows to {label}"
    )


def commit_row_replace(
    table: Table,
    txn: Transaction,
    data: pa.Table | None,
    condition: BooleanExpression | None,
    props: Mapping[str, str],
    run: Mapping[str, str],
    what: str,
) -> None:
    """Commit, in ``txn``, one snapshot that removes the rows matching ``condition`` and adds ``data``.

    Files whose rows all match are dropped; files where some match are rewritten without them.
    Every file written goes through the hashing writer, and the snapshot names its integrity
    manifest. If the commit definitely did not happen, the files it wrote are deleted; if the
    catalog failed in a way that leaves the outcome unknown, the table is reloaded to settle it
    (:class:`~dativo_dagster.iceberg.commits.CommitAttempt`): a commit that landed is a success,
    and files are never deleted while it may have.

    Args:
        table: The table ``txn`` belongs to.
        txn: The transaction (it may already hold schema changes; files follow its schema).
        data: Rows to add (None or empty: none).
        condition: Rows to remove (None: none).
        props: Snapshot summary properties.
        run: Run metadata for the integrity manifest.
        what: What is being written, for error messages.

    Raises:
        CommitConflict: another writer committed first (the caller refreshes and tries again).
        StorageError: the warehouse or catalog failed (CommitOutcomeUnknown: the commit may have
            landed; its files were kept).
    """
    from pyiceberg.exceptions import CommitFailedException

    metadata = txn.table_metadata
    digests = FileDigests()
    removed: list[DataFile] = []
    added: list[DataFile] = []
    integrity: dict[str, str] = {}
    attempt: CommitAttempt | None = None
    try:
        if condition is not None and table.current_snapshot() is not None:
            removed, added = _without_matching_rows(table, metadata, condition, digests)
        if data is not None and data.num_rows:
            added += write_data_files(table, metadata, data.schema, data.to_batches(), data.num_rows, digests=digests)
        if not removed and not added:
            if metadata.current_schema_id != table.metadata.current_schema_id:
                txn.commit_transaction()  # schema changes only
            return
        run = {**run, "rows": str(data.num_rows if data is not None else 0), "files": str(len(added))}
        integrity = integrity_properties(table, added, digests, run)
        snapshot_props = {**props, **integrity}
        if removed:
            with txn.update_snapshot(snapshot_properties=snapshot_props).overwrite() as overwrite:
                for data_file in removed:
                    overwrite.delete_data_file(data_file)
                for data_file in added:
                    overwrite.append_data_file(data_file)
        else:
            with txn.update_snapshot(snapshot_properties=snapshot_props).fast_append() as append:
                for data_file in added:
                    append.append_data_file(data_file)
        attempt = CommitAttempt(table, integrity[PROP_INTEGRITY], f"writing {what}")
        attempt.commit(txn)
    except BaseException as exc:
        if attempt is not None and attempt.may_have_landed:
            raise  # the snapshot may reference the files: they stay (orphans at worst)
        delete_files(table, [f.file_path for f in added])
        delete_manifest(table, integrity)
        if isinstance(exc, CommitFailedException):
            raise CommitConflict(str(exc)) from exc
        if isinstance(exc, Exception) and not isinstance(exc, CommitConflict):
            raise_storage_failure(exc, f"writing {what}")
        raise


def _without_matching_rows(
    table: Table, metadata: TableMetadata, condition: BooleanExpression, digests: FileDigests
) -> tuple[list[DataFile], list[DataFile]]:
    """The live files holding rows that match ``condition``, and the rewrites of their other rows."""
    schema = table.schema()
    matches = expression_to_pyarrow(bind(schema, condition, case_sensitive=True))
    scan = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
    removed: list[DataFile] = []
    added: list[DataFile] = []
    for task in table.scan(row_filter=condition).plan_files():
        rows = scan.to_table([task])
        numbered = rows.append_column(_POSITION, pa.array(range(rows.num_rows), pa.int64()))
        hit = numbered.filter(matches).column(_POSITION)
        if not len(hit):
            continue
        removed.append(task.file)
        # Positions, not the negated condition: a null compared with a value matches neither.
        kept = rows.filter(pc.invert(pc.is_in(numbered.column(_POSITION), value_set=hit.combine_chunks())))
        added += rewrite_rows(table, metadata, kept, digests=digests)
    return removed, added


_POSITION = "__dativo_position"


def _replaced_rows(
    existing_columns: set[str], keys: list[str], cursor_from: str, replaced: tuple[str, list[str]] | None
) -> BooleanExpression | None:
    """Rows of earlier attempts of this range, earlier rejections of these keys, and of re-read sources."""
    if CURSOR_FROM_COLUMN not in existing_columns:
        return None  # a quarantine table from before ranges were recorded: nothing to match
    condition = _equal(CURSOR_FROM_COLUMN, cursor_from)
    if keys and KEY_COLUMN in existing_columns:
        condition = Or(condition, _one_of(KEY_COLUMN, keys))
    if replaced is not None and replaced[1] and replaced[0] in existing_columns:
        condition = Or(condition, _one_of(replaced[0], replaced[1]))
    return condition


# pyiceberg's expression classes are pydantic models whose positional constructors mypy cannot see.
def _equal(column: str, value: str) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg, arg-type]


def _one_of(column: str, values: list[str]) -> BooleanExpression:
    return In(column, values)  # type: ignore[call-arg, arg-type]


def newest_rows(table: Table, limit: int, run_id: str | None = None) -> pa.Table:
    """The ``limit`` most recently quarantined rows (of one run, with ``run_id``), newest first.

    The table is streamed batch by batch and only the newest ``limit`` rows are kept, so memory
    does not grow with the quarantine table.
    """
    from dativo_dagster.types import REJECTED_AT_COLUMN, RUN_ID_COLUMN

    columns = set(table.schema().column_names)
    if run_id is not None and RUN_ID_COLUMN not in columns:
        return table.schema().as_arrow().empty_table()
    scan = table.scan(row_filter=_equal(RUN_ID_COLUMN, run_id)) if run_id is not None else table.scan()
    order = [(REJECTED_AT_COLUMN, "descending")] if REJECTED_AT_COLUMN in columns else []
    kept: pa.Table | None = None
    try:
        for batch in scan.to_arrow_batch_reader():
            if not batch.num_rows:
                continue
            current = pa.Table.from_batches([batch])
            merged = current if kept is None else pa.concat_tables([kept, current], promote_options="default")
            kept = (merged.sort_by(order) if order else merged).slice(0, limit)
    except Exception as exc:
        raise_storage_failure(exc, f"reading {'.'.join(table.name())}")
        raise
    return kept if kept is not None else table.schema().as_arrow().empty_table()
