"""A minimal JSON Schema to Arrow mapping and record batcher, used only while
``dativo_dagster.engines.jsonschema`` is not part of the build.

Same interface as that module (``stream_arrow_schema``, ``RecordBatcher``); remove this file once it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.types import JSON_FIELD_METADATA, SOURCE_REASON_COLUMN

_TS = pa.timestamp("us", "UTC")


def _types(node: Mapping[str, Any]) -> tuple[set[str], str | None]:
    declared = node.get("type")
    names = set(declared) if isinstance(declared, list) else ({declared} if isinstance(declared, str) else set())
    for option in node.get("anyOf", []) or []:
        if isinstance(option, Mapping):
            more, fmt = _types(option)
            names |= more
            if fmt and not node.get("format"):
                return names, fmt
    return names, node.get("format")


def _arrow(node: Mapping[str, Any]) -> tuple[pa.DataType, bool]:
    names, fmt = _types(node)
    names.discard("null")
    if names == {"string"} and fmt == "date-time":
        return _TS, False
    if names == {"string"} and fmt == "date":
        return pa.date32(), False
    if names == {"integer"}:
        return pa.int64(), False
    if names <= {"number", "integer"} and names:
        return pa.float64(), False
    if names == {"boolean"}:
        return pa.bool_(), False
    if names == {"string"}:
        return pa.string(), False
    return pa.string(), True  # objects, arrays and mixed types: their JSON text


def stream_arrow_schema(
    json_schema: Mapping[str, Any], *, contract: SchemaContract | None = None, key_properties: Sequence[str] = ()
) -> pa.Schema:
    """Arrow schema of a stream (the contract's when given)."""
    properties = json_schema.get("properties") or {}
    if contract is not None:
        # The stream's own types, under the contract's source names; the contract enforcer casts them.
        typed = []
        for column in contract.columns:
            name = column.source_name or column.name
            node = properties.get(name)
            data_type = _arrow(node)[0] if isinstance(node, Mapping) else pa.string()
            typed.append(pa.field(name, data_type))
        return pa.schema(typed)
    fields = []
    for name, node in properties.items():
        data_type, is_json = _arrow(node if isinstance(node, Mapping) else {})
        fields.append(
            pa.field(
                name, data_type, nullable=name not in key_properties, metadata=JSON_FIELD_METADATA if is_json else None
            )
        )
    return pa.schema(fields)


class RecordBatcher:
    """Record dicts into Arrow batches of at most ``max_rows`` rows (or about ``max_bytes``)."""

    def __init__(self, schema: pa.Schema, *, max_rows: int = 10_000, max_bytes: int = 16 << 20) -> None:
        self.schema = schema
        self.max_rows = max_rows
        self._records: list[Mapping[str, Any]] = []

    def add(self, record: Mapping[str, Any]) -> pa.RecordBatch | None:
        """Add one record; a batch when ``max_rows`` are pending."""
        self._records.append(record)
        if len(self._records) >= self.max_rows:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        """The pending records as a batch (None when there are none)."""
        if not self._records:
            return None
        records, self._records = self._records, []
        reasons: list[str | None] = [None] * len(records)
        columns = []
        for field in self.schema:
            values = [r.get(field.name) for r in records]
            columns.append(_column(values, field, reasons))
        names = list(self.schema.names)
        if any(reason is not None for reason in reasons):
            columns.append(pa.array(reasons, pa.string()))
            names.append(SOURCE_REASON_COLUMN)
            schema = pa.schema([*self.schema, pa.field(SOURCE_REASON_COLUMN, pa.string())])
        else:
            schema = pa.schema(list(self.schema))
        return pa.RecordBatch.from_arrays(columns, schema=schema)


def _column(values: list[Any], field: pa.Field, reasons: list[str | None]) -> pa.Array:
    target = field.type
    if pa.types.is_string(target):
        values = [v if v is None or isinstance(v, str) else json.dumps(v, separators=(",", ":")) for v in values]
        return pa.array(values, pa.string())
    if pa.types.is_timestamp(target) or pa.types.is_date(target):
        try:
            return pc.cast(pa.array(values, pa.string()), target)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    else:
        try:
            array = pa.array(values, target, from_pandas=False)
            if not pa.types.is_integer(target) or all(not isinstance(v, float) for v in values):
                return array
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    out: list[Any] = []
    for index, value in enumerate(values):
        try:
            if value is None:
                out.append(None)
            elif pa.types.is_timestamp(target) or pa.types.is_date(target):
                out.append(pc.cast(pa.array([value], pa.string()), target)[0].as_py())
            elif pa.types.is_integer(target) and (isinstance(value, bool) or int(value) != value):
                raise ValueError(value)
            else:
                out.append(pa.array([value], target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError, TypeError):
            out.append(None)
            if reasons[index] is None:
                reasons[index] = f"{field.name}: {str(value)[:80]!r} is not a {target}"
    return pa.array(out, target)
