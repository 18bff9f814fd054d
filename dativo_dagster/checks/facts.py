"""What the checks read from an Iceberg table, streaming and bounded.

* nulls in required columns: one scan filtered on ``IsNull`` of those columns, so the manifests'
  null counts prune every data file that has none;
* duplicate primary keys: a scan of the key columns only (memory grows with the key columns, never
  with the rest of the row), counted with Arrow's ``group_by``;
* the table's columns, its last dativo commit and its quarantine snapshots: metadata only.

Imported by run workers only (pyiceberg and pyarrow).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression, EqualTo, IsNull, Or
from pyiceberg.table import Table

from dativo_dagster.checks.evaluate import ColumnFacts, count_reasons
from dativo_dagster.config.models import SchemaContract
from dativo_dagster.iceberg.failures import raise_storage_failure
from dativo_dagster.state import PROP_RESET_KIND, PROP_RUN_ID
from dativo_dagster.types import REASON_COLUMN, RUN_ID_COLUMN, contract_arrow_schema, type_label

DUPLICATE_EXAMPLES = 5


def contract_columns(contract: SchemaContract) -> list[ColumnFacts]:
    """The contract's columns, typed the way the writer creates them (through the same Arrow mapping)."""
    schema = contract_arrow_schema(contract)
    return [ColumnFacts(f.name, type_label(f.type), not f.nullable) for f in schema]


def table_columns(table: Table) -> list[ColumnFacts]:
    """The table's current columns."""
    schema = table.schema().as_arrow()
    return [ColumnFacts(f.name, type_label(f.type), not f.nullable) for f in schema]


def null_counts(table: Table, columns: Sequence[str]) -> dict[str, int]:
    """Nulls per column among ``columns`` (all of which the table has), over the live rows."""
    counts = dict.fromkeys(columns, 0)
    if not columns or table.current_snapshot() is None:
        return counts
    condition = functools.reduce(_or, [_is_null(c) for c in columns])
    try:
        reader = table.scan(row_filter=condition, selected_fields=tuple(columns)).to_arrow_batch_reader()
        for batch in reader:
            for column in columns:
                counts[column] += batch.column(column).null_count
    except Exception as exc:
        raise_storage_failure(exc, f"reading {_label(table)} for nulls")
    return counts


@dataclass(frozen=True)
class Duplicates:
    """Primary key values found more than once."""

    rows: int
    keys: int
    extra_rows: int
    examples: list[str]


def duplicate_keys(table: Table, primary_key: Sequence[str]) -> Duplicates:
    """Scan the key columns and count the values that occur more than once."""
    if table.current_snapshot() is None:
        return Duplicates(0, 0, 0, [])
    try:
        reader = table.scan(selected_fields=tuple(primary_key)).to_arrow_batch_reader()
        keys = pa.Table.from_batches(list(reader), schema=reader.schema)
    except Exception as exc:
        raise_storage_failure(exc, f"reading the primary key of {_label(table)}")
        raise  # unreachable
    counted = keys.group_by(list(primary_key), use_threads=False).aggregate([([], "count_all")])
    repeated = counted.filter(pc.greater(counted.column("count_all"), 1))
    examples = [
        ", ".join(str(row[c]) for c in primary_key) for row in repeated.slice(0, DUPLICATE_EXAMPLES).to_pylist()
    ]
    extra = pc.sum(repeated.column("count_all")).as_py() or 0
    return Duplicates(keys.num_rows, repeated.num_rows, extra - repeated.num_rows, examples)


def last_commit_ms(table: Table) -> int | None:
    """When a dativo run last committed rows to the table.

    Table maintenance does not count (no ``dativo.run-id``), nor does a reset: it moves the cursor
    and loads no row (``dativo.reset-kind``), so a table reset an hour ago and loaded a week ago is
    a week old. A partition run's commit counts: it loaded the rows of its window.
    """
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_RUN_ID in props and PROP_RESET_KIND not in props:
            return snapshot.timestamp_ms
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None


def quarantine_growth(table: Table | None, run_id: str) -> int:
    """Rows ``run_id`` added to a quarantine table, net of the earlier rejections it replaced."""
    if table is None:
        return 0
    added = 0
    for snapshot in table.snapshots():
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if props.get(PROP_RUN_ID) == run_id:
            added += int(props.get("added-records", "0")) - int(props.get("deleted-records", "0"))
    return max(added, 0)


def rejection_reasons(table: Table | None, run_id: str) -> Counter[str]:
    """Problems of the rows ``run_id`` quarantined, counted (only the reason column is read)."""
    counter: Counter[str] = Counter()
    if table is None or table.current_snapshot() is None:
        return counter
    try:
        reader = table.scan(
            row_filter=_equal(RUN_ID_COLUMN, run_id), selected_fields=(REASON_COLUMN,)
        ).to_arrow_batch_reader()
        for batch in reader:
            count_reasons(batch.column(REASON_COLUMN).to_pylist(), counter)
    except Exception as exc:
        raise_storage_failure(exc, f"reading the reasons in {_label(table)}")
    return counter


# pyiceberg's expression classes are pydantic models whose positional constructors mypy cannot see.
def _is_null(column: str) -> BooleanExpression:
    return IsNull(column)  # type: ignore[call-arg, arg-type]


def _or(left: BooleanExpression, right: BooleanExpression) -> BooleanExpression:
    return Or(left, right)


def _equal(column: str, value: str) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg, arg-type]


def _label(table: Table) -> str:
    return ".".join(table.name())
