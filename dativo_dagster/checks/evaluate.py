"""How each check is judged: plain numbers and column lists in, an :class:`Outcome` out.

Nothing here reads a table or the Dagster instance (:mod:`.facts` and :mod:`.runtime` do), so every
rule is tested with canned data. A failed outcome carries the severity the job configured, except
the contract check below its threshold, which is always a warning: some rows were rejected, but
fewer than the object tolerates.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dativo_dagster.config.models import CheckSeverity
from dativo_dagster.errors import QualityError

PREVIEW_REASONS = 10
"""Most frequent rejection reasons shown in a check's metadata."""

DISTINCT_REASONS_MAX = 1000
"""Distinct reasons counted per evaluation; more are counted under one ``(other reasons)`` line."""

OTHER_REASONS = "(other reasons)"

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")

_UNREAD_LINE = re.compile(
    r"^(?:line \d+|a line): (?:(?P<fields>expected \d+ fields, found \d+)"
    r"|longer than (?P<limit>[^(]+?) \([\d,]+ bytes\), not read|(?P<quote>unterminated quote))(?::|$)",
    re.DOTALL,
)
"""A line a file source could not split: its number, then a fixed problem, then the raw line."""

_VALUE_DETAIL = re.compile(r"^(?P<kept>.*?'…'.*?)\s+\(.*$", re.DOTALL)
"""The parenthesized detail after a masked value (a parser's message, a byte offset): it may
quote the value again, unquoted."""


@dataclass(frozen=True)
class Outcome:
    """What one check concluded: passed or not, how bad a failure is, and what it saw."""

    passed: bool
    severity: CheckSeverity
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None

    def result(self, key: dg.AssetKey, name: str) -> dg.AssetCheckResult:
        """The Dagster result of check ``name`` of asset ``key``."""
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=name,
            passed=self.passed,
            severity=dg.AssetCheckSeverity.WARN if self.severity is CheckSeverity.WARN else dg.AssetCheckSeverity.ERROR,
            metadata=self.metadata,
            description=self.description,
        )


@dataclass(frozen=True)
class ColumnFacts:
    """A column as a contract declares it or a table holds it: name, type label, required."""

    name: str
    type: str
    required: bool


# ----------------------------------------------------------------------------- rejection reasons


def reason_kinds(reason: str) -> list[str]:
    """The problems of one rejected row, with the offending values masked.

    A row's reason lists its problems separated by ``"; "`` (``amount: cannot convert 'x' to
    decimal(12,2); status: required value is missing``). Masking the quoted values (and the detail
    after them) groups rows by what is wrong rather than by value, and keeps row values out of
    Dagster's metadata. A line a file source could not split (``line 7: expected 3 fields, found
    2: <the raw line>``) keeps only its fixed problem: the raw line is row data, unquoted, and the
    line number would make every such row its own group. The quarantine table keeps each full
    reason next to its row.
    """
    unread = _UNREAD_LINE.match(reason)
    if unread is not None:
        if unread.group("fields"):
            return [f"unreadable line: {unread.group('fields')}"]
        if unread.group("limit"):
            return [f"unreadable line: longer than {unread.group('limit')}, not read"]
        return ["unreadable line: unterminated quote"]
    masked = _QUOTED.sub("'…'", reason)
    parts = [part.strip() for part in masked.split("; ") if part.strip()]
    return [_VALUE_DETAIL.sub(r"\g<kept>", part) for part in parts]


def count_reasons(reasons: Iterable[str | None], counter: Counter[str]) -> None:
    """Add each row's problems to ``counter`` (bounded: past the limit, new reasons count as one line)."""
    for reason in reasons:
        if not reason:
            continue
        for kind in reason_kinds(reason):
            if kind in counter or len(counter) < DISTINCT_REASONS_MAX:
                counter[kind] += 1
            else:
                counter[OTHER_REASONS] += 1


