"""Tables of one catalog: loading, creating, and the one-owner rule.

Every table dativo writes records its owner (``dativo.owner`` = ``tenant/job/object``) as a table
property, and every namespace it creates records its tenant (``dativo.tenant``). Each commit
checks both, so no configuration, however it got past the load-time checks (another code
location, a renamed job, a hand-edited table), lets one tenant or object write into a table it
does not own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pyarrow as pa
import structlog
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from dativo_dagster.errors import ConfigError, StateError
from dativo_dagster.iceberg.failures import raise_storage_failure
from dativo_dagster.iceberg.integrity import TABLE_PROP_INTEGRITY_SINCE
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_OBJECT,
    PROP_PARTITION,
    PROP_RUN_ID,
    CursorState,
    ResetRecord,
    TableCursor,
    reset_command,
)

log = structlog.get_logger("dativo.iceberg")

OWNER_PROPERTY = "dativo.owner"
"""Table property: the one tenant/job/object allowed to write the table."""

TENANT_PROPERTY = "dativo.tenant"
"""Namespace property: the tenant whose namespace it is."""

COMMIT_RETRIES_PROPERTY = "commit.retry.num-retries"
"""pyiceberg replays a conflicting commit on the refreshed table by itself, parenting this run's
rows on whatever was committed meanwhile, even another run of the same range. dativo turns that
off on its tables and decides itself (:mod:`~dativo_dagster.iceberg.writer`)."""

DEFAULT_TABLE_PROPERTIES = {
    "format-version": "2",
    "write.parquet.compression-codec": "zstd",
    "write.parquet.compression-level": "1",
}

MANAGED_PROPERTIES = {COMMIT_RETRIES_PROPERTY: "0"}
"""Properties every table dativo writes must have (set on tables from earlier versions too)."""


@dataclass(frozen=True)
class Owner:
    """Who may write a table: ``label`` is ``tenant/job/object`` (or ``dagster:<asset key>``)."""

    tenant: str
    label: str


class Tables:
    """Load, create and guard the tables of one catalog.

    Args:
        catalog: An open pyiceberg catalog (one per target per run).
        table_properties: Properties of tables created here (on top of the defaults).
    """

    def __init__(self, catalog: Catalog, table_properties: dict[str, str] | None = None) -> None:
        self.catalog = catalog
        self.table_properties = {**DEFAULT_TABLE_PROPERTIES, **(table_properties or {})}
        # Objects of one job run in threads; creating a shared namespace must not race.
        self._create_lock = threading.Lock()

    def load(self, namespace: str, name: str) -> Table | None:
        """The table, or None if it does not exist."""
        try:
            return self.catalog.load_table((namespace, name))
        except (NoSuchTableError, NoSuchNamespaceError):
            return None
        except Exception as exc:
            raise_storage_failure(exc, f"loading table {namespace}.{name}")
            raise  # unreachable: raise_storage_failure always raises

    def ensure(self, namespace: str, name: str, schema: pa.Schema, owner: Owner) -> Table:
        """Load the table or create it (and its namespace), recording its owner; check ownership.

        Raises:
            ConfigError: CFG001 when the table or namespace belongs to someone else.
        """
        table = self.load(namespace, name)
        if table is None:
            with self._create_lock:
                self._ensure_namespace(namespace, owner)
                properties = {
                    **self.table_properties,
                    **MANAGED_PROPERTIES,
                    OWNER_PROPERTY: owner.label,
                    # Every file dativo commits to it has its SHA-256 recorded, from the first.
                    TABLE_PROP_INTEGRITY_SINCE: "0",
                }
                try:
                    table = self.catalog.create_table_if_not_exists(
                        (namespace, name), schema=schema, properties=properties
                    )
                except Exception as exc:
                    raise_storage_failure(exc, f"creating table {namespace}.{name}")
                    raise
        check_owner(table, owner)  # also when another process created it first
        return self._managed(table, owner)

    def _managed(self, table: Table, owner: Owner) -> Table:
        """Record the owner and dativo's commit settings on a table that lacks them (one commit)."""
        wanted = {**MANAGED_PROPERTIES, OWNER_PROPERTY: owner.label}
        missing = {key: value for key, value in wanted.items() if table.properties.get(key) != value}
        if TABLE_PROP_INTEGRITY_SINCE not in table.properties:
            # A table from before digests were recorded (or created elsewhere): the files dativo
            # commits from now on have one, so verify can tell a lost digest from a file that never had one.
            missing[TABLE_PROP_INTEGRITY_SINCE] = str(table.metadata.next_sequence_number())
        if not missing:
            return table
        try:
            with table.transaction() as txn:
                txn.set_properties(missing)
        except Exception as exc:
            raise_storage_failure(exc, f"recording the owner of {'.'.join(table.name())}")
        return table

    def _ensure_namespace(self, namespace: str, owner: Owner) -> None:
        try:
            try:
                self.catalog.create_namespace(namespace, properties={TENANT_PROPERTY: owner.tenant})
                return
            except NamespaceAlreadyExistsError:
                pass
            properties = self.catalog.load_namespace_properties(namespace)
        except Exception as exc:
            raise_storage_failure(exc, f"creating namespace {namespace}")
            raise
        recorded = properties.get(TENANT_PROPERTY)
        if recorded is not None and recorded != owner.tenant:
            raise ConfigError(
                f"namespace {namespace} belongs to tenant '{recorded}', not '{owner.tenant}'",
                hint="each tenant writes only into its own namespaces",
            )

    def check_namespace(self, namespace: str, owner: Owner) -> None:
        """CFG001 if the namespace records another tenant (namespaces created before owners were
        recorded get this tenant recorded now)."""
        try:
            properties = self.catalog.load_namespace_properties(namespace)
        except NoSuchNamespaceError:
            return
        except Exception as exc:
            raise_storage_failure(exc, f"reading namespace {namespace}")
            raise
        recorded = properties.get(TENANT_PROPERTY)
        if recorded is None:
            try:
                self.catalog.update_namespace_properties(namespace, updates={TENANT_PROPERTY: owner.tenant})
            except Exception as exc:
                raise_storage_failure(exc, f"recording the tenant of namespace {namespace}")
        elif recorded != owner.tenant:
            raise ConfigError(
                f"namespace {namespace} belongs to tenant '{recorded}', not '{owner.tenant}'",
                hint="each tenant writes only into its own namespaces",
            )


