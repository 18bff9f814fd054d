"""Which asset checks an object gets, as Dagster ``AssetCheckSpec`` s (pure; runs at definitions load).

One spec per enabled check kind per object, only where the kind applies: no primary-key check
without a primary key, no schema-drift check without a contract, no freshness check without an
SLA. Check names are stable identifiers: the UI, alerts and check selections refer to them.
Descriptions depend on the settings only, so objects with the same settings share one string.
"""

from __future__ import annotations

import dagster as dg

from dativo_dagster.config.models import ChecksConfig, CheckSettings
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.translator import DativoTranslator

CHECK_CONTRACT = "rows_conform_to_contract"
CHECK_NOT_NULL = "required_columns_not_null"
CHECK_PRIMARY_KEY = "primary_key_unique"
CHECK_SCHEMA = "schema_matches_contract"
CHECK_VOLUME = "volume_within_history"
CHECK_FRESHNESS = "fresh_within_sla"
CHECK_QUARANTINE = "quarantine_growth"

SETTINGS_FIELD = {
    CHECK_CONTRACT: "contract",
    CHECK_NOT_NULL: "not_null",
    CHECK_PRIMARY_KEY: "primary_key",
    CHECK_SCHEMA: "schema_drift",
    CHECK_VOLUME: "volume",
    CHECK_FRESHNESS: "freshness",
    CHECK_QUARANTINE: "quarantine",
}
"""Check name → field of :class:`~dativo_dagster.config.models.ChecksConfig` that configures it."""

ALL_CHECKS = tuple(SETTINGS_FIELD)


def settings_of(config: ChecksConfig, name: str) -> CheckSettings:
    """The settings of check ``name``."""
    settings: CheckSettings = getattr(config, SETTINGS_FIELD[name])
    return settings


def required_columns(obj: ObjectPlan) -> tuple[str, ...]:
    """Columns that must never be null: the contract's required ones and the primary key."""
    declared = [c.name for c in obj.contract.columns if c.required] if obj.contract is not None else []
    return tuple(dict.fromkeys([*declared, *obj.primary_key]))


def applicable_checks(obj: ObjectPlan) -> list[str]:
    """Names of the checks ``obj`` gets: enabled, and meaningful for what the object declares."""
    config = obj.checks
    applies = {
        CHECK_CONTRACT: True,
        CHECK_NOT_NULL: bool(required_columns(obj)),
        CHECK_PRIMARY_KEY: bool(obj.primary_key),
        CHECK_SCHEMA: obj.contract is not None,
        CHECK_VOLUME: True,
        CHECK_FRESHNESS: config.freshness.max_age_minutes is not None,
        CHECK_QUARANTINE: True,
    }
    return [name for name in ALL_CHECKS if applies[name] and settings_of(config, name).enabled]


def check_description(name: str, config: ChecksConfig, threshold: float) -> str:
    """What check ``name`` verifies, with these settings (``threshold``: the object's max rejected rate)."""
    if name == CHECK_CONTRACT:
        return (
            f"No row of a run violates the contract: any rejected row is a warning, more than {threshold:.1%} "
            f"of the rows read is {config.contract.severity.value} (rejected rows go to <table>__quarantine)"
        )
    if name == CHECK_NOT_NULL:
        return "Required columns (the contract's and the primary key) hold no null anywhere in the table"
    if name == CHECK_PRIMARY_KEY:
        return "No primary key value appears twice in the table"
    if name == CHECK_SCHEMA:
        return "The table's columns match the contract column by column: name, type and nullability"
    if name == CHECK_VOLUME:
        volume = config.volume
        return (
            f"A run reads rows, and no fewer than {1 - volume.max_drop_fraction:.0%} of the median of the "
            f"object's last {volume.history} runs"
        )
    if name == CHECK_FRESHNESS:
        return f"The table's last commit is at most {config.freshness.max_age_minutes:g} minutes old"
    return f"A run adds at most {config.quarantine.max_growth_rows} rows to <table>__quarantine"


def build_check_specs(job: JobPlan, translator: DativoTranslator) -> list[dg.AssetCheckSpec]:
    """One AssetCheckSpec per applicable check of every object of ``job``, blocking as configured."""
    specs: list[dg.AssetCheckSpec] = []
    # Objects without an override share the job's settings object: their names and descriptions
    # are worked out once per job, not per object.
    shared: dict[tuple[int, float, bool, bool, bool], list[tuple[str, str, bool]]] = {}
    for obj in job.objects:
        key = translator.asset_key(obj)
        config = obj.checks
        shape = (
            id(config),
            obj.max_rejected_rate,
            bool(required_columns(obj)),
            bool(obj.primary_key),
            obj.contract is not None,
        )
        checks = shared.get(shape)
        if checks is None:
            checks = [
                (name, check_description(name, config, obj.max_rejected_rate), settings_of(config, name).blocking)
                for name in applicable_checks(obj)
            ]
            shared[shape] = checks
        specs.extend(
            dg.AssetCheckSpec(name=name, asset=key, description=description, blocking=blocking)
            for name, description, blocking in checks
        )
    return specs
