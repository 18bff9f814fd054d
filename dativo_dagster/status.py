"""Each object's recent history, read from what dativo already records: ``dativo status``.

Runs come from the Dagster instance (every run of a tenant job carries the ``dativo/tenant`` and
``dativo/job`` tags, ``dativo run`` included, since it executes in-process against the project's
instance): an object *succeeded* in a run that recorded its materialization, and *failed* in a run
whose step failure names it (``dativo/failed_objects``, with the per-object ``dativo/failure``
record, see :mod:`dativo_dagster.diagnose`), or that failed without a step failure while it was
selected (a killed run). The cursor comes from the table's snapshot history (the table is the
source of truth), else from the last materialization.

An object is **unhealthy** when:

* its last ``streak`` runs (default 3) or more all failed (the current failure streak), or
* it has a freshness SLA (``checks.freshness.max_age_minutes``) and its last successful run is
  older than that (or it failed and never succeeded).

An object that never ran is not unhealthy (it is shown as such).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.diagnose import CONFIG_METADATA_KEY, FAILURE_METADATA_KEY, RunView, when
from dativo_dagster.translator import TAG_JOB, TAG_TENANT, DativoTranslator

DEFAULT_RUNS = 20
DEFAULT_STREAK = 3

_FINISHED_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _value(entry: Any) -> Any:
    return getattr(entry, "value", entry)


def _failure_view(run_id: str, at: float | None, obj: ObjectPlan, data: Any) -> RunView | None:
    """The failure of ``obj`` in a step failure's user data, if the failure names it."""
    metadata = {k: _value(v) for k, v in (getattr(data, "metadata", None) or {}).items()}
    failed = metadata.get("dativo/failed_objects")
    if failed is not None and obj.name not in [n.strip() for n in str(failed).split(",")]:
        return None
    records = metadata.get(FAILURE_METADATA_KEY)
    record = records.get(obj.name) if isinstance(records, Mapping) else None
    if isinstance(record, Mapping):
        copies = metadata.get(CONFIG_METADATA_KEY)
        copies = copies if isinstance(copies, Mapping) else {}
        files = record.get("config_files")
        files = files if isinstance(files, Mapping) else {}
        record = {
            **record,
            "config_files": {name: {**entry, **(copies.get(name) or {})} for name, entry in files.items()},
        }
        return RunView(
            run_id=run_id,
            outcome="failure",
            at=at,
            duration_s=record.get("duration_s"),
            code=record.get("code"),
            message=record.get("message"),
            record=record,
        )
    description = getattr(data, "description", None)
    return RunView(
        run_id=run_id,
        outcome="failure",
        at=at,
        code=metadata.get("dativo/error_code"),
        message=description,
        record={"message": description, "code": metadata.get("dativo/error_code")},
    )


def _success_view(run_id: str, at: float | None, materialization: Any) -> RunView:
    md = {k: _value(v) for k, v in materialization.metadata.items()}
    changes = md.get("dativo/schema_changes")
    try:
        schema_changes = json.loads(changes) if isinstance(changes, str) else []
    except ValueError:
        schema_changes = []
    return RunView(
        run_id=run_id,
        outcome="success",
        at=at,
        duration_s=md.get("dativo/duration_s"),
        rows_written=md.get("dativo/rows_written"),
        rows_rejected=md.get("dativo/rows_rejected"),
        cursor=md.get("dativo/cursor_display"),
        record={"cursor_json": md.get("dativo/cursor"), "table": md.get("dagster/table_name")},
        schema_changes=schema_changes if isinstance(schema_changes, list) else [],
    )


