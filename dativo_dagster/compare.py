"""Compare a scratch table with the production table: pure functions over Arrow tables.

``dativo compare`` reads both tables (:mod:`~dativo_dagster.cli_debug`) and hands them here. The
compared rows are those whose cursor lies in the range both tables cover (the whole tables for an
object without a cursor). Each check is one :class:`CompareLine`, passed or failed against
:class:`Thresholds`:

* ``overlap``: the cursor range compared (fails when the tables share none);
* ``rows``: rows in that range, within ``max_row_diff`` (a fraction of production's);
* ``distinct_keys``: distinct primary keys, keys missing on either side (within ``max_row_diff``),
  and no key twice in the scratch table;
* ``nulls:<column>``: nulls per required column; the scratch share may exceed production's by at most
  ``max_null_increase``;
* ``min:<column>`` / ``max:<column>``: each date or timestamp column's bounds, within ``max_date_drift_s``;
* ``columns_missing``, ``columns_added``, ``column_types``: the schema difference (a missing column or
  changed type fails; an added column only with ``fail_on_added_columns``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.types.system_columns import SYSTEM_PREFIX


@dataclass(frozen=True)
class Thresholds:
    """How far the scratch table may be from production and still pass.

    Attributes:
        max_row_diff: Rows and keys: the largest difference, as a fraction of production's count.
        max_null_increase: Required columns: how much larger the scratch table's share of nulls may be.
        max_date_drift_s: Date and timestamp bounds: the largest difference, in seconds.
        fail_on_added_columns: Fail when the scratch table has columns production lacks.
    """

    max_row_diff: float = 0.01
    max_null_increase: float = 0.0
    max_date_drift_s: float = 0.0
    fail_on_added_columns: bool = False


@dataclass(frozen=True)
class CompareLine:
    """One check: what each side holds, the threshold, the verdict and why."""

    check: str
    scratch: Any
    production: Any
    threshold: Any
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        """The line with JSON-ready values (dates as ISO text)."""
        return {name: jsonable(value) for name, value in asdict(self).items()}


def jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it: dates and times as ISO text, containers element by element."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _bounds(table: pa.Table, column: str) -> tuple[Any, Any]:
    if column not in table.column_names or table.num_rows == 0:
        return None, None
    found = pc.min_max(table[column])
    return found["min"].as_py(), found["max"].as_py()


def cursor_overlap(
    scratch: pa.Table, production: pa.Table, cursor: str
) -> tuple[tuple[Any, Any] | None, tuple[Any, Any], tuple[Any, Any]]:
    """The cursor range both tables cover, and each table's own range.

    Returns:
        ``(overlap or None, scratch range, production range)``; a range is ``(low, high)``.
    """
    mine, theirs = _bounds(scratch, cursor), _bounds(production, cursor)
    if None in mine or None in theirs:
        return None, mine, theirs
    low, high = max(mine[0], theirs[0]), min(mine[1], theirs[1])
    if low > high:
        return None, mine, theirs
    return (low, high), mine, theirs


def within(table: pa.Table, column: str, low: Any, high: Any, *, high_inclusive: bool = True) -> pa.Table:
    """The rows whose ``column`` lies in ``[low, high]`` (``[low, high)`` without ``high_inclusive``)."""
    values = table[column]
    lower = pc.greater_equal(values, pa.scalar(low, type=values.type))
    upper = (pc.less_equal if high_inclusive else pc.less)(values, pa.scalar(high, type=values.type))
    return table.filter(pc.and_kleene(lower, upper))


def relative_diff(scratch: int, production: int) -> float:
    """``|scratch - production|`` as a fraction of production (0 when both are 0, infinite from 0)."""
    if production == 0:
        return 0.0 if scratch == 0 else math.inf
    return abs(scratch - production) / production


def _type_label(field: pa.Field) -> str:
    return str(field.type)


def schema_lines(scratch: pa.Schema, production: pa.Schema, thresholds: Thresholds) -> list[CompareLine]:
    """Columns missing from the scratch table, added to it, and whose type changed."""
    mine = {f.name: f for f in scratch if not f.name.startswith(SYSTEM_PREFIX)}
    theirs = {f.name: f for f in production if not f.name.startswith(SYSTEM_PREFIX)}
    missing = [name for name in theirs if name not in mine]
    added = [name for name in mine if name not in theirs]
    changed = {
        name: (_type_label(theirs[name]), _type_label(mine[name]))
        for name in theirs
        if name in mine and not mine[name].type.equals(theirs[name].type)
    }
    return [
        CompareLine(
            "columns_missing",
            len(mine),
            len(theirs),
            "none",
            not missing,
            f"missing from scratch: {', '.join(missing)}" if missing else "every production column is there",
        ),
        CompareLine(
            "columns_added",
            added,
            [],
            "fail" if thresholds.fail_on_added_columns else "allowed",
            not (added and thresholds.fail_on_added_columns),
            f"new in scratch: {', '.join(added)}" if added else "no new column",
        ),
        CompareLine(
            "column_types",
            {name: new for name, (_, new) in changed.items()},
            {name: old for name, (old, _) in changed.items()},
            "unchanged",
            not changed,
            "; ".join(f"{name}: {old} -> {new}" for name, (old, new) in changed.items()) or "types unchanged",
        ),
    ]


def _key_strings(table: pa.Table, key: Sequence[str]) -> list[str] | None:
    if not key or any(name not in table.column_names for name in key):
        return None
    columns = [table[name].to_pylist() for name in key]
    return ["\x1f".join("" if v is None else str(v) for v in row) for row in zip(*columns, strict=True)]


def keys_line(scratch: pa.Table, production: pa.Table, key: Sequence[str], thresholds: Thresholds) -> CompareLine:
    """Distinct primary keys on both sides, the keys only one side has, and duplicates in the scratch table."""
    mine, theirs = _key_strings(scratch, key), _key_strings(production, key)
    threshold = f"missing and extra keys <= {thresholds.max_row_diff:.2%} of production; no duplicate"
    if mine is None or theirs is None:
        return CompareLine("distinct_keys", None, None, threshold, True, "no primary key to compare")
    distinct_mine, distinct_theirs = set(mine), set(theirs)
    missing = sorted(distinct_theirs - distinct_mine)
    extra = sorted(distinct_mine - distinct_theirs)
    duplicates = len(mine) - len(distinct_mine)
    ok = (
        duplicates == 0
        and relative_diff(len(distinct_theirs) - len(missing), len(distinct_theirs)) <= thresholds.max_row_diff
        and relative_diff(len(distinct_theirs) + len(extra), len(distinct_theirs)) <= thresholds.max_row_diff
    )
    parts = [f"{len(missing)} production key(s) missing from scratch", f"{len(extra)} not in production"]
    if missing:
        parts[0] += " (e.g. " + ", ".join(k.replace("\x1f", "/") for k in missing[:5]) + ")"
    if extra:
        parts[1] += " (e.g. " + ", ".join(k.replace("\x1f", "/") for k in extra[:5]) + ")"
    parts.append(f"{duplicates} duplicate(s) in scratch")
    return CompareLine("distinct_keys", len(distinct_mine), len(distinct_theirs), threshold, ok, "; ".join(parts))


def null_lines(
    scratch: pa.Table, production: pa.Table, required: Sequence[str], thresholds: Thresholds
) -> list[CompareLine]:
    """Nulls per required column (columns missing from either side are the schema lines' business)."""
    lines = []
    for name in required:
        if name not in scratch.column_names or name not in production.column_names:
            continue
        mine, theirs = scratch[name].null_count, production[name].null_count
        share_mine = mine / scratch.num_rows if scratch.num_rows else 0.0
        share_theirs = theirs / production.num_rows if production.num_rows else 0.0
        ok = share_mine <= share_theirs + thresholds.max_null_increase
        lines.append(
            CompareLine(
                f"nulls:{name}",
                mine,
                theirs,
                f"share <= production's + {thresholds.max_null_increase:.2%}",
                ok,
                f"{share_mine:.2%} of scratch rows null, {share_theirs:.2%} of production's",
            )
        )
    return lines


def _is_temporal(data_type: pa.DataType) -> bool:
    return pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)


