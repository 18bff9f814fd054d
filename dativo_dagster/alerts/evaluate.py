"""What the alert sensors do at each tick: find what failed, build alerts, send them.

Imported by the sensors' tick functions only (never at definitions load).

Both sensors read the instance's run-end events (run failures; for checks, successes too) after
their cursor, oldest first (:func:`run_end_tick`), and handle each run once:

* Run failures (:func:`run_failure_alerts`): a run Dagster is about to re-execute (run retries,
  ``dagster/will_retry``) is skipped: only its last attempt alerts. Op retries (the jobs'
  RetryPolicy) happen inside one run, so they never alert on their own. One alert per tenant job
  whose step failed, with the step's error code, class and message.
* Failed ERROR checks (:func:`check_failure_alerts`): read when the run ends, from the run's last
  evaluation of each check, so a check evaluated by every op retry alerts once; again not for a
  run that is about to be re-executed.

Check evaluations are found through the run-end events rather than paged by their own storage ids
because the default instance (run-sharded SQLite) cannot page events of that type across runs by
storage id; run-end events it can, as every instance can.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import dagster as dg
import structlog
from dagster import EventLogEntry

from dativo_dagster.alerts.delivery import Delivery, deliver
from dativo_dagster.alerts.notifications import (
    CHECK_FAILURE,
    RUN_FAILURE,
    Alert,
    error_code_in,
    redacted_message,
    run_url,
)
from dativo_dagster.compat.dagster import last_passed_check_timestamp, read_kv, write_kv
from dativo_dagster.config.models import AlertsConfig, JobEntry
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.config.secrets import (
    SecretResolver,
    is_sensitive_key,
    redact_text,
    secret_parts,
    store_references,
)
from dativo_dagster.errors import ConfigError, DativoError, UnexpectedError
from dativo_dagster.run_coordinator import MULTIPLE
from dativo_dagster.translator import TAG_JOB, TAG_TENANT, DativoTranslator

log = structlog.get_logger("dativo.alerts")

WILL_RETRY_TAG = "dagster/will_retry"
"""Dagster sets it on a failed run: ``true`` when its run retries will re-execute the run."""
RUN_END_EVENTS = {"success": dg.DagsterEventType.RUN_SUCCESS, "failure": dg.DagsterEventType.RUN_FAILURE}
RUN_ENDS_PER_TICK = 100
"""Run ends a tick reads per kind (1,000 hourly tenant jobs end ~17 runs a minute); the rest wait for
the next tick (the cursor)."""
RETRY_DECISION_WAIT_S = 120.0
TICK_BUDGET_S = 30.0
"""A tick starts no further alert after this long, and every delivery ends by then: Dagster gives
a sensor tick 60 s by default, the rest is margin for reading the instance."""


class PlanIndex:
    """The code location's tenant jobs by step (op) name, asset key and ``tenant/job`` label.

    Built at the first tick, not at definitions load: a code location with 10,000 assets must
    load fast, and most processes that load it never evaluate a sensor.
    """

    def __init__(self, plan: Plan, translator: DativoTranslator) -> None:
        self.plan = plan
        self.translator = translator
        self.by_step = {translator.op_name(job): job for job in plan.jobs}
        self.by_label = {job.label: job for job in plan.jobs}
        self.by_key: dict[dg.AssetKey, JobPlan] = {}
        for job in plan.jobs:
            for obj in job.objects:
                # The first job keeps a contested key, as the definitions do.
                self.by_key.setdefault(translator.asset_key(obj), job)
        self.entries: dict[str, JobEntry] = {f"{e.tenant}/{e.job}": e for e in plan.runner.jobs}

    def asset_keys(self, job: JobPlan) -> list[dg.AssetKey]:
        """The asset keys of a tenant job, in object order."""
        return [self.translator.asset_key(obj) for obj in job.objects]

    def route_names(self, job: JobPlan) -> list[str]:
        """Where alerts of ``job`` go: its runner.yaml entry's routes, its tenant's, or the default."""
        entry = self.entries.get(job.label)
        return self.plan.runner.alerts.route_names(job.tenant, entry.alerts if entry is not None else None)


# --------------------------------------------------------------------------- run failures


@dataclass(frozen=True)
class _StepFailure:
    description: str
    metadata: Mapping[str, Any]


def will_be_retried(run: dg.DagsterRun) -> bool:
    """True if Dagster's run retries will re-execute this failed run (its next attempt alerts)."""
    return run.tags.get(WILL_RETRY_TAG, "").lower() == "true"


