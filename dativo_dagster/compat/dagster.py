"""Private Dagster symbols dativo uses (dagster==1.13.27, pinned exactly in pyproject.toml)."""

from __future__ import annotations

from typing import Any

# The asset job Dagster builds over every asset of a code location (its "Materialize" runs);
# schedules target it by name. No public constant exists.
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME

# Cron validation with Dagster's own rules, so runner.yaml is refused at load, not at first tick;
# and the latest cron tick at an instant, with Dagster's own timezone and DST handling.
from dagster._utils.schedules import get_latest_completed_cron_tick, is_valid_cron_string


def free_concurrency_slots(instance: Any, run_id: str) -> bool:
    """Free the pool slots a dead run holds; False when the instance has no global pools."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    storage.free_concurrency_slots_for_run(run_id)
    return True


def last_passed_check_timestamp(instance: Any, check_key: Any) -> float | None:
    """When the asset check ``check_key`` last passed (epoch seconds), or None if it never did.

    The instance's check-execution history answers with one indexed query; it has no public
    filter by outcome.
    """
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    records = instance.event_log_storage.get_asset_check_execution_history(
        check_key, limit=1, status={AssetCheckExecutionRecordStatus.SUCCEEDED}
    )
    if not records:
        return None
    event = records[0].event
    return float(event.timestamp if event is not None else records[0].create_timestamp)


def read_kv(instance: Any, key: str) -> str | None:
    """A value of the instance's key-value store (in its run storage; Dagster's daemons keep their
    own cursors there). No public accessor exists."""
    return instance.run_storage.get_cursor_values({key}).get(key)


def write_kv(instance: Any, key: str, value: str) -> None:
    """Set a value of the instance's key-value store (see :func:`read_kv`)."""
    instance.run_storage.set_cursor_values({key: value})


__all__ = [
    "IMPLICIT_ASSET_JOB_NAME",
    "free_concurrency_slots",
    "get_latest_completed_cron_tick",
    "is_valid_cron_string",
    "last_passed_check_timestamp",
    "read_kv",
    "write_kv",
]
# The instance-wiring symbols (storage classes, InstanceRef) live in compat.dagster_instance: they
# import Dagster's storage layer, which loading a code location never needs.
