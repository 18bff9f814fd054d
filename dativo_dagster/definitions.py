"""The Dagster code location: ``dagster dev -m dativo_dagster.definitions``."""

import gc

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.logs import configure_logging

configure_logging()
defs = build_definitions(load_plan())
# The definitions live as long as the code server: moving them out of the collector's reach saves
# seconds of repeated full collections while Dagster snapshots thousands of assets.
gc.freeze()
