"""Plan → Definitions: assets, schedules and resources (pure apart from the plan)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from dativo_dagster.assets import build_job_assets
from dativo_dagster.compat.dagster import IMPLICIT_ASSET_JOB_NAME
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.resources import DativoResource, IcebergIOManager
from dativo_dagster.translator import DativoTranslator


def build_schedule(job: JobPlan, translator: DativoTranslator) -> dg.ScheduleDefinition | None:
    """The schedule of a tenant job, when runner.yaml gives one.

    Each tick requests a run of the job's assets (their checks come with them) in the code
    location's asset job, the run Dagster's "Materialize" button launches for those assets; its
    tags put it under the tenant's run limit (dagster.yaml).

    There is no ``define_asset_job`` per tenant job because Dagster resolves and snapshots every job
    each time the code location loads (code server, daemon, every run worker): with 1,000 tenant
    jobs that was a third of a 10,000-asset load, while a run request's asset selection costs
    nothing until its tick.
    """
    if job.schedule is None:
        return None
    asset_keys = [translator.asset_key(obj) for obj in job.objects]
    run_tags = translator.run_tags(job)

    def request_tenant_job_run(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(asset_selection=asset_keys, tags=run_tags)

    return dg.ScheduleDefinition(
        name=translator.schedule_name(job),
        job_name=IMPLICIT_ASSET_JOB_NAME,
        cron_schedule=job.schedule.cron_expression,
        execution_timezone=job.schedule.timezone,
        execution_fn=request_tenant_job_run,
        default_status=dg.DefaultScheduleStatus.RUNNING if job.schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
        description=f"Ingest {job.label}",
    )


def build_definitions(plan: Plan, translator: DativoTranslator | None = None) -> dg.Definitions:
    """Everything the code location exposes for ``plan``."""
    translator = translator or DativoTranslator()
    resources = {
        "dativo": DativoResource(project_dir=str(plan.project_dir)),
        "io_manager": IcebergIOManager(project_dir=str(plan.project_dir)),
    }
    assets = []
    schedules = []
    with _gc_paused():
        for job in plan.jobs:
            assets.append(build_job_assets(job, translator))
            schedule = build_schedule(job, translator)
            if schedule is not None:
                schedules.append(schedule)
    return dg.Definitions(assets=assets, schedules=schedules, resources=resources)


def code_location_definitions(plan: Plan | None = None) -> dg.Definitions:
    """The code location's definitions: ``plan`` (default: the project's) built, then frozen.

    The definitions live as long as the code server (or run worker) that loads them. Moving them
    out of the cyclic collector's reach (``gc.freeze``) spares Dagster's snapshot of thousands of
    assets the repeated full collections of a heap that only grows.
    """
    defs = build_definitions(plan if plan is not None else load_plan())
    gc.freeze()
    return defs


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building: the build only allocates long-lived objects, and with
    10,000 assets the repeated full collections of the growing heap cost seconds of the load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
