"""How a step fails when checks cannot be evaluated, and what the checks read from a table's snapshot
history, on canned snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dativo_dagster.checks import facts
from dativo_dagster.state import PROP_PARTITION, PROP_RESET_KIND, PROP_RUN_ID


@dataclass
class Summary:
    additional_properties: dict[str, str]


@dataclass
class Snapshot:
    snapshot_id: int
    timestamp_ms: int
    props: dict[str, str] = field(default_factory=dict)
    parent_snapshot_id: int | None = None

    @property
    def summary(self) -> Summary:
        return Summary(self.props)


class History:
    """A table's lineage, oldest first (each snapshot the parent of the next)."""

    def __init__(self, *props: dict[str, str]) -> None:
        self.snapshots = [Snapshot(n, 1_000 * n, p, n - 1 if n > 1 else None) for n, p in enumerate(props, start=1)]

    def current_snapshot(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    def snapshot_by_id(self, snapshot_id: int) -> Snapshot | None:
        return next((s for s in self.snapshots if s.snapshot_id == snapshot_id), None)


def last_commit(*props: dict[str, str]) -> Any:
    return facts.last_commit_ms(History(*props))  # type: ignore[arg-type]


LOAD = {PROP_RUN_ID: "run-1"}
RESET = {PROP_RUN_ID: "reset-1", PROP_RESET_KIND: "full_refresh"}
PARTITION = {PROP_RUN_ID: "run-2", PROP_PARTITION: "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"}
MAINTENANCE: dict[str, str] = {}


def test_a_reset_is_not_a_commit_of_rows() -> None:
    assert last_commit(LOAD, RESET) == 1_000
    assert last_commit(LOAD, RESET, MAINTENANCE, RESET) == 1_000
    assert last_commit(RESET) is None  # reset before anything was loaded: never loaded


def test_a_partition_run_loaded_rows_and_counts() -> None:
    assert last_commit(LOAD, PARTITION, RESET) == 2_000


def test_table_maintenance_is_not_a_commit() -> None:
    assert last_commit(LOAD, MAINTENANCE) == 1_000
    assert last_commit(MAINTENANCE) is None


def test_a_failure_evaluating_a_check_is_classified_for_the_alerts() -> None:
    from dativo_dagster.checks.runtime import check_failure
    from dativo_dagster.errors import ConfigError, StorageError, unexpected

    transient = check_failure([("demo/shop/orders", StorageError("catalog down"))], retry_number=0, max_retries=2)
    assert transient.allow_retries is True
    assert transient.metadata["dativo/error_code"].value == "STG001"
    assert transient.metadata["dativo/error_class"].value == "transient"
    last = check_failure([("demo/shop/orders", StorageError("catalog down"))], retry_number=2, max_retries=2)
    assert last.allow_retries is False and last.metadata["dativo/error_code"].value == "RETRY001"
    assert last.metadata["dativo/error_class"].value == "permanent"
    mixed = check_failure(
        [("a", StorageError("catalog down")), ("b", ConfigError("bad"))], retry_number=0, max_retries=2
    )
    assert mixed.allow_retries is False and mixed.metadata["dativo/error_class"].value == "permanent"
    bug = check_failure([("a", unexpected(KeyError("x")))], retry_number=0, max_retries=2)
    assert bug.allow_retries is False and bug.metadata["dativo/error_class"].value == "bug"
