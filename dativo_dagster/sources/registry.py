"""Source types by name, and the one place a Source instance is built from a job plan.

Sources register themselves: a subclass of :class:`~dativo_dagster.sources.base.Source` that
declares ``type = "..."`` is registered when its module is imported. A recipe's ``type`` is looked
up here, importing on first use, so a code location with only CSV jobs never imports database
drivers or API clients:

1. ``dativo_dagster.sources.<type>`` (one module per source type, named after it);
2. the ``dativo.sources`` entry-point group, where another package can ship a source.

There is no list to keep in step: the type a recipe names is valid exactly when a module
registers it.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import threading
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError

from dativo_dagster.config.models import is_safe_identifier
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.config.secrets import (
    SecretGrants,
    SecretResolver,
    is_sensitive_key,
    register_secrets,
    secret_parts,
)
from dativo_dagster.errors import ConfigError
from dativo_dagster.paths import confine, confine_setting_paths

if TYPE_CHECKING:
    from dativo_dagster.sources.base import Source
    from dativo_dagster.sources.cursors import CursorCodec

ENTRY_POINT_GROUP = "dativo.sources"
log = structlog.get_logger("dativo.sources")

_TYPES: dict[str, type[Source]] = {}
_LOCK = threading.RLock()


def register(cls: type[Source]) -> type[Source]:
    """Record ``cls`` under its ``type`` (called for every Source subclass that declares one).

    Raises:
        ValueError: another class already registered the same type (two modules claim it).
    """
    with _LOCK:
        existing = _TYPES.get(cls.type)
        if existing is not None and f"{existing.__module__}.{existing.__qualname__}" != (
            f"{cls.__module__}.{cls.__qualname__}"
        ):
            raise ValueError(
                f"source type '{cls.type}' is registered twice: {existing.__module__}.{existing.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )
        _TYPES[cls.type] = cls
    return cls


def _load(source_type: str) -> None:
    """Import whatever may register ``source_type``: its module by name, then entry points."""
    if not is_safe_identifier(source_type):
        return
    # A source module named after the type; the external engines (singer, airbyte, meltano) live
    # in dativo_dagster.engines.
    for package in (__package__, "dativo_dagster.engines"):
        module = f"{package}.{source_type}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
        if source_type in _TYPES:
            return
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=source_type):
        entry.load()


def available_types() -> list[str]:
    """Every source type this installation can run (imports every source module: for messages)."""
    package = importlib.import_module(__package__ or "dativo_dagster.sources")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        entry.load()
    return sorted(_TYPES)


def source_class(source_type: str) -> type[Source]:
    """The Source subclass for ``source_type``.

    Raises:
        ConfigError: CFG001 when no module registers the type.
    """
    with _LOCK:
        if source_type not in _TYPES:
            _load(source_type)
        found = _TYPES.get(source_type)
    if found is None:
        raise ConfigError(
            f"source type '{source_type}' is not available in this build (available: {', '.join(available_types())})"
        )
    return found


def cursor_codec_for(job: JobPlan, obj: ObjectPlan) -> CursorCodec:
    """The cursor codec of ``obj``'s source, from the source class alone.

    Nothing is resolved or connected: ``dativo reset`` parses ``--to`` with it, and an operator
    with access to the catalog but not to the source's credentials can still reset a cursor.

    Raises:
        ConfigError: CFG001 when no module registers the job's source type.
    """
    return source_class(job.source.type).cursor_codec(obj)


def build_source(job: JobPlan, resolver: SecretResolver, runtime: Any = None, *, raw_pages: bool = False) -> Source:
    """Resolve ``${VAR}`` references and build a fresh Source for one run of ``job``.

    Credential values are registered for log redaction before anything can log them.

    Args:
        job: The job.
        resolver: Resolves ``${VAR}`` references (and remembers the values for redaction).
        runtime: What sources of the run share (see :meth:`Source.from_plan`).
        raw_pages: A run of the job (not a scratch run, a replay, a check): an API source keeps
            its exchanges in the job's raw page archive when the job asks for one, and the
            archive's expired runs are removed now.
    """
    cls = source_class(job.source.type)
    where = f"{job.job_file.relative_to(job.project_dir)}: source"
    tenant_job = getattr(job, "job", None)
    redirects = job.source.credential_redirects(tenant_job.source) if tenant_job is not None else []
    if redirects:
        # Load refuses these; checked again because the recipe's credentials are resolved next
        # with the platform's (unrestricted) grants.
        setting, held = redirects[0]
        raise ConfigError(
            f"{where}.{setting}: recipe '{job.source.name}' supplies credentials ({held}) and "
            "this setting decides where they are sent; a tenant job may not set it",
            hint="list it in the recipe's tenant_settings, or give the job its own credentials",
            field=f"source.{setting}",
        )
    credentials = {
        key: str(value)
        for key, value in _resolve_settings(job, resolver, "credentials", dict(job.credentials), where).items()
    }
    # A key file's path is not a secret (its content is, registered by the source that reads it).
    register_secrets(value for key, value in credentials.items() if not key.endswith("_file"))
    connection = _resolve_settings(job, resolver, "connection", dict(job.connection), where)
    register_secrets(
        part for key, value in connection.items() for part in secret_parts(value, sensitive=is_sensitive_key(key))
    )
    for name in cls.local_path_fields:
        value = connection.get(name)
        if isinstance(value, str):
            confine(value, job.data_roots, base=job.project_dir, what=f"{where}.connection.{name}")
    recipe_paths = getattr(job.source, "path_settings", None) or []
    for name in recipe_paths:
        if name in connection:
            confine_setting_paths(
                connection[name], job.data_roots, base=job.project_dir, what=f"{where}.connection.{name}"
            )
    for name, value in credentials.items():
        if name.endswith("_file") and value:
            confine(value, job.data_roots, base=job.project_dir, what=f"{where}.credentials.{name}")
    try:
        model = cls.connection_model.model_validate(connection)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.connection.{path}: {first['msg']}") from None
    source = cls.from_plan(model, credentials, job, runtime=runtime)
    # Read defensively: callers building a source from a partial plan (tests, tools) may have no job file.
    if raw_pages:
        if getattr(getattr(job, "job", None), "raw_retention_days", 0) > 0:
            _keep_raw_pages(source, job, resolver)
        else:
            _discard_raw_pages(job, resolver)
    return source


def _resolve_settings(
    job: JobPlan, resolver: SecretResolver, section: str, settings: dict[str, Any], where: str
) -> dict[str, Any]:
    """Resolve the job's ``credentials`` or ``connection``: the values the tenant's job file set are
    held to the tenant's secret grants again (links followed now), the recipe's are the platform's."""
    tenant_job = getattr(job, "job", None)
    # A partial plan (tests, tools) has no job file: every value counts as the tenant's.
    tenant_keys = set(getattr(tenant_job.source, section)) if tenant_job is not None else set(settings)
    grants = getattr(job, "secrets", None) or SecretGrants()
    return {
        key: resolver.resolve(value, where=f"{where}.{section}.{key}", grants=grants if key in tenant_keys else None)
        for key, value in settings.items()
    }


def _discard_raw_pages(job: JobPlan, resolver: SecretResolver) -> None:
    """A job that keeps no raw pages (any more) keeps none: pages left from when it did are removed."""
    import shutil

    from dativo_dagster.raw_pages import job_dir, raw_root

    if getattr(job, "job", None) is None:
        return
    directory = job_dir(raw_root(job, resolver), job.tenant, job.name)
    if directory.is_dir():
        shutil.rmtree(directory)
        log.info("raw_pages_discarded", job=f"{job.tenant}/{job.name}", reason="raw_retention_days is 0")


def _keep_raw_pages(source: Source, job: JobPlan, resolver: SecretResolver) -> None:
    """Give an API source the job's raw page archive (CFG001 for a source that has no pages)."""
    from dativo_dagster.api.source import ApiSource
    from dativo_dagster.raw_pages import RawArchive

    if not isinstance(source, ApiSource):
        raise ConfigError(
            f"{job.job_file.relative_to(job.project_dir)}: raw_retention_days: source type '{job.source.type}' "
            "is not an API source; only API responses are kept as raw pages",
            hint="remove raw_retention_days from the job",
        )
    source.raw_archive = RawArchive.for_job(job, resolver)
