"""Quarantined rows as people read them: records, JSON lines and the UI's markdown preview.

The quarantine table (``<table>__quarantine``) holds every column of a rejected row as text, plus
dativo's bookkeeping columns (reason, run id, time, key, the range it was read from). This module
turns such rows into plain records, one shape for ``dativo quarantine`` (table or JSON lines) and
for the ``dativo/quarantine_preview`` metadata of the run that rejected them. Values are shown as
they were read, with secrets redacted, control characters escaped and long values shortened: a
quarantined row is by definition text nobody has vetted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import dagster as dg

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.text import printable
from dativo_dagster.types.system_columns import (
    CURSOR_FROM_COLUMN,
    KEY_COLUMN,
    REASON_COLUMN,
    REJECTED_AT_COLUMN,
    RUN_ID_COLUMN,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from dativo_dagster.engine import ObjectResult

PREVIEW_ROWS = 10
"""Rows of a run's quarantine shown in its materialization's preview."""

PREVIEW_VALUE_CHARS = 60
"""A value longer than this is shortened in the preview (the table keeps it whole)."""

PREVIEW_REASON_CHARS = 200

BOOKKEEPING = frozenset({REASON_COLUMN, RUN_ID_COLUMN, REJECTED_AT_COLUMN, KEY_COLUMN, CURSOR_FROM_COLUMN})
"""Quarantine columns that describe the rejection rather than hold a value of the row."""


def quarantine_records(batches: Iterable[pa.RecordBatch | pa.Table], limit: int | None = None) -> list[dict[str, Any]]:
    """The first ``limit`` rows of quarantine batches as records.

    Each record: ``rejected_at`` (UTC ISO), ``run_id``, ``reason``, ``key`` and ``values`` (every
    column of the row, as the text that was read; None where it was empty).
    """
    records: list[dict[str, Any]] = []
    for batch in batches:
        room = batch.num_rows if limit is None else min(batch.num_rows, limit - len(records))
        if room <= 0:
            break
        for row in batch.slice(0, room).to_pylist():
            records.append(_record(row))
    return records


def _record(row: dict[str, Any]) -> dict[str, Any]:
    rejected_at = row.get(REJECTED_AT_COLUMN)
    if isinstance(rejected_at, dt.datetime):
        rejected_at = rejected_at.astimezone(dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "rejected_at": rejected_at,
        "run_id": row.get(RUN_ID_COLUMN),
        "reason": row.get(REASON_COLUMN),
        "key": row.get(KEY_COLUMN),
        "values": {name: value for name, value in row.items() if name not in BOOKKEEPING},
    }


def shown(value: Any, limit: int | None = None) -> str:
    """A value as safe text: secrets redacted, control characters escaped, shortened past ``limit``."""
    text = printable(redact_text("" if value is None else str(value)))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def values_text(values: dict[str, Any], limit: int | None = None) -> str:
    """``column=value, ...`` of a record's values (empty values left out)."""
    return ", ".join(f"{name}={shown(value, limit)}" for name, value in values.items() if value is not None)


def json_line(record: dict[str, Any]) -> str:
    """One record as a JSON line, values redacted (JSON escapes control characters itself)."""
    safe = {
        **{name: redact_text(value) if isinstance(value, str) else value for name, value in record.items()},
        "values": {
            name: redact_text(value) if isinstance(value, str) else value for name, value in record["values"].items()
        },
    }
    return json.dumps(safe, sort_keys=True)


def _cell(text: str) -> str:
    """Text safe in a markdown table cell: no row or column breaks, no markup."""
    for plain, escaped in (("\\", "\\\\"), ("|", "\\|"), ("`", "\\`"), ("*", "\\*"), ("_", "\\_")):
        text = text.replace(plain, escaped)
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ").replace("\r", " ")


def preview_markdown(records: list[dict[str, Any]], *, rejected: int, table: str, command: str) -> str:
    """The markdown preview of a run's quarantined rows (its first ``PREVIEW_ROWS``)."""
    lines = [
        f"**{rejected} row(s) quarantined by this run**"
        + (f" (first {len(records)} shown)" if len(records) < rejected else ""),
        "",
        f"All of them: table `{table}`, or `{command}`.",
        "",
        "| reason | values |",
        "|---|---|",
    ]
    for record in records:
        reason = _cell(shown(record["reason"], PREVIEW_REASON_CHARS))
        lines.append(f"| {reason} | {_cell(values_text(record['values'], PREVIEW_VALUE_CHARS))} |")
    return "\n".join(lines) + "\n"


def run_quarantine_preview(result: ObjectResult) -> dg.MetadataValue | None:
    """Markdown of the first rows this run quarantined (None when it quarantined none).

    From the write, or, for a run that failed on its rejected-row rate (QUAL001), from the error.
    """
    from dativo_dagster.state import object_command

    write, error = result.write, result.error
    if write is not None:
        sample, rejected, table = write.quarantine_sample, write.rows_rejected, write.quarantine_table
    elif error is not None:
        sample = error.context.get("quarantine_sample") or []
        rejected, table = error.context.get("rows_rejected", len(sample)), error.context.get("quarantine_table")
    else:
        return None
    if not sample:
        return None
    command = object_command("quarantine", result.obj.label)
    run_id = sample[0].get("run_id")
    return dg.MetadataValue.md(
        preview_markdown(
            sample,
            rejected=rejected,
            table=table or "",
            command=f"{command} --run {run_id}" if run_id else command,
        )
    )
