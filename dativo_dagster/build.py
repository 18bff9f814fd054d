"""Plan → Definitions: assets, jobs, schedules and resources (pure apart from the plan)."""

from __future__ import annotations

import dagster as dg

from dativo_dagster.assets import build_job_assets
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.resources import DativoResource, IcebergIOManager
from dativo_dagster.translator import DativoTranslator


def build_schedule(
    job: JobPlan, assets: dg.AssetsDefinition, translator: DativoTranslator
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition | None]:
    """The asset job of a tenant job, and its schedule when runner.yaml gives one."""
    asset_job = dg.define_asset_job(
        name=translator.job_name(job),
        selection=dg.AssetSelection.assets(*assets.keys),
        tags=translator.run_tags(job),
        description=f"Ingest {job.label}",
    )
    if job.schedule is None:
        return asset_job, None
    schedule = dg.ScheduleDefinition(
        name=f"{translator.job_name(job)}__schedule",
        job=asset_job,
        cron_schedule=job.schedule.cron_expression,
        execution_timezone=job.schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if job.schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
        tags=translator.run_tags(job),
    )
    return asset_job, schedule


def build_definitions(plan: Plan, translator: DativoTranslator | None = None) -> dg.Definitions:
    """Everything the code location exposes for ``plan``."""
    translator = translator or DativoTranslator()
    assets = []
    jobs = []
    schedules = []
    for job in plan.jobs:
        job_assets = build_job_assets(job, translator)
        assets.append(job_assets)
        asset_job, schedule = build_schedule(job, job_assets, translator)
        jobs.append(asset_job)
        if schedule is not None:
            schedules.append(schedule)
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        resources={
            "dativo": DativoResource(project_dir=str(plan.project_dir)),
            "io_manager": IcebergIOManager(project_dir=str(plan.project_dir)),
        },
    )
