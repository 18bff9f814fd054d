"""The ``dativo`` command line.

``dativo run`` executes a tenant job through Dagster in-process (``dg.materialize``) — the same
assets, resources and engine the code location runs — so a run from a laptop and a scheduled
run behave the same. With ``DAGSTER_HOME`` set, its materializations land in that instance.

Exit codes: 0 success, 1 partial success (some objects or rows failed), 2 failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.config.secrets import SecretResolver, redact_text, required_references
from dativo_dagster.errors import ConfigError, DativoError
from dativo_dagster.logs import add_event_listener, configure_logging
from dativo_dagster.text import printable

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2

# Nothing a user wrote (paths, cron strings, messages quoting config) is ever read as console
# markup: every line is a Text built from a fixed marker and the literal message.
console = Console(stderr=False, highlight=False)
errors = Console(stderr=True, highlight=False)


def _line(marker: str, style: str, message: str) -> Text:
    text = Text(marker + " ", style=style)
    text.append(printable(message))
    return text


def say_ok(message: str) -> None:
    """A success line on stdout."""
    console.print(_line("✓", "green", message), soft_wrap=True)


def say_note(message: str) -> None:
    """A dim remark on stdout."""
    console.print(Text(printable(message), style="dim"), soft_wrap=True)


def say_warning(message: str) -> None:
    """A warning line on stderr."""
    errors.print(_line("!", "yellow", message), soft_wrap=True)


def say_error(message: str) -> None:
    """An error line on stderr."""
    errors.print(_line("✗", "bold red", message), soft_wrap=True)


def _cells(*values: object) -> list[Text]:
    return [Text(printable(str(value))) for value in values]


def _fail(message: str) -> int:
    say_error(message)
    return EXIT_FAILED


def _plan(args: argparse.Namespace) -> Plan:
    """The project's plan as the code location sees it: jobs repeating an asset key set aside too."""
    import dataclasses

    from dativo_dagster.build import split_asset_key_clashes
    from dativo_dagster.translator import DativoTranslator

    plan = load_plan(args.project)
    kept, clashes = split_asset_key_clashes(plan, DativoTranslator())
    if not clashes:
        return plan
    return dataclasses.replace(plan, jobs=tuple(kept), broken=(*plan.broken, *clashes))


def _find_job(plan: Plan, label: str) -> JobPlan:
    try:
        return plan.job(label)
    except KeyError:
        broken = plan.broken_job(label)
        if broken is not None:
            raise ConfigProblems(list(broken.problems)) from None
        known = ", ".join([*(j.label for j in plan.jobs), *(j.label for j in plan.broken)]) or "none"
        raise ConfigError(f"job '{label}' is not in runner.yaml (known jobs: {known})") from None


# --------------------------------------------------------------------------- validate


def cmd_validate(args: argparse.Namespace) -> int:
    """Config, referenced environment variables, catalog reachability, a writable warehouse."""
    plan = _plan(args)
    objects = sum(len(j.objects) for j in plan.jobs)
    if plan.broken:
        for line in plan.problems:
            say_error(f"CFG001 {line}")
        say_error(
            f"{len(plan.broken)} job(s) broken: {', '.join(j.label for j in plan.broken)}; "
            f"{len(plan.jobs)} job(s) with {objects} object(s) load"
        )
    else:
        say_ok(f"config valid: {len(plan.jobs)} job(s), {objects} object(s)")
    problems = len(plan.broken)
    env = os.environ
    missing_any = False
    for job in plan.jobs:
        names = required_references(job.credentials) | required_references(job.connection)
        names |= required_references(job.target.model_dump())
        missing = sorted(n for n in names if not env.get(n))
        if missing:
            missing_any = True
            say_error(f"CFG001 {job.label}: environment variable(s) not set: {', '.join(missing)}")
    # The alert sensors resolve these when they send; a missing one silences a route.
    missing = sorted(n for n in required_references(plan.runner.alerts.model_dump()) if not env.get(n))
    if missing:
        missing_any = True
        say_error(f"CFG001 runner.yaml alerts.routes: environment variable(s) not set: {', '.join(missing)}")
    if problems or missing_any:
        return EXIT_FAILED
    say_ok("every referenced environment variable is set")
    if args.offline:
        return EXIT_OK
    from dativo_dagster.iceberg.catalog import build_catalog, check_catalog
    from dativo_dagster.iceberg.storage import check_warehouse

    resolver = SecretResolver()
    seen: set[str] = set()
    for job in plan.jobs:
        if job.target.name in seen:
            continue
        seen.add(job.target.name)
        try:
            catalog = build_catalog(job.target, resolver, plan.project_dir)
            check_catalog(catalog, job.target)
            say_ok(f"catalog '{job.target.name}' reachable")
            probed = check_warehouse(catalog, job.target)
            if probed is None:
                say_ok(f"warehouse of '{job.target.name}' is named by the REST catalog server (not probed)")
            else:
                say_ok(f"warehouse of '{job.target.name}' writable ({redact_text(probed)})")
        except DativoError as exc:
            problems += 1
            say_error(str(exc))
    if args.connections:
        for job in plan.jobs:
            problems += _test_job_connection(job, resolver)
    return EXIT_FAILED if problems else EXIT_OK


