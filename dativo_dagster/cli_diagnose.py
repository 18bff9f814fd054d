"""``dativo status`` and ``dativo diagnose``: how the objects are doing, and why one failed.

``dativo status [TENANT[/JOB]] [--runs N] [--streak N] [--json]`` prints one line per object: last
success and last failure (time, run id, code), failure streak, success rate and median duration
over the last N runs, rows per run and their trend, cursor and cursor lag. It exits 1 when any
object is unhealthy (see :mod:`dativo_dagster.status`), 0 otherwise, 2 when it cannot answer.

``dativo diagnose TENANT/JOB[/OBJECT] [--run ID] [--json] [--report FILE.md]`` reads the latest
failure (or that of run ID), classifies it (:func:`dativo_dagster.diagnose.classify`) and prints
the failing request or rows, the likely cause and the fix, what the last success looked like and
what changed since; ``--report`` writes the markdown debug report.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dativo_dagster.config.secrets import redact_text, register_secrets, required_references
from dativo_dagster.errors import ConfigError, DativoError

if TYPE_CHECKING:
    import dagster as dg

    from dativo_dagster.config.plan import JobPlan, ObjectPlan, Plan
    from dativo_dagster.diagnose import Report, RunView
    from dativo_dagster.status import ObjectStatus

DIAGNOSE_RUNS = 50
"""Runs of each object ``dativo diagnose`` looks back over."""


def _protect(job: JobPlan) -> None:
    """Redact the job's credentials in everything this process prints, even if a record missed one."""
    names = required_references(job.credentials) | required_references(job.connection)
    register_secrets(os.environ[name] for name in names if os.environ.get(name))


def _jobs(plan: Plan, target: str | None) -> list[JobPlan]:
    from dativo_dagster.cli import _find_job

    if not target:
        return list(plan.jobs)
    if "/" in target:
        return [_find_job(plan, target)]
    jobs = [job for job in plan.jobs if job.tenant == target]
    if not jobs:
        raise ConfigError(f"tenant '{target}' has no job in runner.yaml")
    return jobs


def _table_facts(job: JobPlan, obj: ObjectPlan, writer: Any) -> tuple[tuple[Any, str | None] | None, int | None]:
    """The table's cursor (value, display) and live rows; None where the table does not exist yet."""
    from dativo_dagster.engine import total_rows
    from dativo_dagster.iceberg.tables import read_table_cursor
    from dativo_dagster.sources.registry import cursor_codec_for

    table = writer.load_table(*obj.table_identifier)
    if table is None:
        return None, None
    found = read_table_cursor(table)
    cursor = None
    if found is not None and found.cursor is not None:
        cursor = (found.cursor.value, found.cursor.display(cursor_codec_for(job, obj)))
    return cursor, total_rows(writer, obj)


def statuses(
    plan: Plan, jobs: list[JobPlan], instance: dg.DagsterInstance, runs: int, streak: int
) -> list[ObjectStatus]:
    """Every object's status in ``jobs``."""
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.status import object_runs, object_status

    runtime = DativoResource(project_dir=str(plan.project_dir))
    found = []
    for job in jobs:
        _protect(job)
        history = object_runs(instance, job, runs)
        writer = None
        note = None
        try:
            writer = runtime.writer_for(job.target)
        except DativoError as exc:
            note = f"table not read: {redact_text(str(exc))}"
        for obj in job.objects:
            cursor = rows = None
            object_note = note
            if writer is not None:
                try:
                    cursor, rows = _table_facts(job, obj, writer)
                except DativoError as exc:
                    object_note = f"table not read: {redact_text(str(exc))}"
            found.append(
                object_status(
                    obj, history[obj.name], streak=streak, table_cursor=cursor, table_rows=rows, note=object_note
                )
            )
    return found