def retry_decided(run: dg.DagsterRun, ended_at: float, run_retries_enabled: bool, now: float | None = None) -> bool:
    """True once it is known whether Dagster re-executes this run.

    Dagster tags a failed run ``dagster/will_retry`` just after recording its failure, when run
    retries are enabled; a tick reading the failure in between waits for the tag (at most
    :data:`RETRY_DECISION_WAIT_S`, should the tag never come), so a run about to be retried does
    not alert.
    """
    if not run_retries_enabled or run.status != dg.DagsterRunStatus.FAILURE or WILL_RETRY_TAG in run.tags:
        return True
    return (time.time() if now is None else now) - ended_at > RETRY_DECISION_WAIT_S


def run_failure_alerts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, failure_message: str, index: PlanIndex, alerts: AlertsConfig
) -> list[Alert]:
    """The alerts of one failed run: one per tenant job of this code location that it ran.

    Args:
        instance: The Dagster instance (events, latest materializations).
        run: The failed run.
        failure_message: The run-failure event's message (used when no step of a tenant job failed,
            e.g. a run worker that died).
        index: The code location's tenant jobs.
        alerts: runner.yaml's alerts section (``base_url``).
    """
    if will_be_retried(run):
        return []
    failures, any_step_failed = _step_failures(instance, run.run_id, index)
    if failures:
        jobs = [index.by_label[label] for label in failures]
    elif not any_step_failed:
        # The run failed around its steps (a worker that died, a run canceled by run monitoring):
        # every tenant job it ran is affected.
        jobs = jobs_of_run(run, index, None if run.asset_selection else _plan_step_keys(instance, run))
    else:
        jobs = []  # only steps of other assets failed
    found = []
    for job in jobs:
        step = failures.get(job.label)
        if step is not None:
            metadata = step.metadata
            keys = _failed_keys(job, metadata, index) or _selected_keys(run, job, index)
            message = step.description
            code = _text(metadata.get("dativo/error_code"))
            error_class = _text(metadata.get("dativo/error_class"))
        else:
            keys = _selected_keys(run, job, index)
            message = failure_message
            code = error_code_in(failure_message)
            error_class = None
        found.append(
            Alert(
                kind=RUN_FAILURE,
                tenant=job.tenant,
                job=job.name,
                assets=tuple(key.to_user_string() for key in keys),
                error_code=code,
                error_class=error_class,
                message=redacted_message(message, job_secret_values(job)),
                run_id=run.run_id,
                run_url=run_url(run.run_id, alerts.base_url),
                last_success={key.to_user_string(): _last_materialized(instance, key) for key in keys},
            )
        )
    return found


def _step_failures(instance: dg.DagsterInstance, run_id: str, index: PlanIndex) -> tuple[dict[str, _StepFailure], bool]:
    """The last step failure of each tenant job of this location in the run, by ``tenant/job``,
    and whether any step of the run failed."""
    found: dict[str, _StepFailure] = {}
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        job = index.by_step.get(event.step_key.split("[", 1)[0])  # a mapped step is "op[key]"
        if job is None:
            continue
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None:
            description = user.description or user.label
            metadata = {key: value.value for key, value in user.metadata.items()}
        else:
            description = data.error.message if data.error is not None else event.message or "step failed"
            metadata = {}
        found[job.label] = _StepFailure(description, metadata)
    return found, bool(records)


