"""Rejected rows, kept exactly once in ``<table>__quarantine``.

A run's rejected rows are committed before its main commit (so a QUAL001 run still shows the
operator why it failed). If that run then fails or is retried, the retry reads the same range
again and rejects the same rows: a plain append would repeat them on every attempt. Instead each
quarantine commit *replaces* the rows an earlier attempt of the same range left (rows with the
same ``_dativo_cursor_from``) and, for objects with a primary key, the earlier rejections of the
same keys (a lookback window re-reading a row that is still bad), in one overwrite.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression, EqualTo, In, Or
from pyiceberg.table import Table

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import StorageError
from dativo_dagster.iceberg.failures import COMMIT_ATTEMPTS, CommitConflict, raise_storage_failure, replaying_conflicts
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
                _replace(table, data, schema, keys, cursor_from, owner, run_id, obj.label, label, replaced)
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
    owner: Owner,
    run_id: str,
    object_label: str,
    label: str,
    replaced: tuple[str, list[str]] | None,
) -> None:
    from pyiceberg.exceptions import CommitFailedException

    existing = set(table.schema().column_names)
    try:
        txn = table.transaction()
        changes = plan_schema_changes(table.schema().as_arrow(), schema, table=label)
        if changes:
            with txn.update_schema() as update:
                apply_schema_changes(update, changes)
        props = {PROP_RUN_ID: run_id, PROP_OBJECT: object_label}
        condition = (
            _replaced_rows(existing, keys, cursor_from, replaced) if table.current_snapshot() is not None else None
        )
        if condition is None:
            txn.append(data, snapshot_properties=props)
        else:
            txn.overwrite(data, overwrite_filter=condition, snapshot_properties=props)
        txn.commit_transaction()
    except CommitFailedException as exc:
        raise CommitConflict(str(exc)) from exc
    except Exception as exc:
        raise_storage_failure(exc, f"writing quarantine rows to {label}")


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
