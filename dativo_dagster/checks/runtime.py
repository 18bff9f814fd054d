"""Evaluating an object's selected checks in a run: after its ingestion, or alone against the table.

* **After ingestion** (the object was selected): the contract check judges what the run read; the
  others judge the table as the run left it (and the run's quarantine rows).
* **Alone** (the check was selected without its asset: the UI's "Execute" on a check): every
  check judges the table as it stands, and the contract, volume and quarantine checks judge the
  object's last recorded run (its counts in Dagster, its rows in the quarantine table).
* **A failed object** reports only what its failure proves: the rejected-row threshold (QUAL001)
  fails the contract check. Any other failure (EXT001, AUTH001, ...) means nothing was read and
  judged, so no result is reported; Dagster shows the checks as not executed, never as a contract
  violation.

A check that cannot be evaluated (the catalog is down) is an error of the step, never a failed check.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Generic, TypeVar

import dagster as dg

from dativo_dagster.checks import evaluate as ev
from dativo_dagster.checks import facts
from dativo_dagster.checks.specs import (
    CHECK_CONTRACT,
    CHECK_FRESHNESS,
    CHECK_NOT_NULL,
    CHECK_PRIMARY_KEY,
    CHECK_QUARANTINE,
    CHECK_SCHEMA,
    CHECK_VOLUME,
    applicable_checks,
    required_columns,
)
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import DativoError, QualityError, RetryExhaustedError, UnexpectedError, unexpected

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from dativo_dagster.engine import DagsterState, ObjectResult
    from dativo_dagster.iceberg.writer import IcebergWriter
    from dativo_dagster.resets import ResetRequest
    from dativo_dagster.sources.base import Source, TimeWindow
    from dativo_dagster.translator import DativoTranslator

T = TypeVar("T")

META_ROWS_READ = "dativo/rows_read"
META_ROWS_REJECTED = "dativo/rows_rejected"
META_PARTITION_WINDOW = "dativo/partition_window"


@dataclass(frozen=True)
class RecordedRun:
    """What Dagster recorded of one earlier run of an object."""

    run_id: str
    rows_read: int
    rows_rejected: int
    partition: str | None = None  # the window of a partition run


@dataclass(frozen=True)
class History:
    """The object's earlier incremental runs, newest first (the current run and partition runs excluded).

    ``latest`` is the newest earlier run of either kind (what checks executed alone judge);
    ``this_run`` what an earlier attempt of the current run recorded (a retried step): the attempt
    that committed the rows, when a later one finds nothing new.
    """

    runs: tuple[RecordedRun, ...] = ()
    this_run: RecordedRun | None = None
    latest: RecordedRun | None = None

    def rows(self, length: int, skip: int = 0) -> list[int]:
        """Rows read by up to ``length`` runs, after skipping the newest ``skip``."""
        return [run.rows_read for run in self.runs[skip : skip + length]]


HISTORY_PAGE = 100
HISTORY_SCAN_LIMIT = 2000
"""Materialization records read at most to find an object's history: a backfill over a long range
records one per partition, and those are skipped."""


def is_partition_record(record: dg.EventLogRecord) -> bool:
    """True for a materialization of a partition run (a key or a range; one record per partition).

    A partition run reads one window (a day, a year of backfill), so its row count says nothing about
    what an incremental run should read.
    """
    materialization = record.asset_materialization
    return record.partition_key is not None or (
        materialization is not None and META_PARTITION_WINDOW in materialization.metadata
    )


def read_history(instance: dg.DagsterInstance, key: dg.AssetKey, length: int, current_run_id: str) -> History:
    """The newest ``length + 1`` incremental runs of ``key`` other than the current one.

    Partition runs are left out (see :func:`is_partition_record`). A run recorded several times (a
    retried step materializes the object at each attempt) counts once, by its attempt that read the
    most: the one that loaded the rows, not a later one that found nothing new.

    Read in the step's own thread: the Dagster instance is not shared with the worker threads.
    """
    by_run: dict[str, RecordedRun] = {}
    this_run: RecordedRun | None = None
    latest: RecordedRun | None = None
    cursor: str | None = None
    scanned = 0
    while scanned < HISTORY_SCAN_LIMIT:
        page = instance.fetch_materializations(key, limit=HISTORY_PAGE, cursor=cursor)
        for record in page.records:
            scanned += 1
            recorded = _recorded_run(record)
            if recorded is None:
                continue
            if record.run_id == current_run_id:
                if recorded.partition is None:
                    this_run = _most_read(this_run, recorded)
                continue
            if latest is None or latest.run_id == record.run_id:
                latest = _most_read(latest, recorded)
            if recorded.partition is not None:
                continue
            if record.run_id not in by_run and len(by_run) > length:
                return History(tuple(by_run.values()), this_run, latest)
            by_run[record.run_id] = _most_read(by_run.get(record.run_id), recorded)
        if not page.has_more:
            break
        cursor = page.cursor
    return History(tuple(by_run.values())[: length + 1], this_run, latest)


def _recorded_run(record: dg.EventLogRecord) -> RecordedRun | None:
    """One attempt's counts (and window, for a partition run); None for a record without them."""
    materialization = record.asset_materialization
    if materialization is None:
        return None
    metadata = materialization.metadata
    read = metadata.get(META_ROWS_READ)
    if read is None:
        return None
    rejected = metadata.get(META_ROWS_REJECTED)
    partition = None
    if is_partition_record(record):
        window = metadata.get(META_PARTITION_WINDOW)
        partition = str(window.value) if window is not None else str(record.partition_key)
    return RecordedRun(
        record.run_id,
        int(read.value),  # type: ignore[arg-type]
        int(rejected.value) if rejected is not None else 0,  # type: ignore[arg-type]
        partition,
    )


