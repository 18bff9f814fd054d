"""Upkeep of a tenant job's tables: what ``dativo maintain`` and the ``<tenant>__maintain`` job run.

Each object's table and its quarantine table (when there is one) get the actions asked for, in
order: compact, expire, orphans (orphan removal last, so the files the first two made
unreferenced are the ones it finds, once they are past the safety window). Only tables whose
recorded owner is the object are touched; the source's credentials are never needed, only the
target's catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError, unexpected
from dativo_dagster.iceberg.maintenance import (
    DEFAULT_ORPHAN_AGE_HOURS,
    DEFAULT_RETAIN_DAYS,
    CompactionResult,
    ExpiryResult,
    OrphanResult,
    UnreadableDeletes,
    check_orphan_age,
    check_retain_days,
    compact_table,
    expire_snapshots,
    remove_orphans,
)
from dativo_dagster.iceberg.tables import table_owner

log = structlog.get_logger("dativo.maintain")


class Action(str, enum.Enum):
    """One upkeep action."""

    COMPACT = "compact"
    EXPIRE = "expire"
    ORPHANS = "orphans"


@dataclass(frozen=True)
class UpkeepSettings:
    """What to do and with which safety margins."""

    actions: tuple[Action, ...] = (Action.COMPACT, Action.EXPIRE, Action.ORPHANS)
    retain_days: float = DEFAULT_RETAIN_DAYS
    orphan_age_hours: float = DEFAULT_ORPHAN_AGE_HOURS
    dry_run: bool = False

    def checked(self) -> UpkeepSettings:
        """These settings, or CFG001 when a margin is unsafe."""
        check_retain_days(self.retain_days)
        check_orphan_age(self.orphan_age_hours)
        return self


@dataclass
class TableUpkeep:
    """What upkeep did to one table."""

    object_label: str
    table: str
    compaction: CompactionResult | None = None
    expiry: ExpiryResult | None = None
    orphans: OrphanResult | None = None
    rows: int | None = None
    error: str | None = None
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (``--json``, the op's metadata)."""
        data: dict[str, Any] = {"object": self.object_label, "table": self.table, "rows": self.rows}
        for name in ("compaction", "expiry", "orphans"):
            value = getattr(self, name)
            data[name] = dataclasses.asdict(value) if value is not None else None
        if data["expiry"] is not None:
            data["expiry"].pop("expired_ids", None)
        data["error"] = self.error
        data["skipped"] = self.skipped
        return data

    def lines(self) -> list[str]:
        """Human lines, one per action."""
        if self.skipped:
            return [f"{self.table}: {self.skipped}"]
        would = (
            "would " if any(r is not None and r.dry_run for r in (self.compaction, self.expiry, self.orphans)) else ""
        )
        out = []
        c = self.compaction
        if c is not None:
            out.append(
                f"{self.table}: compact: {would}rewrite {c.files_rewritten} data file(s) "
                f"({c.rows_rewritten:,} rows) into {c.files_written} and fold {c.delete_files_folded} delete file(s); "
                f"data files {c.data_files_before} -> {c.data_files_after}, delete files {c.delete_files_before} -> "
                f"{c.delete_files_after}, bytes {c.bytes_before:,} -> {c.bytes_after:,}"
                + (f", snapshot {c.snapshot_id}" if c.snapshot_id is not None else "")
            )
        e = self.expiry
        if e is not None:
            out.append(
                f"{self.table}: expire: {would}expire {e.snapshots_expired} snapshot(s); "
                f"{e.snapshots_before} -> {e.snapshots_after}"
            )
        o = self.orphans
        if o is not None and o.skipped:
            out.append(f"{self.table}: orphans: {o.skipped}")
        elif o is not None:
            if o.unknown_age:
                out.append(
                    f"{self.table}: orphans: {o.unknown_age} unreferenced file(s) kept because the storage gave no "
                    "modification time"
                )
            out.append(
                f"{self.table}: orphans: {would}remove {o.orphans_removed} file(s), {o.bytes_removed:,} bytes "
                f"({o.files_listed} listed, {o.young_unreferenced} unreferenced but inside the safety window)"
            )
        if self.rows is not None:
            out.append(f"{self.table}: {self.rows:,} live row(s)")
        return out