def object_runs(
    instance: dg.DagsterInstance,
    job: JobPlan,
    runs: int,
    translator: DativoTranslator | None = None,
) -> dict[str, list[RunView]]:
    """Each object's last ``runs`` runs, newest first (runs that did not select it are skipped).

    Args:
        instance: The Dagster instance the job's runs are recorded in.
        job: The tenant job.
        runs: Runs kept per object.
        translator: Asset keys (default :class:`DativoTranslator`).
    """
    translator = translator or DativoTranslator()
    keys = {translator.asset_key(obj): obj for obj in job.objects}
    found: dict[str, list[RunView]] = {obj.name: [] for obj in job.objects}
    tags = {TAG_TENANT: job.tenant, TAG_JOB: job.name}
    # A run may select some objects only: read enough runs for every object to get its share.
    limit = min(runs * max(len(job.objects), 1), 1000)
    for record in instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=limit):
        run = record.dagster_run
        if run.status not in _FINISHED_FAILED and run.status is not dg.DagsterRunStatus.SUCCESS:
            continue  # still running: its outcome is not known yet
        if PARTITION_TAGS & set(run.tags):
            # A backfill of past windows: neither its failures nor its successes say whether the
            # incremental load is healthy (Dagster's backfill page shows them).
            continue
        at = record.end_time or record.start_time or record.create_timestamp.timestamp()
        selected = set(run.asset_selection) if run.asset_selection is not None else set(keys)
        seen: dict[str, RunView] = {}
        events = instance.all_logs(
            run.run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.STEP_FAILURE}
        )
        for entry in events:
            event = entry.dagster_event
            if event is None:
                continue
            if event.event_type is dg.DagsterEventType.ASSET_MATERIALIZATION:
                materialization = event.event_specific_data.materialization  # type: ignore[union-attr]
                obj = keys.get(materialization.asset_key)
                if obj is not None and materialization.partition is None:
                    seen[obj.name] = _success_view(run.run_id, entry.timestamp, materialization)
            else:
                data = getattr(event.event_specific_data, "user_failure_data", None)
                error = getattr(event.event_specific_data, "error", None)
                for key, obj in keys.items():
                    if key not in selected or obj.name in seen:
                        continue
                    if data is not None:
                        view = _failure_view(run.run_id, entry.timestamp, obj, data)
                    else:
                        message = error.message.strip().splitlines()[-1] if error is not None else "step failed"
                        view = RunView(run.run_id, "failure", entry.timestamp, code="BUG", message=message)
                    if view is not None:
                        seen[obj.name] = view
        if run.status in _FINISHED_FAILED:
            for key, obj in keys.items():
                if key in selected and obj.name not in seen:
                    seen[obj.name] = RunView(
                        run.run_id,
                        "failure",
                        at,
                        code=None,
                        message=f"the run {run.status.value.lower()} without recording a result for the object "
                        "(killed, canceled, or failed before the step ran)",
                    )
        for name, view in seen.items():
            if len(found[name]) < runs:
                found[name].append(view)
    return found


PARTITION_TAGS = frozenset({"dagster/partition", "dagster/asset_partition_range_start", "dagster/backfill"})
"""Run tags of partition runs and backfills, which ``status`` leaves out."""


# --------------------------------------------------------------------------- cursors


def cursor_time(value: Any, strategy: str | None = None) -> tuple[float | None, str]:
    """When a cursor value stands (epoch seconds) and what it is measured from; None when it is no time.

    ISO timestamps and dates are times; a ``file_mtime`` cursor is its files' modification time;
    an integer of a ``created``/``updated`` cursor is read as epoch seconds (or milliseconds) when it
    falls between 2001 and 2100; ids and other values have no lag.
    """
    if isinstance(value, Mapping):
        mtime = value.get("mtime_ns")
        if isinstance(mtime, (int, float)) and mtime > 0:
            return mtime / 1e9, "file modification time"
        return None, "n/a"
    if isinstance(value, bool):
        return None, "n/a"
    if isinstance(value, (int, float)) and strategy in ("created", "updated"):
        for scale, label in ((1.0, "epoch seconds"), (1e3, "epoch milliseconds"), (1e6, "epoch microseconds")):
            seconds = value / scale
            if 978_307_200 <= seconds <= 4_102_444_800:
                return float(seconds), label
        return None, "n/a"
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None, "n/a"
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.timezone.utc)  # dativo stores naive cursors as UTC wall time
        return parsed.timestamp(), "timestamp"
    return None, "n/a"


