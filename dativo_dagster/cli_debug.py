"""Debug runs, scratch runs and ``dativo compare`` on the command line.

``dativo run … --debug`` logs at DEBUG (one line per HTTP exchange of an API source);
``--payloads`` (or ``include_payloads: true`` in the job) also writes request and response bodies,
redacted and truncated, to ``<state dir>/runs/<run id>/payloads.jsonl`` (:mod:`~dativo_dagster.payloads`).

``dativo run TENANT/JOB --object O [--limit N] --scratch [--from-start]`` runs the engine into the
job's scratch catalog (:mod:`~dativo_dagster.scratch`), and ``dativo compare TENANT/JOB --object O``
compares that scratch table with the production table (:mod:`~dativo_dagster.compare`), prints one
line per check, writes ``<state dir>/diagnose/<tenant>__<job>__<object>/compare.json`` and exits
non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from dativo_dagster.config.plan import JobPlan, ObjectPlan, Plan
from dativo_dagster.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

    from dativo_dagster.compare import Thresholds


def add_run_arguments(run: argparse.ArgumentParser) -> None:
    """The debug and scratch flags of ``dativo run``."""
    run.add_argument("--debug", action="store_true", help="log at DEBUG: engine, sources, one line per HTTP request")
    run.add_argument(
        "--payloads",
        action="store_true",
        help="API sources: also log request/response bodies (secrets and the job's pii_fields redacted, "
        "truncated) to the run's payloads.jsonl; bodies may hold personal data",
    )
    run.add_argument(
        "--scratch",
        action="store_true",
        help="run into a scratch catalog and warehouse beside the project, from the production cursor "
        "(read, never written); never touches the production tables",
    )
    run.add_argument(
        "--from-start", action="store_true", help="with --scratch: read from the beginning, not the production cursor"
    )


def check_run_flags(args: argparse.Namespace) -> None:
    """CFG001 for flags that do not go together."""
    if args.from_start and not args.scratch:
        raise ConfigError("--from-start only applies to a scratch run (--scratch)")
    if args.scratch:
        clashing = [
            flag
            for flag, given in (
                ("--dry-run", args.dry_run),
                ("--full-refresh", args.full_refresh),
                ("--partition", args.partition is not None),
                ("--summary-json", args.summary_json is not None),
            )
            if given
        ]
        if clashing:
            raise ConfigError(f"--scratch cannot be combined with {', '.join(clashing)}")


def say_payloads(path: Path | None, job: JobPlan) -> None:
    """Tell where the payload log is, or why there is none."""
    from dativo_dagster.cli import say_note, say_warning

    if path is None:
        return
    if path.exists():
        say_warning(f"payloads (may hold personal data; redacted, truncated): {path}")
    else:
        say_note(
            f"no payload was logged: source type '{job.source.type}' made no HTTP request "
            "(only API sources have payloads)"
        )


# --------------------------------------------------------------------------- scratch run


def cmd_scratch(plan: Plan, job: JobPlan, objects: list[ObjectPlan], args: argparse.Namespace) -> int:
    """A scratch run of ``objects``: the engine, no Dagster, into the job's scratch catalog."""
    from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, say_error, say_note, say_ok, say_warning
    from dativo_dagster.config.secrets import redact_text
    from dativo_dagster.payloads import attach_observers
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.scratch import new_run_id, run_scratch, scratch_dir, scratch_writer

    if not args.object:
        raise ConfigError(
            "--scratch needs --object: a scratch run reproduces chosen objects",
            hint=f"dativo run {job.label} --object NAME --scratch",
        )
    runtime = DativoResource(project_dir=str(plan.project_dir))
    run_id = new_run_id()
    payloads = attach_observers(runtime.runtime, job, run_id, payloads=args.payloads)
    # --from-start needs nothing of production: its catalog is not even opened.
    production = None if args.from_start else runtime.writer_for(job.target)
    source = runtime.source_for(job, raw_pages=False)  # a scratch run keeps nothing in production's archive
    if args.limit is not None and not source.ordered_by_cursor:
        # The engine refuses it too; said here with what to do instead.
        raise ConfigError(
            f"{job.label}: source type '{source.type}' does not read in cursor order, so a scratch run cannot stop "
            f"after --limit rows without skipping rows",
            hint="drop --limit: a scratch run reads only what the next production run would (everything with "
            "--from-start)",
        )
    with source:
        run = run_scratch(
            job,
            objects,
            source=source,
            production=production,
            limit=args.limit,
            run_id=run_id,
            from_start=args.from_start,
        )
    directory = scratch_dir(plan.project_dir, job)
    writer = scratch_writer(plan.project_dir, job)
    failed = rejected = 0
    for result in run.results:
        obj = result.obj
        start = run.starts[obj.name]
        codec = source.cursor_codec(obj)
        begun = start.cursor.display(codec) if start.cursor else "the beginning"
        if result.error is not None:
            failed += 1
            say_error(redact_text(f"{obj.label} (scratch, from {begun}): {result.error}"))
            continue
        assert result.write is not None
        rejected += result.write.rows_rejected
        say_ok(
            f"{obj.label} (scratch, from {begun}): {result.write.rows_written:,} row(s) written, "
            f"{result.write.rows_rejected:,} rejected, cursor {result.cursor_display or '-'}"
        )
        table = writer.load_table(obj.namespace, obj.table)
        where = unquote(urlparse(table.location()).path) if table is not None else "not created (nothing was read)"
        say_note(f"  scratch table {obj.namespace}.{obj.table}: {where}")
    say_note(f"scratch catalog: {directory / 'catalog.db'}; result: {run.result_path}")
    say_note("production tables and cursors were not touched; nothing was recorded in the Dagster instance")
    say_payloads(payloads, job)
    if rejected:
        say_warning(
            f"rejected rows are in the scratch quarantine (dativo quarantine shows production's; see {directory})"
        )
    if failed:
        return EXIT_FAILED if failed == len(run.results) else EXIT_PARTIAL
    return EXIT_PARTIAL if rejected else EXIT_OK