def _test_job_connection(job: JobPlan, resolver: SecretResolver) -> int:
    from dativo_dagster.sources.registry import build_source

    failures = 0
    try:
        source = build_source(job, resolver)
        source.check_connection()
    except DativoError as exc:
        say_error(f"{job.label}: {exc}")
        return 1
    say_ok(f"{job.label}: source reachable and authenticated")
    with source:
        for obj in job.objects:
            try:
                source.check_object(obj)
                say_ok(f"  {obj.name}")
            except DativoError as exc:
                failures += 1
                say_error(f"  {obj.name}: {exc}")
    return failures


def cmd_test_connection(args: argparse.Namespace) -> int:
    """Reachability, auth and object existence for one job."""
    plan = _plan(args)
    job = _find_job(plan, args.job)
    return EXIT_FAILED if _test_job_connection(job, SecretResolver()) else EXIT_OK


# --------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    """Jobs, objects, strategies and schedules."""
    plan = _plan(args)
    table = Table("job", "object", "strategy", "write", "table", "schedule")
    for job in plan.jobs:
        schedule = job.schedule.cron_expression if job.schedule else "-"
        for obj in job.objects:
            how = obj.strategy.value + (f"({obj.cursor_field})" if obj.cursor_field else "")
            table.add_row(
                *_cells(job.label, obj.name, how, obj.write_mode.value, ".".join(obj.table_identifier), schedule)
            )
    console.print(table)
    for broken in plan.broken:
        say_error(f"{broken.label}: broken ({len(broken.problems)} problem(s); run 'dativo validate')")
    return EXIT_OK


# --------------------------------------------------------------------------- run


class _Progress:
    """Turns engine log events into a live per-object display."""

    def __init__(self, objects: list[str]) -> None:
        from rich.live import Live

        self._lock = threading.Lock()
        self.state: dict[str, str] = dict.fromkeys(objects, "waiting")
        self.rows: dict[str, int] = dict.fromkeys(objects, 0)
        self.live = Live(self._render(), console=errors, refresh_per_second=8, transient=True)

    def _render(self) -> Table:
        table = Table("object", "state", "rows staged", box=None)
        for name, state in self.state.items():
            table.add_row(*_cells(name, state, f"{self.rows[name]:,}"))
        return table

    def __call__(self, event: MutableMapping[str, Any]) -> None:
        name = event.get("object")
        if name not in self.state:
            return
        with self._lock:
            kind = event.get("event")
            if kind == "object_started":
                self.state[name] = "reading"
            elif kind == "rows_staged":
                self.rows[name] += int(event.get("rows", 0))
            elif kind == "object_finished":
                self.state[name] = "committed" if event.get("committed") else "up to date"
            elif kind == "object_failed":
                self.state[name] = f"failed {event.get('code', '')}"
            self.live.update(self._render())