def _most_read(known: RecordedRun | None, found: RecordedRun) -> RecordedRun:
    return found if known is None or found.rows_read > known.rows_read else known


@dataclass
class CheckedObject:
    """The results of one object's checks, or why they could not be evaluated."""

    results: list[dg.AssetCheckResult] = field(default_factory=list)
    error: DativoError | None = None


def checks_after_ingest(
    result: ObjectResult,
    key: dg.AssetKey,
    names: Sequence[str],
    writer: IcebergWriter,
    run_id: str,
    history: History,
    window: TimeWindow | None = None,
) -> CheckedObject:
    """The selected checks of an object this run ingested (or failed to).

    ``window``: the run is a partition run; its volume is not judged against incremental runs.
    A retried step judges the run's counts by its attempt that read the most (an earlier attempt
    committed, this one found nothing new): the run's volume and rejections are those rows.
    """
    if not names:
        return CheckedObject()
    obj = result.obj
    error = result.error
    if error is not None:
        # Only the rejected-row threshold is a verdict on the rows; every other failure means
        # the rows were never judged.
        if CHECK_CONTRACT in names and isinstance(error, QualityError) and "rows_read" in error.context:
            read, rejected = int(error.context["rows_read"]), int(error.context["rows_rejected"])
            return _results(obj, key, [CHECK_CONTRACT], writer, run_id, read, rejected, [])
        return CheckedObject()
    write = result.write
    assert write is not None
    earlier = history.rows(obj.checks.volume.history)
    read, rejected = write.rows_read, write.rows_rejected
    attempt = history.this_run
    if window is None and attempt is not None and attempt.rows_read > read:
        read, rejected = attempt.rows_read, attempt.rows_rejected
    partition = window.label if window is not None else None
    return _results(obj, key, names, writer, run_id, read, rejected, earlier, partition)


def checks_standing(
    obj: ObjectPlan, key: dg.AssetKey, names: Sequence[str], writer: IcebergWriter, history: History
) -> CheckedObject:
    """The selected checks of an object, against its table as it stands and its last recorded run.

    When that run was a partition run, its volume is not judged (as in the run itself).
    """
    last = history.latest
    if last is None:
        return _results(obj, key, names, writer, None, 0, 0, [])
    earlier = history.rows(obj.checks.volume.history, skip=0 if last.partition else 1)
    return _results(obj, key, names, writer, last.run_id, last.rows_read, last.rows_rejected, earlier, last.partition)


@dataclass
class _Evaluated(Generic[T]):
    value: T | None = None
    error: DativoError | None = None


def _guarded(evaluate: Callable[[], T]) -> _Evaluated[T]:
    """Run ``evaluate``; a failure is kept as a coded error (an unclassified one is a bug, with its traceback)."""
    try:
        return _Evaluated(value=evaluate())
    except DativoError as exc:
        return _Evaluated(error=exc)
    except Exception as exc:
        return _Evaluated(error=unexpected(exc))


def _contract(obj: ObjectPlan, writer: IcebergWriter, run_id: str | None, read: int, rejected: int) -> ev.Outcome:
    reasons: Counter[str] = Counter()
    if rejected and run_id is not None:
        reasons = facts.rejection_reasons(writer.load_table(obj.namespace, obj.quarantine_table), run_id)
    return ev.contract_outcome(read, rejected, obj.max_rejected_rate, reasons, obj.checks.contract.severity)


