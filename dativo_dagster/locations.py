"""One Dagster code location per group of tenants (runner.yaml ``code_locations``).

Every attribute of this module is a code location: ``getattr(dativo_dagster.locations, "eu")`` is
the :class:`dagster.Definitions` of location ``eu``, holding only that location's tenant jobs. That
is what Dagster's ``python_module`` target with ``attribute: eu`` loads, so each location runs as
its own code server, loads alone and fails alone::

    dagster code-server start -m dativo_dagster.locations -a eu --location-name eu

``dativo workspace`` writes workspace.yaml with one such entry per location. The plan (runner.yaml
and every tenant job) is read once per process; each location builds only its own jobs.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from dativo_dagster.build import code_location_definitions, code_location_plan
from dativo_dagster.config.loader import default_project_dir
from dativo_dagster.config.models import is_safe_identifier
from dativo_dagster.config.plan import Plan
from dativo_dagster.errors import ConfigError
from dativo_dagster.logs import configure_logging

configure_logging()

_LOADED: dict[tuple[Path, str], dg.Definitions] = {}


def location_names(project_dir: Path | str | None = None) -> list[str]:
    """Every code location runner.yaml defines, groups first."""
    return code_location_plan(project_dir).runner.code_locations.names()


def location_plan(name: str, project_dir: Path | str | None = None) -> Plan:
    """The plan of code location ``name``: its tenants' jobs, working or broken.

    Read once per process (see :func:`dativo_dagster.build.code_location_plan`).

    Raises:
        ConfigError: CFG001 when runner.yaml defines no location called ``name``.
    """
    plan = code_location_plan(project_dir, location=name if is_safe_identifier(name) else None)
    names = plan.runner.code_locations.names()
    if name not in names:
        raise ConfigError(
            f"runner.yaml: code_locations: there is no code location '{name}' (locations: {', '.join(names)})",
            hint="run `dativo workspace` to write workspace.yaml from runner.yaml",
        )
    return plan


def location_definitions(name: str, project_dir: Path | str | None = None) -> dg.Definitions:
    """The definitions of code location ``name``: its tenants' jobs and nothing else.

    Args:
        name: A location runner.yaml defines (see :func:`location_names`).
        project_dir: Directory holding runner.yaml; defaults to the loader's default.

    Raises:
        ConfigError: CFG001 when runner.yaml defines no location called ``name``.
    """
    return code_location_definitions(location_plan(name, project_dir))


def __getattr__(name: str) -> dg.Definitions:
    """``dativo_dagster.locations.<name>``: the definitions of code location ``name``, built once per process.

    Raises:
        AttributeError: For private and special names (Python's own protocols probe those).
        ConfigError: CFG001 for a name that is not one of runner.yaml's code locations.
    """
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    key = (default_project_dir(), name)
    defs = _LOADED.get(key)
    if defs is None:
        defs = _LOADED[key] = location_definitions(name)
    return defs
