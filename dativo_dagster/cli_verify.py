"""``dativo verify``: re-read a job's live Iceberg files and compare them with their recorded SHA-256.

``dativo verify TENANT/JOB [--object O] [--json]`` checks, for each object's table and its
quarantine table, every data and delete file of the current snapshot against the digest its
commit recorded (:mod:`~dativo_dagster.iceberg.integrity`), and each integrity manifest against
the SHA-256 its snapshot recorded. A file is reported *missing*, *truncated* (another size),
*altered* (same size, another SHA-256), *digest_lost* (committed after the table began recording
digests, but the snapshot that added it was expired by a tool that did not carry its digest
forward) or *unverified* (no digest recorded: committed before digests were recorded, or by
another engine; counted, not a failure), with the snapshot that added it and the run that wrote it.

Exit codes: 0 every file matches, 1 a file or manifest does not, 2 the command could not run
(CFG001 unknown job or object, or a missing bucket or container; AUTH001 rejected credentials;
STG001 storage unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dativo_dagster.config.plan import ObjectPlan

FAILURES = ("missing", "truncated", "altered", "digest_lost")
"""File statuses that make ``dativo verify`` exit 1 (:data:`~dativo_dagster.iceberg.integrity.FAILED_STATUSES`)."""

DIGEST_LOST_HINT = (
    "their snapshots were expired without carrying their SHA-256 forward: expire snapshots through "
    "`dativo maintain`, not another engine's expiry; check these files against a copy you trust"
)


def _short(path: str) -> str:
    """The file name and its directory (``data/00000-0-….parquet``): enough to find it in the table."""
    parts = path.rstrip("/").split("/")
    return "/".join(parts[-2:])


def _verify(obj: ObjectPlan, writer: Any, which: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The report of one table (None if the table does not exist yet)."""
    from dativo_dagster.iceberg.failures import raise_storage_failure
    from dativo_dagster.iceberg.integrity import verify_table

    table = writer.load_table(namespace, name)
    if table is None:
        return None
    label = f"{namespace}.{name}"
    try:
        result = verify_table(table)
    except Exception as exc:
        raise_storage_failure(exc, f"verifying {label}")
        raise
    counts = {status: result.count(status) for status in (*FAILURES, "unverified")}
    return {
        "object": obj.label,
        "kind": which,
        "table": label,
        "snapshot_id": result.snapshot_id,
        "files": len(result.files),
        "bytes_read": result.bytes_read,
        "verified": result.count("ok"),
        **counts,
        "ok": not result.failed,
        "problems": [
            {
                "status": check.status,
                "path": check.path,
                "content": check.content,
                "snapshot_id": check.snapshot_id,
                "run_id": check.run_id,
                "detail": check.detail,
            }
            for check in result.files
            if check.status != "ok"
        ],
        "manifest_problems": [
            {
                "status": f"manifest {problem.kind}",
                "path": problem.location,
                "snapshot_id": problem.snapshot_id,
                "detail": problem.detail,
            }
            for problem in result.manifest_problems
        ],
    }


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify the live files of a job's tables (exit 1 on any mismatch)."""
    from dativo_dagster.cli import (
        EXIT_OK,
        EXIT_PARTIAL,
        _find_job,
        _plan,
        say_error,
        say_note,
        say_ok,
        say_warning,
    )
    from dativo_dagster.cli_resets import _objects
    from dativo_dagster.resources import DativoResource

    plan = _plan(args)
    job = _find_job(plan, args.job)
    objects = _objects(job, args.object) if args.object else list(job.objects)
    writer = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    reports: list[dict[str, Any]] = []
    absent: list[str] = []
    for obj in objects:
        namespace, name = obj.table_identifier
        report = _verify(obj, writer, "table", namespace, name)
        if report is None:
            absent.append(obj.label)
        else:
            reports.append(report)
        # A first run that failed its quarantine threshold committed rejected rows only.
        quarantine = _verify(obj, writer, "quarantine", obj.namespace, obj.quarantine_table)
        if quarantine is not None:
            reports.append(quarantine)
    failed = any(not report["ok"] for report in reports)
    if args.json:
        document = {
            "job": job.label,
            "ok": not failed,
            "tables": reports,
            "not_written_yet": absent,
        }
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
        return EXIT_PARTIAL if failed else EXIT_OK
    for label in absent:
        say_note(f"{label}: no table yet (never committed): nothing to verify")
    for report in reports:
        summary = (
            f"{report['object']} → {report['table']}: {report['files']} file(s), {report['bytes_read']:,} bytes read"
            f" (snapshot {report['snapshot_id']})"
        )
        if report["ok"]:
            say_ok(f"{summary}: every recorded SHA-256 matches")
        else:
            bad = ", ".join(f"{report[s]} {s}" for s in FAILURES if report[s])
            manifests = len(report["manifest_problems"])
            bad = ", ".join(x for x in (bad, f"{manifests} manifest(s) not trustworthy" if manifests else "") if x)
            say_error(f"{summary}: {bad}")
        if report["digest_lost"]:
            say_warning(f"{report['table']}: {report['digest_lost']} file(s) lost their digest: {DIGEST_LOST_HINT}")
        if report["unverified"]:
            say_warning(
                f"{report['table']}: {report['unverified']} file(s) unverified (no SHA-256 recorded: committed "
                "before digests were recorded, or by another engine)"
            )
        for item in [*report["manifest_problems"], *report["problems"]]:
            unverified = item["status"] == "unverified"
            if unverified and not args.show_unverified:
                continue
            # One line per file, never cut: operators grep for the path, snapshot and run.
            (say_warning if unverified else say_error)(
                f"{item['status']}: {report['table']} {_short(item['path'])} "
                f"(snapshot {item['snapshot_id'] if item['snapshot_id'] is not None else '-'}, "
                f"run {item.get('run_id') or '-'}): {item['detail']}"
            )
    if not reports and not absent:
        say_note(f"{job.label}: no objects")
    return EXIT_PARTIAL if failed else EXIT_OK


def add_verify_command(sub: Any) -> None:
    """Register ``dativo verify`` on the CLI's subparsers."""
    verify = sub.add_parser(
        "verify",
        help="re-read a job's live Iceberg files and check them against their recorded SHA-256",
        description="Every file a run commits has its SHA-256 recorded in an integrity manifest named by the "
        "snapshot (dativo.integrity). verify re-reads the live data and delete files of each object's table and "
        "quarantine table and reports any file missing, truncated (another size) or altered (another SHA-256), "
        "with the snapshot that added it and its run, and any manifest whose own SHA-256 does not match. A file "
        "committed after digests were recorded whose digest was lost (its snapshot expired by another tool) is "
        "reported digest_lost, a failure. Files with no recorded digest (older commits, other engines) are counted "
        "as unverified. Exit codes: 0 every file matches, 1 a mismatch, 2 the job or object is unknown or storage "
        "failed.",
    )
    verify.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    verify.add_argument("--object", action="append", help="only this object (repeatable)")
    verify.add_argument("--json", action="store_true", help="print one machine-readable JSON report")
    verify.add_argument("--show-unverified", action="store_true", help="list each unverified file too")
    verify.set_defaults(func=cmd_verify)
