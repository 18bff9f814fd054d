"""Cursor state: how it is serialised, compared and reconciled.

The cursor lives in the summary of the Iceberg snapshot that holds the rows it covers; Dagster's
materialization metadata carries a copy for people. At run start both are read and reconciled
by :func:`reconcile_cursor`, a pure function: the table is the source of truth, because a run
may die after the Iceberg commit and before Dagster records the event.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dativo_dagster.config.models import Strategy
from dativo_dagster.errors import StateError
from dativo_dagster.sources.cursors import DEFAULT_CODEC, CursorCodec

# Snapshot-summary property names (Iceberg summary values are strings).
PROP_CURSOR = "dativo.cursor"
PROP_STRATEGY = "dativo.strategy"
PROP_CURSOR_FIELD = "dativo.cursor-field"
PROP_RUN_ID = "dativo.run-id"
PROP_OBJECT = "dativo.object"
PROP_ROWS = "dativo.rows"
PROP_PARTITION = "dativo.partition"
"""Set on a partition run's snapshot: the window it replaced (``start/end``, ISO). Such a snapshot
carries the incremental cursor unchanged, and the incremental cursor (and the snapshot an
incremental run builds on) is read from the newest dativo snapshot *without* it, so partition
runs never move, or race for, the incremental cursor."""

PROP_MAINTENANCE = "dativo.maintenance"
"""Set on a table-maintenance snapshot (``compact``): it carries no run id and no cursor, so the
cursor readers walk past it to the run before."""

# A reset's audit record, in the summary of the snapshot that moved the cursor (see resets.py).
PROP_RESET_KIND = "dativo.reset-kind"
PROP_RESET_BY = "dativo.reset-by"
PROP_RESET_AT = "dativo.reset-at"
PROP_RESET_FROM = "dativo.reset-from"
PROP_RESET_TO = "dativo.reset-to"
PROP_RESET_ROOT_RUN = "dativo.reset-root-run"
"""The first run of the chain (Dagster's root run id) that recorded a reset from run config: its
re-executions and run retries find it and do not reset again."""

TABLE_PROP_EXPIRED_REPLAYS = "dativo.expired-replays"
"""Table property: the replays (``dativo.replay-id``) whose snapshots snapshot expiry removed from the
lineage, as a JSON object of replay id to the snapshot that committed it. Set in the commit that
removes them, so "was this replay committed?" stays answerable after expiry (a repeated replay
must not load its rows twice). It grows by one entry per replay, each a deliberate operator act."""


def expired_replays(properties: Mapping[str, str]) -> dict[str, int]:
    """The replays recorded in a table's :data:`TABLE_PROP_EXPIRED_REPLAYS` (empty when unset).

    Raises:
        StateError: STATE001 when the property is not a JSON object of replay ids to snapshot ids.
    """
    text = properties.get(TABLE_PROP_EXPIRED_REPLAYS)
    if text is None:
        return {}
    try:
        found = json.loads(text)
        if not isinstance(found, dict):
            raise ValueError("not an object")
        return {str(key): int(value) for key, value in found.items()}
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"table property {TABLE_PROP_EXPIRED_REPLAYS} is not a JSON object of replay ids to snapshot ids: {exc}",
            hint="restore it from the previous metadata file; it guards against committing a replay twice",
        ) from None


# Dagster materialization metadata keys.
META_CURSOR = "dativo/cursor"
META_SNAPSHOT_ID = "dativo/snapshot_id"


@dataclass(frozen=True)
class CursorState:
    """A committed position in a source object."""

    strategy: Strategy
    field: str | None
    value: Any

    def to_json(self) -> str:
        """Serialise for a snapshot property or metadata value."""
        return json.dumps(
            {"strategy": self.strategy.value, "field": self.field, "value": self.value},
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str, *, where: str) -> CursorState:
        """Parse a serialised cursor; STATE001 if it is unreadable."""
        try:
            data = json.loads(text)
            return cls(strategy=Strategy(data["strategy"]), field=data.get("field"), value=data["value"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"unreadable cursor state in {where}: {text[:80]!r}") from exc

    def display(self, codec: CursorCodec | None = None) -> str:
        """Short human form for logs and the CLI, as the source's codec shows it."""
        return (codec or DEFAULT_CODEC).display(self.value, self.field)


def object_command(command: str, label: str) -> str:
    """The ``dativo <command>`` line for an object labelled ``tenant/job/object``."""
    tenant, _, rest = label.partition("/")
    job, _, name = rest.partition("/")
    return f"dativo {command} {tenant}/{job} --object {name}"


def reset_command(label: str) -> str:
    """The ``dativo reset`` command line for an object labelled ``tenant/job/object``."""
    return object_command("reset", label)


def check_forward(
    previous: CursorState | None, new: CursorState | None, *, label: str, codec: CursorCodec | None = None
) -> None:
    """STATE001 if ``new`` moves behind ``previous`` (a source or config went backwards)."""
    if previous is None or new is None:
        return
    if previous.field != new.field or previous.strategy != new.strategy:
        return  # a strategy change restarts the cursor on purpose; the engine logs it
    if (codec or DEFAULT_CODEC).is_before(new.value, previous.value):
        raise StateError(
            f"{label}: cursor would move backwards from {previous.value!r} to {new.value!r}",
            hint=(
                "the source was restored from an older copy, or its cursor column changed; if the source really "
                f"went back, move the cursor on purpose: {reset_command(label)} --to VALUE (or --full-refresh)"
            ),
        )


class ResetKind(str, enum.Enum):
    """What a reset asked for."""

    CURSOR = "cursor"  # the next run reads from the given cursor
    FULL_REFRESH = "full_refresh"  # the next run reads everything and replaces the table


@dataclass(frozen=True)
class ResetRecord:
    """A reset as recorded in the summary of the snapshot that made it: who, when, from what, to what.

    ``from_cursor``/``to_cursor`` are the cursor JSON exactly as recorded (``"null"``: none), so a
    cursor nothing can parse any more can still be reset and audited.
    """

    kind: ResetKind
    by: str
    at: str
    from_cursor: str
    to_cursor: str
    run_id: str | None = None
    snapshot_id: int | None = None

    @classmethod
    def from_summary(cls, props: Mapping[str, str], snapshot_id: int | None = None) -> ResetRecord | None:
        """The reset a snapshot summary records, or None if the snapshot is not a reset."""
        kind = props.get(PROP_RESET_KIND)
        if kind is None:
            return None
        try:
            parsed = ResetKind(kind)
        except ValueError as exc:
            raise StateError(f"unreadable reset record in snapshot {snapshot_id}: kind {kind[:40]!r}") from exc
        return cls(
            kind=parsed,
            by=props.get(PROP_RESET_BY, "unknown"),
            at=props.get(PROP_RESET_AT, "unknown"),
            from_cursor=props.get(PROP_RESET_FROM, "null"),
            to_cursor=props.get(PROP_RESET_TO, "null"),
            run_id=props.get(PROP_RUN_ID),
            snapshot_id=snapshot_id,
        )

    def describe(self) -> str:
        """One line for notes and logs."""
        what = "full refresh" if self.kind is ResetKind.FULL_REFRESH else f"cursor set to {self.to_cursor}"
        return f"reset by {self.by} at {self.at}: {what} (was {self.from_cursor})"


@dataclass(frozen=True)
class TableCursor:
    """The cursor found in the table's snapshot history."""

    cursor: CursorState | None
    snapshot_id: int | None  # None: copied from a partition snapshot (no incremental one is left)
    run_id: str | None
    ancestor_ids: frozenset[int]
    reset: ResetRecord | None = None  # the latest dativo snapshot is a reset: the next run starts from it


@dataclass(frozen=True)
class ReconciledCursor:
    """Result of :func:`reconcile_cursor`."""

    cursor: CursorState | None
    origin: str  # "table", "reset", "initial" or "none"
    note: str
    table_snapshot_id: int | None = None  # the dativo snapshot the table's cursor was read from
    reset: ResetRecord | None = None  # the run starts from this reset (a full refresh replaces the table)

    @property
    def full_refresh(self) -> bool:
        """A full-refresh reset is pending: this run reads everything and replaces the table's rows."""
        return self.reset is not None and self.reset.kind is ResetKind.FULL_REFRESH


def reconcile_cursor(
    *,
    dagster_cursor: CursorState | None,
    dagster_snapshot_id: int | None,
    table: TableCursor | None,
    table_exists: bool,
    initial: CursorState | None,
) -> ReconciledCursor:
    """Decide which cursor a run starts from.

    Rules, in order:

    1. The table has a dativo snapshot: it wins. If Dagster recorded a snapshot the table does not
       contain in its history, the table was rolled back or recreated; the note says so. When the
       latest dativo snapshot is a reset, the reset's cursor wins however far ahead Dagster's copy
       looks (a full refresh starts from ``initial``, else from the beginning).
    2. The table exists without dativo state (created by hand, or emptied): start from ``initial``.
    3. The table does not exist: start from ``initial`` even if Dagster remembers a cursor, since
       the rows that cursor covered are gone; reloading is the only way to avoid a gap.
    """
    if table is not None and table.reset is not None:
        reset = table.reset
        if reset.kind is ResetKind.FULL_REFRESH:
            note = f"{reset.describe()}; reading from the beginning and replacing the table's rows"
            return ReconciledCursor(initial, "reset", note, table.snapshot_id, reset)
        note = f"{reset.describe()}; starting from the reset cursor"
        return ReconciledCursor(table.cursor, "reset", note, table.snapshot_id, reset)
    if table is not None:
        if dagster_snapshot_id is None:
            note = "cursor taken from the table (Dagster has no record of it yet)"
        elif dagster_snapshot_id == table.snapshot_id:
            note = "Dagster and the table agree"
        elif dagster_snapshot_id in table.ancestor_ids:
            note = (
                "the table is ahead of Dagster: a previous run committed but did not report; "
                "continuing from the table's cursor"
            )
        else:
            note = "Dagster's snapshot is not in the table history (rolled back or recreated); using the table"
        return ReconciledCursor(table.cursor, "table", note, table.snapshot_id)
    if dagster_cursor is not None:
        where = "exists but holds no dativo snapshot" if table_exists else "does not exist"
        return ReconciledCursor(
            initial,
            "initial" if initial else "none",
            f"Dagster remembers cursor {dagster_cursor.value!r} but the table {where}; reloading",
        )
    if initial is not None:
        return ReconciledCursor(initial, "initial", "first run: starting from the configured initial value")
    return ReconciledCursor(None, "none", "first run: reading everything")
