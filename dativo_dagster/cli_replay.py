"""``dativo inspect`` and ``dativo replay``: what a run received, and committing rows that failed before.

``dativo inspect TENANT/JOB --object O`` lists the object's retained raw runs (see
:mod:`~dativo_dagster.raw_pages`) and the table's recent snapshots with their cursors and row
counts; ``--run ID`` lists that run's pages, ``--show N`` prints page N (redacted). ``--json``
prints one JSON document instead.

``dativo replay TENANT/JOB --object O`` commits the quarantined rows that the current contract now
accepts (``--from quarantine``, the default) or the rows of a run's raw pages parsed with the
current mapping (``--from raw --run ID``, default the newest run), exactly once
(:mod:`~dativo_dagster.replay`). ``--dry-run`` counts without writing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import ConfigError

DEFAULT_SNAPSHOTS = 10


def _object(job: JobPlan, name: str) -> ObjectPlan:
    try:
        return job.object(name)
    except KeyError:
        known = ", ".join(obj.name for obj in job.objects) or "none"
        raise ConfigError(f"object '{name}' is not in {job.label} (objects: {known})") from None


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- inspect


def snapshot_history(job: JobPlan, obj: ObjectPlan, table: Any, limit: int) -> list[dict[str, Any]]:
    """The table's newest ``limit`` snapshots (current lineage), newest first, as records: id, time,
    operation, what wrote it (run, replay, reset), the cursor it records and its row counts."""
    from dativo_dagster.replay import PROP_REPLAY_ID, PROP_REPLAYED_FROM
    from dativo_dagster.sources.registry import cursor_codec_for
    from dativo_dagster.state import (
        PROP_CURSOR,
        PROP_MAINTENANCE,
        PROP_PARTITION,
        PROP_RESET_KIND,
        PROP_ROWS,
        PROP_RUN_ID,
        CursorState,
    )

    codec = cursor_codec_for(job, obj)
    records: list[dict[str, Any]] = []
    snapshot = table.current_snapshot() if table is not None else None
    while snapshot is not None and len(records) < limit:
        props = dict(snapshot.summary.additional_properties) if snapshot.summary else {}
        operation = snapshot.summary.operation.value if snapshot.summary else None
        cursor = None
        raw = props.get(PROP_CURSOR)
        if raw and raw != "null":
            cursor = CursorState.from_json(raw, where=f"snapshot {snapshot.snapshot_id}").display(codec)
        if PROP_RESET_KIND in props:
            kind = f"reset ({props[PROP_RESET_KIND]})"
        elif PROP_REPLAY_ID in props:
            kind = f"replay from {props.get(PROP_REPLAYED_FROM, '?')}"
        elif PROP_PARTITION in props:
            kind = f"partition {props[PROP_PARTITION]}"
        elif PROP_RUN_ID in props:
            kind = "run"
        elif PROP_MAINTENANCE in props:
            kind = f"maintenance ({props[PROP_MAINTENANCE]})"
        else:
            kind = "other"
        records.append(
            {
                "snapshot_id": snapshot.snapshot_id,
                "committed_at": _when(snapshot.timestamp_ms / 1000),
                "operation": operation,
                "kind": kind,
                "run_id": props.get(PROP_RUN_ID),
                "replay_id": props.get(PROP_REPLAY_ID),
                "cursor": cursor,
                "rows": int(props[PROP_ROWS]) if props.get(PROP_ROWS, "").isdigit() else None,
                "total_rows": int(props["total-records"]) if props.get("total-records", "").isdigit() else None,
            }
        )
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return records


def cmd_inspect(args: argparse.Namespace) -> int:
    """List an object's raw runs and pages, print a page, and show the table's recent snapshots."""
    from rich.table import Table

    from dativo_dagster.cli import EXIT_OK, _cells, _find_job, _plan, console, say_note
    from dativo_dagster.raw_pages import list_runs, raw_root, read_index, read_page, run_dir
    from dativo_dagster.resources import DativoResource

    if args.snapshots < 0:
        raise ConfigError("--snapshots: must be 0 or more")
    plan = _plan(args)
    job = _find_job(plan, args.job)
    obj = _object(job, args.object)
    root = raw_root(job)
    runs = list_runs(root, job.tenant, job.name, obj.name)
    document: dict[str, Any] = {
        "object": obj.label,
        "raw_retention_days": job.job.raw_retention_days,
        "raw_runs": [
            {
                "run_id": run.run_id,
                "pages": run.pages,
                "failed_pages": run.failed,
                "bytes": run.bytes,
                "last_written": _when(run.last_written),
            }
            for run in runs
        ],
    }
    directory = None
    if args.run is not None or args.show is not None:
        run_id = args.run or (runs[-1].run_id if runs else None)
        if run_id is None:
            raise ConfigError(f"{obj.label}: no raw pages are kept", hint="set raw_retention_days on the job")
        directory = run_dir(root, job.tenant, job.name, obj.name, run_id)
        if not directory.is_dir():
            known = ", ".join(run.run_id for run in runs) or "none"
            raise ConfigError(f"{obj.label}: no raw pages of run {run_id} (kept runs: {known})")
        entries = list(read_index(directory))
        document["run"] = {"run_id": run_id, "pages": [{**e.__dict__, "file": e.file} for e in entries]}
        if args.show is not None:
            entry = next((e for e in entries if e.seq == args.show), None)
            if entry is None:
                raise ConfigError(f"{obj.label}: run {run_id} has no page {args.show} (pages 1 to {len(entries)})")
            document["page"] = _redacted(read_page(directory, entry))
    writer = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    table = writer.load_table(*obj.table_identifier)
    document["table"] = ".".join(obj.table_identifier)
    document["snapshots"] = snapshot_history(job, obj, table, args.snapshots) if table is not None else []
    if args.json:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
        return EXIT_OK
    if "page" in document:
        console.print_json(json.dumps(document["page"], default=str))
        return EXIT_OK
    if "run" in document:
        view = Table(
            "page", "at", "method", "path", "status", "bytes", "sha256", title=f"run {document['run']['run_id']}"
        )
        for page in document["run"]["pages"]:
            status = page["status"] if page["ok"] else f"{page['status'] or page['failure']} (failed)"
            view.add_row(
                *_cells(
                    page["seq"], page["at"], page["method"], page["path"], status, page["bytes"], page["sha256"][:12]
                )
            )
        console.print(view)
    else:
        view = Table("run", "pages", "failed", "bytes", "last written", title=f"raw pages of {obj.label}")
        for run in document["raw_runs"]:
            view.add_row(*_cells(run["run_id"], run["pages"], run["failed_pages"], run["bytes"], run["last_written"]))
        console.print(view)
        if not runs:
            say_note(
                f"{obj.label}: no raw pages kept"
                + ("" if job.job.raw_retention_days else " (set raw_retention_days on the job to keep them)")
            )
    if table is None:
        say_note(f"{document['table']} does not exist yet: no run of {obj.label} has written it")
        return EXIT_OK
    history = Table(
        "snapshot", "committed at", "kind", "run / replay", "cursor", "rows", "total", title=document["table"]
    )
    for record in document["snapshots"]:
        history.add_row(
            *_cells(
                record["snapshot_id"],
                record["committed_at"],
                record["kind"],
                record["run_id"] or record["replay_id"] or "-",
                record["cursor"] or "-",
                "-" if record["rows"] is None else record["rows"],
                "-" if record["total_rows"] is None else record["total_rows"],
            )
        )
    console.print(history)
    return EXIT_OK


def _redacted(value: Any) -> Any:
    """A stored page as shown: every string scrubbed again with this process's known secrets."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    """Commit, once, the rows that failed before and conform now."""
    from dativo_dagster.cli import EXIT_OK, _find_job, _plan, say_note, say_ok
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.engine import enforcer_for
    from dativo_dagster.raw_pages import list_runs, raw_root, run_dir
    from dativo_dagster.replay import object_lock, replay_quarantine, replay_raw
    from dativo_dagster.resets import os_user
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.sources.registry import build_source

    plan = _plan(args)
    job = _find_job(plan, args.job)
    obj = _object(job, args.object)
    resolver = SecretResolver()
    writer = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    root = raw_root(job, resolver)
    by = os_user()
    with object_lock(root / job.tenant / job.name, obj):
        if args.source == "quarantine":
            if args.run is not None:
                raise ConfigError("--run: only with --from raw (a quarantine replay takes every quarantined row)")
            if obj.contract is not None:
                enforcer = enforcer_for(obj, _NoSource())  # type: ignore[arg-type]
                outcome = replay_quarantine(obj, writer, enforcer, by=by, dry_run=args.dry_run)
            else:
                with build_source(job, resolver) as source:
                    enforcer = enforcer_for(obj, source)
                    outcome = replay_quarantine(obj, writer, enforcer, by=by, dry_run=args.dry_run)
        else:
            runs = list_runs(root, job.tenant, job.name, obj.name)
            run_id = args.run or (runs[-1].run_id if runs else None)
            if run_id is None:
                raise ConfigError(
                    f"{obj.label}: no raw pages are kept", hint="set raw_retention_days on the job (API sources)"
                )
            directory = run_dir(root, job.tenant, job.name, obj.name, run_id)
            if not directory.is_dir():
                known = ", ".join(run.run_id for run in runs) or "none"
                raise ConfigError(f"{obj.label}: no raw pages of run {run_id} (kept runs: {known})")
            with build_source(job, resolver) as source:
                enforcer = enforcer_for(obj, source)
                outcome = replay_raw(obj, writer, source, enforcer, directory, by=by, dry_run=args.dry_run)
    if args.json:
        # Reasons quote the values that failed: scrubbed like every other output.
        document = _redacted({"object": obj.label, **outcome.__dict__, "reasons": [list(r) for r in outcome.reasons]})
        sys.stdout.write(json.dumps(document, default=str, sort_keys=True) + "\n")
        return EXIT_OK
    for finished in outcome.finished:
        say_note(f"{obj.label}: finished replay {finished}, which an earlier process left half done")
    table = ".".join(obj.table_identifier)
    if outcome.already_committed:
        say_ok(
            f"{obj.label}: replay {outcome.replay_id} was already committed (snapshot {outcome.snapshot_id}); "
            "nothing was written again"
        )
    elif args.dry_run:
        say_note(
            f"{obj.label}: dry run: {outcome.rows_committed} row(s) would be committed to {table}, "
            f"{outcome.rows_still_failing} still fail"
        )
    elif outcome.rows_committed:
        say_ok(
            f"{obj.label}: replay {outcome.replay_id} committed {outcome.rows_committed} row(s) from "
            f"{outcome.source} to {table} (snapshot {outcome.snapshot_id}); the cursor is unchanged"
        )
    else:
        say_note(f"{obj.label}: nothing to commit from {outcome.source}")
    if outcome.rows_superseded:
        say_note(
            f"{outcome.rows_superseded} conforming row(s) were not committed: {table} already holds a newer "
            "version of their key"
        )
    if outcome.rows_left_for_next_run:
        say_note(
            f"{outcome.rows_left_for_next_run} quarantined row(s) come from runs that committed nothing (their "
            "cursor did not move): the next run reads them again, so they are not replayed"
        )
    if outcome.rows_still_failing:
        where = f"{obj.namespace}.{obj.quarantine_table}"
        say_note(f"{outcome.rows_still_failing} row(s) still violate the contract and stay in {where}:")
        for reason, count in outcome.reasons:
            say_note(f"  {count} x {redact_text(reason)}")
    return EXIT_OK