def jobs_of_run(run: dg.DagsterRun, index: PlanIndex, step_keys: Iterable[str] | None = None) -> list[JobPlan]:
    """The tenant jobs a run covers: by its asset selection, else by the steps it executes.

    Its ``dativo/tenant`` and ``dativo/job`` tags are only a cross-check: anyone launching a run
    can type them, and an alert routed by them would reach another tenant's routes. A run whose
    tags disagree with what it ran is logged and alerts the jobs it ran.

    Args:
        run: The run.
        index: The code location's tenant jobs.
        step_keys: The keys of the steps the run executes (its execution plan), if known.
    """
    jobs: dict[str, JobPlan] = {}
    for key in run.asset_selection or ():
        job = index.by_key.get(key)
        if job is not None:
            jobs.setdefault(job.label, job)
    if not run.asset_selection:
        for step_key in step_keys or ():
            job = index.by_step.get(step_key.split("[", 1)[0])
            if job is not None:
                jobs.setdefault(job.label, job)
    tenant, name = run.tags.get(TAG_TENANT), run.tags.get(TAG_JOB)
    if tenant and name and jobs and _tags_disagree(tenant, name, list(jobs.values())):
        log.warning("alert_run_tags_ignored", run_id=run.run_id, tenant_tag=tenant, job_tag=name, jobs=sorted(jobs))
    return list(jobs.values())


def _tags_disagree(tenant: str, name: str, jobs: list[JobPlan]) -> bool:
    tenants = {job.tenant for job in jobs}
    expected_tenant = next(iter(tenants)) if len(tenants) == 1 else MULTIPLE
    expected_job = jobs[0].name if len(jobs) == 1 else MULTIPLE
    return (tenant, name) != (expected_tenant, expected_job)


def _plan_step_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """The keys of the steps the run executes (empty when its plan is not stored)."""
    if run.execution_plan_snapshot_id is None:
        return []
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return [step.key for step in plan.steps]


def _failed_keys(job: JobPlan, metadata: Mapping[str, Any], index: PlanIndex) -> list[dg.AssetKey]:
    names = [name.strip() for name in str(metadata.get("dativo/failed_objects") or "").split(",") if name.strip()]
    keys = []
    for name in names:
        try:
            keys.append(index.translator.asset_key(job.object(name)))
        except KeyError:
            continue  # a name the job no longer has: the run's selection says the rest
    return keys


def _selected_keys(run: dg.DagsterRun, job: JobPlan, index: PlanIndex) -> list[dg.AssetKey]:
    keys = index.asset_keys(job)
    if run.asset_selection:
        selected = [key for key in keys if key in run.asset_selection]
        return selected or keys
    return keys


def _last_materialized(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    event = instance.get_latest_materialization_event(key)
    return _iso(event.timestamp) if event is not None else None


# --------------------------------------------------------------------------- failed checks


def check_failure_alerts(
    instance: dg.DagsterInstance, run: dg.DagsterRun, index: PlanIndex, alerts: AlertsConfig
) -> list[Alert]:
    """The alerts of one finished run's failed ERROR checks on this location's assets.

    Each check counts once per run, by its last evaluation in the run (an op retried three times
    evaluates its checks four times).
    """
    if will_be_retried(run):
        return []
    last: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation] = {}
    records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.asset_check_evaluation_data
        if evaluation.asset_key in index.by_key:
            last[evaluation.asset_check_key] = evaluation
    found = []
    for check_key, evaluation in last.items():
        if evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        job = index.by_key[check_key.asset_key]
        metadata = {key: value.value for key, value in evaluation.metadata.items()}
        message = evaluation.description or "; ".join(f"{key}: {value}" for key, value in metadata.items())
        found.append(
            Alert(
                kind=CHECK_FAILURE,
                tenant=job.tenant,
                job=job.name,
                assets=(check_key.asset_key.to_user_string(),),
                check=check_key.name,
                error_code=_text(metadata.get("dativo/error_code")) or _code_in(evaluation.description, metadata),
                error_class=_text(metadata.get("dativo/error_class")),
                message=redacted_message(message or "check failed", job_secret_values(job)),
                run_id=run.run_id,
                run_url=run_url(run.run_id, alerts.base_url),
                last_success={check_key.to_user_string(): _last_passed(instance, check_key)},
            )
        )
    return found