def _results(
    obj: ObjectPlan,
    key: dg.AssetKey,
    names: Sequence[str],
    writer: IcebergWriter,
    run_id: str | None,
    rows_read: int,
    rows_rejected: int,
    history: list[int],
    partition: str | None = None,
) -> CheckedObject:
    """Evaluate ``names`` for one run's counts (``run_id`` None: the object never ran; ``partition``:
    the window of a partition run).

    Each check stands alone: one that cannot be evaluated leaves the others' results.
    """
    checked = CheckedObject()
    table: Table | None = None
    if any(name not in (CHECK_CONTRACT, CHECK_VOLUME, CHECK_QUARANTINE) for name in names):
        loaded = _guarded(lambda: writer.load_table(*obj.table_identifier))
        if loaded.error is not None:
            return CheckedObject(error=loaded.error)
        table = loaded.value
    for name in names:
        evaluated = _guarded(
            partial(_outcome, name, obj, table, writer, run_id, rows_read, rows_rejected, history, partition)
        )
        if evaluated.error is not None:
            checked.error = checked.error or evaluated.error
        elif evaluated.value is not None:
            checked.results.append(evaluated.value.result(key, name))
    return checked


def _outcome(
    name: str,
    obj: ObjectPlan,
    table: Table | None,
    writer: IcebergWriter,
    run_id: str | None,
    rows_read: int,
    rows_rejected: int,
    history: list[int],
    partition: str | None = None,
) -> ev.Outcome:
    config = obj.checks
    if name == CHECK_CONTRACT:
        outcome = _contract(obj, writer, run_id, rows_read, rows_rejected)
        if run_id is None:
            return ev.Outcome(True, outcome.severity, outcome.metadata, "No run has loaded this object yet")
        return outcome
    if name == CHECK_NOT_NULL:
        return _not_null(obj, table)
    if name == CHECK_PRIMARY_KEY:
        return _primary_key(obj, table)
    if name == CHECK_SCHEMA:
        assert obj.contract is not None  # the check exists only with a contract
        columns = facts.table_columns(table) if table is not None else []
        differences = ev.schema_differences(facts.contract_columns(obj.contract), columns)
        label = f"{obj.contract.name} v{obj.contract.version}"
        return ev.schema_outcome(label, differences, config.schema_drift.severity)
    if name == CHECK_VOLUME:
        volume = config.volume
        if partition is not None:
            return ev.volume_not_judged_for_partition(partition, volume.max_drop_fraction, volume.severity)
        return ev.volume_outcome(rows_read, history, volume.max_drop_fraction, volume.severity)
    if name == CHECK_FRESHNESS:
        freshness = config.freshness
        assert freshness.max_age_minutes is not None  # the check exists only with an SLA
        last = facts.last_commit_ms(table) if table is not None else None
        return ev.freshness_outcome(last, int(time.time() * 1000), freshness.max_age_minutes, freshness.severity)
    if name == CHECK_QUARANTINE:
        return _quarantine(obj, writer, run_id)
    raise ValueError(f"unknown check {name!r}")  # pragma: no cover - names come from applicable_checks


def _not_null(obj: ObjectPlan, table: Table | None) -> ev.Outcome:
    severity = obj.checks.not_null.severity
    required = required_columns(obj)
    if table is None:
        return ev.Outcome(True, severity, {"columns_checked": ", ".join(required)}, "The table has no rows yet")
    present = set(table.schema().column_names)
    columns = [c for c in required if c in present]
    missing = [c for c in required if c not in present]
    return ev.not_null_outcome(facts.null_counts(table, columns), missing, severity)


def _primary_key(obj: ObjectPlan, table: Table | None) -> ev.Outcome:
    severity = obj.checks.primary_key.severity
    if table is None:
        return ev.primary_key_outcome(obj.primary_key, 0, 0, 0, [], severity)
    found = facts.duplicate_keys(table, obj.primary_key)
    return ev.primary_key_outcome(obj.primary_key, found.rows, found.keys, found.extra_rows, found.examples, severity)


def _quarantine(obj: ObjectPlan, writer: IcebergWriter, run_id: str | None) -> ev.Outcome:
    settings = obj.checks.quarantine
    label = f"{obj.namespace}.{obj.quarantine_table}"
    table = writer.load_table(obj.namespace, obj.quarantine_table)
    added = facts.quarantine_growth(table, run_id) if run_id is not None else 0
    reasons = facts.rejection_reasons(table, run_id) if added and run_id is not None else Counter()
    return ev.quarantine_outcome(added, settings.max_growth_rows, reasons, settings.severity, label)


