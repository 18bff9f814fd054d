"""``dativo maintain TENANT/JOB``: table upkeep (compaction, snapshot expiry, orphan removal).

Runs :func:`~dativo_dagster.maintain.maintain_job` on each object's table and quarantine table
and prints, per table, what each action did (``--json``: one JSON object per table and line).
Only the target's catalog is needed, never the source's credentials. Exit 0 when every table was
maintained, 1 when some failed, 2 when all failed or the command itself could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dativo_dagster.iceberg.maintenance import DEFAULT_ORPHAN_AGE_HOURS, DEFAULT_RETAIN_DAYS, MIN_ORPHAN_AGE_HOURS
from dativo_dagster.maintain import Action, UpkeepSettings, maintain_job


def cmd_maintain(args: argparse.Namespace) -> int:
    """Maintain the tables of a tenant job."""
    from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, _find_job, _plan, say_error, say_ok, say_warning
    from dativo_dagster.cli_resets import _objects
    from dativo_dagster.resources import DativoResource

    settings = UpkeepSettings(
        actions=(Action(args.only),) if args.only else tuple(Action),
        retain_days=args.retain_days,
        orphan_age_hours=args.orphan_age_hours,
        dry_run=args.dry_run,
    ).checked()
    plan = _plan(args)
    job = _find_job(plan, args.job)
    objects = _objects(job, args.object) if args.object else None
    writer = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    reports = maintain_job(job, writer, settings, objects)
    for report in reports:
        if args.json:
            sys.stdout.write(json.dumps(report.to_json(), sort_keys=True) + "\n")
        elif report.error:
            say_error(f"{report.table}: {report.error}")
        elif report.skipped:
            say_warning(f"{report.table}: {report.skipped}")
        else:
            for line in report.lines():
                say_ok(line)
    if args.json:
        sys.stdout.flush()
    failed = [r for r in reports if r.error]
    if failed and args.json:
        for report in failed:
            say_error(f"{report.table}: {report.error}")
    if not failed:
        return EXIT_OK
    return EXIT_FAILED if len(failed) == len(reports) else EXIT_PARTIAL


def add_maintain_command(sub: Any) -> None:
    """Register ``dativo maintain`` on the CLI's subparsers."""
    maintain = sub.add_parser(
        "maintain",
        help="table upkeep: compact small files and fold deletes, expire old snapshots, remove orphan files",
        description="Each action is one Iceberg commit, safe beside a running load, and leaves the cursor where it "
        "was. compact: rewrite small data files and data files with position deletes into target-sized files; "
        f"expire: remove snapshots older than --retain-days (default {DEFAULT_RETAIN_DAYS:g}), keeping the current "
        "one, the chains back to the cursor's snapshot, the newest load and the newest reset, the newest partition "
        "run, branch and tag heads and the newest five; orphans: delete unreferenced files older than "
        f"--orphan-age-hours (default {DEFAULT_ORPHAN_AGE_HOURS:g}, at least {MIN_ORPHAN_AGE_HOURS:g}). "
        "Exit 0: all tables maintained; 1: some failed; 2: failure.",
    )
    maintain.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    maintain.add_argument("--object", action="append", help="only this object's tables (repeatable)")
    maintain.add_argument("--only", choices=[a.value for a in Action], help="run only this action")
    maintain.add_argument(
        "--retain-days",
        type=float,
        default=DEFAULT_RETAIN_DAYS,
        help=f"keep snapshots younger than this (default {DEFAULT_RETAIN_DAYS:g})",
    )
    maintain.add_argument(
        "--orphan-age-hours",
        type=float,
        default=DEFAULT_ORPHAN_AGE_HOURS,
        help=f"delete unreferenced files only when older than this (default {DEFAULT_ORPHAN_AGE_HOURS:g}, "
        f"at least {MIN_ORPHAN_AGE_HOURS:g})",
    )
    maintain.add_argument("--dry-run", action="store_true", help="say what each action would do; change nothing")
    maintain.add_argument("--json", action="store_true", help="one JSON object per table")
    maintain.set_defaults(func=cmd_maintain)