def _code_in(description: str | None, metadata: Mapping[str, Any]) -> str | None:
    """The error code a check's description, or one of its text metadata values, starts with."""
    for text in (description, *metadata.values()):
        code = error_code_in(text) if isinstance(text, str) else None
        if code is not None:
            return code
    return None


def _last_passed(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> str | None:
    timestamp = last_passed_check_timestamp(instance, check_key)
    return _iso(timestamp) if timestamp is not None else None


# --------------------------------------------------------------------------- ticks


RunHandler = Callable[[dg.DagsterInstance, dg.DagsterRun, EventLogEntry], list[Alert]]


def run_failure_tick(context: dg.SensorEvaluationContext, index: PlanIndex, alerts: AlertsConfig) -> dg.SkipReason:
    """One tick of the run-failure sensor: alert on the runs that failed since its cursor."""

    def handle(instance: dg.DagsterInstance, run: dg.DagsterRun, entry: EventLogEntry) -> list[Alert]:
        message = (entry.dagster_event.message if entry.dagster_event else None) or entry.message or "run failed"
        return run_failure_alerts(instance, run, message, index, alerts)

    return run_end_tick(context, {"failure": dg.DagsterEventType.RUN_FAILURE}, handle, index, alerts)


def check_failure_tick(context: dg.SensorEvaluationContext, index: PlanIndex, alerts: AlertsConfig) -> dg.SkipReason:
    """One tick of the check-failure sensor: alert on failed ERROR checks of the runs that ended."""

    def handle(instance: dg.DagsterInstance, run: dg.DagsterRun, entry: EventLogEntry) -> list[Alert]:
        return check_failure_alerts(instance, run, index, alerts)

    return run_end_tick(context, RUN_END_EVENTS, handle, index, alerts)


def run_end_tick(
    context: dg.SensorEvaluationContext,
    kinds: Mapping[str, dg.DagsterEventType],
    handle: RunHandler,
    index: PlanIndex,
    alerts: AlertsConfig,
    *,
    budget_s: float | None = None,
) -> dg.SkipReason:
    """Handle the run ends (of the given kinds) recorded since the sensor's cursor, oldest first.

    The cursor (shown on the sensor's page in the UI, kept by Dagster across daemon restarts) is
    ``{"<kind>": <storage id>}``: the last run-end event of each kind handled, plus ``partial``
    while a run is half handled (the alerts and routes of that run already done). It moves past
    each run once its alerts are sent, so a run is handled once however many ticks follow. On its
    first tick a sensor starts after the latest run ends, so turning alerts on does not replay
    history.

    A tick must end before Dagster's sensor timeout (60 s), which would throw its cursor away and
    have every alert of the tick sent again: after ``budget_s`` (default :data:`TICK_BUDGET_S`)
    no further alert is started, and each delivery (timeouts, ``Retry-After`` waits, attempts) is
    cut to what is left (a route cut short is tried again next tick, its attempts counted). The
    cursor is also written to the instance's key-value store after each alert, so even a tick
    that is killed does not send again what it delivered. An error while handling a run is logged
    and the run retried at the next tick (at most :data:`RUN_ERROR_LIMIT` ticks; then it is
    skipped, logged); it never fails the tick.

    Every run of the instance is read, not only those Dagster attributes to this code location:
    ``dativo run`` and ``dagster asset materialize`` execute in-process and carry no code-location
    origin. The handlers keep what belongs to this location's tenant jobs (asset keys and step
    names start with the tenant id, and a tenant belongs to one location).
    """
    instance = context.instance
    progress = _Progress(context, kinds)
    cursor = progress.cursor
    if cursor is None:
        cursor = TickCursor({name: _latest_run_end(instance, event_type) for name, event_type in kinds.items()})
        progress.save(cursor)
        return dg.SkipReason(f"Starting after the latest run ends: {cursor.ends}")
    deadline = time.monotonic() + (TICK_BUDGET_S if budget_s is None else budget_s)
    tally = _Tally()
    for name, event_type in kinds.items():
        try:
            records = instance.fetch_run_status_changes(
                records_filter=dg.RunStatusChangeRecordsFilter(
                    event_type=event_type,  # type: ignore[arg-type]
                    after_storage_id=cursor.ends[name],
                ),
                limit=RUN_ENDS_PER_TICK,
                ascending=True,
            ).records
            ids = list({record.event_log_entry.run_id for record in records})
            runs = {run.run_id: run for run in instance.get_runs(filters=dg.RunsFilter(run_ids=ids))} if ids else {}
        except Exception as exc:  # the instance's storage: these run ends wait for the next tick
            _log_error("alert_run_ends_unreadable", exc, context, kind=name)
            tally.errors += 1
            continue
        for record in records:
            if time.monotonic() > deadline:
                tally.stopped = True
                break
            entry = record.event_log_entry
            run = runs.get(entry.run_id)  # None: the run was deleted since
            if run is not None and not retry_decided(run, record.timestamp, instance.run_retries_enabled):
                break  # this run and the later ones wait for the next tick
            partial = cursor.partial_for(name, record.storage_id)
            try:
                finished = run is None or _handle_run(
                    instance, run, entry, handle, index, alerts, partial, deadline, tally, lambda: progress.save(cursor)
                )
            except Exception as exc:
                partial.errors += 1
                tally.errors += 1
                _log_error("alert_run_failed", exc, context, kind=name, run_id=entry.run_id, tick=partial.errors)
                if partial.errors < RUN_ERROR_LIMIT:
                    progress.save(cursor)
                    break  # this run (and the later ones) again at the next tick
                log.error(
                    "alert_run_skipped",
                    code=_code_of(exc),
                    sensor=context.sensor_name,
                    run_id=entry.run_id,
                    reason=f"handling it failed at {partial.errors} ticks",
                )
                finished = True
            if not finished:
                tally.stopped = True
                break
            tally.handled += 1
            cursor.finish(name, record.storage_id)
            # Into the instance's store only after a run that sent something (below) and at the
            # end: a killed tick then handles the runs without alerts again, which sends nothing.
            progress.save(cursor, durable=False)
        if tally.stopped:
            break
    progress.save(cursor)
    return dg.SkipReason(tally.summary())


RUN_ERROR_LIMIT = 3
"""Ticks at which handling one run may fail before it is skipped (logged at error level): a run
whose alerts cannot be built must not hold back every later run's alerts forever."""

PROGRESS_KEY_PREFIX = "dativo/alerts"


@dataclass
class PartialRun:
    """A run end half handled: which alert/route pairs are done, attempts made on the others,
    and at how many ticks handling it failed."""

    storage_id: int
    done: list[str] = field(default_factory=list)
    tries: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"id": self.storage_id, "done": self.done, "tries": self.tries, "errors": self.errors}


