"""JSON Schema of a connector's stream to Arrow, and connector records to bounded Arrow batches.

Singer taps and Airbyte sources describe each stream with a JSON Schema and send records as JSON
objects. :func:`stream_arrow_schema` maps the schema to Arrow (and through Arrow to Iceberg) once;
:class:`RecordBatcher` turns the records into batches of that schema.

Type mapping (without a contract):

========================================================  ==========================================
JSON Schema                                               Arrow
========================================================  ==========================================
``integer`` (Airbyte ``airbyte_type: integer``)           ``int64``
Airbyte ``airbyte_type: big_integer``                     ``decimal(38,0)``
``number`` with ``multipleOf`` (Singer decimals: 0.01)    ``decimal(38, s)``, ``s`` the digits of it
``number``                                                ``float64``
Airbyte ``airbyte_type: big_number``                      ``string`` (exact text; no scale is known)
``string`` + ``format: singer.decimal``                   ``decimal(p,s)`` from ``scale_precision``,
                                                          else ``string``
``string`` + ``format: date-time``                        ``timestamp(us, UTC)``; Airbyte
                                                          ``timestamp_without_timezone``: ``timestamp``
``string`` + ``format: date`` / ``time``                  ``date32`` / ``time64(us)`` (a time *with*
                                                          a zone stays text: Iceberg has no such type)
``string``                                                ``string``
``boolean``                                               ``bool``
``object``, ``array``, no type, several unrelated types   ``string`` holding JSON (dativo's ``json``)
``anyOf`` / ``oneOf``                                     the one non-null branch, else JSON
========================================================  ==========================================

A column is nullable unless it is a key property, or the schema lists it as ``required`` and its
type does not allow ``null``: JSON Schema lets an optional property be absent whatever its type,
and most connectors leave ``null`` out of the type of fields that are sometimes missing, so
trusting the type alone would send ordinary rows to quarantine.

With a schema contract, the contract's types win (``source_name`` says which record field feeds a
column) and stream fields the contract does not name are left out (:func:`unmapped_fields` lists
them so the source can note it).

:class:`RecordBatcher` keeps whole records until a batch is full (``max_rows`` or an estimate of
``max_bytes``), then builds each column with one Arrow call: a column whose values all convert
exactly never pays for per-value Python work. A value that does not convert exactly (a float where
an integer is declared, a malformed date-time, an integer beyond int64) is nulled and its row
carries the reason in :data:`~dativo_dagster.types.SOURCE_REASON_COLUMN`, so the writer sends the
row to quarantine with it, as it does for the native sources.
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.types import JSON_FIELD_METADATA, SOURCE_REASON_COLUMN, cast_column, contract_arrow_schema
from dativo_dagster.types.converters import CONVERSION_ERRORS, excerpt, python_converter, to_text
from dativo_dagster.types.mapping import type_label

__all__ = [
    "RecordBatcher",
    "build_batch",
    "is_json_field",
    "stream_arrow_schema",
    "unmapped_fields",
]

_JSON = pa.string()
_MAX_SCALE = 38
_SCALE_PRECISION = re.compile(r"^\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*$")


def _types(schema: Mapping[str, Any]) -> tuple[set[str], bool]:
    """The non-null JSON types a property allows, and whether it allows null."""
    declared = schema.get("type")
    if declared is None:
        names: set[str] = set()
    elif isinstance(declared, str):
        names = {declared}
    else:
        names = {str(t) for t in declared}
    nullable = "null" in names
    names.discard("null")
    return names, nullable


def _branches(schema: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    for keyword in ("anyOf", "oneOf"):
        found = schema.get(keyword)
        if isinstance(found, list):
            return [b for b in found if isinstance(b, Mapping)]
    return None


def _decimal_scale(multiple_of: Any) -> int | None:
    """Decimal places a ``multipleOf`` implies (0.01 → 2, 0.25 → 2, 1 → 0), None when it implies none."""
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, (int, float, decimal.Decimal, str)):
        return None
    try:
        # A float's repr is the decimal it was written as in the JSON (0.01, not 0.01000000000000000021).
        step = decimal.Decimal(repr(multiple_of) if isinstance(multiple_of, float) else str(multiple_of))
    except decimal.InvalidOperation:
        return None
    if not step.is_finite() or step <= 0:
        return None
    exponent = step.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    return scale if scale < _MAX_SCALE else None


def _property_type(schema: Mapping[str, Any]) -> tuple[pa.DataType, bool, bool]:
    """Arrow type of one property, whether it allows null, and whether it holds JSON text."""
    branches = _branches(schema)
    if branches is not None:
        concrete = [b for b in branches if _types(b)[0] or _branches(b) is not None]
        nullable = len(concrete) < len(branches) or any(_types(b)[1] for b in branches)
        if len(concrete) == 1:
            data_type, branch_nullable, is_json = _property_type(concrete[0])
            return data_type, nullable or branch_nullable, is_json
        return _JSON, True, True
    names, nullable = _types(schema)
    airbyte_type = schema.get("airbyte_type")
    if names == {"integer", "number"}:
        names = {"number"}
    if len(names) != 1:
        return _JSON, True, True
    (name,) = names
    if name == "integer" or (name == "number" and airbyte_type == "integer"):
        if airbyte_type == "big_integer":
            return pa.decimal128(38, 0), nullable, False
        return pa.int64(), nullable, False
    if name == "number":
        if airbyte_type == "big_number":
            return pa.string(), nullable, False
        if airbyte_type == "big_integer":
            return pa.decimal128(38, 0), nullable, False
        scale = _decimal_scale(schema.get("multipleOf"))
        if scale is not None:
            return pa.decimal128(38, scale), nullable, False
        return pa.float64(), nullable, False
    if name == "boolean":
        return pa.bool_(), nullable, False
    if name == "string":
        return _string_type(schema, airbyte_type), nullable, False
    return _JSON, nullable, True


def _string_type(schema: Mapping[str, Any], airbyte_type: Any) -> pa.DataType:
    text_format = schema.get("format")
    if airbyte_type == "timestamp_without_timezone":
        return pa.timestamp("us")
    if airbyte_type == "timestamp_with_timezone":
        return pa.timestamp("us", tz="UTC")
    if airbyte_type == "time_without_timezone":
        return pa.time64("us")
    if airbyte_type == "time_with_timezone":
        return pa.string()
    if text_format == "date-time":
        return pa.timestamp("us", tz="UTC")
    if text_format == "date":
        return pa.date32()
    if text_format == "time":
        return pa.time64("us")
    if text_format == "singer.decimal":
        extra = schema.get("additionalProperties")
        found = _SCALE_PRECISION.match(str(extra.get("scale_precision", ""))) if isinstance(extra, Mapping) else None
        if found:
            precision, scale = int(found.group(1)), int(found.group(2))
            if 1 <= precision <= 38 and scale <= precision:
                return pa.decimal128(precision, scale)
    return pa.string()


def is_json_field(field: pa.Field) -> bool:
    """True for a string field whose values are JSON documents (dativo's ``json`` type)."""
    return bool(field.metadata) and field.metadata.get(b"dativo.type") == b"json"


def _properties(json_schema: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = json_schema.get("properties")
    return properties if isinstance(properties, Mapping) else {}


def stream_arrow_schema(
    json_schema: Mapping[str, Any],
    *,
    contract: SchemaContract | None = None,
    key_properties: Sequence[str] = (),
) -> pa.Schema:
    """Arrow schema of a connector stream's records.

    Args:
        json_schema: The stream's JSON Schema (an object schema with ``properties``).
        contract: The object's schema contract: its columns and types win; each field is named as
            the records name it (``source_name`` when the contract renames the column), which is
            what the contract enforcer reads.
        key_properties: The stream's primary key (Singer ``key_properties``, Airbyte top-level
            ``primary_key`` fields): never null.

    Returns:
        The schema, fields in the stream's property order (the contract's order with a contract).
        JSON-text fields carry :data:`~dativo_dagster.types.JSON_FIELD_METADATA`.
    """
    if contract is not None:
        base = contract_arrow_schema(contract)
        renamed = []
        for column, field in zip(contract.columns, base, strict=True):
            renamed.append(field.with_name(column.source_name or column.name))
        return pa.schema(renamed, metadata=base.metadata)
    keys = set(key_properties)
    required_list = json_schema.get("required")
    required = {str(r) for r in required_list} if isinstance(required_list, list) else set()
    fields = []
    for name, prop in _properties(json_schema).items():
        if not isinstance(prop, Mapping):
            prop = {}
        data_type, nullable, is_json = _property_type(prop)
        not_null = name in keys or (name in required and not nullable)
        fields.append(
            pa.field(str(name), data_type, nullable=not not_null, metadata=JSON_FIELD_METADATA if is_json else None)
        )
    return pa.schema(fields)


def unmapped_fields(json_schema: Mapping[str, Any], contract: SchemaContract) -> list[str]:
    """Stream fields no contract column reads (they are not loaded): worth a note to the operator."""
    read = {c.source_name or c.name for c in contract.columns}
    return [str(name) for name in _properties(json_schema) if name not in read]


# --------------------------------------------------------------------------- records to batches


def _json_text(value: Any) -> str:
    """A JSON document for any JSON value (containers via :func:`to_text`, which keeps decimals exact)."""
    if isinstance(value, (dict, list, tuple)):
        return to_text(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError("is not a finite number")
        return str(value)
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _approx_size(record: Mapping[str, Any]) -> int:
    """Rough bytes of a record (text lengths, 8 per other scalar): sizes batches without encoding them."""
    size = 0
    for value in record.values():
        if isinstance(value, str):
            size += len(value) + 8
        elif isinstance(value, (dict, list)):
            size += len(str(value))
        else:
            size += 8
    return size


_SAMPLE_EVERY = 64
"""Records between two size measurements when the caller does not pass a record's size."""


class RecordBatcher:
    """Collects connector records and returns Arrow batches of ``schema``, bounded in rows and bytes.

    Args:
        schema: The stream's Arrow schema (:func:`stream_arrow_schema`). Batches have its fields,
            all nullable (a missing required value is the contract enforcer's to report), plus
            :data:`~dativo_dagster.types.SOURCE_REASON_COLUMN` when some row holds a value that
            did not convert exactly.
        max_rows: Rows per batch.
        max_bytes: Approximate bytes of record data per batch (from the sizes passed to
            :meth:`add`, else from a sample of records).
    """

    def __init__(self, schema: pa.Schema, *, max_rows: int = 10_000, max_bytes: int = 16 << 20) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("max_rows and max_bytes must be positive")
        self.schema = schema
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._out_schema = pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)
        self._records: list[Mapping[str, Any]] = []
        self._bytes = 0
        self._row_bytes = 0  # running estimate of one record's size, from the sampled records
        self._until_sample = 0

    @property
    def pending_rows(self) -> int:
        """Records held, not yet returned in a batch."""
        return len(self._records)

    def add(self, record: Mapping[str, Any], size: int | None = None) -> pa.RecordBatch | None:
        """Take one record; returns a full batch once ``max_rows`` or ``max_bytes`` is reached.

        Args:
            record: The record's data (field name to JSON value).
            size: The record's size in bytes when the caller knows it (its JSON line's length).
        """
        self._records.append(record)
        if size is None:
            if self._until_sample == 0:
                measured = _approx_size(record)
                self._row_bytes = measured if not self._row_bytes else (self._row_bytes * 3 + measured) // 4
                self._until_sample = _SAMPLE_EVERY
            self._until_sample -= 1
            size = self._row_bytes
        self._bytes += size
        if len(self._records) >= self.max_rows or self._bytes >= self.max_bytes:
            return self.flush()
        return None

    def flush(self) -> pa.RecordBatch | None:
        """The records held as one batch (None when there are none)."""
        if not self._records:
            return None
        records, self._records, self._bytes = self._records, [], 0
        return build_batch(records, self._out_schema)


def build_batch(records: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """One batch of ``schema`` from ``records``, with per-row reasons for values that did not convert."""
    rows = len(records)
    arrays: list[pa.Array] = []
    reasons: list[list[str]] | None = None
    for field in schema:
        name = field.name
        values = [r.get(name) for r in records]
        array, errors = _column(values, field)
        if errors is not None:
            if reasons is None:
                reasons = [[] for _ in range(rows)]
            for row, error in enumerate(errors):
                if error is not None:
                    reasons[row].append(f"{name}: {error}")
        arrays.append(array)
    if reasons is None:
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
    texts = ["; ".join(r) if r else None for r in reasons]
    return pa.RecordBatch.from_arrays(
        [*arrays, pa.array(texts, pa.string())],
        schema=schema.append(pa.field(SOURCE_REASON_COLUMN, pa.string())),
    )


def _column(values: list[Any], field: pa.Field) -> tuple[pa.Array, list[str | None] | None]:
    """One column: vectorised where every value converts exactly, value by value where not."""
    target = field.type
    if is_json_field(field):
        return _per_value(values, target, _json_text)
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        try:
            return pa.array(values, target), None  # exact: Arrow refuses anything that is not text
        except CONVERSION_ERRORS:
            return _per_value(values, target, to_text)
    if pa.types.is_floating(target) and any(_wide_number(v) for v in values):
        # A number parsed exactly (wider than a float, see engines.process) must survive as a float,
        # or its row is quarantined: a 17-digit id or amount is never silently rounded.
        return _per_value(values, target, _exact_float)
    if pa.types.is_boolean(target) and any(isinstance(v, str) for v in values):
        # JSON booleans only: "no" or "0" in a boolean field is not a boolean the connector sent.
        return _per_value(values, target, _strict_bool)
    try:
        # Inferred, then cast exactly: Arrow's typed conversion would truncate 1.5 into an int64
        # column and read true as 1.0, where the exact cast refuses both.
        inferred = pa.array(values)
    except CONVERSION_ERRORS:
        return _per_value(values, target, _converter(target))
    if _is_temporal(target) and not (pa.types.is_string(inferred.type) or pa.types.is_null(inferred.type)):
        return _per_value(values, target, _converter(target))  # Arrow would read a number as an epoch
    if pa.types.is_timestamp(target) and target.tz is not None and pa.types.is_string(inferred.type):
        return _zoned(inferred, target)
    if pa.types.is_decimal(target) and pa.types.is_floating(inferred.type):
        return _decimal_from_floats(inferred, target)
    return cast_column(inferred, target)


def _wide_number(value: Any) -> bool:
    return isinstance(value, decimal.Decimal) or (
        isinstance(value, int) and not isinstance(value, bool) and abs(value) > FLOAT_EXACT_INT
    )


FLOAT_EXACT_INT = 2**53
"""The largest integer every float holds exactly."""


def _exact_float(value: Any) -> float:
    """``value`` as a float when the float is the same number (its shortest form reads back equal)."""
    if isinstance(value, bool):
        raise TypeError("is a boolean, not a number")
    if isinstance(value, decimal.Decimal):
        result = float(value)
        if not math.isfinite(result) or decimal.Decimal(repr(result)) != value:
            raise ValueError("has more digits than a floating-point number holds")
        return result
    if isinstance(value, int):
        if abs(value) > FLOAT_EXACT_INT and int(float(value)) != value:
            raise ValueError("has more digits than a floating-point number holds")
        return float(value)
    if isinstance(value, float):
        return value
    raise TypeError("is not a number")


def _strict_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError("is not a JSON boolean")


def _is_temporal(target: pa.DataType) -> bool:
    return pa.types.is_timestamp(target) or pa.types.is_date(target) or pa.types.is_time(target)


def _converter(target: pa.DataType) -> Any:
    """The exact per-value converter; a date or time must be ISO-8601 text, never a number."""
    convert = python_converter(target)
    if not _is_temporal(target):
        return convert

    def from_text(value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError("is not ISO-8601 text")
        return convert(value)

    return from_text


def _zoned(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None] | None]:
    """Date-time text headed for a zoned column in one cast; text without an offset is read as UTC,
    as the native sources read it (the exact per-value path takes mixed or malformed columns)."""
    try:
        return pc.cast(column, target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    try:
        return pc.assume_timezone(pc.cast(column, pa.timestamp(target.unit), safe=True), "UTC").cast(target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return cast_column(column, target)


def _decimal_from_floats(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None] | None]:
    """JSON numbers headed for a decimal column in two vectorised casts: Arrow writes a float as its
    shortest round-trip text (the decimal the JSON held, as the per-value converter reads it), and
    the text casts to the decimal only when no digit is lost."""
    try:
        return pc.cast(pc.cast(column, pa.string()), target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return cast_column(column, target)


def _per_value(values: list[Any], target: pa.DataType, convert: Any) -> tuple[pa.Array, list[str | None] | None]:
    out: list[Any] = []
    errors: list[str | None] = []
    bad = False
    for value in values:
        if value is None:
            out.append(None)
            errors.append(None)
            continue
        try:
            converted = convert(value)
            pa.array([converted], target)  # range and precision checked exactly as the batch will be
            out.append(converted)
            errors.append(None)
        except CONVERSION_ERRORS as exc:
            bad = True
            out.append(None)
            detail = str(exc).split("\n")[0][:120]
            errors.append(f"cannot convert {excerpt(value)!r} to {type_label(target)} ({detail})")
    return pa.array(out, target), errors if bad else None
