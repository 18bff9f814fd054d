"""Scratch runs: reproduce an object's load beside the project, never touching production.

``dativo run TENANT/JOB --object O --scratch`` runs the shared engine directly (no Dagster: nothing
of it is recorded as a materialization of the production asset) into a scratch catalog and
warehouse of its own, ``<state dir>/scratch/<tenant>__<job>/`` (SQLite catalog ``catalog.db`` and
``warehouse/``), whatever the job's real target is. The scratch table has the production table's
namespace and name in that catalog.

Where it starts: by default from the cursor the production run would start from (the production
table's committed cursor, a pending reset's cursor, else the configured initial value), read and
never written, so the window that failed is read again. ``--from-start`` reads from the beginning
(the configured initial value, if any), which is what ``dativo compare`` needs to compare against
rows production already holds. Each scratch run replaces the object's scratch table (and its
scratch quarantine): the scratch table holds exactly what the last scratch run read.

Each run writes ``result.json`` in the scratch directory (one entry per object, the newest run's).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from dativo_dagster.config.models import CatalogConfig, TargetRecipe
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.config.secrets import SecretResolver, redact_text
from dativo_dagster.engine import DagsterState, ObjectResult, ingest_object, start_cursor
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.instance import state_dir
from dativo_dagster.state import ReconciledCursor

RESULT_FILE = "result.json"


def scratch_dir(project_dir: Path, job: JobPlan) -> Path:
    """The scratch directory of a job: ``<state dir>/scratch/<tenant>__<job>``."""
    return state_dir(project_dir) / "scratch" / f"{job.tenant}__{job.name}"


def scratch_target(project_dir: Path, job: JobPlan) -> TargetRecipe:
    """A local SQLite catalog and warehouse in the job's scratch directory (table settings as production's)."""
    root = scratch_dir(project_dir, job).resolve()
    return TargetRecipe(
        name="scratch",
        catalog_name=job.target.catalog_name,
        catalog=CatalogConfig(type="sql", uri=f"sqlite:///{root / 'catalog.db'}"),
        warehouse=str(root / "warehouse"),
        # Production's table settings, but never a location: ``write.data.path`` and its kind
        # would send the scratch table's files into production's storage.
        table_properties={
            key: value
            for key, value in job.target.table_properties.items()
            if not key.endswith(".path") and "location" not in key
        },
        target_file_rows=job.target.target_file_rows,
    )


def scratch_writer(project_dir: Path, job: JobPlan) -> IcebergWriter:
    """The Iceberg writer of the job's scratch catalog."""
    target = scratch_target(project_dir, job)
    # The scratch target holds no ${VAR}: an empty environment resolves it.
    catalog = build_catalog(target, SecretResolver({}), project_dir)
    return IcebergWriter(
        catalog, table_properties=dict(target.table_properties), target_file_rows=target.target_file_rows
    )


def production_start(obj: ObjectPlan, production: IcebergWriter) -> ReconciledCursor:
    """Where the production run of ``obj`` would start now (read from its table, never written)."""
    reconciled = start_cursor(obj, production, DagsterState())
    if reconciled.full_refresh:
        note = "scratch run from the beginning: a full refresh is pending on the production table"
        return ReconciledCursor(reconciled.cursor, "production", note)
    where = {"table": "the production table's committed cursor", "reset": "the production table's reset cursor"}
    note = f"scratch run from {where.get(reconciled.origin, 'where the production run would start')}"
    if reconciled.cursor is None:
        note = "scratch run from the beginning: production has no cursor yet"
    return ReconciledCursor(reconciled.cursor, "production", note)


def beginning(obj: ObjectPlan) -> ReconciledCursor:
    """The start of a ``--from-start`` scratch run: the configured initial value, else everything."""
    from dativo_dagster.state import CursorState

    initial = obj.config.incremental.initial_value
    cursor = CursorState(strategy=obj.strategy, field=obj.cursor_field, value=initial) if initial is not None else None
    return ReconciledCursor(cursor, "initial" if cursor else "none", "scratch run from the beginning (--from-start)")


def drop_scratch_tables(writer: IcebergWriter, obj: ObjectPlan, root: Path) -> None:
    """Drop the object's scratch table and scratch quarantine, and delete their files (inside ``root`` only)."""
    for name in (obj.table, obj.quarantine_table):
        table = writer.load_table(obj.namespace, name)
        if table is None:
            continue
        location = Path(unquote(urlparse(table.location()).path)).resolve()
        writer.catalog.drop_table((obj.namespace, name))
        if location.is_relative_to(root.resolve()) and location.exists():
            shutil.rmtree(location)