@dataclass
class TickCursor:
    """The alert sensor's cursor: the last run end handled per kind, and per kind the run end
    half handled (the one after it)."""

    ends: dict[str, int]
    partial: dict[str, PartialRun] = field(default_factory=dict)

    def text(self) -> str:
        value: dict[str, Any] = dict(self.ends)
        if self.partial:
            value["partial"] = {kind: run.as_json() for kind, run in sorted(self.partial.items())}
        return json.dumps(value, sort_keys=True)

    def partial_for(self, kind: str, storage_id: int) -> PartialRun:
        """The progress of this run end: the one recorded, or a fresh one."""
        found = self.partial.get(kind)
        if found is None or found.storage_id != storage_id:
            found = self.partial[kind] = PartialRun(storage_id)
        return found

    def finish(self, kind: str, storage_id: int) -> None:
        self.ends[kind] = storage_id
        self.partial.pop(kind, None)


@dataclass
class _Tally:
    handled: int = 0
    sent: int = 0
    errors: int = 0
    stopped: bool = False

    def summary(self) -> str:
        text = f"{self.handled} run end(s) read, {self.sent} alert(s) sent"
        if self.errors:
            text += f", {self.errors} error(s) (logged)"
        return text + ("; the rest next tick" if self.stopped else "")


class _Progress:
    """Where a tick's cursor is kept: the sensor's cursor (Dagster stores it when the tick ends)
    and, after every alert, the instance's key-value store, so a tick killed before its end (by
    Dagster's timeout, a daemon restart) leaves what it delivered behind."""

    def __init__(self, context: dg.SensorEvaluationContext, kinds: Mapping[str, object]) -> None:
        self.context = context
        self.kinds = kinds
        origin = context.code_location_origin
        location = origin.location_name if origin is not None else (context.repository_name or "")
        self.key = f"{PROGRESS_KEY_PREFIX}/{location}/{context.sensor_name}"
        self.started_from = context.cursor
        self.saved: str | None = None
        self.cursor = parse_tick_cursor(self._recovered(context.cursor), kinds)

    def _recovered(self, text: str | None) -> str | None:
        """The sensor's cursor, or a later one a killed tick left in the store.

        The store's value names the sensor cursor its tick started from: when the sensor's cursor
        is still that one, that tick's own cursor was lost. A cursor an operator set in the UI
        differs, and wins.
        """
        try:
            stored = json.loads(read_kv(self.context.instance, self.key) or "null")
        except Exception as exc:  # the store is a safety net: without it the sensor cursor still holds
            _log_error("alert_progress_unreadable", exc, self.context)
            return text
        if isinstance(stored, dict) and stored.get("from") == text and isinstance(stored.get("cursor"), str):
            if stored["cursor"] != text:
                log.warning("alert_progress_recovered", sensor=self.context.sensor_name, cursor=stored["cursor"])
            return str(stored["cursor"])
        return text

    def save(self, cursor: TickCursor, *, durable: bool = True) -> None:
        """Keep ``cursor``: as the sensor's cursor, and (``durable``) in the instance's store (a
        store that fails is logged: the sensor's cursor still holds it)."""
        text = cursor.text()
        self.context.update_cursor(text)
        if not durable or text == self.saved:
            return
        self.saved = text
        try:
            write_kv(self.context.instance, self.key, json.dumps({"from": self.started_from, "cursor": text}))
        except Exception as exc:
            _log_error("alert_progress_unsaved", exc, self.context)


