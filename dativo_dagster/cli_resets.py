"""``dativo reset`` and ``dativo quarantine``: moving a cursor on purpose, and reading rejected rows.

``dativo reset TENANT/JOB --object O (--to VALUE | --full-refresh)`` records a reset on each
object's table (see :mod:`~dativo_dagster.resets`): every object is checked first (its table, its
owner, the value parsed by its source's cursor codec) and only then are the resets committed, so a
value that does not parse for one object resets none. Without ``--yes`` it asks for confirmation
on a terminal and refuses otherwise.

``dativo quarantine TENANT/JOB --object O`` prints the object's quarantined rows, newest first, as
a table or (``--json``) one JSON object per line: reason, run, time and the values as read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.errors import ConfigError

if TYPE_CHECKING:
    from dativo_dagster.resets import ResetOutcome

DEFAULT_QUARANTINE_ROWS = 20


def _objects(job: JobPlan, names: list[str]) -> list[ObjectPlan]:
    """The named objects of ``job``; CFG001 naming the unknown ones."""
    known = {obj.name: obj for obj in job.objects}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"object(s) {', '.join(unknown)} not in {job.label} (objects: {', '.join(known) or 'none'})")
    return [known[name] for name in dict.fromkeys(names)]


# --------------------------------------------------------------------------- reset


def cmd_reset(args: argparse.Namespace) -> int:
    """Reset the cursor of some objects of a job, or make their next run a full refresh."""
    from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, _find_job, _plan, say_error, say_note, say_ok
    from dativo_dagster.resets import ResetRequest, commit_prepared, os_user, prepare_reset
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.sources.registry import cursor_codec_for

    request = ResetRequest.of(to=args.to, full_refresh=args.full_refresh)
    plan = _plan(args)
    job = _find_job(plan, args.job)
    objects = _objects(job, args.object)
    runtime = DativoResource(project_dir=str(plan.project_dir))
    writer = runtime.writer_for(job.target)
    # The codec comes from the source class: a reset never resolves the source's credentials
    # (the operator needs the catalog, not the API key).
    codecs = {obj.name: cursor_codec_for(job, obj) for obj in objects}
    prepared = [prepare_reset(obj, writer, codecs[obj.name], request) for obj in objects]
    for item in prepared:
        codec = codecs[item.obj.name]
        was = item.previous.display(codec) if item.previous is not None else _raw_cursor(item.previous_raw)
        if request.full_refresh:
            say_note(f"{item.obj.label}: cursor {was} -> full refresh (the next run reloads {item.label})")
        else:
            assert item.new is not None
            say_note(f"{item.obj.label}: cursor {was} -> {item.new.display(codec)}")
    if not args.yes and not _confirmed(len(prepared)):
        say_error("nothing was reset (confirm with --yes when not on a terminal)")
        return EXIT_FAILED
    by = os_user()
    run_id = f"reset-{_token()}"
    committed = []
    for item in prepared:
        outcome = commit_prepared(item, codecs[item.obj.name], by=by, run_id=run_id)
        if not outcome.committed:
            say_note(outcome.note)
            continue
        committed.append(outcome)
        assert outcome.record is not None
        then = (
            "its next run reads everything and replaces the table's rows"
            if request.full_refresh
            else "its next run reads from there"
        )
        snapshot = outcome.record.snapshot_id
        say_ok(f"{item.obj.label}: reset recorded in {item.label} (snapshot {snapshot}, by {by}); {then}")
    if committed:
        _observe(plan.project_dir, committed)
    return EXIT_OK


def _observe(project_dir: Path, outcomes: list[ResetOutcome]) -> None:
    """Show each reset on its asset's page in the UI: an observation in the project's Dagster instance.

    The table's snapshot is the record that counts (the next run starts from it); an instance that
    cannot be reached only means the UI learns of the reset from the next run's materialization.
    """
    import dagster as dg

    from dativo_dagster.cli import say_warning
    from dativo_dagster.instance import instance_for_project
    from dativo_dagster.translator import DativoTranslator

    translator = DativoTranslator()
    try:
        with instance_for_project(project_dir) as instance:
            for outcome in outcomes:
                record = outcome.record
                assert record is not None
                instance.report_runless_asset_event(
                    dg.AssetObservation(
                        asset_key=translator.asset_key(outcome.obj),
                        description=record.describe(),
                        metadata={
                            "dativo/reset_kind": record.kind.value,
                            "dativo/reset_by": record.by,
                            "dativo/reset_at": record.at,
                            "dativo/reset_from": record.from_cursor,
                            "dativo/reset_to": record.to_cursor,
                            "dativo/reset_snapshot_id": record.snapshot_id,
                        },
                    )
                )
    except Exception as exc:
        say_warning(
            f"the reset is recorded in the table, but the Dagster instance could not be told "
            f"({type(exc).__name__}: {exc}); the UI shows it with the next run"
        )


def _raw_cursor(raw: str) -> str:
    return "none" if raw in ("", "null") else raw


def _token() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


def _confirmed(count: int) -> bool:
    """Ask on a terminal; anything but yes (or no terminal at all) is no."""
    if not sys.stdin.isatty():
        return False
    answer = input(f"Reset {count} object(s)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


# --------------------------------------------------------------------------- quarantine


def cmd_quarantine(args: argparse.Namespace) -> int:
    """Print an object's quarantined rows, newest first."""
    from rich.table import Table

    from dativo_dagster.cli import EXIT_OK, _cells, _find_job, _plan, console, say_note, say_warning
    from dativo_dagster.iceberg.quarantine import newest_rows
    from dativo_dagster.quarantine_view import json_line, quarantine_records, shown, values_text
    from dativo_dagster.resources import DativoResource

    if args.limit < 1:
        raise ConfigError("--limit: must be at least 1")
    plan = _plan(args)
    job = _find_job(plan, args.job)
    (obj,) = _objects(job, [args.object])
    writer = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    label = f"{obj.namespace}.{obj.quarantine_table}"
    table = writer.load_table(obj.namespace, obj.quarantine_table)
    if table is None or table.current_snapshot() is None:
        message = f"{obj.label}: no quarantine table ({label}): no row of it was ever rejected"
        # JSON lines on stdout stay parseable: the remark goes to stderr there.
        (say_warning if args.json else say_note)(message)
        return EXIT_OK
    records = quarantine_records([newest_rows(table, args.limit, args.run)])
    if args.json:
        for record in records:
            sys.stdout.write(json_line(record) + "\n")
        sys.stdout.flush()
        return EXIT_OK
    view = Table("rejected at", "run", "reason", "values", title=label)
    for record in records:
        view.add_row(
            *_cells(record["rejected_at"] or "-", record["run_id"] or "-"),
            *_cells(shown(record["reason"]), values_text(record["values"], 200)),
        )
    console.print(view)
    total = _total_rows(table)
    scope = f" of run {args.run}" if args.run else ""
    say_note(f"{len(records)} row(s){scope} shown, newest first; {total} row(s) in {label}")
    return EXIT_OK


