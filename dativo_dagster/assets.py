"""One ``multi_asset`` per tenant job; its body runs the shared engine per selected object."""

# No `from __future__ import annotations`: Dagster inspects the asset function's annotations at runtime.

import json
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dativo_dagster.config.models import Backoff, Jitter, RetryConfig
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.diagnose import CONFIG_METADATA_KEY, FAILURE_METADATA_KEY
from dativo_dagster.errors import (
    DativoError,
    ErrorClass,
    RetryExhaustedError,
    Severity,
    StateError,
    UnexpectedError,
    unexpected,
)
from dativo_dagster.partitions import backfill_policy, partition_window, partitions_definition
from dativo_dagster.resets import ResetRequest, root_run_id, run_user
from dativo_dagster.resources import DativoResource
from dativo_dagster.specs import build_asset_specs, build_check_specs
from dativo_dagster.state import META_CURSOR, META_SNAPSHOT_ID, CursorState
from dativo_dagster.translator import DativoTranslator

if TYPE_CHECKING:
    # The engine pulls in pyiceberg and pyarrow: needed to run an asset, not to load definitions.
    from dativo_dagster.engine import DagsterState, ObjectResult
    from dativo_dagster.sources.base import TimeWindow


class IngestConfig(BaseModel):
    """Run config of a tenant job (launchpad, ``dativo run`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int | None = Field(default=None, ge=1, description="stop each object after this many rows")
    reset: ResetRequest | None = Field(default=None, description="reset the selected objects first (audited)")

    @model_validator(mode="after")
    def _no_partial_refresh(self) -> "IngestConfig":
        if self.limit is not None and self.reset is not None and self.reset.full_refresh:
            raise ValueError("a row limit with a full refresh would replace the tables with that many rows")
        return self


# Dagster's schema for IngestConfig, declared once: inferring it from a ``dg.Config`` annotation
# costs a millisecond per multi_asset, a second of load time at 1,000 tenant jobs.
INGEST_CONFIG_SCHEMA = {
    "limit": dg.Field(
        dg.Noneable(int),
        default_value=None,
        is_required=False,
        description="stop each object after this many rows (at least 1)",
    ),
    "reset": dg.Field(
        dg.Noneable(
            {
                "to": dg.Field(
                    dg.Noneable(str),
                    default_value=None,
                    is_required=False,
                    description="the cursor value the selected objects are read from (in the source's terms)",
                ),
                "full_refresh": dg.Field(
                    bool,
                    default_value=False,
                    is_required=False,
                    description="read the selected objects from the beginning and replace their tables' rows",
                ),
            }
        ),
        default_value=None,
        is_required=False,
        description="reset the selected objects before reading: exactly one of 'to' or 'full_refresh: true'; "
        "recorded in each table's snapshot history with the launching user",
    ),
}


def retry_policy(config: RetryConfig) -> dg.RetryPolicy:
    """Dagster RetryPolicy from runner.yaml (permanent errors bypass it)."""
    return dg.RetryPolicy(
        max_retries=config.max_retries,
        delay=config.delay_s,
        backoff=dg.Backoff.EXPONENTIAL if config.backoff is Backoff.EXPONENTIAL else dg.Backoff.LINEAR,
        jitter={
            Jitter.NONE: None,
            Jitter.FULL: dg.Jitter.FULL,
            Jitter.PLUS_MINUS: dg.Jitter.PLUS_MINUS,
        }[config.jitter],
    )


def dagster_state(instance: dg.DagsterInstance, key: dg.AssetKey) -> "DagsterState":
    """Cursor and snapshot Dagster recorded at the asset's latest materialization."""
    from dativo_dagster.engine import DagsterState

    event = instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return DagsterState()
    metadata = materialization.metadata
    cursor = None
    raw = metadata.get(META_CURSOR)
    if raw is not None and raw.value not in (None, "null"):
        try:
            cursor = CursorState.from_json(str(raw.value), where=f"Dagster metadata of {key.to_user_string()}")
        except StateError:
            cursor = None  # the table's own record decides; an unreadable copy must not block a run
    snapshot = metadata.get(META_SNAPSHOT_ID)
    snapshot_id = int(snapshot.value) if snapshot is not None and snapshot.value is not None else None  # type: ignore[arg-type]
    return DagsterState(cursor=cursor, snapshot_id=snapshot_id)