def _handle_run(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    entry: EventLogEntry,
    handle: RunHandler,
    index: PlanIndex,
    alerts: AlertsConfig,
    partial: PartialRun,
    deadline: float,
    tally: _Tally,
    save: Callable[[], None],
) -> bool:
    """Send the alerts of one run not sent yet; True when all are done (False: budget spent)."""
    for alert in handle(instance, run, entry):
        names = [name for name in route_names_of(alert, index) if f"{alert.key}>{name}" not in partial.done]
        if not names:
            continue
        if time.monotonic() > deadline:
            return False
        deliveries = send(alert, index, alerts, names=names, deadline=deadline, attempts_made=partial.tries)
        for delivery in deliveries:
            pair = f"{alert.key}>{delivery.route}"
            if delivery.final:
                partial.done.append(pair)
                partial.tries.pop(pair, None)
            else:
                partial.tries[pair] = delivery.attempts
        if all(delivery.final for delivery in deliveries):
            tally.sent += 1
        save()
        if not all(delivery.final for delivery in deliveries):
            return False
    return True


def parse_cursor(text: str | None, kinds: Mapping[str, object] = RUN_END_EVENTS) -> dict[str, int] | None:
    """A sensor's cursor's run ends, or None when unset or not one of ours (the sensor then starts afresh)."""
    cursor = parse_tick_cursor(text, kinds)
    return cursor.ends if cursor is not None else None


