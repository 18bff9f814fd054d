"""PostgreSQL's text of values into Arrow: element parsers, and arrays into ``list<item>``.

Arrays travel as the JSON array of each element's exact text (see
:func:`~dativo_dagster.sources.postgres.types.select_expression`); :func:`arrays_from_json`
converts them exactly, and a row whose array cannot be held gets a reason instead of a guess.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.types import is_uuid, type_label


def uuids_from_text(column: pa.Array, target: pa.DataType) -> pa.Array:
    """UUID texts (``8-4-4-4-12`` hex digits) as Arrow's UUID extension type ``target``."""
    values = [None if v is None else bytes.fromhex(v.replace("-", "")) for v in column.to_pylist()]
    return pa.ExtensionArray.from_storage(target, pa.array(values, pa.binary(16)))


def bytes_from_hex(column: pa.Array) -> pa.Array:
    """bytea texts in hex form (``\\x00ff``) as binary values."""
    # bytea_output is 'hex' for the session: every value is \x followed by two digits per byte.
    return pa.array([None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], pa.binary())


def element_parser(item: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    """Parse a flat array of element texts into ``item``; raises when any element does not fit."""
    if pa.types.is_string(item):
        return lambda texts: texts
    if is_uuid(item):
        return lambda texts: uuids_from_text(texts, item)
    if pa.types.is_binary(item):
        return bytes_from_hex
    if pa.types.is_time(item):
        # Arrow has no text-to-time cast; a timestamp on the epoch's date has the same clock time.
        return lambda texts: pc.cast(
            pc.cast(pc.binary_join_element_wise("1970-01-01 ", texts, ""), pa.timestamp("us")), item
        )
    return lambda texts: pc.cast(texts, item)


PARSE_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError)
"""What a parser from :func:`element_parser` raises when some text does not fit the type."""


def arrays_from_json(column: pa.Array, target: pa.DataType, name: str) -> tuple[pa.Array, list[str | None] | None]:
    """JSON texts of one-dimensional arrays (``array_to_json(col::text[])``) to ``list<item>``.

    Every element is converted exactly from PostgreSQL's text for it. A row whose array cannot
    be held exactly (more than one dimension; an element such as ``infinity`` that the element
    type cannot hold) gets null and a reason naming the column and the element; the other rows
    of the batch are unaffected.
    """
    texts = column.to_pylist()
    rows: list[list[Any] | None] = [None if text is None else json.loads(text) for text in texts]
    reasons: list[str | None] | None = None
    try:
        as_text = pa.array(rows, pa.list_(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Some row is multi-dimensional (nested lists): mark those rows, keep the others.
        reasons = [None] * len(rows)
        for index, row in enumerate(rows):
            if row is not None and any(isinstance(item, list) for item in row):
                reasons[index] = (
                    f"{name}: {_shown(texts[index])} is a {_dimensions(row)}-dimensional array; "
                    "only one-dimensional arrays can be stored"
                )
                rows[index] = None
        as_text = pa.array(rows, pa.list_(pa.string()))
    parse = element_parser(target.value_type)
    converted, failed = _convert_lists(as_text, parse)
    for index, (position, element) in failed.items():
        if reasons is None:
            reasons = [None] * len(rows)
        reasons[index] = (
            f"{name}: element {position} ({_shown(element)}) cannot be held by {type_label(target.value_type)}"
        )
    return converted, reasons


def _convert_lists(
    lists: pa.ListArray, parse: Callable[[pa.Array], pa.Array]
) -> tuple[pa.Array, dict[int, tuple[int, str]]]:
    """Convert every list's elements; rows with an element that does not parse become null.

    The whole array is converted at once; only when that fails is it split in halves, so a batch
    with one odd row costs a few extra conversions, not one per row.

    Returns:
        The converted lists and, per failed row (index), the 1-based position and text of the
        first element that did not parse.
    """
    try:
        values = parse(lists.flatten())
        return _rebuild(lists, values), {}
    except PARSE_ERRORS:
        pass
    if len(lists) == 1:
        elements = lists[0].values
        for position in range(len(elements)):
            try:
                parse(elements.slice(position, 1))
            except PARSE_ERRORS:
                return _rebuild(lists, parse(elements.slice(0, 0)), null=True), {
                    0: (position + 1, str(elements[position].as_py()))
                }
        return _rebuild(lists, parse(elements.slice(0, 0)), null=True), {0: (0, "?")}
    half = len(lists) // 2
    left, left_failed = _convert_lists(lists.slice(0, half), parse)
    right, right_failed = _convert_lists(lists.slice(half), parse)
    failed = {**left_failed, **{half + index: found for index, found in right_failed.items()}}
    return pa.concat_arrays([left, right]), failed


def _rebuild(lists: pa.ListArray, values: pa.Array, *, null: bool = False) -> pa.Array:
    """A list array with ``lists``' shape (offsets, nulls) over the converted ``values``."""
    list_type = pa.list_(values.type)
    if null:
        return pa.nulls(len(lists), list_type)
    offsets = lists.offsets  # of this slice: they start where its first list starts
    if offsets[0].as_py() != 0:
        offsets = pc.subtract(offsets, offsets[0])
    return pa.ListArray.from_arrays(offsets, values, type=list_type, mask=lists.is_null())


def _dimensions(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = next((item for item in value if item is not None), None)
    return depth


def _shown(text: str | None) -> str:
    shown = "null" if text is None else text
    return repr(shown if len(shown) <= 40 else shown[:37] + "...")