def reasons_preview(counter: Counter[str], limit: int = PREVIEW_REASONS) -> str:
    """Markdown table of the most frequent problems with their counts."""
    if not counter:
        return "No rejection reasons recorded."
    lines = ["| rows | reason |", "|---:|---|"]
    for reason, count in counter.most_common(limit):
        escaped = reason.replace("|", "\\|")
        lines.append(f"| {count} | {escaped} |")
    rest = len(counter) - limit
    if rest > 0:
        lines.append(f"| … | {rest} more reason(s) |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the checks


def contract_outcome(
    rows_read: int,
    rows_rejected: int,
    threshold: float,
    reasons: Counter[str],
    severity: CheckSeverity = CheckSeverity.ERROR,
) -> Outcome:
    """Contract conformance of one run.

    Passed only when no row was rejected; a rejected share at or under ``threshold`` is a WARN
    failure; above it, a failure of the configured ``severity`` (the run itself failed with QUAL001).
    """
    rate = rows_rejected / rows_read if rows_read else 0.0
    metadata: dict[str, Any] = {
        "rows_read": rows_read,
        "rows_rejected": rows_rejected,
        "rejected_rate": round(rate, 6),
        "threshold": threshold,
    }
    if rows_rejected == 0:
        return Outcome(True, severity, metadata)
    metadata["reasons"] = dg.MetadataValue.md(reasons_preview(reasons))
    if rate <= threshold:
        return Outcome(
            False,
            CheckSeverity.WARN,
            metadata,
            f"{rows_rejected} of {rows_read} rows ({rate:.2%}) violate the contract and were quarantined; "
            f"under the {threshold:.1%} threshold, so the other rows were committed",
        )
    # Above the threshold the run failed with QUAL001: the check says so in its code (alerts carry it).
    metadata["dativo/error_code"] = QualityError.code
    return Outcome(
        False,
        severity,
        metadata,
        f"{QualityError.code}: {rows_rejected} of {rows_read} rows ({rate:.2%}) violate the contract, above the "
        f"{threshold:.1%} threshold (a run above it fails and commits nothing)",
    )


def not_null_outcome(null_counts: dict[str, int], missing: Sequence[str], severity: CheckSeverity) -> Outcome:
    """Required columns hold no null; ``missing`` are required columns the table lacks altogether."""
    offending = {column: count for column, count in null_counts.items() if count}
    metadata: dict[str, Any] = {
        "columns_checked": ", ".join(null_counts) or "-",
        "null_rows": sum(offending.values()),
    }
    metadata.update({f"nulls/{column}": count for column, count in offending.items()})
    if missing:
        metadata["missing_columns"] = ", ".join(missing)
    if not offending and not missing:
        return Outcome(True, severity, metadata)
    parts = [f"{column}: {count} null(s)" for column, count in offending.items()]
    parts += [f"{column}: not in the table" for column in missing]
    return Outcome(False, severity, metadata, "Required columns with nulls: " + "; ".join(parts))


def primary_key_outcome(
    primary_key: Sequence[str],
    rows: int,
    duplicate_keys: int,
    duplicate_rows: int,
    examples: Sequence[str],
    severity: CheckSeverity,
) -> Outcome:
    """No primary key value appears twice. ``duplicate_rows``: rows beyond the first of each key."""
    metadata: dict[str, Any] = {
        "primary_key": ", ".join(primary_key),
        "rows_scanned": rows,
        "duplicate_keys": duplicate_keys,
        "duplicate_rows": duplicate_rows,
    }
    if duplicate_keys == 0:
        return Outcome(True, severity, metadata)
    metadata["examples"] = ", ".join(examples)
    return Outcome(
        False,
        severity,
        metadata,
        # Counts only: the description becomes the alert message sent to webhooks and Slack, which
        # must carry no row value (the examples stay in the check's metadata, in Dagster).
        f"{duplicate_keys} primary key value(s) of ({', '.join(primary_key)}) appear more than once "
        f"({duplicate_rows} extra row(s))",
    )


@dataclass(frozen=True)
class SchemaDifference:
    """One way the table differs from the contract."""

    column: str
    kind: str  # missing | extra | type | nullability
    contract: str
    table: str

    def line(self) -> str:
        """One line for metadata."""
        return f"{self.column}: {self.kind} (contract: {self.contract}, table: {self.table})"


def schema_differences(contract: Sequence[ColumnFacts], table: Sequence[ColumnFacts]) -> list[SchemaDifference]:
    """Column-by-column differences between a contract and a table (in contract order, then extras).

    dativo's own columns (``_dativo_*``: lineage such as the source file) are not differences.
    """
    in_table = {c.name: c for c in table}
    declared = {c.name for c in contract}
    found: list[SchemaDifference] = []
    for column in contract:
        actual = in_table.get(column.name)
        expected = f"{column.type}{' required' if column.required else ''}"
        if actual is None:
            found.append(SchemaDifference(column.name, "missing", expected, "-"))
            continue
        if actual.type != column.type:
            found.append(SchemaDifference(column.name, "type", column.type, actual.type))
        if actual.required != column.required:
            found.append(
                SchemaDifference(
                    column.name,
                    "nullability",
                    "required" if column.required else "nullable",
                    "required" if actual.required else "nullable",
                )
            )
    for column in table:
        if column.name not in declared and not column.name.startswith("_dativo_"):
            found.append(
                SchemaDifference(column.name, "extra", "-", f"{column.type}{' required' if column.required else ''}")
            )
    return found


def schema_outcome(contract_label: str, differences: Sequence[SchemaDifference], severity: CheckSeverity) -> Outcome:
    """The table matches the contract column by column."""
    metadata: dict[str, Any] = {"contract": contract_label, "differences": len(differences)}
    if not differences:
        return Outcome(True, severity, metadata)
    for kind in ("missing", "extra", "type", "nullability"):
        names = [d.column for d in differences if d.kind == kind]
        if names:
            metadata[f"columns_{kind}"] = ", ".join(names)
    metadata["details"] = dg.MetadataValue.md("\n".join(f"- {d.line()}" for d in differences))
    summary = "; ".join(d.line() for d in differences)
    return Outcome(False, severity, metadata, f"The table differs from {contract_label}: {summary}")


def volume_outcome(rows: int, history: Sequence[int], max_drop_fraction: float, severity: CheckSeverity) -> Outcome:
    """Rows read by a run against the median of the object's earlier runs (newest first).

    No history (a first run) passes. Zero rows fails when the earlier runs read rows; fewer than
    ``(1 - max_drop_fraction)`` of the median fails.
    """
    metadata: dict[str, Any] = {"rows": rows, "history_runs": len(history), "max_drop_fraction": max_drop_fraction}
    if not history:
        return Outcome(True, severity, metadata, "No earlier run to compare with")
    median = float(statistics.median(history))
    floor = (1 - max_drop_fraction) * median
    metadata.update({"history_median": median, "minimum_expected": round(floor, 3)})
    if median > 0 and rows == 0:
        return Outcome(False, severity, metadata, f"The run read no rows; earlier runs read {median:g} (median)")
    if rows < floor:
        drop = 1 - rows / median
        metadata["drop_fraction"] = round(drop, 6)
        return Outcome(
            False,
            severity,
            metadata,
            f"The run read {rows} rows, {drop:.0%} fewer than the median of its last {len(history)} run(s) "
            f"({median:g}); at most {max_drop_fraction:.0%} is expected",
        )
    return Outcome(True, severity, metadata)


def volume_not_judged_for_partition(window: str, max_drop_fraction: float, severity: CheckSeverity) -> Outcome:
    """A partition run's volume: passed, not judged.

    A partition run reads one window (a day, or a year-long backfill in one run), which says nothing
    against the median of incremental runs; partition runs are left out of that history too.
    """
    return Outcome(
        True,
        severity,
        {"judged": False, "partition_window": window, "max_drop_fraction": max_drop_fraction},
        f"Not judged: a partition run ({window}) reads one window, not comparable with the object's "
        "incremental runs (partition runs are left out of the volume history)",
    )


def freshness_outcome(
    last_commit_ms: int | None, now_ms: int, max_age_minutes: float, severity: CheckSeverity
) -> Outcome:
    """The table's last commit is at most ``max_age_minutes`` old."""
    metadata: dict[str, Any] = {"max_age_minutes": max_age_minutes}
    if last_commit_ms is None:
        return Outcome(False, severity, metadata, "Nothing was ever committed to the table")
    age_minutes = max(now_ms - last_commit_ms, 0) / 60_000
    metadata.update(
        {
            "last_commit": dg.MetadataValue.timestamp(last_commit_ms / 1000),
            "age_minutes": round(age_minutes, 3),
        }
    )
    if age_minutes <= max_age_minutes:
        return Outcome(True, severity, metadata)
    return Outcome(
        False,
        severity,
        metadata,
        f"The last commit is {age_minutes:.1f} minutes old; the SLA is {max_age_minutes:g} minutes",
    )


def quarantine_outcome(
    rows_added: int, max_growth_rows: int, reasons: Counter[str], severity: CheckSeverity, quarantine_table: str
) -> Outcome:
    """A run adds at most ``max_growth_rows`` rows to the quarantine table."""
    metadata: dict[str, Any] = {
        "quarantine_table": quarantine_table,
        "rows_added": rows_added,
        "max_growth_rows": max_growth_rows,
    }
    if rows_added:
        metadata["reasons"] = dg.MetadataValue.md(reasons_preview(reasons))
    if rows_added <= max_growth_rows:
        return Outcome(True, severity, metadata)
    return Outcome(
        False,
        severity,
        metadata,
        f"The run added {rows_added} rows to {quarantine_table}, more than the {max_growth_rows} allowed",
    )