def cmd_run(args: argparse.Namespace) -> int:
    """Run one tenant job (or some of its objects)."""
    plan = _plan(args)
    job = _find_job(plan, args.job)
    objects = list(job.objects)
    if args.object:
        unknown = [o for o in args.object if o not in {obj.name for obj in objects}]
        if unknown:
            raise ConfigError(
                f"object(s) {', '.join(unknown)} not in {job.label} (objects: {', '.join(o.name for o in objects)})"
            )
        objects = [o for o in objects if o.name in args.object]
    from dativo_dagster.cli_debug import check_run_flags, cmd_scratch

    check_run_flags(args)
    if args.scratch:
        return cmd_scratch(plan, job, objects, args)
    if args.full_refresh and (args.dry_run or args.limit is not None):
        raise ConfigError("--full-refresh replaces the tables' rows: it takes neither --dry-run nor --limit")
    if args.dry_run:
        if args.partition is not None:
            raise ConfigError("--dry-run previews an incremental run; it cannot be combined with --partition")
        return _dry_run(plan, job, objects, args.limit, args.payloads)
    if args.full_refresh and args.partition is not None:
        raise ConfigError("--full-refresh replaces the whole table; it cannot be combined with --partition")
    return _materialize(
        plan,
        job,
        [o.name for o in objects],
        args.limit,
        args.summary_json,
        args.full_refresh,
        args.partition,
        payloads=args.payloads,
    )


def _dry_run(plan: Plan, job: JobPlan, objects: list, limit: int | None, payloads: bool = False) -> int:
    from dativo_dagster.cli_debug import say_payloads
    from dativo_dagster.engine import ingest_object
    from dativo_dagster.payloads import attach_observers
    from dativo_dagster.resources import DativoResource
    from dativo_dagster.scratch import new_run_id

    runtime = DativoResource(project_dir=str(plan.project_dir))
    payload_log = attach_observers(runtime.runtime, job, new_run_id("dry-run"), payloads=payloads)
    source = runtime.source_for(job, raw_pages=False)  # a dry run keeps no pages
    writer = runtime.writer_for(job.target)
    table = Table("object", "starts from", "rows to load", "rejected", "cursor after")
    failed = 0
    with source:
        for obj in objects:
            result = ingest_object(obj, source=source, writer=writer, run_id="dry-run", limit=limit, dry_run=True)
            if result.error is not None:
                failed += 1
                say_error(f"{obj.name}: {result.error}")
                continue
            assert result.write is not None
            codec = source.cursor_codec(obj)
            start = result.reconciled.cursor.display(codec) if result.reconciled.cursor else "beginning"
            after = result.write.cursor.display(codec) if result.write.cursor else "-"
            table.add_row(*_cells(obj.name, start, f"{result.write.rows_written:,}", result.write.rows_rejected, after))
    console.print(table)
    say_note("dry run: nothing was written")
    say_payloads(payload_log, job)
    return EXIT_OK if not failed else (EXIT_FAILED if failed == len(objects) else EXIT_PARTIAL)


def _materialize(
    plan: Plan,
    job: JobPlan,
    object_names: list[str],
    limit: int | None,
    summary_json: Path | None = None,
    full_refresh: bool = False,
    partition: str | None = None,
    *,
    payloads: bool = False,
) -> int:

    from dativo_dagster.build import build_definitions
    from dativo_dagster.cli_runs import cli_run_tags, release_dead_runs
    from dativo_dagster.payloads import TAG_PAYLOADS
    from dativo_dagster.translator import DativoTranslator

    translator = DativoTranslator()
    partition_args: dict[str, Any] = {}
    if partition is not None:
        from dativo_dagster.partitions import partition_run_args

        partition_args = partition_run_args(job.job.partitions, partition, job.label)
    single = Plan(project_dir=plan.project_dir, runner=plan.runner, jobs=(job,))
    defs = build_definitions(single, translator)
    keys = [translator.asset_key(job.object(name)) for name in object_names]
    from dativo_dagster.instance import instance_for_project

    # DAGSTER_HOME's instance, else the project's own: the one `dagster dev` in the project shows.
    instance = instance_for_project(plan.project_dir)
    for run_id in release_dead_runs(instance, translator.run_tags(job)):
        say_warning(
            f"run {run_id} of {job.label} was left unfinished by a dativo process that is gone: "
            "marked failed, its pool slot freed"
        )
    run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    op_config: dict[str, Any] = {}
    if limit is not None:
        op_config["limit"] = limit
    if full_refresh:
        op_config["reset"] = {"full_refresh": True}
    if op_config:
        run_config["ops"] = {translator.op_name(job): {"config": op_config}}
    progress = _Progress(object_names)
    add_event_listener(progress)
    with progress.live:
        # Dagster's asset job, as the UI's "Materialize" launches it: the run is shown with the
        # assets it materialized (not as an anonymous ephemeral job).
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            run_config=run_config,
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            partition_key=partition_args.get("partition_key"),
            tags={
                **translator.run_tags(job),
                **cli_run_tags(),
                **partition_args.get("tags", {}),
                **({TAG_PAYLOADS: "true"} if payloads else {}),
            },
        )
    code = _report(job, object_names, result, translator)
    if payloads or job.job.include_payloads:
        from dativo_dagster.cli_debug import say_payloads
        from dativo_dagster.payloads import payload_path

        say_payloads(payload_path(job.project_dir, result.run_id), job)
    if summary_json is not None:
        write_summary(summary_json, job, result, code)
    return code


