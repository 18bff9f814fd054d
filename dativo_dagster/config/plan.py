"""The validated, fully cross-referenced plan that definitions and the CLI are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dativo_dagster.config.models import (
    ChecksConfig,
    FileSensor,
    ObjectConfig,
    RetryConfig,
    RunnerConfig,
    Schedule,
    SchemaContract,
    SourceRecipe,
    Strategy,
    TargetRecipe,
    TenantJob,
    WriteMode,
)
from dativo_dagster.config.secrets import SecretGrants


@dataclass(frozen=True)
class ObjectPlan:
    """Everything needed to extract and write one object."""

    tenant: str
    job: str
    source_name: str
    config: ObjectConfig
    contract: SchemaContract | None
    options: dict[str, Any]
    primary_key: tuple[str, ...]
    namespace: str
    table: str
    max_rejected_rate: float
    allow_empty_refresh: bool = False
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    # "<job file>: objects[N]": where run-time CFG001 messages point (e.g. a cursor column's type
    # discovered at the source)
    config_where: str = ""

    @property
    def name(self) -> str:
        """Object name."""
        return self.config.name

    @property
    def strategy(self) -> Strategy:
        """Incremental strategy."""
        return self.config.incremental.strategy

    @property
    def cursor_field(self) -> str | None:
        """Cursor column, if the strategy uses one."""
        return self.config.incremental.cursor_field

    @property
    def write_mode(self) -> WriteMode:
        """Effective write mode."""
        return self.config.effective_write_mode

    @property
    def table_identifier(self) -> tuple[str, str]:
        """Iceberg (namespace, table)."""
        return (self.namespace, self.table)

    @property
    def quarantine_table(self) -> str:
        """Name of the table that receives rejected rows."""
        return f"{self.table}__quarantine"

    @property
    def label(self) -> str:
        """tenant/job/object, for messages."""
        return f"{self.tenant}/{self.job}/{self.name}"

    @property
    def owner(self) -> str:
        """The one owner of the object's tables (recorded on them, checked at every commit)."""
        return self.label


@dataclass(frozen=True)
class JobPlan:
    """One tenant job, resolved against its recipes and contracts."""

    job: TenantJob
    source: SourceRecipe
    target: TargetRecipe
    objects: tuple[ObjectPlan, ...]
    retry: RetryConfig
    schedule: Schedule | None
    tags: dict[str, str]
    job_file: Path
    project_dir: Path
    connection: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    data_roots: tuple[Path, ...] = ()
    code_location: str = "dativo"
    file_sensor: FileSensor = field(default_factory=FileSensor)
    # Objects whose source watches files (a glob, a folder): what a new-file sensor lists.
    watched_objects: tuple[str, ...] = ()
    # The file and AWS secret references the tenant's own settings may use (its runner.yaml entry).
    secrets: SecretGrants = field(default_factory=SecretGrants)

    @property
    def tenant(self) -> str:
        """Tenant id."""
        return self.job.tenant

    @property
    def name(self) -> str:
        """Job name."""
        return self.job.name

    @property
    def label(self) -> str:
        """tenant/job."""
        return f"{self.job.tenant}/{self.job.name}"

    def object(self, name: str) -> ObjectPlan:
        """Return the object called ``name``."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(name)


@dataclass(frozen=True)
class BrokenJob:
    """A tenant job whose configuration is invalid: reported, never loaded, never run.

    One tenant's broken file must not stop the others, so the loader sets it aside with its
    CFG001 problems (one line each) and goes on.
    """

    tenant: str
    job: str
    problems: tuple[str, ...]
    job_file: Path | None = None
    code_location: str = "dativo"

    @property
    def label(self) -> str:
        """tenant/job."""
        return f"{self.tenant}/{self.job}"


@dataclass(frozen=True)
class Plan:
    """All enabled jobs of a project: those that load, and those set aside as broken."""

    project_dir: Path
    runner: RunnerConfig
    jobs: tuple[JobPlan, ...]
    broken: tuple[BrokenJob, ...] = ()

    @property
    def problems(self) -> list[str]:
        """Every CFG001 problem of the broken jobs, one line each."""
        return [line for job in self.broken for line in job.problems]

    def job(self, label: str) -> JobPlan:
        """Find a job by ``tenant/job``."""
        for job in self.jobs:
            if job.label == label:
                return job
        raise KeyError(label)

    def broken_job(self, label: str) -> BrokenJob | None:
        """The broken job called ``tenant/job``, if it is one."""
        return next((job for job in self.broken if job.label == label), None)

    def for_location(self, location: str) -> Plan:
        """The part of the plan one code location loads."""
        return Plan(
            project_dir=self.project_dir,
            runner=self.runner,
            jobs=tuple(job for job in self.jobs if job.code_location == location),
            broken=tuple(job for job in self.broken if job.code_location == location),
        )