def cmd_status(args: argparse.Namespace) -> int:
    """Per object: recent outcomes, streak, durations, rows, cursor lag; exit 1 when any is unhealthy."""
    from rich.table import Table

    from dativo_dagster.cli import EXIT_OK, EXIT_PARTIAL, _cells, _plan, console, say_error, say_note, say_ok
    from dativo_dagster.diagnose import when
    from dativo_dagster.instance import instance_for_project
    from dativo_dagster.status import lag_text

    if args.runs < 1 or args.streak < 1:
        raise ConfigError("--runs and --streak: must be at least 1")
    plan = _plan(args)
    jobs = _jobs(plan, args.target)
    with instance_for_project(plan.project_dir) as instance:
        found = statuses(plan, jobs, instance, args.runs, args.streak)
    unhealthy = [s for s in found if s.unhealthy]
    if args.json:
        document = {
            "generated_at": when(time.time()),
            "runs": args.runs,
            "streak": args.streak,
            "healthy": not unhealthy,
            "objects": [s.as_json() for s in found],
        }
        sys.stdout.write(redact_text(json.dumps(document, indent=2, sort_keys=True, default=str)) + "\n")
        sys.stdout.flush()
        return EXIT_PARTIAL if unhealthy else EXIT_OK

    def short(view: RunView | None) -> str:
        if view is None:
            return "-"
        code = f" {view.code}" if view.outcome == "failure" and view.code else ""
        stamp = (when(view.at) or "?")[5:16].replace("T", " ")
        return f"{stamp}{code} {view.run_id[:8]}"

    for job in jobs:
        mine = [s for s in found if s.label.startswith(f"{job.label}/")]
        console.print(_status_table(Table, job.label, mine, short, lag_text, _cells))
    for status in found:
        for note in status.notes:
            say_note(f"{status.label}: {note}")
        for reason in status.unhealthy:
            say_error(f"{status.label}: unhealthy: {reason}; see `dativo diagnose {status.label}`")
    if not unhealthy:
        say_ok(f"{len(found)} object(s) healthy")
    return EXIT_PARTIAL if unhealthy else EXIT_OK


def _status_table(
    table_class: Any, title: str, found: list[ObjectStatus], short: Any, lag_text: Any, cells: Any
) -> Any:
    table = table_class(
        "object", "health", "last success", "last failure", "streak", "ok", "median", "rows", "lag", title=title
    )
    for status in found:
        rate = "-" if status.success_rate is None else f"{status.success_rate:.0%}/{len(status.runs)}"
        median = "-" if status.median_duration_s is None else f"{status.median_duration_s:.1f}s"
        rows = status.rows
        rows_text = "-" if not rows else f"{rows[0]:,}" + (f" {status.trend}" if len(rows) > 1 else "")
        health = "UNHEALTHY" if status.unhealthy else ("never run" if not status.runs else "ok")
        table.add_row(
            *cells(
                status.label.rsplit("/", 1)[-1],
                health,
                short(status.last_success),
                short(status.last_failure),
                status.streak,
                rate,
                median,
                rows_text,
                lag_text(status.cursor_lag_s),
            )
        )
    return table


# --------------------------------------------------------------------------- diagnose


def _parse_target(plan: Plan, target: str) -> tuple[JobPlan, ObjectPlan | None]:
    from dativo_dagster.cli import _find_job

    parts = target.split("/")
    if len(parts) not in (2, 3):
        raise ConfigError(f"'{target}': expected TENANT/JOB or TENANT/JOB/OBJECT")
    job = _find_job(plan, "/".join(parts[:2]))
    if len(parts) == 2:
        return job, None
    names = {obj.name: obj for obj in job.objects}
    if parts[2] not in names:
        raise ConfigError(f"object '{parts[2]}' not in {job.label} (objects: {', '.join(names)})")
    return job, names[parts[2]]


def _changes_since(job: JobPlan, obj: ObjectPlan, success: RunView | None, failure: RunView, root: Path) -> list[str]:
    """Job and contract files modified after the last success, and how the rows moved."""
    changes: list[str] = []
    if success is None or success.at is None:
        return ["no successful run recorded to compare with"]
    paths = [job.job_file]
    if obj.contract is not None:
        paths.append(root / "connectors" / "schemas" / f"{obj.contract.name}.v{obj.contract.version}.yaml")
    for path in paths:
        try:
            modified = path.stat().st_mtime
        except OSError:
            continue
        if modified > success.at:
            try:
                name = str(path.resolve().relative_to(root.resolve()))
            except ValueError:
                name = path.name
            stage = "before the failure" if failure.at is not None and modified <= failure.at else "after the failure"
            changes.append(f"{name} modified since the last success ({stage})")
    if success.schema_changes:
        changes.append(f"the last success changed the table's schema: {', '.join(map(str, success.schema_changes))}")
    if not changes:
        changes.append("no job or contract file was modified since the last success")
    return changes