def parse_tick_cursor(text: str | None, kinds: Mapping[str, object] = RUN_END_EVENTS) -> TickCursor | None:
    """A sensor's cursor, or None when unset or not one of ours (the sensor then starts afresh)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    raw_partial = value.pop("partial", None)
    if set(value) != set(kinds):
        return None
    if not all(_is_int(v) for v in value.values()):
        return None
    ends = {str(k): int(v) for k, v in value.items()}
    partial: dict[str, PartialRun] = {}
    if isinstance(raw_partial, dict):
        for kind, raw in raw_partial.items():
            found = _parse_partial(raw, ends.get(kind)) if isinstance(kind, str) else None
            if found is not None:
                partial[kind] = found
    return TickCursor(ends, partial)


def _parse_partial(value: Any, end: int | None) -> PartialRun | None:
    """A half-handled run end of a cursor (None when malformed, or when its kind's end is past it)."""
    if end is None or not isinstance(value, dict) or not _is_int(value.get("id")) or value["id"] <= end:
        return None
    done, tries, errors = value.get("done", []), value.get("tries", {}), value.get("errors", 0)
    if not isinstance(done, list) or not all(isinstance(d, str) for d in done):
        return None
    if not isinstance(tries, dict) or not all(isinstance(k, str) and _is_int(v) for k, v in tries.items()):
        return None
    return PartialRun(value["id"], list(done), dict(tries), errors if _is_int(errors) else 0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _code_of(exc: BaseException) -> str:
    return exc.code if isinstance(exc, DativoError) else UnexpectedError.code


_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^\s/@]+@", re.I)
"""The user (and password) of a URL in an error's text, such as a storage's connection string."""


def _log_error(event: str, exc: BaseException, context: dg.SensorEvaluationContext, **fields: Any) -> None:
    """Log a failure of the tick's own work at error level: coded, its text redacted (an
    instance's storage error can name its connection string)."""
    text = _URL_USERINFO.sub(r"\g<scheme>***@", redact_text(str(exc)))
    log.error(
        event,
        code=_code_of(exc),
        sensor=context.sensor_name,
        error=f"{type(exc).__name__}: {text}"[:500],
        **fields,
    )


def _latest_run_end(instance: dg.DagsterInstance, event_type: dg.DagsterEventType) -> int:
    records = instance.fetch_run_status_changes(records_filter=event_type, limit=1, ascending=False).records
    return records[0].storage_id if records else -1


# --------------------------------------------------------------------------- shared


def route_names_of(alert: Alert, index: PlanIndex) -> list[str]:
    """The routes ``alert`` goes to: those of its tenant job."""
    return index.route_names(index.by_label[f"{alert.tenant}/{alert.job}"])


def send(
    alert: Alert,
    index: PlanIndex,
    alerts: AlertsConfig,
    *,
    names: Sequence[str] | None = None,
    deadline: float | None = None,
    attempts_made: Mapping[str, int] | None = None,
) -> list[Delivery]:
    """Send ``alert`` to its job's routes, or to ``names`` of them (a failed route is logged by
    :func:`deliver`); every delivery ends by ``deadline`` (``time.monotonic()``)."""
    if names is None:
        names = route_names_of(alert, index)
    if not names:
        log.info("alert_not_routed", tenant=alert.tenant, job=alert.job, alert=alert.kind, run_id=alert.run_id)
        return []
    made = {name: attempts_made.get(f"{alert.key}>{name}", 0) for name in names} if attempts_made else None
    return deliver(alert, alerts.routes, names, deadline=deadline, attempts_made=made)


def job_secret_values(job: JobPlan, environ: Mapping[str, str] | None = None) -> set[str]:
    """The job's credential values (and secret parts of its connection) as resolvable here.

    Failure messages are redacted in the run already; the sensor scrubs them once more with what
    it can resolve, so a secret that slipped into a message never leaves by an alert.
    """
    resolver = SecretResolver(environ)
    values: set[str] = set()
    for sensitive, settings in ((True, job.credentials), (False, job.connection)):
        for key, value in settings.items():
            if store_references(value):
                # Fetched by the run (and scrubbed there); the sensor does not read tenants' secret
                # files or stores, which its process may have no access to.
                continue
            try:
                resolved = resolver.resolve(value, where=key)
            except ConfigError:
                continue  # not set in this process: nothing of it to scrub here
            values.update(secret_parts(resolved, sensitive=sensitive or is_sensitive_key(key)))
    return values


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
