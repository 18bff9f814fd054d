"""Per-value converters, for the values a vectorised cast cannot convert exactly.

Every converter here either returns the exact value or raises ValueError/TypeError with the
reason; the row then goes to quarantine. None of them rounds, truncates or guesses.
:func:`python_converter` picks the converter for a target type; :func:`invalid_json` checks the
values of a contract's ``json`` columns.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from dativo_dagster.types.mapping import is_uuid

_FRACTION = re.compile(r"[T ]?\d{1,2}:\d{2}(?::\d{2})?[.,](\d+)", re.ASCII)


def _check_fraction(text: str) -> None:
    """Refuse sub-microsecond digits that are not zero (Python would drop them silently)."""
    match = _FRACTION.search(text)
    if match and len(match.group(1)) > 6 and match.group(1)[6:].strip("0"):
        raise ValueError("has more than microsecond precision")


def _parse_time(text: str) -> dt.time:
    text = text.strip()
    _check_fraction(text)
    value = dt.time.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("has a zone offset but a time column has no time zone")
    return value


def _parse_timestamp(text: str, *, aware: bool) -> dt.datetime:
    text = text.strip()
    if not text.isascii():
        raise ValueError("is not an ISO-8601 timestamp")
    _check_fraction(text)
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if aware:
        # A CSV timestamp with no offset headed for a timestamptz column is read as UTC (documented).
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if value.tzinfo is not None:
        raise ValueError("has a zone offset but the column is a timestamp without time zone")
    return value


_INFINITY_TEXT = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "nan", "+nan", "-nan"}
_NUMBER_TEXT = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)
"""A number as a number is written: ASCII digits only (Python also reads ``1_000``, ``١٢٣`` and
full-width digits, none of which a data file means as a number)."""
ZERO_TEXT = re.compile(r"^[+-]?(?:0+\.?0*|\.0+)(?:[eE][+-]?[0-9]+)?$", re.ASCII)


def _number_text(value: str) -> str:
    text = value.strip()
    if not _NUMBER_TEXT.match(text):
        raise ValueError("is not a number")
    return text


def _to_float(value: Any) -> float:
    """A float from text or a number; a value that overflows to infinity or underflows to zero is refused."""
    if isinstance(value, bool):
        raise TypeError("is a boolean, not a number")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in _INFINITY_TEXT:
            return float(text)
        result = float(_number_text(text))
        if math.isinf(result):
            raise ValueError("is out of the floating-point range")
        if result == 0 and not ZERO_TEXT.match(text):
            raise ValueError("is too small for a floating-point number (it would become 0)")
        return result
    result = float(value)
    if math.isinf(result) and not (isinstance(value, float) and math.isinf(value)):
        raise ValueError("is out of the floating-point range")
    if result == 0 and value != 0:
        raise ValueError("is too small for a floating-point number (it would become 0)")
    return result


_FLOAT32_MAX = 3.4028234663852886e38


_FLOAT32_MIN_SUBNORMAL = 1.401298464324817e-45


def _to_float32(value: Any) -> float:
    """A float headed for a 32-bit column: refused beyond that type's range or below its smallest value."""
    result = _to_float(value)
    if math.isfinite(result) and abs(result) > _FLOAT32_MAX:
        raise ValueError("is out of the 32-bit floating-point range")
    if result != 0 and abs(result) < _FLOAT32_MIN_SUBNORMAL / 2:
        raise ValueError("is too small for a 32-bit floating-point number (it would become 0)")
    return result


def _to_int(value: Any) -> int:
    """An integer from decimal text or a number holding a whole value (never truncated)."""
    if isinstance(value, bool):
        raise TypeError("is a boolean, not an integer")
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_INTEGER.match(text):
            raise ValueError("is not a decimal integer")
        return int(text)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("is not a whole number")
    as_int = int(value)
    if isinstance(value, decimal.Decimal) and as_int != value:
        raise ValueError("is not a whole number")
    return as_int


_DECIMAL_INTEGER = re.compile(r"^[+-]?[0-9]+$")


