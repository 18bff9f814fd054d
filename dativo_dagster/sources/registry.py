"""Source types by name, and the one place a Source instance is built from a job plan."""

from __future__ import annotations

import importlib

from pydantic import ValidationError

from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import SecretResolver, is_sensitive_key, register_secrets, secret_parts
from dativo_dagster.errors import ConfigError
from dativo_dagster.paths import confine
from dativo_dagster.sources.base import Source

# Imported lazily so a code location with only CSV jobs never imports database drivers.
_SOURCE_MODULES: dict[str, str] = {
    "csv": "dativo_dagster.sources.csv:CsvSource",
    "postgres": "dativo_dagster.sources.postgres:PostgresSource",
    "mysql": "dativo_dagster.sources.mysql:MySQLSource",
}


def available_types() -> list[str]:
    """Source types this build can run."""
    return sorted(_SOURCE_MODULES)


def source_class(source_type: str) -> type[Source]:
    """The Source subclass for ``source_type``.

    Raises:
        ConfigError: CFG001 when the type has no implementation yet.
    """
    target = _SOURCE_MODULES.get(source_type)
    if target is None:
        raise ConfigError(
            f"source type '{source_type}' is not available in this build (available: {', '.join(available_types())})"
        )
    module_name, class_name = target.split(":")
    cls: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return cls


def build_source(job: JobPlan, resolver: SecretResolver) -> Source:
    """Resolve ``${VAR}`` references and build a fresh Source for one run of ``job``.

    Credential values are registered for log redaction before anything can log them.
    """
    cls = source_class(job.source.type)
    where = f"{job.job_file.relative_to(job.project_dir)}: source"
    credentials = {
        key: str(value) for key, value in resolver.resolve(dict(job.credentials), where=f"{where}.credentials").items()
    }
    register_secrets(credentials.values())
    connection = resolver.resolve(dict(job.connection), where=f"{where}.connection")
    register_secrets(
        part for key, value in connection.items() for part in secret_parts(value, sensitive=is_sensitive_key(key))
    )
    for name in cls.local_path_fields:
        value = connection.get(name)
        if isinstance(value, str):
            confine(value, job.data_roots, base=job.project_dir, what=f"{where}.connection.{name}")
    try:
        model = cls.connection_model.model_validate(connection)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}.connection.{path}: {first['msg']}") from None
    return cls.from_plan(model, credentials, job)
