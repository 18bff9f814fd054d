"""Pure helpers on the values a SQL server sends: casts, decimals, UTF-8 checks, row reasons.

A value that cannot be read exactly is never guessed: the column stays text for the contract
enforcer to convert value by value, or the row is marked with a reason in
:data:`~dativo_dagster.types.SOURCE_REASON_COLUMN` for the enforcer to quarantine. The cursor
column alone must convert, or the read fails (:func:`guard_cursor_column`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, QualityError
from dativo_dagster.types import SOURCE_REASON_COLUMN, type_label


def best_effort_cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Vectorised cast of text from the server to ``target``; on any odd value, keep the text.

    Keeping the text hands the column to the contract enforcer, which converts value by value and
    quarantines just the rows that do not convert (a zero date, ``infinity``, ``NaN`` numeric).
    """
    if column.type == target:
        return column
    if pa.types.is_boolean(target) and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        # Arrow casts every non-zero number to true; only a column of 0s and 1s is a boolean column
        # (MySQL's tinyint(1) holds -128..127). Anything else goes to the enforcer, which accepts
        # 0 and 1 and quarantines the other values with the reason.
        if pa.types.is_integer(column.type):
            low, high = pc.min_max(column).values()
            if low.as_py() is None or (low.as_py() >= 0 and high.as_py() <= 1):
                return pc.cast(column, target)
        return column
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    if pa.types.is_timestamp(target) and target.tz is not None:
        try:
            # Servers that print UTC without an offset (MySQL with time_zone '+00:00').
            return pc.assume_timezone(pc.cast(column, pa.timestamp(target.unit)), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    return column


def guard_cursor_column(
    batches: Iterator[pa.RecordBatch], obj: ObjectPlan, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Pass batches through, failing loudly if the cursor column is not of its mapped type.

    Other columns may stay text when a value does not convert (the enforcer quarantines that
    row), but the new cursor is the maximum of the cursor column: over text, ``'infinity'`` or
    ``'0000-00-00'`` would sort after every real timestamp and silently end all later reads.

    Raises:
        QualityError: QUAL001 naming the column and the value; nothing is committed.
    """
    name = obj.cursor_field
    if name is None or schema.get_field_index(name) < 0:
        yield from batches
        return
    expected = schema.field(name).type
    try:
        for batch in batches:
            column = batch.column(name)
            if column.type != expected:
                shown = _first_unconvertible(column, expected)
                raise QualityError(
                    f"{obj.label}: cursor column '{name}' holds {shown!r}, which cannot be read as "
                    f"{type_label(expected)}, so the cursor cannot advance past it; nothing was committed",
                    hint="exclude or convert such rows with a 'query' object, or pick another cursor_field",
                )
            yield batch
    finally:
        # Release the server-side stream now, not when the inner generator is collected.
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _first_unconvertible(column: pa.Array, target: pa.DataType) -> str:
    for value in column.to_pylist():
        if value is None:
            continue
        try:
            best = best_effort_cast(pa.array([value], column.type), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return str(value)
        if best.type != target:
            return str(value)
    return "?"


ICEBERG_MAX_DECIMAL_DIGITS = 38


def decimal_type(
    precision: int, scale: int, *, column: str, source_type: str, label: str, contract: bool
) -> pa.DataType:
    """Arrow type of a fixed-point column: ``decimal(p, s)``, or text when Iceberg cannot hold it.

    Iceberg decimals hold at most 38 digits. With a schema contract the column is read as its
    exact text and the enforcer converts each value to the contract's type (or quarantines the
    row); without one, no type would hold every value, so the object is refused before any table
    exists.

    Raises:
        ConfigError: CFG001 naming the column and its type, without a contract.
    """
    if precision <= ICEBERG_MAX_DECIMAL_DIGITS:
        return pa.decimal128(precision, scale)
    if contract:
        return pa.string()
    raise ConfigError(
        f"{label}: column '{column}' has type {source_type}, wider than Iceberg's "
        f"{ICEBERG_MAX_DECIMAL_DIGITS}-digit decimal",
        hint="cast it in a 'query' object (to text, or to a decimal of at most 38 digits that holds its values), "
        "or declare the column in a schema contract (e.g. as string); its values are then converted exactly or "
        "quarantined",
    )


def checked_utf8(column: pa.Array, name: str) -> tuple[pa.Array, list[str | None] | None]:
    """``column`` (bytes, or text not yet checked) as valid UTF-8 text, with a reason per bad row.

    A value that is not valid UTF-8 (a SQL_ASCII database holding Latin-1 bytes, a MySQL session
    sending another character set) becomes null, and its row is marked with a reason naming the
    column, so the enforcer quarantines that row only.
    """
    raw = column.view(pa.binary()) if pa.types.is_string(column.type) else column
    if pa.types.is_large_string(column.type):
        raw = column.view(pa.large_binary())
    try:
        return pc.cast(raw, pa.large_string() if pa.types.is_large_binary(raw.type) else pa.string()), None
    except pa.ArrowInvalid:
        pass  # some value is not UTF-8: find which
    texts: list[str | None] = []
    reasons: list[str | None] = []
    for value in raw.to_pylist():
        if value is None:
            texts.append(None)
            reasons.append(None)
            continue
        try:
            texts.append(value.decode("utf-8"))
            reasons.append(None)
        except UnicodeDecodeError as exc:
            texts.append(None)
            shown = value[:40].decode("utf-8", "backslashreplace")
            reasons.append(f"{name}: '{shown}' is not valid UTF-8 (byte {exc.start + 1})")
    return pa.array(texts, pa.string()), reasons


def merge_reasons(rows: int, *parts: list[str | None] | None) -> list[str | None] | None:
    """Combine per-row reasons from several columns ("; "-joined), or None when no row has one."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    merged: list[str | None] = []
    for i in range(rows):
        found = [p[i] for p in present if p[i] is not None]
        merged.append("; ".join(r for r in found if r) if found else None)
    return merged if any(m is not None for m in merged) else None


def with_source_reasons(arrays: list[pa.Array], names: list[str], reasons: list[str | None] | None) -> pa.RecordBatch:
    """A batch of ``arrays``, plus :data:`SOURCE_REASON_COLUMN` when some row could not be read exactly.

    The enforcer rejects the marked rows with the reason; batches without such rows carry no
    extra column, so the common path is unchanged.
    """
    if reasons is None:
        return pa.RecordBatch.from_arrays(arrays, names=names)
    return pa.RecordBatch.from_arrays([*arrays, pa.array(reasons, pa.string())], names=[*names, SOURCE_REASON_COLUMN])
