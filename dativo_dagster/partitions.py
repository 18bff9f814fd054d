"""Time partitions of a tenant job's multi_asset: the Dagster definitions and a run's window.

Loading builds one partitions definition (and backfill policy) per distinct ``partitions``
configuration, shared by every job that has it: a code location with 1,000 daily-partitioned jobs
starting the same day snapshots one definition, not 1,000. Nothing here imports pyarrow or
pyiceberg (definitions load); the run's window is built at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from dativo_dagster.config.models import Partitions

if TYPE_CHECKING:
    from dativo_dagster.sources.base import TimeWindow

_DEFINITIONS: dict[Partitions, dg.TimeWindowPartitionsDefinition] = {}
_POLICIES: dict[int | None, dg.BackfillPolicy] = {}


def partitions_definition(config: Partitions) -> dg.TimeWindowPartitionsDefinition:
    """The daily or monthly partitions definition of ``config`` (one object per distinct config)."""
    found = _DEFINITIONS.get(config)
    if found is not None:
        return found
    definition: dg.TimeWindowPartitionsDefinition
    if config.granularity == "daily":
        definition = dg.DailyPartitionsDefinition(
            start_date=config.start, timezone=config.timezone, end_offset=config.end_offset
        )
    else:
        definition = dg.MonthlyPartitionsDefinition(
            start_date=config.start, timezone=config.timezone, end_offset=config.end_offset
        )
    _DEFINITIONS[config] = definition
    return definition


def backfill_policy(config: Partitions) -> dg.BackfillPolicy:
    """How a backfill groups partitions into runs; each run reads its range as one window.

    By default the whole range is one run (``BackfillPolicy.single_run``), which is also what
    ``dagster asset materialize --partition-range`` requires; ``max_partitions_per_run`` splits a
    backfill into runs of that many partitions (launched by the daemon, from the UI).
    """
    size = config.max_partitions_per_run
    found = _POLICIES.get(size)
    if found is None:
        policy = dg.BackfillPolicy.single_run() if size is None else dg.BackfillPolicy.multi_run(size)
        found = _POLICIES[size] = policy
    return found


def partition_run_args(config: Partitions | None, text: str, where: str) -> dict[str, object]:
    """``dg.materialize`` arguments for a partition key or a ``START...END`` range given as text.

    Raises:
        ConfigError: CFG001 when the job is not partitioned, a key is not one of its partitions, or
            a range starts after it ends.
    """
    from dativo_dagster.errors import ConfigError

    if config is None:
        raise ConfigError(f"{where}: --partition: the job has no 'partitions'")
    definition = partitions_definition(config)
    keys = text.split("...", 1)
    for key in keys:
        if not definition.has_partition_key(key):
            raise ConfigError(
                f"{where}: --partition: {key!r} is not a {config.granularity} partition key from {config.start} "
                f"(e.g. {definition.get_first_partition_key()})"
            )
    if len(keys) == 1:
        return {"partition_key": keys[0]}
    first, last = (definition.time_window_for_partition_key(key).start for key in keys)
    if first > last:
        raise ConfigError(
            f"{where}: --partition: the range {text!r} starts after it ends",
            hint=f"write the earlier key first: {keys[1]}...{keys[0]}",
        )
    return {"tags": {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}}


def partition_window(context: dg.AssetExecutionContext) -> TimeWindow | None:
    """The window of the run's partition key or key range; None for a run without partitions.

    A run without a partition key (a tenant job's schedule, ``dativo run``, a plain "Materialize")
    is an incremental run as for an unpartitioned job.
    """
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    from dativo_dagster.sources.base import TimeWindow

    window = context.partition_time_window
    return TimeWindow(start=window.start, end=window.end)
