"""Exact casts of whole columns: vectorised where Arrow is exact, value by value where it is not.

:func:`cast_column` uses Arrow's cast where it keeps every value exact; values it would round,
truncate, overflow or reinterpret take the per-value path
(:mod:`~dativo_dagster.types.converters`), which converts exactly or reports the value with the
reason. Clean data never pays for dirty data.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.types.converters import CONVERSION_ERRORS, ZERO_TEXT, excerpt, python_converter
from dativo_dagster.types.mapping import is_uuid, type_label


def _array(values: list[Any], target: pa.DataType) -> pa.Array:
    if is_uuid(target):
        return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))
    if (pa.types.is_list(target) or pa.types.is_large_list(target)) and is_uuid(target.value_type):
        storage = pa.array(values, pa.list_(pa.binary(16)))
        return pa.ListArray.from_arrays(
            storage.offsets, pa.ExtensionArray.from_storage(target.value_type, storage.values), mask=storage.is_null()
        )
    return pa.array(values, type=target)


def _cast_per_value(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None]]:
    """Convert value by value; returns the array (failures as null) and an error per row."""
    convert = python_converter(target)
    out: list[Any] = []
    errors: list[str | None] = []
    for value in column.to_pylist():
        if value is None:
            out.append(None)
            errors.append(None)
            continue
        try:
            converted = convert(value)
            _array([converted], target)  # validates range/precision exactly as Arrow will
            out.append(converted)
            errors.append(None)
        except CONVERSION_ERRORS as exc:
            out.append(None)
            shown = excerpt(value)
            detail = str(exc).split("\n")[0][:120]
            errors.append(f"cannot convert {shown!r} to {type_label(target)} ({detail})")
    return _array(out, target), errors


def _needs_exact_path(column: pa.Array, target: pa.DataType) -> bool:
    """Casts Arrow performs without complaint that would not keep every value exact."""
    source = column.type
    if pa.types.is_boolean(target) and (
        pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    ):
        return True  # Arrow maps every non-zero number to true
    if pa.types.is_decimal(target) and pa.types.is_floating(source):
        return True  # Arrow rounds 1.5 into decimal(p,0) as 2
    if pa.types.is_integer(target) and (pa.types.is_string(source) or pa.types.is_large_string(source)):
        return bool(pc.any(pc.match_substring_regex(column, r"^\s*[+-]?0[xX]")).as_py())  # Arrow reads hex
    return False


def _overflowed(column: pa.Array, result: pa.Array) -> bool:
    """A float cast that turned a finite value into infinity or a non-zero one into zero (Arrow
    flags neither), in a flat column or in the elements of a list column."""
    if (pa.types.is_list(result.type) or pa.types.is_large_list(result.type)) and (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    ):
        return _overflowed(pc.list_flatten(column), pc.list_flatten(result))
    if not pa.types.is_floating(result.type):
        return False
    zeros = pc.equal(result, 0)
    if pc.any(zeros).as_py():
        numeric = pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)
        if numeric or pa.types.is_integer(column.type):
            underflowed = pc.and_(zeros, pc.not_equal(column, 0))
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            underflowed = pc.and_(zeros, pc.invert(pc.match_substring_regex(column, ZERO_TEXT.pattern)))
        else:
            underflowed = pa.array([False])
        if pc.any(underflowed).as_py():
            return True  # a non-zero value became zero
    if not pc.any(pc.is_inf(result)).as_py():
        return False
    if pa.types.is_floating(column.type):
        return bool(pc.any(pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(column)))).as_py())
    return True  # text or decimals: let the exact path tell 'inf' from an overflow


def cast_column(column: pa.Array, target: pa.DataType) -> tuple[pa.Array, list[str | None] | None]:
    """Cast ``column`` to ``target`` exactly; the error list is None when every value converted.

    The vectorised cast is used where it is exact; values it would round, truncate, overflow or
    reinterpret (a hex string as an integer, 2 as true) take the per-value path, which converts
    exactly or reports the value with the reason.
    """
    if column.type == target:
        return column, None
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), type=target), None
    if _needs_exact_path(column, target):
        return _cast_per_value(column, target)
    try:
        if pa.types.is_timestamp(target) and target.tz and pa.types.is_timestamp(column.type) and not column.type.tz:
            # A naive database timestamp headed for timestamptz is taken as UTC.
            return pc.assume_timezone(column.cast(pa.timestamp("us")), "UTC"), None
        result = pc.cast(column, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _cast_per_value(column, target)
    if _overflowed(column, result):
        return _cast_per_value(column, target)
    return result, None