def _to_bool(value: Any) -> bool:
    """True/false from the usual spellings, or from the numbers 0 and 1 only."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUTHY:
            return True
        if low in _FALSY:
            return False
        raise ValueError("is not a boolean")
    if isinstance(value, (int, float, decimal.Decimal)) and value in (0, 1):
        return bool(value)
    raise ValueError("is not a boolean (only 0 and 1 are)")


_TRUTHY = {"true", "t", "1", "yes", "y"}
_FALSY = {"false", "f", "0", "no", "n"}


def _decimal_converter(scale: int) -> Callable[[Any], decimal.Decimal]:
    def to_decimal(value: Any) -> decimal.Decimal:
        if isinstance(value, bool):
            raise TypeError("is a boolean, not a number")
        # A float's shortest repr is the value it was written as (0.1, not 0.1000000000000000055...).
        if isinstance(value, str):
            number = decimal.Decimal(_number_text(value))
        else:
            number = decimal.Decimal(repr(value) if isinstance(value, float) else str(value))
        if not number.is_finite():
            raise ValueError("is not a finite number")
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if exponent < -scale and number != number.quantize(decimal.Decimal(1).scaleb(-scale)):
            raise ValueError(f"has more than {scale} decimal places")
        return number

    return to_decimal


def _ascii(text: str) -> str:
    if not text.isascii():
        raise ValueError("is not an ISO-8601 value")
    return text


def to_text(value: Any) -> str:
    """Text of a value headed for a string column: scalars as written, objects and arrays as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8")  # UnicodeDecodeError is a ValueError: the row is rejected
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=_json_default, separators=(",", ":"))
    raise TypeError(f"cannot be stored as text ({type(value).__name__})")


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        # JSON numbers are written from floats: only a decimal a float holds exactly may pass.
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        if decimal.Decimal(repr(as_float)) == value:
            return as_float
        raise ValueError(f"decimal {value} cannot be written as an exact JSON number")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def _list_converter(item_target: pa.DataType) -> Callable[[Any], list[Any]]:
    convert_item = python_converter(item_target)

    def to_list(value: Any) -> list[Any]:
        # JSON numbers stay text until the item type reads them: json would turn 1e400 into
        # infinity and 1.10 into 1.1 on the way.
        items = (
            json.loads(value, parse_float=str, parse_int=str, parse_constant=_no_constant)
            if isinstance(value, str)
            else value
        )
        if not isinstance(items, (list, tuple)):
            raise ValueError("is not an array")
        out = []
        for position, item in enumerate(items):
            if isinstance(item, (list, tuple)):
                raise ValueError("is a multi-dimensional array; only one-dimensional arrays are supported")
            try:
                out.append(None if item is None else convert_item(item))
            except (ValueError, TypeError, OverflowError, decimal.InvalidOperation) as exc:
                raise ValueError(f"element {position + 1} ({str(item)[:30]!r}) {exc}") from None
        return out

    return to_list


def _no_constant(name: str) -> Any:
    raise ValueError(f"holds {name}, which is not JSON")


def python_converter(target: pa.DataType) -> Callable[[Any], Any]:
    """A converter for one value, used only where the vectorised cast failed or is not exact."""

    def from_text(value: Any, parse: Callable[[str], Any]) -> Any:
        return parse(value) if isinstance(value, str) else value

    if pa.types.is_timestamp(target):
        aware = target.tz is not None
        return lambda v: from_text(v, lambda s: _parse_timestamp(s, aware=aware))
    if pa.types.is_time(target):
        return lambda v: from_text(v, _parse_time)
    if pa.types.is_date(target):
        return lambda v: from_text(v, lambda s: dt.date.fromisoformat(_ascii(s.strip())))
    if pa.types.is_decimal(target):
        return _decimal_converter(target.scale)
    if pa.types.is_boolean(target):
        return _to_bool
    if is_uuid(target):
        return lambda v: v if isinstance(v, bytes) else uuid.UUID(str(v)).bytes
    if pa.types.is_integer(target):
        return _to_int
    if pa.types.is_floating(target):
        if target.bit_width == 32:
            return _to_float32
        return _to_float
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return to_text
    if pa.types.is_list(target) or pa.types.is_large_list(target):
        return _list_converter(target.value_type)
    return lambda v: v


def invalid_json(column: pa.Array) -> list[str | None] | None:
    """Per row, why a text value is not a JSON document (None: every value is one)."""
    errors: list[str | None] = []
    bad = False
    for value in column.to_pylist():
        if value is None:
            errors.append(None)
            continue
        try:
            json.loads(value, parse_constant=_no_constant)
            errors.append(None)
        except ValueError as exc:
            bad = True
            errors.append(f"cannot convert {excerpt(value)!r} to json (is not a JSON document: {str(exc)[:60]})")
    return errors if bad else None


CONVERSION_ERRORS = (ValueError, TypeError, OverflowError, decimal.InvalidOperation, pa.ArrowException)
"""What converting one value may raise: the value then goes to quarantine with the reason."""


def excerpt(value: Any) -> str:
    """A value as text for a message, cut to 40 characters (bytes shown with escapes)."""
    shown = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
