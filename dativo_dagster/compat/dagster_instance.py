"""Private Dagster symbols of the instance wiring (dagster==1.13.27, pinned exactly in pyproject.toml).

Kept apart from :mod:`dativo_dagster.compat.dagster` because they import Dagster's storage layer
(SQLAlchemy, Alembic): a code location loading its definitions never needs them, only processes
that open an instance (``dativo run``, dagster.yaml's ``storage: custom``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from dagster import DagsterInstance
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData


def coordinator_instance(coordinator: object) -> DagsterInstance:
    """The instance a run coordinator was attached to (Dagster keeps it behind a weak reference)."""
    return coordinator._instance  # type: ignore[attr-defined]


def instance_config_problems(config: Mapping[str, Any]) -> list[str]:
    """What Dagster itself refuses in a ``dagster.yaml`` mapping (empty: valid).

    The mapping is checked against Dagster's instance schema, then every class-backed section
    (``module``/``class``/``config``: run launcher, compute logs, run coordinator, ``storage:
    custom``, ...) against that class's own ``config_type()``, which is what the instance does
    when it builds the class. ``{env: VAR}`` values are accepted without reading the variable.
    Nothing is instantiated, so no launcher or client is built.

    Args:
        config: A parsed ``dagster.yaml`` (all of it, or some of its top-level sections).

    Returns:
        One message per problem, prefixed with the section it is in.
    """
    problems = [f"dagster.yaml: {error.message}" for error in _errors(dagster_instance_config_schema(), config)]
    sections: list[tuple[str, Any]] = list(config.items())
    storage = config.get("storage")
    if isinstance(storage, Mapping) and "custom" in storage:
        sections.append(("storage.custom", storage["custom"]))
    for name, section in sections:
        if not (isinstance(section, Mapping) and "module" in section and "class" in section):
            continue
        try:
            klass = getattr(importlib.import_module(section["module"]), section["class"])
        except (ImportError, AttributeError) as exc:
            problems.append(f"{name}: cannot load {section['module']}.{section['class']} ({exc})")
            continue
        problems += [f"{name}: {error.message}" for error in _errors(klass.config_type(), section.get("config") or {})]
    return problems


def _errors(schema: Any, value: Any) -> list[Any]:
    return list(validate_config(schema, value).errors or [])


__all__ = [
    "ConfigurableClass",
    "ConfigurableClassData",
    "DagsterSqliteStorage",
    "DagsterStorage",
    "InstanceRef",
    "coordinator_instance",
    "dagster_instance_config_schema",
    "instance_config_problems",
    "validate_config",
]
