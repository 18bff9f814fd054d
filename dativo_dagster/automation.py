"""runner.yaml schedules as Dagster declarative automation: a cron condition on every asset.

Why not schedules: Dagster names a schedule as an asset's automation (and shows a schedule's target
assets) only through a job that contains the asset, and every such job is resolved against the
whole asset graph at each code-location load: one job per tenant job took 26 s more at 10,000
assets. A schedule on Dagster's implicit asset job costs nothing but leaves every asset page at
"No automations found". An automation condition is part of the asset itself, so each asset page
shows its cron and the sensor that evaluates it, at about the cost of its metadata.

Why one automation sensor per tenant: the sensor groups everything it requests in one tick into
one run. One sensor for a whole code location would put every tenant whose cron fired at the same
minute into one run, outside the per-tenant run limit. Per tenant, each run holds one tenant's
assets and carries ``dativo/tenant``; the run coordinator (:mod:`dativo_dagster.run_coordinator`)
adds ``dativo/job`` when the run holds one job. The sensor's cursor (Dagster's automation cursor)
is kept in the instance, shown in the UI, and survives daemon restarts.

A job whose schedule says ``enabled: false`` still gets its condition, under a second sensor of
its tenant that starts stopped: an operator turns it on in the UI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import dagster as dg

from dativo_dagster.config.models import Schedule
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.translator import TAG_TENANT, DativoTranslator

# One condition object per (cron, timezone): 10,000 assets on one hourly cron share it.
_CONDITIONS: dict[tuple[str, str], dg.AutomationCondition] = {}


def cron_condition(schedule: Schedule) -> dg.AutomationCondition:
    """``AutomationCondition.on_cron`` for a runner.yaml schedule (shared per cron and timezone).

    For an asset without upstream assets (every dativo asset) it requests one materialization
    after each cron tick, unless one is already in progress; a failed run is not requested again
    before the next tick (its retries are the run's own RetryPolicy).
    """
    key = (schedule.cron_expression, schedule.timezone)
    condition = _CONDITIONS.get(key)
    if condition is None:
        condition = _CONDITIONS[key] = dg.AutomationCondition.on_cron(*key)
    return condition


def automation_condition(job: JobPlan) -> dg.AutomationCondition | None:
    """The condition every asset of ``job`` carries, or None when runner.yaml gives no schedule."""
    return cron_condition(job.schedule) if job.schedule is not None else None


def build_automation_sensors(
    jobs: Sequence[JobPlan], translator: DativoTranslator
) -> list[dg.AutomationConditionSensorDefinition]:
    """One automation sensor per tenant with scheduled jobs (and one, stopped, for paused jobs).

    Args:
        jobs: The tenant jobs that load in this code location.
        translator: Decides asset keys and sensor names.
    """
    running: dict[str, list[dg.AssetKey]] = defaultdict(list)
    paused: dict[str, list[dg.AssetKey]] = defaultdict(list)
    crons: dict[str, set[str]] = defaultdict(set)
    for job in jobs:
        if job.schedule is None:
            continue
        by_tenant = running if job.schedule.enabled else paused
        by_tenant[job.tenant].extend(translator.asset_key(obj) for obj in job.objects)
        if job.schedule.enabled:
            crons[job.tenant].add(f"{job.name}: {job.schedule.cron_expression} ({job.schedule.timezone})")
    sensors = []
    for tenant, keys in running.items():
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                name=translator.automation_sensor_name(tenant),
                target=dg.AssetSelection.assets(*keys),
                run_tags={TAG_TENANT: tenant},
                default_status=dg.DefaultSensorStatus.RUNNING,
                emit_backfills=False,
                description=f"Runs tenant {tenant}'s jobs on their runner.yaml schedules: "
                + "; ".join(sorted(crons[tenant])),
            )
        )
    for tenant, keys in paused.items():
        sensors.append(
            dg.AutomationConditionSensorDefinition(
                name=translator.paused_automation_sensor_name(tenant),
                target=dg.AssetSelection.assets(*keys),
                run_tags={TAG_TENANT: tenant},
                default_status=dg.DefaultSensorStatus.STOPPED,
                emit_backfills=False,
                description=f"Tenant {tenant}'s jobs whose runner.yaml schedule has enabled: false; "
                "start this sensor to run them on their schedules",
            )
        )
    return sensors