def _seconds_apart(a: Any, b: Any) -> float:
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        if (a.tzinfo is None) != (b.tzinfo is None):
            return math.inf
        return abs((a - b).total_seconds())
    if isinstance(a, dt.date) and isinstance(b, dt.date):
        return abs((a - b).days) * 86_400.0
    return 0.0 if a == b else math.inf


def date_lines(scratch: pa.Table, production: pa.Table, thresholds: Thresholds) -> list[CompareLine]:
    """Min and max of every date or timestamp column both tables hold (dativo's own columns left out)."""
    lines = []
    threshold = f"within {thresholds.max_date_drift_s:g}s"
    for field in production.schema:
        if field.name.startswith(SYSTEM_PREFIX) or not _is_temporal(field.type):
            continue
        if field.name not in scratch.column_names or not _is_temporal(scratch.schema.field(field.name).type):
            continue
        mine, theirs = _bounds(scratch, field.name), _bounds(production, field.name)
        for index, bound in enumerate(("min", "max")):
            a, b = mine[index], theirs[index]
            if a is None and b is None:
                ok, detail = True, "no value on either side"
            elif a is None or b is None:
                ok, detail = False, "only one side has a value"
            else:
                apart = _seconds_apart(a, b)
                ok = apart <= thresholds.max_date_drift_s
                detail = "equal" if apart == 0 else f"{apart:g}s apart"
            lines.append(CompareLine(f"{bound}:{field.name}", a, b, threshold, ok, detail))
    return lines


