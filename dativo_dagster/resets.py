"""Resets: moving an object's cursor on purpose, audited in the table's snapshot history.

A reset is one Iceberg snapshot on the object's table that adds and removes no rows. Its summary
carries the new cursor (none for a full refresh) like any dativo commit, so the next run starts
from it through the usual reconciliation, and an audit record: who (``dativo.reset-by``), when
(``dativo.reset-at``), from what cursor (``dativo.reset-from``, exactly as it was recorded), to
what (``dativo.reset-to``) and which kind (``dativo.reset-kind``: ``cursor`` or ``full_refresh``).

* ``cursor``: the next run reads from the given value. The value is parsed by the source's cursor
  codec against the cursor column's type in the table (CFG001 when it does not parse). A merge
  object re-reads rows from there and merges them on its key; an append-only object may only move
  forward (moving back would load rows twice: a full refresh reloads it without duplicates).
* ``full_refresh``: the next run reads from the beginning (the configured ``initial_value``, if
  any) and replaces the table's rows in one overwrite commit, whatever the object's write mode, so
  rows deleted at the source disappear. The reset snapshot itself deletes nothing: until that run
  commits, readers see the old rows.

A reset goes through the owner check of every commit and commits like the writer does: on a
conflict the table is refreshed, the cursor it moves from read again, and the commit tried again.
A run that read its cursor before the reset committed finds a newer dativo snapshot at its own
commit and commits nothing (STG001, transient: its retry starts from the reset).

Resets come from ``dativo reset`` (``reset-by`` is the OS user) and from a run's config
(``reset: {to: ..., full_refresh: ...}`` in the launchpad, or ``dativo run --full-refresh``):
the run records the reset before it reads (``reset-by`` is the run's ``dagster/user`` tag, else
``dagster``), once per run: a retried step, a Dagster run retry or a re-execution from the UI
(a new run id, the same config) finds the reset its chain of runs recorded
(``dativo.reset-root-run``: Dagster's root run id) and does not move the cursor back a second time.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dativo_dagster.config.models import Strategy, WriteMode
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, StateError
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_CURSOR_FIELD,
    PROP_OBJECT,
    PROP_RESET_AT,
    PROP_RESET_BY,
    PROP_RESET_FROM,
    PROP_RESET_KIND,
    PROP_RESET_ROOT_RUN,
    PROP_RESET_TO,
    PROP_ROWS,
    PROP_RUN_ID,
    PROP_STRATEGY,
    CursorState,
    ResetKind,
    ResetRecord,
    reset_command,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyiceberg.table import Table

    from dativo_dagster.iceberg.writer import IcebergWriter
    from dativo_dagster.sources.cursors import CursorCodec

DAGSTER_USER_TAG = "dagster/user"
"""Run tag naming the user who launched a run from the UI (Dagster+ and auth-enabled deployments)."""

ROOT_RUN_ID_TAG = "dagster/root_run_id"
"""Run tag Dagster sets on a re-execution or a run retry: the first run of the chain."""


class ResetRequest(BaseModel):
    """What a reset asks for: exactly one of a new cursor value (``to``) or a full refresh."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str | None = Field(default=None, description="the cursor value the next read starts from")
    full_refresh: bool = Field(default=False, description="read everything and replace the table's rows")

    @model_validator(mode="after")
    def _one_of(self) -> ResetRequest:
        if (self.to is None) == (not self.full_refresh):
            raise ValueError("give exactly one of 'to' (a cursor value) or 'full_refresh: true'")
        return self

    @property
    def kind(self) -> ResetKind:
        """Cursor or full refresh."""
        return ResetKind.FULL_REFRESH if self.full_refresh else ResetKind.CURSOR

    @classmethod
    def of(cls, *, to: str | None = None, full_refresh: bool = False) -> ResetRequest:
        """Build one from command-line values; CFG001 when it is not exactly one of the two."""
        try:
            return cls(to=to, full_refresh=full_refresh)
        except ValidationError as exc:
            raise ConfigError(f"reset: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None


# --------------------------------------------------------------------------- pure parts


def os_user() -> str:
    """Who runs this process: the login name, else the numeric uid (containers often have no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def run_user(tags: Mapping[str, str]) -> str:
    """Who launched a Dagster run: its ``dagster/user`` tag, else ``dagster``."""
    return tags.get(DAGSTER_USER_TAG) or "dagster"


def root_run_id(run: Any) -> str:
    """The first run of ``run``'s chain of re-executions and run retries (itself when it is the first).

    A reset from run config is recorded once per chain: a re-execution has a new run id and the
    same config, and must not move the cursor back again.

    Args:
        run: A ``dagster.DagsterRun`` (its ``root_run_id``, else its ``dagster/root_run_id`` tag).
    """
    return str(run.root_run_id or run.tags.get(ROOT_RUN_ID_TAG) or run.run_id)


def utc_now() -> str:
    """The current time as UTC ISO-8601 (seconds)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def parse_reset_cursor(
    obj: ObjectPlan, codec: CursorCodec, text: str, value_type: pa.DataType | None = None
) -> CursorState:
    """The cursor ``dativo reset --to TEXT`` means for ``obj``.

    Raises:
        ConfigError: CFG001 when the object keeps no cursor, or the text is not a value of its
            cursor (the source's codec decides, against the column's type when known).
    """
    if obj.strategy is Strategy.FULL_REFRESH:
        raise ConfigError(
            f"{obj.label}: --to: strategy full_refresh keeps no cursor (every run reads everything)",
            hint=f"{reset_command(obj.label)} --full-refresh",
        )
    try:
        value = codec.from_text(text, value_type)
    except ConfigError as exc:
        field = f" {obj.cursor_field}" if obj.cursor_field else ""
        raise ConfigError(f"{obj.label}: --to: {exc.message} for the{field} cursor", hint=exc.hint) from None
    return CursorState(strategy=obj.strategy, field=obj.cursor_field, value=value)


def check_reset_allowed(
    obj: ObjectPlan, codec: CursorCodec, previous: CursorState | None, new: CursorState | None
) -> None:
    """CFG001 when the reset would load rows twice: an append-only object's cursor moving back.

    Merge objects re-read and merge on their key; ``file_mtime`` objects replace a re-read file's
    rows; a full refresh replaces everything. Only a plain append would duplicate rows.
    """
    if new is None or previous is None or obj.write_mode is not WriteMode.APPEND:
        return
    if obj.strategy is Strategy.FILE_MTIME or (previous.strategy, previous.field) != (new.strategy, new.field):
        return
    try:
        backwards = codec.is_before(new.value, previous.value)
    except StateError:
        backwards = True  # cannot tell: refuse rather than risk loading rows twice
    if backwards:
        raise ConfigError(
            f"{obj.label}: --to {new.display(codec)} lies before the committed cursor {previous.display(codec)}; "
            "this object only appends, so the rows in between would be loaded a second time",
            hint=f"reload it without duplicates: {reset_command(obj.label)} --full-refresh",
        )


def readable_cursor(raw: str | None) -> CursorState | None:
    """A recorded cursor, or None when there is none or it cannot be read (a reset may fix that)."""
    if not raw or raw == "null":
        return None
    try:
        return CursorState.from_json(raw, where="the table")
    except StateError:
        return None


def reset_properties(
    obj: ObjectPlan,
    *,
    kind: ResetKind,
    by: str,
    at: str,
    previous_raw: str,
    new: CursorState | None,
    run_id: str,
    root_run_id: str | None = None,
) -> dict[str, str]:
    """Snapshot summary of a reset: the new cursor like any dativo commit, plus the audit record.

    ``root_run_id`` (default ``run_id``) is the chain of runs the reset is recorded once for.
    """
    to = new.to_json() if new is not None else "null"
    return {
        PROP_RUN_ID: run_id,
        PROP_RESET_ROOT_RUN: root_run_id or run_id,
        PROP_OBJECT: obj.label,
        PROP_STRATEGY: obj.strategy.value,
        PROP_CURSOR_FIELD: obj.cursor_field or "",
        PROP_CURSOR: to,
        PROP_ROWS: "0",
        PROP_RESET_KIND: kind.value,
        PROP_RESET_BY: by,
        PROP_RESET_AT: at,
        PROP_RESET_FROM: previous_raw or "null",
        PROP_RESET_TO: to,
    }


def reset_by_run(history: list[Mapping[str, str]], root_run_id: str) -> ResetRecord | None:
    """The reset a run of the chain ``root_run_id`` already recorded, among snapshot summaries.

    A retried step, a run retry or a re-execution finds it. A reset recorded before the chain was
    kept (``dativo.reset-root-run``) is matched by its run id: the first run's id is the root.
    """
    for props in history:
        if props.get(PROP_RESET_ROOT_RUN, props.get(PROP_RUN_ID)) == root_run_id:
            record = ResetRecord.from_summary(props)
            if record is not None:
                return record
    return None


# --------------------------------------------------------------------------- against the table


@dataclass
class PreparedReset:
    """A reset checked against its table and ready to commit."""

    obj: ObjectPlan
    request: ResetRequest
    table: Table | None
    label: str
    previous: CursorState | None
    previous_raw: str
    new: CursorState | None
    already: ResetRecord | None = None  # this run recorded it already


@dataclass(frozen=True)
class ResetOutcome:
    """What a reset did."""

    obj: ObjectPlan
    label: str
    record: ResetRecord | None
    previous: CursorState | None
    new: CursorState | None
    committed: bool
    note: str


def prepare_reset(
    obj: ObjectPlan, writer: IcebergWriter, codec: CursorCodec, request: ResetRequest, *, run_id: str | None = None
) -> PreparedReset:
    """Check a reset before anything is committed: the table, its owner, the new value.

    ``run_id``: the root run id of the chain of runs asking for it; a reset that chain already
    recorded is returned as such (nothing to commit).

    Raises:
        ConfigError: CFG001 for a value that does not parse, a table someone else owns, a cursor
            reset of a table that does not exist yet, or an append-only object moving back.
        StateError: STATE001 if the table's reset history cannot be read.
    """
    from dativo_dagster.iceberg.tables import Owner, latest_dativo_summary

    namespace, name = obj.table_identifier
    label = f"{namespace}.{name}"
    table = writer.load_table(namespace, name)
    if table is None:
        if request.full_refresh:
            return PreparedReset(obj, request, None, label, None, "null", None)
        raise ConfigError(
            f"{obj.label}: table {label} does not exist yet, so there is no cursor to reset",
            hint="its first run reads from incremental.initial_value (or the beginning)",
        )
    if run_id is not None:
        already = reset_by_run(_history(table), run_id)
        if already is not None:
            return PreparedReset(obj, request, table, label, None, already.from_cursor, None, already)
    owner = Owner(obj.tenant, obj.owner)
    writer.tables.check_namespace(namespace, owner)
    table = writer.tables.ensure(namespace, name, table.schema().as_arrow(), owner)
    found = latest_dativo_summary(table)
    previous_raw = found[1].get(PROP_CURSOR, "null") if found is not None else "null"
    previous = readable_cursor(previous_raw)
    new = None
    if request.to is not None:
        new = parse_reset_cursor(obj, codec, request.to, _column_type(table, obj.cursor_field))
        check_reset_allowed(obj, codec, previous, new)
    return PreparedReset(obj, request, table, label, previous, previous_raw, new)


def commit_prepared(
    prepared: PreparedReset,
    codec: CursorCodec,
    *,
    by: str,
    run_id: str,
    at: str | None = None,
    root_run_id: str | None = None,
) -> ResetOutcome:
    """Commit a prepared reset (nothing when it is not needed).

    Raises:
        StorageError: STG001 when the catalog fails or other writers keep committing first.
        ConfigError: CFG001 when, on a retry after a conflict, the reset is no longer allowed.
    """
    from dativo_dagster.iceberg.reset import commit_reset
    from dativo_dagster.iceberg.tables import latest_dativo_summary

    obj = prepared.obj
    if prepared.already is not None:
        return ResetOutcome(
            obj, prepared.label, prepared.already, None, None, False, f"{prepared.already.describe()} (this run)"
        )
    if prepared.table is None:
        note = f"{obj.label}: table {prepared.label} does not exist yet; its first run reads everything"
        return ResetOutcome(obj, prepared.label, None, None, None, False, note)
    when = at or utc_now()
    seen: dict[str, Any] = {}

    def properties(table: Table) -> dict[str, str]:
        # Read again on every attempt: a run that committed meanwhile moved the cursor we move from.
        found = latest_dativo_summary(table)
        previous_raw = found[1].get(PROP_CURSOR, "null") if found is not None else "null"
        previous = readable_cursor(previous_raw)
        check_reset_allowed(obj, codec, previous, prepared.new)
        seen["previous"] = previous
        return reset_properties(
            obj,
            kind=prepared.request.kind,
            by=by,
            at=when,
            previous_raw=previous_raw,
            new=prepared.new,
            run_id=run_id,
            root_run_id=root_run_id,
        )

    snapshot_id, props = commit_reset(prepared.table, properties, prepared.label)
    record = ResetRecord.from_summary(props, snapshot_id)
    assert record is not None
    return ResetOutcome(obj, prepared.label, record, seen.get("previous"), prepared.new, True, record.describe())


def apply_reset(
    obj: ObjectPlan,
    writer: IcebergWriter,
    codec: CursorCodec,
    request: ResetRequest,
    *,
    by: str,
    run_id: str,
    root_run_id: str | None = None,
) -> ResetOutcome:
    """Prepare and commit a reset of one object, once per chain of runs.

    Args:
        run_id: The run recording it (``dativo.run-id`` of the reset snapshot).
        root_run_id: The first run of its chain of re-executions and run retries (default
            ``run_id``): a later run of the chain finds the reset recorded and does not repeat it.
    """
    root = root_run_id or run_id
    prepared = prepare_reset(obj, writer, codec, request, run_id=root)
    return commit_prepared(prepared, codec, by=by, run_id=run_id, root_run_id=root)


def _history(table: Table) -> list[Mapping[str, str]]:
    """Summary properties of the table's lineage, newest first."""
    history: list[Mapping[str, str]] = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        history.append(snapshot.summary.additional_properties if snapshot.summary else {})
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return history


def _column_type(table: Table, column: str | None) -> pa.DataType | None:
    """The cursor column's Arrow type in the table (None when it is not a column of it)."""
    if column is None:
        return None
    schema = table.schema().as_arrow()
    index = schema.get_field_index(column)
    return schema.field(index).type if index >= 0 else None