# --------------------------------------------------------------------------- compare


def compare_path(project_dir: Path, obj: ObjectPlan) -> Path:
    """Where ``dativo compare`` writes its result (see :func:`dativo_dagster.diagnose.compare_path`)."""
    from dativo_dagster import diagnose
    from dativo_dagster.instance import state_dir

    return diagnose.compare_path(state_dir(project_dir), obj.tenant, obj.job, obj.name)


def required_columns(obj: ObjectPlan, production: Table) -> list[str]:
    """Columns that must hold no null: required in the production table or the contract, and the key."""
    names = [field.name for field in production.schema().fields if field.required]
    if obj.contract is not None:
        names += [column.name for column in obj.contract.columns if column.required]
    names += list(obj.primary_key)
    return list(dict.fromkeys(names))


def production_rows(table: Table, cursor: str | None, scratch: pa.Table) -> pa.Table:
    """The production rows in the scratch table's cursor range (all of them without a cursor)."""
    import pyarrow.compute as pc
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    if cursor is None or cursor not in scratch.column_names or scratch.num_rows == 0:
        return table.scan().to_arrow()
    names = {field.name for field in table.schema().fields}
    if cursor not in names:
        return table.scan().to_arrow()
    bounds = pc.min_max(scratch[cursor])
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is None:
        return table.scan().to_arrow()
    # Iceberg prunes files by the range; the exact range is applied again in memory.
    above = GreaterThanOrEqual(cursor, low)  # type: ignore[call-arg, arg-type]
    below = LessThanOrEqual(cursor, high)  # type: ignore[call-arg, arg-type]
    return table.scan(row_filter=And(above, below)).to_arrow()


def thresholds_from(args: argparse.Namespace) -> Thresholds:
    """The thresholds the flags set; CFG001 for a negative one."""
    from dativo_dagster.compare import Thresholds

    for flag, value in (
        ("--max-row-diff", args.max_row_diff),
        ("--max-null-increase", args.max_null_increase),
        ("--max-date-drift", args.max_date_drift),
    ):
        if value < 0:
            raise ConfigError(f"{flag}: must be 0 or more, not {value}")
    return Thresholds(
        max_row_diff=args.max_row_diff,
        max_null_increase=args.max_null_increase,
        max_date_drift_s=args.max_date_drift,
        fail_on_added_columns=args.fail_on_added_columns,
    )