def build_report(
    plan: Plan, job: JobPlan, obj: ObjectPlan, runs: list[RunView], failure: RunView, now: float | None = None
) -> Report:
    """The diagnosis of ``failure`` (one of ``runs``, newest first) of ``obj``."""
    from dativo_dagster.diagnose import Report, classify, compare_path, config_diff, read_compare, shape_diff
    from dativo_dagster.instance import state_dir

    record = dict(failure.record or {})
    # The message, not the hint: hints are generic advice ("down or throttling") that would mislead.
    message = str(record.get("message") or failure.message or "")
    request = record.get("request") if isinstance(record.get("request"), dict) else None
    diagnosis = classify(failure.code, message, request, record)
    index = next(i for i, r in enumerate(runs) if r is failure)
    older, newer = runs[index + 1 :], runs[:index]
    success = next((r for r in older if r.outcome == "success"), None)
    report = Report(
        label=obj.label,
        failure=failure,
        diagnosis=diagnosis,
        last_success=success,
        after=newer[0] if newer else None,  # the latest run decides whether the object recovered
        generated_at=time.time() if now is None else now,
    )
    report.changes_since_success = _changes_since(job, obj, success, failure, plan.project_dir)
    rows = [int(r.rows_written) for r in older if r.outcome == "success" and r.rows_written is not None]
    if len(rows) >= 2:
        import statistics

        report.changes_since_success.append(
            f"the last success wrote {rows[0]:,} row(s); the median of the {len(rows)} successful runs before "
            f"the failure is {statistics.median(rows):g}"
        )
    recorded = record.get("config_files")
    if isinstance(recorded, dict) and recorded:
        report.fix_checked = True
        report.fix_diffs = config_diff(recorded, plan.project_dir)
    if obj.contract is not None and record.get("quarantine_preview"):
        columns = [c.name for c in obj.contract.columns]
        required = [c.name for c in obj.contract.columns if c.required]
        report.shape = shape_diff(columns, required, record["quarantine_preview"])
    path = compare_path(state_dir(plan.project_dir), job.tenant, job.name, obj.name)
    comparison, note = read_compare(path)
    if comparison is not None and failure.at is not None:
        import datetime as dt

        created = dt.datetime.fromisoformat(str(comparison["created_at"])).timestamp()
        if created < failure.at:
            comparison, note = None, "the last scratch comparison is older than the failure"
    report.comparison, report.comparison_note = comparison, note
    return report


def _print_report(report: Report) -> None:
    from dativo_dagster.cli import say_error, say_note
    from dativo_dagster.diagnose import request_lines, when

    failure, diagnosis = report.failure, report.diagnosis
    record = failure.record or {}
    kind = f"{record.get('class') or '?'}, {record.get('error_type') or 'no error type recorded'}"
    say_error(f"{report.label}: run {failure.run_id} failed at {when(failure.at)}: {failure.code or '?'} ({kind})")
    lines = [f"  {failure.message or '(no message recorded)'}"]
    if record.get("hint"):
        lines.append(f"  hint: {record['hint']}")
    lines.append(f"kind: {diagnosis.kind.title} (because {diagnosis.evidence})")
    requested = request_lines(record.get("request"))
    if requested:
        lines.append("failing request:")
        lines += [f"  {line}" for line in requested]
    for detail in diagnosis.details:
        lines.append(f"  rejected: {detail}")
    for row in (record.get("quarantine_preview") or [])[:3]:
        values = ", ".join(f"{k}={v}" for k, v in (row.get("values") or {}).items() if v is not None)
        lines.append(f"  row: {row.get('reason')}: {values}")
    if report.shape and report.shape.get("missing"):
        lines.append(f"  required fields absent from every rejected row: {', '.join(report.shape['missing'])}")
    if report.shape and report.shape.get("new"):
        lines.append(f"  fields the contract does not know: {', '.join(report.shape['new'])}")
    lines.append(f"cause: {diagnosis.kind.cause}")
    lines.append("fix:")
    lines += [f"  {n}. {step}" for n, step in enumerate(diagnosis.kind.fix, start=1)]
    success = report.last_success
    if success is None:
        lines.append("last success: none recorded")
    else:
        lines.append(
            f"last success: run {success.run_id} at {when(success.at)}: {success.rows_written or 0:,} row(s), "
            f"{success.duration_s or 0:.1f} s, cursor {success.cursor or '-'}"
        )
    lines += [f"since then: {change}" for change in report.changes_since_success]
    if report.fix_diffs:
        lines.append(f"config changed since the failing run: {len(report.fix_diffs)} file(s) (see --report)")
    if report.after is not None:
        lines.append(f"latest run after the failure: {report.after.outcome} ({report.after.run_id})")
    for line in lines:
        say_note(redact_text(line))


