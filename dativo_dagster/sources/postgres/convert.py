"""From the text COPY sends to each column's type, after Arrow's CSV reader has parsed a batch.

Columns Arrow's reader leaves as text (uuids, bytea, arrays, clock times, dates and numerics that
may hold values Arrow rejects) are converted here; a row that cannot be converted exactly is
marked with a reason for the enforcer to quarantine, and the other rows of the batch load.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from dativo_dagster.sources.postgres.arrays import (
    PARSE_ERRORS,
    arrays_from_json,
    bytes_from_hex,
    element_parser,
    uuids_from_text,
)
from dativo_dagster.sources.sql_common import best_effort_cast, checked_utf8, merge_reasons, with_source_reasons
from dativo_dagster.types import is_uuid

Converter = Callable[[pa.Array], tuple[pa.Array, "list[str | None] | None"]]
"""From COPY's text to the column's type: the array, and a reason per row it could not convert
exactly (None when every row converted)."""


def post_converter(target: pa.DataType, name: str) -> Converter | None:
    """Conversion from COPY text to the target type for columns Arrow's CSV reader left as text."""
    if pa.types.is_integer(target) or pa.types.is_floating(target) or pa.types.is_boolean(target):
        return None
    if pa.types.is_string(target):
        return None
    if is_uuid(target):
        return lambda column: (uuids_from_text(column, target), None)
    if pa.types.is_binary(target):
        return lambda column: (bytes_from_hex(column), None)
    if pa.types.is_list(target):
        return lambda column: arrays_from_json(column, target, name)
    if pa.types.is_time(target):
        return lambda column: (_times_or_text(column, target), None)
    return lambda column: (best_effort_cast(column, target), None)


def _times_or_text(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Clock times parsed in one vectorised pass, or the text when one does not parse (24:00:00)."""
    try:
        return element_parser(target)(column)
    except PARSE_ERRORS:
        return column  # the enforcer converts value by value and quarantines the odd row


def convert_batch(
    batch: pa.RecordBatch,
    schema: pa.Schema,
    converters: dict[str, Converter | None],
    unchecked: list[str] | None = None,
) -> pa.RecordBatch:
    """``batch`` as parsed by Arrow, converted to ``schema``, with a reason on each row not read exactly.

    Args:
        batch: One batch from Arrow's CSV reader.
        schema: The object's Arrow schema.
        converters: Per column, its :func:`post_converter` (None: Arrow's parse is final).
        unchecked: Text columns whose UTF-8 Arrow did not check (a SQL_ASCII database).
    """
    arrays = []
    reasons: list[list[str | None] | None] = []
    for field in schema:
        column = batch.column(field.name)
        if unchecked and field.name in unchecked:
            column, bad = checked_utf8(column, field.name)
            reasons.append(bad)
        convert = converters[field.name]
        if convert is not None:
            column, bad = convert(column)
            reasons.append(bad)
        arrays.append(column)
    return with_source_reasons(arrays, schema.names, merge_reasons(batch.num_rows, *reasons))
