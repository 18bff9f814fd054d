"""The Dagster code location with every tenant: ``dagster dev -m dativo_dagster.definitions``.

A project that splits its tenants into several code locations serves each one from
:mod:`dativo_dagster.locations` instead (``dativo workspace`` writes workspace.yaml for it).
"""

from dativo_dagster.build import code_location_definitions
from dativo_dagster.logs import configure_logging

configure_logging()
defs = code_location_definitions()