def lag_text(seconds: float | None) -> str:
    """``3d 4h``, ``5h 12m``, ``42m``, ``17s``; ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    seconds = max(seconds, 0)
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


# --------------------------------------------------------------------------- status


@dataclass
class ObjectStatus:
    """One object's line of ``dativo status``."""

    label: str
    runs: list[RunView]
    sla_minutes: float | None = None
    cursor: str | None = None
    cursor_value: Any = None
    cursor_source: str = "none"
    cursor_lag_s: float | None = None
    cursor_lag_basis: str = "n/a"
    table_rows: int | None = None
    notes: list[str] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)

    @property
    def last_success(self) -> RunView | None:
        """The newest successful run."""
        return next((r for r in self.runs if r.outcome == "success"), None)

    @property
    def last_failure(self) -> RunView | None:
        """The newest failed run."""
        return next((r for r in self.runs if r.outcome == "failure"), None)

    @property
    def streak(self) -> int:
        """Failed runs in a row, newest first."""
        count = 0
        for run in self.runs:
            if run.outcome != "failure":
                break
            count += 1
        return count

    @property
    def success_rate(self) -> float | None:
        """Share of the runs considered that succeeded."""
        return sum(r.outcome == "success" for r in self.runs) / len(self.runs) if self.runs else None

    @property
    def median_duration_s(self) -> float | None:
        """Median duration of the runs that recorded one."""
        durations = [float(r.duration_s) for r in self.runs if r.duration_s is not None]
        return round(statistics.median(durations), 3) if durations else None

    @property
    def rows(self) -> list[int]:
        """Rows written by each successful run, newest first."""
        return [int(r.rows_written) for r in self.runs if r.outcome == "success" and r.rows_written is not None]

    @property
    def trend(self) -> str:
        """The last successful run's rows against the median of the successful runs."""
        rows = self.rows
        if len(rows) < 2:
            return "n/a"
        median = statistics.median(rows)
        if median == 0:
            return "n/a" if rows[0] == 0 else "up (median 0)"
        ratio = rows[0] / median
        direction = "steady" if 0.8 <= ratio <= 1.25 else ("up" if ratio > 1 else "down")
        return f"{direction} {ratio:.1f}x median"

    def judge(self, streak: int, now: float) -> None:
        """Fill :attr:`unhealthy` (see the module docstring)."""
        self.unhealthy = []
        if self.streak >= streak:
            self.unhealthy.append(f"failed {self.streak} run(s) in a row (threshold {streak})")
        if self.sla_minutes is not None and self.runs:
            success = self.last_success
            if success is None or success.at is None:
                self.unhealthy.append(f"no successful run within the freshness SLA ({self.sla_minutes:g} min)")
            elif (now - success.at) / 60 > self.sla_minutes:
                age = lag_text(now - success.at)
                self.unhealthy.append(f"last success {age} ago, over the freshness SLA ({self.sla_minutes:g} min)")

    def as_json(self) -> dict[str, Any]:
        """The line as JSON."""

        def run(view: RunView | None) -> dict[str, Any] | None:
            if view is None:
                return None
            return {
                "run_id": view.run_id,
                "at": when(view.at),
                "code": view.code,
                "message": view.message,
                "rows_written": view.rows_written,
                "duration_s": view.duration_s,
                "cursor": view.cursor,
            }

        rows = self.rows
        return {
            "object": self.label,
            "healthy": not self.unhealthy,
            "unhealthy_reasons": self.unhealthy,
            "runs_considered": len(self.runs),
            "last_success": run(self.last_success),
            "last_failure": run(self.last_failure),
            "failure_streak": self.streak,
            "success_rate": None if self.success_rate is None else round(self.success_rate, 3),
            "median_duration_s": self.median_duration_s,
            "rows_last": rows[0] if rows else None,
            "rows_median": statistics.median(rows) if rows else None,
            "rows_trend": self.trend,
            "cursor": self.cursor,
            "cursor_source": self.cursor_source,
            "cursor_lag_s": None if self.cursor_lag_s is None else round(self.cursor_lag_s, 1),
            "cursor_lag_basis": self.cursor_lag_basis,
            "freshness_sla_minutes": self.sla_minutes,
            "table_rows": self.table_rows,
            "notes": self.notes,
        }


def object_status(
    obj: ObjectPlan,
    runs: Sequence[RunView],
    *,
    streak: int,
    now: float | None = None,
    table_cursor: tuple[Any, str | None] | None = None,
    table_rows: int | None = None,
    note: str | None = None,
) -> ObjectStatus:
    """One object's status from its runs (newest first) and, when readable, its table's cursor.

    Args:
        obj: The object.
        runs: Its recent runs, newest first.
        streak: Failed runs in a row that make it unhealthy.
        now: The time lags are measured to (default: now).
        table_cursor: ``(cursor value, display)`` from the table's snapshot history, if read.
        table_rows: Live rows in the table, if read.
        note: Why the table could not be read, if it could not.
    """
    now = time.time() if now is None else now
    status = ObjectStatus(label=obj.label, runs=list(runs), sla_minutes=obj.checks.freshness.max_age_minutes)
    status.table_rows = table_rows
    if note:
        status.notes.append(note)
    if table_cursor is not None:
        status.cursor_value, status.cursor = table_cursor
        status.cursor_source = "table"
    elif status.last_success is not None:
        success = status.last_success
        raw = (success.record or {}).get("cursor_json")
        try:
            parsed = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            parsed = None
        status.cursor_value = parsed.get("value") if isinstance(parsed, dict) else None
        status.cursor = success.cursor
        status.cursor_source = "dagster"
    if status.cursor_value is not None:
        at, basis = cursor_time(status.cursor_value, obj.strategy.value)
        status.cursor_lag_basis = basis
        status.cursor_lag_s = None if at is None else max(now - at, 0.0)
    status.judge(streak, now)
    return status
