"""The Dagster code location: ``dagster dev -m dativo_dagster.definitions``."""

from dativo_dagster.build import code_location_definitions
from dativo_dagster.logs import configure_logging

configure_logging()
defs = code_location_definitions()
