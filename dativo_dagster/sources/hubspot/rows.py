"""CRM records into Arrow batches, as the contract enforcer reads them.

The record id and association id lists are typed; property values stay the text HubSpot sends
(a cleared number, date or boolean, sent as ``""``, becomes null; epoch-millisecond times become
ISO text), so the enforcer converts each value exactly or quarantines the row with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from dativo_dagster.errors import PaginationError
from dativo_dagster.sources.hubspot.cursor import iso_ms
from dativo_dagster.sources.hubspot.properties import BatchColumn, ReadPlan
from dativo_dagster.sources.hubspot.search import record_id


class RowBuffer:
    """Accumulates records as columns and hands out bounded Arrow batches."""

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self.schema = plan.batch_schema
        self._values: list[list[Any]] = [[] for _ in self.schema]
        self.count = 0

    def add(self, record: Mapping[str, Any], associations: Mapping[str, list[int]] | None, *, where: str) -> None:
        """Add one record's row (``associations``: its associated ids by object type, None when not read)."""
        properties = record.get("properties")
        if not isinstance(properties, dict):
            raise PaginationError(f"{where}: record {record.get('id')!r} has no 'properties' object")
        position = 0
        for column in self.plan.columns:
            if column.kind == "id":
                value: Any = record_id(record, where=where)
            elif column.kind == "association":
                value = (associations or {}).get(column.association or "", [])
            else:
                value = _text(properties.get(column.name), column)
            self._values[position].append(value)
            position += 1
        if self.plan.cursor_alias:
            assert self.plan.search_property is not None
            self._values[position].append(properties.get(self.plan.search_property))
        self.count += 1

    def take(self) -> pa.RecordBatch:
        """The rows added since the last batch, as one batch; the buffer starts empty again."""
        batch = pa.RecordBatch.from_arrays(
            [pa.array(values, type=f.type) for values, f in zip(self._values, self.schema, strict=True)],
            schema=self.schema,
        )
        self._values = [[] for _ in self.schema]
        self.count = 0
        return batch


def _text(value: Any, column: BatchColumn) -> str | None:
    """A property value as the text the contract enforcer converts (HubSpot sends text already)."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif not isinstance(value, str):
        value = str(value)
    if value == "" and column.blank_is_null:
        return None  # a cleared number, date or boolean: HubSpot sends "", which no type can hold
    if column.time_kind and value.isdigit():
        stamp = iso_ms(int(value))
        return stamp[:10] if column.time_kind == "date" else stamp
    return value
