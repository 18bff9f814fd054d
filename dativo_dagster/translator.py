"""The one place that decides asset keys, groups, tags, kinds and descriptions."""

from __future__ import annotations

import dagster as dg

from dativo_dagster.config.plan import BrokenJob, JobPlan, ObjectPlan

TAG_TENANT = "dativo/tenant"
TAG_JOB = "dativo/job"
TAG_SOURCE = "dativo/source"
TAG_CONFIG = "dativo/config"
"""Set to ``broken`` on the placeholder asset of a tenant job whose configuration is invalid."""

BROKEN_KEY_PART = "config_error"


class DativoTranslator:
    """Maps plan objects to Dagster identities. Subclass to change naming for a deployment."""

    def asset_key(self, obj: ObjectPlan) -> dg.AssetKey:
        """``[tenant, source, object]``."""
        return dg.AssetKey([obj.tenant, obj.source_name, obj.name])

    def group_name(self, obj: ObjectPlan) -> str:
        """One group per tenant."""
        return obj.tenant

    def op_name(self, job: JobPlan) -> str:
        """Name of the multi_asset op for a tenant job (unique per code location)."""
        return f"{job.tenant}__{job.name}"

    def schedule_name(self, job: JobPlan) -> str:
        """Name of a tenant job's schedule: the cron sensor that runs it (unique per code location)."""
        return f"{job.tenant}__{job.name}__schedule"

    def file_sensor_name(self, job: JobPlan) -> str:
        """Name of a tenant job's new-file sensor (unique per code location)."""
        return f"{job.tenant}__{job.name}__new_files"

    def pool(self, job: JobPlan) -> str:
        """Concurrency pool per tenant: one tenant's load never starves another's."""
        return f"dativo-tenant-{job.tenant}"

    def tags(self, obj: ObjectPlan) -> dict[str, str]:
        """Asset tags (tag values must be short safe strings: ids are)."""
        return {TAG_TENANT: obj.tenant, TAG_JOB: obj.job, TAG_SOURCE: obj.source_name}

    def run_tags(self, job: JobPlan) -> dict[str, str]:
        """Tags every run of the job carries (dativo's own last: runner.yaml tags never override them)."""
        return {**job.tags, TAG_TENANT: job.tenant, TAG_JOB: job.name}

    def kinds(self, job: JobPlan) -> set[str]:
        """Kinds shown in the UI."""
        return {job.source.type, "iceberg"}

    def description(self, obj: ObjectPlan) -> str:
        """Human description of the asset."""
        text = obj.config.description or (obj.contract.description if obj.contract else None) or ""
        how = obj.strategy.value + (f" on {obj.cursor_field}" if obj.cursor_field else "")
        return f"{text}\n\n{obj.label} → Iceberg {obj.namespace}.{obj.table} ({how}, {obj.write_mode.value})".strip()

    # ----------------------------------------------------------------- broken tenant jobs

    def broken_asset_key(self, job: BrokenJob) -> dg.AssetKey:
        """Key of the placeholder asset that shows a broken tenant job: ``[tenant, "config_error", job]``."""
        return dg.AssetKey([job.tenant, BROKEN_KEY_PART, job.job])

    def broken_op_name(self, job: BrokenJob) -> str:
        """Op of the placeholder (job names hold no double underscore, so no real op is called this)."""
        return f"{job.tenant}__{job.job}__{BROKEN_KEY_PART}"

    def broken_group_name(self, job: BrokenJob) -> str:
        """The tenant's group, next to its working jobs."""
        return job.tenant

    def broken_tags(self, job: BrokenJob) -> dict[str, str]:
        """Tags of the placeholder: the tenant and job, and ``dativo/config: broken`` to filter on."""
        return {TAG_TENANT: job.tenant, TAG_JOB: job.job, TAG_CONFIG: "broken"}

    def broken_kinds(self, job: BrokenJob) -> set[str]:
        """Kind shown in the UI."""
        return {"config"}

    def broken_description(self, job: BrokenJob) -> str:
        """What is wrong, one CFG001 line per problem, and what to do about it."""
        lines = "\n".join(f"- CFG001 {line}" for line in job.problems)
        return (
            f"Tenant job {job.label} is not loaded: its configuration is invalid.\n\n{lines}\n\n"
            "Fix the file(s) named above; the job's assets and schedule appear at the next code location "
            "load (`dativo validate` lists the same problems)."
        )