def processing_summary(job: JobPlan, result: Any, exit_code: int) -> dict[str, Any]:
    """The run's processing summary: each object's line (from its materialization or the step's
    failure), and totals."""
    objects: dict[str, Any] = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = getattr(event.event_specific_data, "user_failure_data", None)
            found = data.metadata.get("dativo/summary") if data is not None else None
            if found is not None:
                objects.update(found.value)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found = materialization.metadata.get("dativo/summary")
        if found is not None:
            objects[materialization.asset_key.path[-1]] = found.value
    totals: dict[str, Any] = {}
    for line in objects.values():
        for name, value in line.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[name] = round(totals.get(name, 0) + value, 3)
            elif name == "errors_by_severity":
                merged = totals.setdefault(name, {})
                for severity, count in value.items():
                    merged[severity] = merged.get(severity, 0) + count
    return {"job": job.label, "run_id": result.run_id, "exit_code": exit_code, "objects": objects, "totals": totals}


def write_summary(path: Path, job: JobPlan, result: Any, exit_code: int) -> None:
    """Write the processing summary as JSON (for schedulers and alerting outside Dagster)."""
    import json

    try:
        path.write_text(json.dumps(processing_summary(job, result, exit_code), indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise ConfigError(f"--summary-json: cannot write {path}: {exc.strerror or exc}") from None
    say_note(f"processing summary written to {path}")


def _report(job: JobPlan, object_names: list[str], result: Any, translator: Any) -> int:
    done: set[str] = set()
    rejected_any = False
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.path[-1]
        md = {k: v.value for k, v in materialization.metadata.items()}
        done.add(name)
        rejected = int(md.get("dativo/rows_rejected", 0) or 0)
        rejected_any = rejected_any or rejected > 0
        written = int(md.get("dativo/rows_written", 0))
        new = int(md.get("dativo/rows_new", 0))
        verb = "committed" if md.get("dativo/committed") else "up to date"
        say_ok(
            f"{job.label}/{name} → {md.get('dagster/table_name', '')}: {verb}, "
            f"{written:,} row(s) written ({new:,} new, {rejected:,} rejected), "
            f"{int(md.get('dagster/row_count', 0)):,} in table, cursor {md.get('dativo/cursor_display', '-')}, "
            f"snapshot {md.get('dativo/snapshot_id', '-')}"
        )
    failed = [n for n in object_names if n not in done]
    failed_error_checks = _report_checks(job, result)
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.event_specific_data
            error = getattr(data, "user_failure_data", None)
            description = getattr(error, "description", None) if error else None
            if description is None and getattr(data, "error", None) is not None:
                description = data.error.message.strip().splitlines()[-1]
            say_error(str(description))
    if failed:
        say_error(f"failed: {', '.join(failed)}")
        return EXIT_FAILED if not done else EXIT_PARTIAL
    if rejected_any:
        say_warning("some rows were quarantined (see the *__quarantine tables)")
        return EXIT_PARTIAL
    if failed_error_checks:
        return EXIT_PARTIAL
    return EXIT_OK


def _report_checks(job: JobPlan, result: Any) -> int:
    """Print the run's failed asset checks (ERROR as errors, WARN as warnings); return the ERROR count.

    A check that passed says nothing: the run's own lines already say the object was committed.
    """
    from dativo_dagster.config.secrets import redact_text

    errors = 0
    for event in result.all_events:
        if event.event_type_value != "ASSET_CHECK_EVALUATION":
            continue
        evaluation = event.event_specific_data
        if evaluation.passed:
            continue
        text = redact_text(
            f"{job.label}/{evaluation.asset_key.path[-1]}: check {evaluation.check_name} failed"
            + (f": {evaluation.description}" if evaluation.description else "")
        )
        if evaluation.severity.value == "ERROR":
            errors += 1
            say_error(text)
        else:
            say_warning(text)
    return errors


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(prog="dativo", description="Multi-tenant ingestion into Apache Iceberg")
    parser.add_argument("--project", type=Path, default=None, help="directory holding runner.yaml")
    parser.add_argument("--verbose", "-v", action="store_true", help="show engine log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check config, env vars, catalog reachability and a writable warehouse")
    validate.add_argument("--offline", action="store_true", help="skip the catalog and warehouse checks")
    validate.add_argument("--connections", action="store_true", help="also connect to every source")
    validate.set_defaults(func=cmd_validate)

    run = sub.add_parser("run", help="run a tenant job: dativo run TENANT/JOB")
    run.add_argument("job", help="TENANT/JOB as listed in runner.yaml")
    run.add_argument("--object", action="append", help="only this object (repeatable)")
    run.add_argument("--limit", type=int, default=None, help="stop each object after N rows")
    run.add_argument("--dry-run", action="store_true", help="read and validate, write nothing")
    run.add_argument(
        "--full-refresh",
        action="store_true",
        help="reset the objects first (audited): read everything and replace their tables' rows",
    )
    run.add_argument(
        "--partition",
        default=None,
        metavar="KEY|START...END",
        help="a partitioned job: replace this partition's (or range's) window instead of loading incrementally",
    )
    run.add_argument(
        "--summary-json",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the processing summary (per object: rows, pages, api calls, retries, 429s, throttling, errors)",
    )
    from dativo_dagster.cli_debug import add_compare_command, add_run_arguments

    add_run_arguments(run)
    run.set_defaults(func=cmd_run)

    test = sub.add_parser("test-connection", help="reachability, auth and object existence for a job")
    test.add_argument("job", help="TENANT/JOB")
    test.set_defaults(func=cmd_test_connection)

    listing = sub.add_parser("list", help="list jobs and objects")
    listing.set_defaults(func=cmd_list)

    from dativo_dagster.cli_diagnose import add_diagnose_commands
    from dativo_dagster.cli_maintain import add_maintain_command
    from dativo_dagster.cli_replay import add_replay_commands
    from dativo_dagster.cli_resets import add_reset_commands
    from dativo_dagster.cli_verify import add_verify_command
    from dativo_dagster.cli_workspace import add_workspace_command

    add_workspace_command(sub)
    add_reset_commands(sub)
    add_compare_command(sub)
    add_diagnose_commands(sub)
    add_replay_commands(sub)
    add_maintain_command(sub)
    add_verify_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dativo`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "debug", False):
        configure_logging(logging.DEBUG, display_level=logging.DEBUG, force=True)
    else:
        configure_logging(logging.INFO, display_level=logging.INFO if args.verbose else logging.WARNING, force=True)
    if args.command == "run" and args.limit is not None and args.limit < 1:
        return _fail("CFG001 --limit: must be at least 1")
    try:
        code: int = args.func(args)
    except ConfigProblems as exc:
        for line in exc.problems:
            say_error(f"CFG001 {line}")
        return EXIT_FAILED
    except DativoError as exc:
        from dativo_dagster.config.secrets import redact_text

        return _fail(redact_text(str(exc)))
    except KeyboardInterrupt:
        return _fail("interrupted; nothing past the last commit was written")
    except Exception as exc:
        # Not a classified failure: a bug. Say so and keep the traceback (redacted) for the report.
        import traceback

        from dativo_dagster.config.secrets import redact_text

        errors.print(Text(printable(redact_text(traceback.format_exc())), style="dim"), soft_wrap=True)
        return _fail(
            f"unexpected error (a bug in dativo, not a problem with your data or config): "
            f"{type(exc).__name__}: {redact_text(str(exc))[:300]}"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