def cmd_compare(args: argparse.Namespace) -> int:
    """Compare an object's scratch table with its production table; exit 2 when a check fails."""
    from rich.table import Table as View

    from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, _cells, _find_job, _plan, console, say_error, say_note, say_ok
    from dativo_dagster.cli_resets import _objects
    from dativo_dagster.compare import compare_document, compare_tables
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.scratch import read_result, scratch_writer

    thresholds = thresholds_from(args)
    plan = _plan(args)
    job = _find_job(plan, args.job)
    (obj,) = _objects(job, [args.object])
    scratch = scratch_writer(plan.project_dir, job).load_table(obj.namespace, obj.table)
    if scratch is None:
        raise ConfigError(
            f"{obj.label}: no scratch table {obj.namespace}.{obj.table}",
            hint=f"run it first: dativo run {job.label} --object {obj.name} --scratch --from-start",
        )
    production = DativoResource(project_dir=str(plan.project_dir)).writer_for(job.target)
    table = production.load_table(obj.namespace, obj.table)
    if table is None:
        raise ConfigError(
            f"{obj.label}: the production table {obj.namespace}.{obj.table} does not exist: nothing to compare with",
            hint=f"dativo run {job.label} --object {obj.name}",
        )
    scratch_rows = scratch.scan().to_arrow()
    entry = (read_result(plan.project_dir, job).get("objects") or {}).get(obj.name) or {}
    lines = compare_tables(
        scratch_rows,
        production_rows(table, obj.cursor_field, scratch_rows),
        cursor=obj.cursor_field,
        primary_key=obj.primary_key,
        required=required_columns(obj, table),
        thresholds=thresholds,
        high_inclusive=not entry.get("limited", False),
    )
    document = compare_document(lines, label=obj.label)
    document["scratch_run_id"] = entry.get("run_id")
    document["thresholds"] = {
        "max_row_diff": thresholds.max_row_diff,
        "max_null_increase": thresholds.max_null_increase,
        "max_date_drift_s": thresholds.max_date_drift_s,
        "fail_on_added_columns": thresholds.fail_on_added_columns,
    }
    path = compare_path(plan.project_dir, obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    temporary.replace(path)
    if args.json:
        sys.stdout.write(json.dumps(document, sort_keys=True) + "\n")
        sys.stdout.flush()
        return EXIT_OK if document["passed"] else EXIT_FAILED
    view = View(
        "check", "scratch", "production", "threshold", "result", "detail", title=f"{obj.label}: scratch vs production"
    )
    for check in document["checks"]:
        view.add_row(
            *_cells(
                check["name"],
                _shown(check["scratch"]),
                _shown(check["production"]),
                check["threshold"],
                "pass" if check["passed"] else "FAIL",
                check["detail"],
            )
        )
    console.print(view)
    failed = [check["name"] for check in document["checks"] if not check["passed"]]
    say_note(f"written to {path}")
    if failed:
        say_error(f"{obj.label}: {len(failed)} check(s) failed: {', '.join(failed)}")
        return EXIT_FAILED
    say_ok(f"{obj.label}: the scratch table matches production ({len(document['checks'])} checks)")
    return EXIT_OK


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value)


def add_compare_command(sub: Any) -> None:
    """Register ``dativo compare`` on the CLI's subparsers."""
    compare = sub.add_parser(
        "compare",
        help="compare an object's scratch table with its production table (exit 2 when a check fails)",
        description="Compare the scratch table of the last `dativo run ... --scratch` with the production table, "
        "over the cursor range both cover: rows, distinct primary keys, nulls per required column, min/max of "
        "date and timestamp columns, and schema differences. The result is also written to "
        "<state dir>/diagnose/<tenant>__<job>__<object>/compare.json.",
    )
    compare.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    compare.add_argument("--object", required=True, help="the object")
    compare.add_argument("--json", action="store_true", help="print the result as one JSON document")
    compare.add_argument(
        "--max-row-diff",
        type=float,
        default=0.01,
        metavar="FRACTION",
        help="rows and keys may differ by this fraction of production's (default 0.01)",
    )
    compare.add_argument(
        "--max-null-increase",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="a required column's share of nulls may exceed production's by this much (default 0)",
    )
    compare.add_argument(
        "--max-date-drift",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="date and timestamp min/max may differ by this many seconds (default 0)",
    )
    compare.add_argument(
        "--fail-on-added-columns", action="store_true", help="fail when the scratch table has columns production lacks"
    )
    compare.set_defaults(func=cmd_compare)