def materialize_result(
    result: "ObjectResult", key: dg.AssetKey, catalog_name: str, window: "TimeWindow | None" = None
) -> dg.MaterializeResult:
    """Metadata for one committed (or unchanged) object (of a partition run when ``window`` is set)."""
    write = result.write
    assert write is not None
    metadata: dict[str, object] = {
        "dagster/table_name": f"{catalog_name}.{write.table}",
        "dativo/rows_written": write.rows_written,
        "dativo/rows_new": max(write.rows_written - write.rows_replaced, 0),
        "dativo/rows_rejected": write.rows_rejected,
        "dativo/rows_read": write.rows_read,
        "dativo/committed": write.committed,
        "dativo/bytes_written": write.bytes_written,
        "dativo/data_files": write.data_files,
        "dativo/files_rewritten": write.files_rewritten,
        "dativo/duration_s": round(result.duration_s, 3),
        META_CURSOR: write.cursor.to_json() if write.cursor else "null",
        "dativo/cursor_display": result.cursor_display or "-",
        "dativo/cursor_origin": f"{result.reconciled.origin}: {result.reconciled.note}",
        **{f"dativo/{name}": value for name, value in result.source_stats.items()},
    }
    if write.snapshot_id is not None:
        metadata[META_SNAPSHOT_ID] = write.snapshot_id
    if write.integrity_manifest is not None:
        # Where the SHA-256 of every file the commit added is recorded (``dativo verify`` checks them).
        metadata["dativo/integrity_manifest"] = write.integrity_manifest
        metadata["dativo/integrity_files"] = write.integrity_files
    if window is not None:
        metadata["dativo/partition_window"] = window.label
        metadata["dativo/rows_replaced"] = write.rows_replaced
    if result.total_rows is not None:
        metadata["dagster/row_count"] = result.total_rows
    if write.schema is not None:
        from dativo_dagster.types import column_schema_metadata

        metadata["dagster/column_schema"] = dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c["name"], type=c["type"], constraints=dg.TableColumnConstraints(nullable=not c["required"])
                )
                for c in column_schema_metadata(write.schema)
            ]
        )
    if write.schema_changes:
        metadata["dativo/schema_changes"] = json.dumps(write.schema_changes)
    if write.quarantine_table:
        metadata["dativo/quarantine_table"] = write.quarantine_table
    from dativo_dagster.quarantine_view import run_quarantine_preview

    preview = run_quarantine_preview(result)
    if preview is not None:
        metadata["dativo/quarantined_rows"] = write.rows_rejected
        metadata["dativo/quarantine_preview"] = preview
    if result.notes:
        metadata["dativo/notes"] = "\n".join(result.notes)
    metadata["dativo/summary"] = dg.MetadataValue.json(object_summary(result))
    return dg.MaterializeResult(asset_key=key, metadata=metadata)  # type: ignore[arg-type]


class ErrorBudget:
    """When a run stops starting objects: a rejected credential (CRITICAL) at once, or after
    ``max_failed`` failed objects. Objects already running finish (and commit) normally."""

    def __init__(self, max_failed: int | None) -> None:
        self.max_failed = max_failed
        self.count = 0
        self.stop_reason: str | None = None
        self.cause: DativoError | None = None

    def failed(self, error: DativoError) -> None:
        """Record one failed object."""
        self.count += 1
        if self.stop_reason is not None:
            return
        if error.severity is Severity.CRITICAL:
            self.stop_reason = f"{error.code} is critical (every object of the job uses the same credential)"
            self.cause = error
        elif self.max_failed is not None and self.count >= self.max_failed:
            self.stop_reason = f"{self.count} object(s) failed (max_failed_objects: {self.max_failed})"
            self.cause = error


def not_started(obj: ObjectPlan, reason: str, cause: DativoError) -> DativoError:
    """The error of an object the run did not start because it stopped (same code as the cause)."""
    error = type(cause)(f"{obj.label}: not started: the run stopped because {reason}; first failure: {cause.message}")
    return error