def check_failure(errors: Sequence[tuple[str, DativoError]], retry_number: int, max_retries: int) -> dg.Failure:
    """The step's failure when checks could not be evaluated (the ingestion itself succeeded).

    Like an object's failure: retried when every error is transient (a catalog blip during a
    scan) and the job's retries (``max_retries``) are not spent; a transient error on the last
    attempt becomes RETRY001, permanent for the run. A bug is never retried.
    ``dativo/error_class`` (transient | permanent | bug) tells the alerts which it was.
    """
    from dativo_dagster.config.secrets import redact_text

    lines = [redact_text(f"{label}: {error.code}: {error}") for label, error in errors]
    bugs = [error for _, error in errors if isinstance(error, UnexpectedError)]
    transient = all(error.transient for _, error in errors)
    retries_left = transient and retry_number < max_retries
    code = UnexpectedError.code if bugs else errors[0][1].code
    description = f"{len(errors)} object(s) could not be checked — {lines[0]}"
    if transient and not retries_left:
        code = RetryExhaustedError.code
        description = (
            f"{RetryExhaustedError.code}: retries exhausted after {retry_number + 1} attempt(s); "
            f"{len(errors)} object(s) could not be checked — {lines[0]}"
        )
    metadata: dict[str, object] = {
        "dativo/error_code": code,
        "dativo/error_class": "transient" if retries_left else ("bug" if bugs else "permanent"),
        "dativo/errors": "\n".join(lines),
        "dativo/attempt": retry_number + 1,
    }
    if code == RetryExhaustedError.code:
        metadata["dativo/cause"] = errors[0][1].code
    if bugs:
        metadata["dativo/traceback"] = dg.MetadataValue.text(
            "\n\n".join(redact_text(bug.context.get("traceback", "")) for bug in bugs)
        )
    return dg.Failure(
        description=description,
        metadata=metadata,  # type: ignore[arg-type]
        allow_retries=retries_left,
    )


def selected_check_names(
    objects: Sequence[ObjectPlan], translator: DativoTranslator, selected: Collection[dg.AssetCheckKey]
) -> dict[str, list[str]]:
    """Per object name, its checks the run selected (in the order the object's specs list them)."""
    by_asset: dict[dg.AssetKey, set[str]] = {}
    for check in selected:
        by_asset.setdefault(check.asset_key, set()).add(check.name)
    names = {}
    for obj in objects:
        wanted = by_asset.get(translator.asset_key(obj), set())
        names[obj.name] = [name for name in applicable_checks(obj) if name in wanted]
    return names


def ingest_and_check(
    obj: ObjectPlan,
    key: dg.AssetKey,
    names: Sequence[str],
    history: History,
    *,
    source: Source,
    writer: IcebergWriter,
    run_id: str,
    dagster: DagsterState,
    limit: int | None,
    reset: ResetRequest | None = None,
    reset_by: str = "dagster",
    window: TimeWindow | None = None,
    root_run_id: str | None = None,
) -> tuple[ObjectResult, CheckedObject]:
    """Ingest one object, then evaluate its selected checks (in the worker thread: scans run in parallel)."""
    from dativo_dagster.engine import ingest_object

    result = ingest_object(
        obj,
        source=source,
        writer=writer,
        run_id=run_id,
        dagster=dagster,
        limit=limit,
        reset=reset,
        reset_by=reset_by,
        window=window,
        root_run_id=root_run_id,
    )
    checked = checks_after_ingest(result, key, names, writer, run_id, history, window)
    return result, with_quarantine_preview(checked, result)


def with_quarantine_preview(checked: CheckedObject, result: ObjectResult) -> CheckedObject:
    """The contract check of a run that quarantined rows shows them (``quarantine_preview``): the
    rows behind its verdict, next to the reasons it counts."""
    from dativo_dagster.quarantine_view import run_quarantine_preview

    preview = run_quarantine_preview(result)
    if preview is None:
        return checked
    results = [
        dg.AssetCheckResult(
            asset_key=found.asset_key,
            check_name=found.check_name,
            passed=found.passed,
            severity=found.severity,
            metadata={**found.metadata, "quarantine_preview": preview},
            description=found.description,
        )
        if found.check_name == CHECK_CONTRACT
        else found
        for found in checked.results
    ]
    return CheckedObject(results=results, error=checked.error)