class _NoSource:
    """Stands in for the source when the object has a contract (``enforcer_for`` never asks it)."""

    def discover_schema(self, obj: ObjectPlan) -> Any:
        raise AssertionError("an object with a contract needs no schema discovery")


# --------------------------------------------------------------------------- parser


def add_replay_commands(sub: Any) -> None:
    """Register ``dativo inspect`` and ``dativo replay`` on the CLI's subparsers."""
    inspect = sub.add_parser(
        "inspect",
        help="an object's retained raw pages and its table's recent snapshots",
        description="List the runs whose raw pages are kept (raw_retention_days), a run's pages (--run), a "
        "page's content (--show N, redacted), and the table's recent snapshots with cursor and row counts.",
    )
    inspect.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    inspect.add_argument("--object", required=True, help="the object")
    inspect.add_argument("--run", default=None, metavar="RUN_ID", help="list this run's pages")
    inspect.add_argument("--show", type=int, default=None, metavar="N", help="print page N (of --run, else the newest)")
    inspect.add_argument(
        "--snapshots", type=int, default=DEFAULT_SNAPSHOTS, help=f"snapshots to list (default {DEFAULT_SNAPSHOTS})"
    )
    inspect.add_argument("--json", action="store_true", help="one JSON document")
    inspect.set_defaults(func=cmd_inspect)

    replay = sub.add_parser(
        "replay",
        help="commit, once, the rows that failed before and conform now (quarantine or raw pages)",
        description="Re-check the quarantined rows with the current contract (--from quarantine) or parse a run's "
        "raw pages again with the current mapping (--from raw), and commit what conforms exactly once, marked "
        "dativo.replay-id in the snapshot. The cursor is not moved. Rows that still fail stay quarantined.",
    )
    replay.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    replay.add_argument("--object", required=True, help="the object")
    replay.add_argument(
        "--from", dest="source", choices=("quarantine", "raw"), default="quarantine", help="where the rows come from"
    )
    replay.add_argument("--run", default=None, metavar="RUN_ID", help="--from raw: the run (default: the newest kept)")
    replay.add_argument("--dry-run", action="store_true", help="count what would be committed, write nothing")
    replay.add_argument("--json", action="store_true", help="the outcome as one JSON object")
    replay.set_defaults(func=cmd_replay)


__all__ = ["add_replay_commands", "cmd_inspect", "cmd_replay", "snapshot_history"]