def job_tables(job: JobPlan, objects: Sequence[ObjectPlan] | None = None) -> Iterator[tuple[ObjectPlan, str, str]]:
    """``(object, namespace, table)`` for each object's table and quarantine table."""
    for obj in objects if objects is not None else job.objects:
        namespace, name = obj.table_identifier
        yield obj, namespace, name
        yield obj, obj.namespace, obj.quarantine_table


def maintain_job(
    job: JobPlan,
    writer: Any,
    settings: UpkeepSettings,
    objects: Sequence[ObjectPlan] | None = None,
    *,
    now: dt.datetime | None = None,
) -> list[TableUpkeep]:
    """Run the upkeep actions on every table of ``job`` (or of ``objects``); a table that fails is
    reported with its coded error and the others still run.

    Args:
        job: The tenant job.
        writer: The target's :class:`~dativo_dagster.iceberg.writer.IcebergWriter` (its catalog and
            target file size).
        settings: Actions and safety margins (checked: CFG001 when unsafe).
        objects: Only these objects of the job.
        now: The instant retention and the safety window count from (tests).
    """
    settings.checked()
    reports = []
    for obj, namespace, name in job_tables(job, objects):
        label = f"{namespace}.{name}"
        report = TableUpkeep(object_label=obj.label, table=label)
        is_quarantine = name == obj.quarantine_table
        try:
            table = writer.load_table(namespace, name)
            if table is None:
                if is_quarantine:
                    continue  # no row of the object was ever rejected
                report.skipped = "no table yet (the object never loaded): nothing to maintain"
                reports.append(report)
                continue
            owner = table_owner(table)
            if owner != obj.owner:
                raise ConfigError(
                    f"{label} is owned by {owner or 'nobody dativo knows'}, not {obj.owner}: upkeep touches only "
                    "tables the job owns",
                    hint="run maintenance from the job that owns the table",
                )
            _maintain_table(table, writer.target_file_rows, settings, report, now)
        except DativoError as exc:
            report.error = str(exc)
            log.warning("maintenance_failed", table=label, error=report.error)
        except Exception as exc:
            # Not a coded failure (a bug, an engine's table dativo cannot read): reported as BUG
            # with its traceback, and the remaining tables still get their upkeep.
            error = unexpected(exc)
            report.error = str(error)
            log.error("maintenance_failed", table=label, error=report.error, traceback=error.context["traceback"])
        reports.append(report)
    return reports


def _maintain_table(
    table: Any, target_rows: int, settings: UpkeepSettings, report: TableUpkeep, now: dt.datetime | None
) -> None:
    if Action.COMPACT in settings.actions:
        try:
            report.compaction = compact_table(table, target_rows=target_rows, dry_run=settings.dry_run)
        except UnreadableDeletes as exc:
            # Expiry and orphan removal do not read rows: they still run; the table is reported failed.
            report.error = str(exc)
            log.warning("maintenance_failed", table=report.table, error=report.error)
        table = table.refresh()
    if Action.EXPIRE in settings.actions:
        report.expiry = expire_snapshots(table, retain_days=settings.retain_days, now=now, dry_run=settings.dry_run)
        table = table.refresh()
    if Action.ORPHANS in settings.actions:
        report.orphans = remove_orphans(
            table, older_than_hours=settings.orphan_age_hours, now=now, dry_run=settings.dry_run
        )
    report.rows = _row_count(table.refresh())


def _row_count(table: Any) -> int | None:
    """Live rows from the snapshot summary (records minus position deletes; dativo writes one
    delete file per data file, each position once)."""
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0
    props = snapshot.summary.additional_properties
    try:
        return int(props.get("total-records", "0")) - int(props.get("total-position-deletes", "0"))
    except ValueError:
        return None


def job_failure(job: JobPlan, exc: Exception) -> TableUpkeep:
    """The report of a job whose upkeep could not start (its catalog, a secret of its target): a
    coded error as it is, anything else as BUG."""
    error = exc if isinstance(exc, DativoError) else unexpected(exc)
    log.error("maintenance_failed", job=job.label, error=str(error))
    return TableUpkeep(object_label=job.label, table=f"{job.label} (every table)", error=str(error))