def table_owner(table: Table) -> str | None:
    """The owner recorded on the table, or, for tables written before owners were recorded, the
    object named by its dativo snapshots (None if dativo never wrote it)."""
    recorded = table.properties.get(OWNER_PROPERTY)
    if recorded:
        return recorded
    for snapshot in table.snapshots():
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_OBJECT in props:
            return props[PROP_OBJECT]
    return None


def check_owner(table: Table, owner: Owner) -> bool:
    """Whether ``owner`` may write ``table``; True when its ownership still has to be recorded.

    Raises:
        ConfigError: CFG001 naming the owner when it is someone else, or when the table was made
            outside dativo and holds data (it is never taken over silently).
    """
    name = ".".join(table.name())
    recorded = table.properties.get(OWNER_PROPERTY)
    if recorded == owner.label:
        return False
    current = table_owner(table)
    if current is not None and current != owner.label:
        raise ConfigError(
            f"table {name} is owned by {current}; {owner.label} may not write it (every table has exactly one owner)",
            hint="give this object its own table ('table' or target.namespace in the job file)",
        )
    if current is None and table.current_snapshot() is not None:
        raise ConfigError(
            f"table {name} was not created by dativo and already holds data; {owner.label} will not take it over",
            hint=f"point the object at another table, or set the table property {OWNER_PROPERTY}={owner.label} "
            "to hand it over deliberately",
        )
    return True  # dativo's own table from before owners were recorded, or an empty one: record it


def read_table_cursor(table: Table) -> TableCursor | None:
    """Latest dativo cursor recorded in the table's snapshot lineage (current snapshot backwards),
    with the reset that set it when the latest dativo snapshot is a reset.

    Partition runs' snapshots (``dativo.partition``) are skipped: they copy the cursor, never move it.
    When only they are left (older snapshots expired), the newest one's copy (if any) is the cursor: it is
    exactly the cursor of the moment it committed, and no incremental commit came after it. That
    cursor has no incremental snapshot to build on (``snapshot_id`` None, as
    :func:`latest_dativo_snapshot_id` finds none), and no reset.

    Raises:
        StateError: STATE001 when that cursor (or reset record) cannot be read.
    """
    snapshot = table.current_snapshot()
    ancestors: list[int] = []
    found = None
    newest_partition = None
    while snapshot is not None:
        ancestors.append(snapshot.snapshot_id)
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if found is None and PROP_RUN_ID in props:
            if PROP_PARTITION not in props:
                found = (snapshot, props)
            elif newest_partition is None:
                newest_partition = (snapshot, props)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    copied = found is None
    if found is None:
        if newest_partition is None or newest_partition[1].get(PROP_CURSOR, "null") == "null":
            return None  # no incremental run ever committed a cursor (the first one reads from the start)
        found = newest_partition
    snap, props = found
    raw = props.get(PROP_CURSOR)
    cursor = None
    try:
        if raw and raw != "null":
            cursor = CursorState.from_json(raw, where=f"snapshot {snap.snapshot_id} of {'.'.join(table.name())}")
        reset = None if copied else ResetRecord.from_summary(props, snap.snapshot_id)
    except StateError as exc:
        owner = table.properties.get(OWNER_PROPERTY)
        if owner is None or owner.count("/") != 2:
            raise
        raise StateError(
            exc.message, hint=f"write a readable cursor with: {reset_command(owner)} --to VALUE (or --full-refresh)"
        ) from exc
    return TableCursor(
        cursor=cursor,
        snapshot_id=None if copied else snap.snapshot_id,
        run_id=props.get(PROP_RUN_ID),
        ancestor_ids=frozenset(ancestors),
        reset=reset,
    )


def latest_dativo_summary(table: Table) -> tuple[int, dict[str, str]] | None:
    """The id and summary properties of the newest snapshot in the table's lineage that an
    incremental dativo run (or a reset) committed; partition runs' snapshots are skipped: they copy
    the cursor and never race the incremental one."""
    snapshot = table.current_snapshot()
    while snapshot is not None:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_RUN_ID in props and PROP_PARTITION not in props:
            return snapshot.snapshot_id, dict(props)
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return None


def latest_dativo_snapshot_id(table: Table) -> int | None:
    """The id of the newest snapshot in the table's lineage that an incremental dativo run (or a reset)
    committed (see :func:`latest_dativo_summary`)."""
    found = latest_dativo_summary(table)
    return found[0] if found is not None else None


def dativo_summaries_since(table: Table, snapshot_id: int | None) -> list[dict[str, str]]:
    """Summary properties of the snapshots an incremental dativo run or a reset committed after
    ``snapshot_id`` in the table's lineage, newest first (partition runs' snapshots skipped).

    All of them when ``snapshot_id`` is None or no longer in the lineage.
    """
    found = []
    snapshot = table.current_snapshot()
    while snapshot is not None and snapshot.snapshot_id != snapshot_id:
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if PROP_RUN_ID in props and PROP_PARTITION not in props:
            found.append(dict(props))
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return found