def object_summary(result: "ObjectResult") -> dict[str, object]:
    """One object's line of the processing summary: rows, requests, throttling, errors by severity."""
    stats = result.source_stats
    write = result.write
    errors = {severity.value: 0 for severity in Severity}
    errors[Severity.LOW.value] = int(stats.get("retries", 0)) + (write.rows_rejected if write else 0)
    if result.error is not None:
        errors[result.error.severity.value] += 1
    return {
        "status": "failed"
        if result.error is not None
        else ("committed" if write and write.committed else "up to date"),
        "error_code": result.error.code if result.error is not None else None,
        "rows_written": write.rows_written if write else 0,
        "rows_rejected": write.rows_rejected if write else 0,
        "pages": int(stats.get("pages", 0)),
        "api_calls": int(stats.get("api_calls", 0)),
        "retries": int(stats.get("retries", 0)),
        "http_429": int(stats.get("http_429", 0)),
        "throttled_s": round(float(stats.get("throttled_s", 0.0)), 3),
        "breaker_openings": int(stats.get("breaker_openings", 0)),
        "slices": int(stats.get("slices", 0)),
        "errors_by_severity": errors,
        "duration_s": round(result.duration_s, 3),
        "notes": list(result.notes),
    }


def failure_for(
    job: JobPlan,
    failures: "list[ObjectResult]",
    succeeded: int,
    retry_number: int = 0,
    summary: dict[str, dict[str, object]] | None = None,
    project_dir: Path | None = None,
) -> dg.Failure:
    """One Failure for the step.

    Retries are allowed only if every failure is transient and the job's retry budget is not
    spent; a transient failure on the last attempt becomes RETRY001 (permanent for the run). An
    unclassified exception (a bug) is never retried and keeps its traceback in the metadata.
    """
    errors = [f.error for f in failures if f.error is not None]
    transient = all(e.error_class is ErrorClass.TRANSIENT for e in errors)
    lines = [redact_text(f"{f.obj.name}: {f.error}") for f in failures]
    first = errors[0]
    code = first.code
    bugs = [e for e in errors if isinstance(e, UnexpectedError)]
    if bugs:
        code = UnexpectedError.code
    description = f"{job.label}: {len(failures)} object(s) failed, {succeeded} succeeded — {lines[0]}"
    retries_left = transient and retry_number < job.retry.max_retries
    if transient and not retries_left:
        code = RetryExhaustedError.code
        attempts = retry_number + 1
        description = (
            f"{RetryExhaustedError.code}: {job.label}: retries exhausted after {attempts} attempt(s); "
            f"last failure: {lines[0]}"
        )
    metadata: dict[str, object] = {
        "dativo/error_code": code,
        "dativo/error_class": "transient" if retries_left else ("bug" if bugs else "permanent"),
        "dativo/failed_objects": ", ".join(f.obj.name for f in failures),
        "dativo/errors": "\n".join(lines),
        "dativo/attempt": retry_number + 1,
    }
    from dativo_dagster.quarantine_view import run_quarantine_preview

    previews = [(f.obj.name, run_quarantine_preview(f)) for f in failures]
    shown = [f"#### {name}\n\n{preview.value}" for name, preview in previews if preview is not None]
    if shown:
        metadata["dativo/quarantine_preview"] = dg.MetadataValue.md("\n".join(shown))
    if summary is not None:
        if code == RetryExhaustedError.code:
            # The summary says what the step says: these objects' retries are spent.
            for failure in failures:
                line = summary.get(failure.obj.name)
                if line is not None and failure.error is not None and failure.error.transient:
                    line["cause"] = failure.error.code
                    line["error_code"] = RetryExhaustedError.code
        metadata["dativo/summary"] = dg.MetadataValue.json(summary)
    if bugs:
        metadata["dativo/traceback"] = dg.MetadataValue.text(
            "\n\n".join(redact_text(bug.context.get("traceback", "")) for bug in bugs)
        )
    records, files = failure_records(job, failures, code, project_dir)
    metadata[FAILURE_METADATA_KEY] = dg.MetadataValue.json(records)
    metadata[CONFIG_METADATA_KEY] = dg.MetadataValue.json(files)
    return dg.Failure(description=redact_text(description), metadata=metadata, allow_retries=retries_left)  # type: ignore[arg-type]


def failure_records(
    job: JobPlan, failures: "list[ObjectResult]", step_code: str, project_dir: Path | None
) -> tuple[dict[str, object], dict[str, object]]:
    """Per failed object, what ``dativo diagnose`` reads later (:func:`dativo_dagster.diagnose.failure_record`),
    and the copies of their job and contract files (once each)."""
    from dativo_dagster.diagnose import failure_record, object_config_files

    records: dict[str, object] = {}
    copies: dict[str, object] = {}
    for failure in failures:
        error = failure.error
        if error is None:
            continue
        files = object_config_files(job.job_file, failure.obj.contract, project_dir) if project_dir else {}
        copies.update(files)
        cursor = failure.reconciled.cursor
        records[failure.obj.name] = failure_record(
            error,
            code=step_code if step_code == RetryExhaustedError.code and error.transient else error.code,
            duration_s=failure.duration_s,
            cursor_before=cursor.display() if cursor is not None else None,
            config_files=files,
        )
    return records, copies