def cmd_diagnose(args: argparse.Namespace) -> int:
    """Classify an object's latest failure (or run ID's) and say what to do."""
    from dativo_dagster.cli import EXIT_OK, _plan, say_ok
    from dativo_dagster.diagnose import render_report
    from dativo_dagster.instance import instance_for_project
    from dativo_dagster.status import object_runs

    plan = _plan(args)
    job, only = _parse_target(plan, args.target)
    _protect(job)
    with instance_for_project(plan.project_dir) as instance:
        history = object_runs(instance, job, DIAGNOSE_RUNS)
    candidates: list[tuple[ObjectPlan, RunView]] = []
    for obj in [only] if only is not None else list(job.objects):
        runs = history[obj.name]
        for run in runs:
            if run.outcome == "failure" and (args.run is None or run.run_id == args.run):
                candidates.append((obj, run))
                break
    if not candidates:
        where = f"run {args.run}" if args.run else f"the last {DIAGNOSE_RUNS} runs"
        target = only.label if only is not None else job.label
        if args.json:
            sys.stdout.write(json.dumps({"object": target, "failure": None}) + "\n")
        else:
            say_ok(f"{target}: no failure recorded in {where}")
        return EXIT_OK
    obj, failure = max(candidates, key=lambda found: found[1].at or 0)
    report = build_report(plan, job, obj, history[obj.name], failure)
    if args.json:
        sys.stdout.write(redact_text(json.dumps(report.as_json(), indent=2, sort_keys=True, default=str)) + "\n")
        sys.stdout.flush()
    else:
        _print_report(report)
        others = [o.label for o, _ in candidates if o is not obj]
        if others:
            from dativo_dagster.cli import say_note

            say_note(f"also failed recently: {', '.join(others)} (diagnose each with TENANT/JOB/OBJECT)")
    if args.report is not None:
        try:
            args.report.write_text(redact_text(render_report(report)))
        except OSError as exc:
            raise ConfigError(f"--report: cannot write {args.report}: {exc.strerror or exc}") from None
        if not args.json:
            say_ok(f"report written to {args.report}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def add_diagnose_commands(sub: Any) -> None:
    """Register ``dativo status`` and ``dativo diagnose`` on the CLI's subparsers."""
    from dativo_dagster.status import DEFAULT_RUNS, DEFAULT_STREAK

    status = sub.add_parser(
        "status",
        help="per object: last success and failure, streak, success rate, rows, cursor lag (exit 1 if unhealthy)",
        description="Reads the Dagster instance's runs and the tables' snapshot history. An object is unhealthy "
        "when its last --streak runs failed, or when it has a freshness SLA (checks.freshness.max_age_minutes) "
        "and its last success is older than that. Exit 0: all healthy; 1: some unhealthy; 2: error.",
    )
    status.add_argument("target", nargs="?", default=None, help="TENANT or TENANT/JOB (default: every job)")
    status.add_argument(
        "--runs", type=int, default=DEFAULT_RUNS, help=f"runs per object considered (default {DEFAULT_RUNS})"
    )
    status.add_argument(
        "--streak",
        type=int,
        default=DEFAULT_STREAK,
        help=f"failed runs in a row that make an object unhealthy (default {DEFAULT_STREAK})",
    )
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.set_defaults(func=cmd_status)

    diagnose = sub.add_parser(
        "diagnose",
        help="classify an object's latest failure: the failing request or rows, the cause and the fix",
        description="Reads the latest failure recorded in the Dagster instance (or that of --run) and says what "
        "kind of failure it is, the likely cause and the fix, what the last success looked like and what changed "
        "since. --report writes a markdown debug report. Exit 0 when it could answer (with or without a failure "
        "to diagnose), 2 otherwise.",
    )
    diagnose.add_argument("target", help="TENANT/JOB or TENANT/JOB/OBJECT")
    diagnose.add_argument("--run", default=None, metavar="RUN_ID", help="the failure of this run")
    diagnose.add_argument("--json", action="store_true", help="print the diagnosis as one JSON document")
    diagnose.add_argument("--report", type=Path, default=None, metavar="FILE.md", help="write a markdown debug report")
    diagnose.set_defaults(func=cmd_diagnose)
