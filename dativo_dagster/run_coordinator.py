"""A queued run coordinator that puts the tenant's tags on every run, however it was launched.

Runs from a tenant job's schedule sensor carry the job's tags; runs from the UI's "Materialize"
button, a backfill or ``dagster asset materialize`` carry no dativo tag at all, so dagster.yaml's
per-tenant run limit (``tag_concurrency_limits`` on ``dativo/tenant``) would not hold them. Before a
run is queued, this coordinator reads the steps it will execute (each tenant job's op carries its
run tags as op tags, see :meth:`DativoTranslator.run_tags`) and sets ``dativo/tenant`` and
``dativo/job`` from them, overwriting what the run was launched with (a tag typed in the UI must
not move a run under another tenant's limit), and adds every other tag the job's runner.yaml entry
gives that the run lacks. A run spanning several tenants (a hand-made selection in the UI) is tagged
``dativo/tenant: multiple``: it then queues under one shared limit instead of none.

dagster.yaml names it as the instance's run coordinator; it takes the same configuration as
Dagster's ``QueuedRunCoordinator`` (the ``concurrency > runs`` block applies unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from dativo_dagster.compat.dagster_instance import coordinator_instance
from dativo_dagster.translator import TAG_JOB, TAG_TENANT

MULTIPLE = "multiple"
"""The ``dativo/tenant`` (or ``dativo/job``) value of a run holding several tenants (or jobs)."""


def tenant_run_tags(step_tags: Iterable[Mapping[str, str] | None], run_tags: Mapping[str, str]) -> dict[str, str]:
    """The tags to set on a run whose steps carry ``step_tags``.

    ``dativo/tenant`` and ``dativo/job`` are derived from the steps alone and overwrite whatever
    the run carries (a UI user's ``dativo/tenant: globex`` on a run of acme's assets would put it
    under globex's run limit and route its alerts to globex); the job's other runner.yaml tags are
    added where the run has none of its own.

    Args:
        step_tags: The op tags of every step the run executes.
        run_tags: The tags the run already carries.

    Returns:
        The tags to set: ``dativo/tenant`` and ``dativo/job`` (or ``multiple``) when they differ
        from the run's, plus the job's runner.yaml tags the run lacks when it holds a single
        tenant job. Nothing for a run of no tenant job.
    """
    tenants: set[str] = set()
    jobs: set[tuple[str, str]] = set()
    job_tags: dict[tuple[str, str], dict[str, str]] = {}
    for tags in step_tags:
        if not tags or TAG_TENANT not in tags:
            continue
        tenant = tags[TAG_TENANT]
        tenants.add(tenant)
        if TAG_JOB in tags:
            job = (tenant, tags[TAG_JOB])
            jobs.add(job)
            job_tags[job] = {key: value for key, value in tags.items() if not key.startswith("dagster/")}
    if not tenants:
        return {}
    if len(jobs) == 1 and len(tenants) == 1:
        (tenant, name), extra = next(iter(jobs)), job_tags[next(iter(jobs))]
    else:
        tenant, name, extra = (next(iter(tenants)) if len(tenants) == 1 else MULTIPLE), MULTIPLE, {}
    owned = {TAG_TENANT: tenant, TAG_JOB: name}
    added = {key: value for key, value in extra.items() if key not in run_tags and key not in owned}
    added.update({key: value for key, value in owned.items() if run_tags.get(key) != value})
    return added


class TenantRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's queued run coordinator, setting each run's tenant tags before it is queued."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        """Tag the run with its tenant (and job), then queue it as Dagster does."""
        run = context.dagster_run
        if run.execution_plan_snapshot_id is not None:
            instance = coordinator_instance(self)
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            added = tenant_run_tags((step.tags for step in plan.steps), run.tags)
            if added:
                instance.add_run_tags(run.run_id, added)
                updated = instance.get_run_by_id(run.run_id)
                if updated is not None:
                    context = dg.SubmitRunContext(updated, context.workspace)
        return super().submit_run(context)