def compare_tables(
    scratch: pa.Table,
    production: pa.Table,
    *,
    cursor: str | None,
    primary_key: Sequence[str],
    required: Sequence[str],
    thresholds: Thresholds | None = None,
    high_inclusive: bool = True,
) -> list[CompareLine]:
    """Every check of a scratch table against the production table.

    Args:
        scratch: The scratch table's rows.
        production: The production table's rows (at least those in the scratch table's cursor range).
        cursor: The cursor column (None: the whole tables are compared).
        primary_key: The primary key columns.
        required: Columns that must not hold nulls.
        thresholds: The limits (defaults: :class:`Thresholds`).
        high_inclusive: False when the scratch run stopped at a row limit: rows at its last cursor value
            may have been cut, so that value is left out of the compared range.

    Returns:
        The lines, ``overlap`` first.
    """
    thresholds = thresholds or Thresholds()
    lines = schema_lines(scratch.schema, production.schema, thresholds)
    if cursor is not None and cursor in scratch.column_names and cursor in production.column_names:
        mine_type, their_type = scratch.schema.field(cursor).type, production.schema.field(cursor).type
        if not mine_type.equals(their_type):
            detail = f"the cursor column {cursor} changed type ({their_type} -> {mine_type}): no range to compare"
            return [CompareLine("overlap", str(mine_type), str(their_type), "non-empty", False, detail), *lines]
        overlap, mine, theirs = cursor_overlap(scratch, production, cursor)
        if overlap is None:
            detail = "the tables share no cursor range: run the scratch run with --from-start"
            if scratch.num_rows == 0:
                detail = "the scratch table is empty"
            first = CompareLine("overlap", list(mine), list(theirs), "non-empty", False, detail)
            return [first, *lines]
        low, high = overlap
        scratch = within(scratch, cursor, low, high, high_inclusive=high_inclusive)
        production = within(production, cursor, low, high, high_inclusive=high_inclusive)
        bracket = "]" if high_inclusive else ")"
        first = CompareLine(
            "overlap",
            list(mine),
            list(theirs),
            "non-empty",
            scratch.num_rows > 0 or production.num_rows > 0,
            f"rows with {cursor} in [{jsonable(low)}, {jsonable(high)}{bracket}",
        )
    else:
        first = CompareLine("overlap", None, None, "non-empty", True, "no cursor column: the whole tables compared")
    rows = relative_diff(scratch.num_rows, production.num_rows)
    lines = [
        first,
        CompareLine(
            "rows",
            scratch.num_rows,
            production.num_rows,
            f"within {thresholds.max_row_diff:.2%}",
            rows <= thresholds.max_row_diff,
            f"{rows:.2%} apart" if math.isfinite(rows) else "production has no row in the range",
        ),
        keys_line(scratch, production, primary_key, thresholds),
        *null_lines(scratch, production, required, thresholds),
        *date_lines(scratch, production, thresholds),
        *lines,
    ]
    return lines


def compare_document(lines: Sequence[CompareLine], *, label: str, checked_at: dt.datetime | None = None) -> dict:
    """The compare result as ``compare.json`` holds it (the contract of
    :func:`dativo_dagster.diagnose.compare_path`, which ``dativo diagnose --report`` reads): ``version``,
    ``object``, ``created_at``, ``passed`` and one ``checks`` entry per line, each with its ``name``,
    ``passed``, ``detail`` and the ``scratch`` and ``production`` values against the ``threshold``."""
    from dativo_dagster.diagnose import COMPARE_VERSION

    moment = checked_at or dt.datetime.now(dt.timezone.utc)
    checks = []
    for line in lines:
        shown = line.as_json()
        checks.append(
            {
                "name": shown["check"],
                "passed": shown["ok"],
                "detail": shown["detail"],
                "scratch": shown["scratch"],
                "production": shown["production"],
                "threshold": shown["threshold"],
            }
        )
    return {
        "version": COMPARE_VERSION,
        "object": label,
        "created_at": moment.isoformat(timespec="seconds"),
        "passed": all(line.ok for line in lines),
        "checks": checks,
    }