def _total_rows(table: Any) -> str:
    snapshot = table.current_snapshot()
    summary = snapshot.summary.additional_properties if snapshot is not None and snapshot.summary else {}
    return str(summary.get("total-records", "?"))


# --------------------------------------------------------------------------- parser


def add_reset_commands(sub: Any) -> None:
    """Register ``dativo reset`` and ``dativo quarantine`` on the CLI's subparsers."""
    reset = sub.add_parser(
        "reset",
        help="move objects' cursors on purpose (audited in the table's snapshot history)",
        description="Record a reset on each object's Iceberg table: the next run reads from --to VALUE, or "
        "(--full-refresh) reads everything and replaces the table's rows. Who, when and from what cursor are "
        "kept in the snapshot summary (dativo.reset-*).",
    )
    reset.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    reset.add_argument("--object", action="append", required=True, help="the object to reset (repeatable)")
    how = reset.add_mutually_exclusive_group(required=True)
    how.add_argument("--to", metavar="VALUE", help="the cursor value the next run reads from (in the source's terms)")
    how.add_argument(
        "--full-refresh", action="store_true", help="the next run reads everything and replaces the table's rows"
    )
    reset.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    reset.set_defaults(func=cmd_reset)

    quarantine = sub.add_parser("quarantine", help="show an object's quarantined rows, newest first")
    quarantine.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    quarantine.add_argument("--object", required=True, help="the object")
    quarantine.add_argument(
        "--limit", type=int, default=DEFAULT_QUARANTINE_ROWS, help=f"rows to show (default {DEFAULT_QUARANTINE_ROWS})"
    )
    quarantine.add_argument("--run", default=None, metavar="RUN_ID", help="only the rows this run rejected")
    quarantine.add_argument("--json", action="store_true", help="one JSON object per line")
    quarantine.set_defaults(func=cmd_quarantine)
