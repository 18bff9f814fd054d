"""Plan → Definitions: assets, jobs, schedules and resources (pure apart from the plan)."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.execution.build_resources import wrap_resources_for_execution

from dativo_dagster.assets import build_job_assets
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.resources import DativoResource, IcebergIOManager
from dativo_dagster.translator import DativoTranslator


def build_schedule(
    job: JobPlan,
    assets: dg.AssetsDefinition,
    translator: DativoTranslator,
    resources: Mapping[str, Any] | None = None,
) -> tuple[dg.UnresolvedAssetJobDefinition | dg.JobDefinition, dg.ScheduleDefinition | None]:
    """The asset job of a tenant job, and its schedule when runner.yaml gives one.

    With ``resources`` the job comes back already resolved against its own multi_asset (see
    :func:`resolve_alone`); without, it is the unresolved job Dagster resolves at load.
    """
    asset_job: dg.UnresolvedAssetJobDefinition | dg.JobDefinition = dg.define_asset_job(
        name=translator.job_name(job),
        selection=dg.AssetSelection.assets(*assets.keys),
        tags=translator.run_tags(job),
        description=f"Ingest {job.label}",
    )
    if resources is not None:
        asset_job = resolve_alone(asset_job, assets, resources)
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
    resources = {
        "dativo": DativoResource(project_dir=str(plan.project_dir)),
        "io_manager": IcebergIOManager(project_dir=str(plan.project_dir)),
    }
    wrapped = wrap_resources_for_execution(resources)
    assets = []
    jobs = []
    schedules = []
    with _gc_paused():
        for job in plan.jobs:
            job_assets = build_job_assets(job, translator)
            assets.append(job_assets)
            asset_job, schedule = build_schedule(job, job_assets, translator, wrapped)
            jobs.append(asset_job)
            if schedule is not None:
                schedules.append(schedule)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, resources=resources)


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


def resolve_alone(
    unresolved: dg.UnresolvedAssetJobDefinition, assets: dg.AssetsDefinition, resources: Mapping[str, Any]
) -> dg.JobDefinition:
    """Resolve a tenant job's asset job against a graph holding only its own multi_asset.

    Dagster resolves each ``define_asset_job`` against the whole code location: its selection and
    subsetting walk every AssetsDefinition and every check, so N jobs cost O(N²) at load (about
    half the load time at 1,000 jobs / 10,000 assets). A tenant job's multi_asset has no
    dependencies outside itself, so the job resolved against its own graph is the same job (same
    name, ops, tags, resources, executor; the repository snapshot is byte-identical), found in
    linear time. ``resources`` are the wrapped top-level resources Dagster would bind at load.
    Uses Dagster internals (``AssetGraph``), fine with the pinned dagster==1.13.27.
    """
    return unresolved.resolve(asset_graph=AssetGraph.from_assets([assets]), resource_defs=resources)