@dataclass
class ScratchRun:
    """One scratch run of some objects of a job.

    Attributes:
        job: The job.
        run_id: ``scratch-<hex>``: the run's id (names its payload log).
        directory: The scratch directory.
        results: Each object's outcome.
        starts: Where each object started.
    """

    job: JobPlan
    run_id: str
    directory: Path
    results: list[ObjectResult]
    starts: dict[str, ReconciledCursor]

    @property
    def result_path(self) -> Path:
        """The run's JSON result file."""
        return self.directory / RESULT_FILE


def new_run_id(kind: str = "scratch") -> str:
    """The id of a run made without Dagster: ``<kind>-<12 hex digits>``."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def run_scratch(
    job: JobPlan,
    objects: Iterable[ObjectPlan],
    *,
    source: Any,
    production: IcebergWriter | None,
    limit: int | None,
    run_id: str,
    from_start: bool = False,
) -> ScratchRun:
    """Run ``objects`` into the job's scratch catalog, one after the other.

    Args:
        job: The job.
        objects: The objects to run.
        source: The job's source (entered by the caller).
        production: The production writer, read for the start cursor (None with ``from_start``).
        limit: Rows per object (the engine refuses it where stopping early could skip rows).
        run_id: The scratch run's id.
        from_start: Read from the beginning instead of the production cursor.

    Returns:
        The run, whose ``result.json`` is written.
    """
    directory = scratch_dir(job.project_dir, job)
    writer = scratch_writer(job.project_dir, job)
    results = []
    starts: dict[str, ReconciledCursor] = {}
    for obj in objects:
        start = beginning(obj) if from_start or production is None else production_start(obj, production)
        starts[obj.name] = start
        drop_scratch_tables(writer, obj, directory)
        results.append(ingest_object(obj, source=source, writer=writer, run_id=run_id, limit=limit, start=start))
    run = ScratchRun(job=job, run_id=run_id, directory=directory, results=results, starts=starts)
    write_result(run, source, limit, from_start)
    return run


def _status(result: ObjectResult) -> str:
    if result.error is not None:
        return "failed"
    assert result.write is not None
    if result.write.rows_rejected:
        return "partial"
    return "committed" if result.write.committed else "nothing new"


def write_result(run: ScratchRun, source: Any, limit: int | None, from_start: bool) -> None:
    """Merge this run's objects into the scratch directory's ``result.json`` (what ``dativo compare`` reads)."""
    target = scratch_target(run.job.project_dir, run.job)
    path = run.result_path
    existing: dict[str, Any] = {}
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except ValueError:
            existing = {}  # a file cut short by a crash is rewritten; the tables are the record
    objects = dict(existing.get("objects") or {})
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for result in run.results:
        obj = result.obj
        codec = source.cursor_codec(obj)
        start = run.starts[obj.name]
        write = result.write
        objects[obj.name] = {
            "run_id": run.run_id,
            "finished_at": finished,
            "status": _status(result),
            "table": f"{obj.namespace}.{obj.table}",
            "quarantine_table": f"{obj.namespace}.{obj.quarantine_table}",
            "from_start": from_start,
            "start_cursor": start.cursor.display(codec) if start.cursor else None,
            "start_note": start.note,
            "limit": limit,
            # Stopped by the limit: the last cursor value may be cut among equal values, so
            # `dativo compare` leaves that value out of the compared range.
            "limited": bool(limit is not None and write is not None and write.rows_read >= limit),
            "rows_written": write.rows_written if write else 0,
            "rows_rejected": write.rows_rejected if write else 0,
            "cursor_after": result.cursor_display,
            "error_code": result.error.code if result.error else None,
            "error": redact_text(str(result.error)) if result.error else None,
        }
    document = {
        "job": run.job.label,
        "catalog": target.catalog.uri,
        "warehouse": target.warehouse,
        "objects": objects,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    temporary.replace(path)


def read_result(project_dir: Path, job: JobPlan) -> dict[str, Any]:
    """The job's scratch ``result.json`` (empty when no scratch run wrote one)."""
    path = scratch_dir(project_dir, job) / RESULT_FILE
    if not path.exists():
        return {}
    try:
        found = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path.name} in the scratch directory of {job.label} is unreadable: {exc}") from None
    return found if isinstance(found, dict) else {}
