"""Scheduled table upkeep: a ``<tenant>__maintain`` job and its schedule per runner.yaml ``maintenance`` entry.

The job holds one op that runs :func:`~dativo_dagster.maintain.maintain_job` on every table of the
tenant's jobs in this code location (objects' tables and their quarantine tables). It needs the
targets' catalogs only; nothing is resolved at definitions load. A table that fails does not stop
the others; the op fails at the end, naming them, so the run shows red and alerts fire.
"""

from collections.abc import Sequence

import dagster as dg

from dativo_dagster.config.models import TenantMaintenance
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.errors import DativoError, unexpected
from dativo_dagster.resources import DativoResource
from dativo_dagster.translator import TAG_TENANT


def maintenance_job_name(tenant: str) -> str:
    """The upkeep job of a tenant (unique per code location)."""
    return f"{tenant}__maintain"


def build_maintenance_job(tenant: str, jobs: Sequence[JobPlan], settings: TenantMaintenance) -> dg.JobDefinition:
    """The job maintaining every table of ``jobs`` (all of one tenant) with ``settings``."""
    from dativo_dagster.maintain import UpkeepSettings, job_failure, maintain_job

    labels = [job.label for job in jobs]
    name = maintenance_job_name(tenant)

    @dg.op(
        name=f"{tenant}__maintain_tables",
        tags={TAG_TENANT: tenant},
        description=f"Compact, expire snapshots and remove orphan files on the tables of {', '.join(labels)}",
    )
    def maintain_tables(context: dg.OpExecutionContext, dativo: DativoResource) -> dg.Output[None]:
        upkeep = UpkeepSettings(retain_days=settings.retain_days, orphan_age_hours=settings.orphan_age_hours)
        records = []
        failed = []
        for job in jobs:
            try:
                reports = maintain_job(job, dativo.writer_for(job.target), upkeep)
            except Exception as exc:
                # One job's unreachable catalog or missing secret must not skip the tenant's other
                # jobs: it is reported as a failure of that job and the op fails after all ran.
                reports = [job_failure(job, exc)]
                if not isinstance(exc, DativoError):
                    context.log.error(str(unexpected(exc).context["traceback"]))
            for report in reports:
                records.append(report.to_json())
                if report.error:
                    failed.append(report)
                    context.log.error(f"{report.table}: {report.error}")
                else:
                    for line in report.lines():
                        context.log.info(line)
        metadata = {"dativo/tables": dg.MetadataValue.json(records)}
        if failed:
            raise dg.Failure(
                description=f"upkeep failed on {len(failed)} of {len(records)} table(s): "
                + "; ".join(f"{r.table}: {r.error}" for r in failed),
                metadata=metadata,
            )
        return dg.Output(None, metadata=metadata)

    @dg.job(name=name, tags={TAG_TENANT: tenant}, description=f"Table upkeep of tenant {tenant}")
    def maintenance_job() -> None:
        maintain_tables()

    return maintenance_job


def build_maintenance(
    maintenance: dict[str, TenantMaintenance], jobs: Sequence[JobPlan]
) -> tuple[list[dg.JobDefinition], list[dg.ScheduleDefinition]]:
    """Upkeep jobs and schedules of the tenants with a runner.yaml ``maintenance`` entry and at
    least one job in ``jobs`` (this code location's)."""
    built_jobs = []
    schedules = []
    for tenant, settings in sorted(maintenance.items()):
        tenant_jobs = [job for job in jobs if job.tenant == tenant]
        if not tenant_jobs:
            continue
        job = build_maintenance_job(tenant, tenant_jobs, settings)
        built_jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{maintenance_job_name(tenant)}__schedule",
                job=job,
                cron_schedule=settings.schedule,
                execution_timezone=settings.timezone,
                default_status=dg.DefaultScheduleStatus.RUNNING
                if settings.enabled
                else dg.DefaultScheduleStatus.STOPPED,
                description=f"Table upkeep of tenant {tenant} on cron `{settings.schedule}` ({settings.timezone})",
            )
        )
    return built_jobs, schedules
