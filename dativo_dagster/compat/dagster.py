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


__all__ = [
    "IMPLICIT_ASSET_JOB_NAME",
    "free_concurrency_slots",
    "get_latest_completed_cron_tick",
    "is_valid_cron_string",
]
# The instance-wiring symbols (storage classes, InstanceRef) live in compat.dagster_instance: they
# import Dagster's storage layer, which loading a code location never needs.
