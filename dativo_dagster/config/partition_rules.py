"""Load-time rules for partitioned tenant jobs (pure: config in, CFG001 problem lines out)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dativo_dagster.config.models import ColumnType, Strategy, TenantJob
from dativo_dagster.config.plan import ObjectPlan

if TYPE_CHECKING:
    from dativo_dagster.sources.base import Source

TIME_CURSOR_STRATEGIES = frozenset({Strategy.UPDATED, Strategy.CREATED})
"""Strategies whose cursor is a point in time a partition window can bound."""

TIME_CURSOR_TYPES = frozenset({ColumnType.TIMESTAMP, ColumnType.TIMESTAMPTZ, ColumnType.DATE})
"""Contract types of a cursor column a partition window can bound."""


def partition_problems(
    label: str, job: TenantJob, source_cls: type[Source] | None, objects: list[ObjectPlan]
) -> list[str]:
    """Why ``job``'s ``partitions`` cannot apply (empty when it has none or they fit).

    Every object of a partitioned job is partitioned (a multi_asset has one partitions
    definition), so each needs a time cursor (``updated``/``created`` on a timestamp or date
    column), and the source must be able to read a bounded window of it.

    Args:
        label: The job file, as messages name it.
        job: The tenant job.
        source_cls: Its source class (None when it could not be resolved; reported elsewhere).
        objects: The objects planned so far (their contracts resolved).
    """
    if job.partitions is None:
        return []
    problems = []
    if source_cls is not None and not source_cls.reads_time_windows:
        problems.append(
            f"{label}: partitions: source type '{source_cls.type}' cannot bound a read to a time window, "
            "so its objects cannot be partitioned (remove 'partitions' or use a SQL or CSV source)"
        )
    for index, obj in enumerate(job.objects):
        where = f"{label}: objects[{index}]"
        if obj.incremental.strategy not in TIME_CURSOR_STRATEGIES:
            problems.append(
                f"{where}.incremental.strategy: '{obj.incremental.strategy.value}' has no time cursor; every object "
                "of a partitioned job needs strategy 'updated' or 'created' on a timestamp column (partitions)"
            )
            continue
        plan = next((p for p in objects if p.name == obj.name), None)
        if plan is None or plan.contract is None or obj.incremental.cursor_field is None:
            continue  # no contract: the source checks the column's type when a partition runs (window_cursor_is_date)
        try:
            column = plan.contract.column(obj.incremental.cursor_field)
        except KeyError:
            continue  # reported by the contract checks
        if column.type not in TIME_CURSOR_TYPES:
            problems.append(
                f"{where}.incremental.cursor_field: '{column.name}' is of type '{column.type.value}' in contract "
                f"{plan.contract.name} v{plan.contract.version}; a partitioned object needs a timestamp or date cursor"
            )
    return problems
