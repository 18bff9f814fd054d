"""How Stripe objects become Arrow batches: the batch columns and the flattening into them.

Rows are flattened per the object's schema contract: a column takes a top-level field, or a
nested one through ``source_name: billing_details.address.country``; a ``json`` column keeps an
object as JSON text; a string column holding an expanded object keeps its id. An object without
a contract is read as its id, its creation time and the whole object as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dativo_dagster.config.models import ColumnType
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.types import arrow_type

BATCH_ROWS = 1_000
"""Rows per Arrow batch (ten full pages)."""


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the batches: where its value is in a Stripe object, and its Arrow type.

    Attributes:
        name: Column name in the batch (the contract's ``source_name``, else its name).
        path: Field path in the object (empty: the whole object).
        type: Arrow type the value is converted to.
        json: Keep the value as JSON text.
    """

    name: str
    path: tuple[str, ...]
    type: pa.DataType
    json: bool = False


DISCOVERED_COLUMNS = (
    ColumnSpec("id", ("id",), pa.string()),
    ColumnSpec("created", ("created",), pa.timestamp("us", tz="UTC")),
    ColumnSpec("data", (), pa.string(), json=True),
)
"""Columns of an object without a contract: its id, its creation time, and the object as JSON."""


def column_specs(obj: ObjectPlan) -> list[ColumnSpec]:
    """The batch columns for ``obj``: one per contract column (or the discovered three).

    The cursor column is always there, so the extraction can track it.
    """
    specs: list[ColumnSpec] = []
    if obj.contract is None:
        specs = list(DISCOVERED_COLUMNS)
    else:
        seen: set[str] = set()
        for column in obj.contract.columns:
            name = column.source_name or column.name
            if name in seen:
                continue  # two contract columns reading one field share its batch column
            seen.add(name)
            path = tuple(name.split(".")) if column.source_name else (column.name,)
            specs.append(ColumnSpec(name, path, arrow_type(column), json=column.type is ColumnType.JSON))
    cursor = obj.cursor_field
    if cursor is not None and cursor not in {s.name for s in specs}:
        specs.append(ColumnSpec(cursor, ("created",), pa.timestamp("us", tz="UTC")))
    return specs


def value_at(item: Mapping[str, Any], path: Sequence[str]) -> Any:
    """The value at ``path`` in ``item`` (None where a level is missing or not an object)."""
    value: Any = item
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _json_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cell(value: Any, spec: ColumnSpec) -> Any:
    """``value`` shaped for ``spec``'s column (the enforcer casts what is left and quarantines the rest)."""
    if value is None:
        return None
    if spec.json:
        return _json_text(value)
    target = spec.type
    if pa.types.is_string(target):
        if isinstance(value, Mapping) and isinstance(value.get("id"), str):
            return value["id"]  # an expanded object stands for its id
        if isinstance(value, (Mapping, list)):
            return _json_text(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if not isinstance(value, str) else value
    if (pa.types.is_timestamp(target) or pa.types.is_date(target)) and isinstance(value, (int, float)):
        if isinstance(value, bool):
            return value
        when = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc)
        if pa.types.is_date(target):
            return when.date()
        return when if target.tz else when.replace(tzinfo=None)
    return value


def to_batch(items: Sequence[Mapping[str, Any]], specs: Sequence[ColumnSpec]) -> pa.RecordBatch:
    """One Arrow batch of ``items`` flattened per ``specs``.

    A column whose values do not all fit its type is handed over as text instead, so the
    contract enforcer converts what it can and quarantines the rest with a reason per row.
    """
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for spec in specs:
        values = [cell(value_at(item, spec.path) if spec.path else item, spec) for item in items]
        try:
            array = pa.array(values, type=spec.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            array = pa.array([None if v is None else _as_text(v) for v in values], type=pa.string())
        arrays.append(array)
        fields.append(pa.field(spec.name, array.type))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return _json_text(value)