def setup_failure_metadata(
    job: JobPlan, objects: list[ObjectPlan], error: DativoError, code: str, project_dir: Path
) -> dict[str, Any]:
    """The failure records of every selected object when the run failed before reading any (the
    source or the warehouse could not be set up), with the copies of their config files."""
    from dativo_dagster.diagnose import failure_record, object_config_files

    records: dict[str, object] = {}
    copies: dict[str, object] = {}
    for obj in objects:
        files = object_config_files(job.job_file, obj.contract, project_dir)
        copies.update(files)
        records[obj.name] = failure_record(error, code=code, config_files=files)
    return {
        "dativo/failed_objects": ", ".join(obj.name for obj in objects),
        FAILURE_METADATA_KEY: dg.MetadataValue.json(records),
        CONFIG_METADATA_KEY: dg.MetadataValue.json(copies),
    }


def ingest_config(raw: object) -> IngestConfig:
    """Validate the op config Dagster passes (its schema only checks types)."""
    try:
        return IngestConfig.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise dg.Failure(description=f"CFG001 run config: {problems}", allow_retries=False) from None


def build_job_assets(job: JobPlan, translator: DativoTranslator) -> dg.AssetsDefinition:
    """The multi_asset of one tenant job."""
    keys = {translator.asset_key(obj): obj for obj in job.objects}
    partitions = job.job.partitions

    @dg.multi_asset(
        name=translator.op_name(job),
        specs=build_asset_specs(job, translator),
        check_specs=build_check_specs(job, translator),
        can_subset=True,
        retry_policy=retry_policy(job.retry),
        pool=translator.pool(job),
        op_tags=translator.run_tags(job),
        config_schema=INGEST_CONFIG_SCHEMA,
        partitions_def=partitions_definition(partitions) if partitions else None,
        backfill_policy=backfill_policy(partitions) if partitions else None,
    )
    def _ingest(
        context: dg.AssetExecutionContext, dativo: DativoResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        config = ingest_config(context.op_execution_context.op_config)
        selected = [obj for key, obj in keys.items() if key in context.selected_asset_keys]
        checks = context.selected_asset_check_keys
        window = partition_window(context) if partitions else None
        yield from run_job(context, job, selected, dativo, translator, config, checks, window=window)

    return _ingest


def run_job(
    context: dg.AssetExecutionContext,
    job: JobPlan,
    objects: list[ObjectPlan],
    dativo: DativoResource,
    translator: DativoTranslator,
    config: IngestConfig,
    checks: set[dg.AssetCheckKey] | frozenset[dg.AssetCheckKey],
    window: "TimeWindow | None" = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Ingest ``objects`` in a thread pool; yield results as they finish; fail the step at the end.

    Selected checks are evaluated after their object's ingestion; checks selected without their
    asset (the UI's "Execute" on a check) are evaluated against the table as it stands. With
    ``window`` (a partition run) each object replaces exactly that window of its table.
    """
    from dativo_dagster.checks.runtime import (
        CheckedObject,
        History,
        check_failure,
        checks_standing,
        ingest_and_check,
        read_history,
        selected_check_names,
    )
    from dativo_dagster.engine import ObjectResult
    from dativo_dagster.state import ReconciledCursor

    retry_number = context.retry_number
    reset_by = run_user(context.run.tags) if config.reset is not None else "dagster"
    chain_root = root_run_id(context.run)  # a re-execution does not apply the config's reset again
    try:
        if objects:
            from dativo_dagster.payloads import attach_observers, payloads_requested

            # Before the source is built: its transports take the runtime's observers as they stand.
            attach_observers(dativo.runtime, job, context.run_id, payloads=payloads_requested(context.run.tags))
        source = dativo.source_for(job) if objects else None  # checks alone read no source
        writer = dativo.writer_for(job.target)
    except DativoError as exc:
        retries_left = exc.transient and retry_number < job.retry.max_retries
        code = exc.code if retries_left or not exc.transient else RetryExhaustedError.code
        raise dg.Failure(
            description=redact_text(f"{code}: {job.label}: {exc}" if code != exc.code else f"{job.label}: {exc}"),
            metadata={
                **exc.as_metadata(),
                "dativo/error_code": code,
                **setup_failure_metadata(job, objects, exc, code, dativo.root),
            },
            allow_retries=retries_left,
        ) from None
    except Exception as exc:
        bug = unexpected(exc)
        raise dg.Failure(
            description=redact_text(f"{job.label}: {bug}"),
            metadata={
                **bug.as_metadata(),
                "dativo/traceback": dg.MetadataValue.text(bug.context["traceback"]),
                **setup_failure_metadata(job, objects, bug, bug.code, dativo.root),
            },
            allow_retries=False,
        ) from None
    failures: list[ObjectResult] = []
    succeeded = 0
    summary: dict[str, dict[str, object]] = {}
    states = {obj.name: dagster_state(context.instance, translator.asset_key(obj)) for obj in objects}
    check_names = selected_check_names(job.objects, translator, checks)
    histories = {
        obj.name: read_history(context.instance, translator.asset_key(obj), obj.checks.volume.history, context.run_id)
        for obj in job.objects
        if check_names[obj.name]
    }
    check_errors: list[tuple[str, DativoError]] = []
    budget = ErrorBudget(job.job.max_failed_objects)
    waiting = list(objects)
    workers = min(job.job.max_workers, max(len(objects), 1))
    with source if source is not None else nullcontext(), ThreadPoolExecutor(max_workers=workers) as pool:
        running: dict[Future[tuple[ObjectResult, CheckedObject]], ObjectPlan] = {}
        while waiting or running:
            # Objects start one by one as workers free up, so a run that has to stop (a rejected
            # credential, too many failures) stops before starting the rest.
            while waiting and len(running) < workers and budget.stop_reason is None:
                obj = waiting.pop(0)
                assert source is not None  # built whenever objects are selected
                future = pool.submit(
                    ingest_and_check,
                    obj,
                    translator.asset_key(obj),
                    check_names[obj.name],
                    histories.get(obj.name, History()),
                    source=source,
                    writer=writer,
                    run_id=context.run_id,
                    dagster=states[obj.name],
                    limit=config.limit,
                    reset=config.reset,
                    reset_by=reset_by,
                    window=window,
                    root_run_id=chain_root,
                )
                running[future] = obj
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                obj = running.pop(future)
                checked = CheckedObject()
                try:
                    result, checked = future.result()
                except Exception as exc:
                    # An exception no code covers is a bug: this object fails without retry, and
                    # the objects that committed still get their events.
                    bug = unexpected(exc)
                    context.log.error(f"{obj.label}: {bug}\n{bug.context['traceback']}")
                    result = ObjectResult(
                        obj=obj, write=None, reconciled=ReconciledCursor(None, "none", "failed"), error=bug
                    )
                summary[obj.name] = object_summary(result)
                key = translator.asset_key(result.obj)
                if checked.error is not None:
                    check_errors.append((obj.label, checked.error))
                    context.log.error(redact_text(f"{obj.label}: checks not evaluated: {checked.error}"))
                if result.error is not None:
                    failures.append(result)
                    budget.failed(result.error)
                    context.log.error(redact_text(f"{result.obj.label}: {result.error}"))
                    yield from checked.results
                    continue
                succeeded += 1
                yield materialize_result(result, key, job.target.catalog_name, window)
                yield from checked.results
    ingested = {obj.name for obj in objects}
    for obj in job.objects:
        if check_names[obj.name] and obj.name not in ingested:
            checked = checks_standing(
                obj, translator.asset_key(obj), check_names[obj.name], writer, histories[obj.name]
            )
            if checked.error is not None:
                check_errors.append((obj.label, checked.error))
                context.log.error(redact_text(f"{obj.label}: checks not evaluated: {checked.error}"))
            yield from checked.results
    for obj in waiting:  # never started: the run stopped
        assert budget.stop_reason is not None and budget.cause is not None
        skipped = ObjectResult(
            obj=obj,
            write=None,
            reconciled=ReconciledCursor(None, "none", "not started"),
            error=not_started(obj, budget.stop_reason, budget.cause),
        )
        summary[obj.name] = object_summary(skipped)
        failures.append(skipped)
    if objects:
        context.log.info("processing_summary " + json.dumps(summary, sort_keys=True))
    if failures:
        raise failure_for(job, failures, succeeded, retry_number, summary, project_dir=dativo.root)
    if check_errors:
        raise check_failure(check_errors, retry_number, job.retry.max_retries)
