"""Pure functions: validated plan → AssetSpecs and AssetCheckSpecs (no I/O, no secrets)."""

from __future__ import annotations

import dagster as dg

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.translator import DativoTranslator
from dativo_dagster.types import column_schema_metadata, contract_arrow_schema

CHECK_CONTRACT = "rows_conform_to_contract"


# Objects sharing a contract share one (immutable) TableSchema: building it is most of the cost of
# an AssetSpec. Keyed by the contract object's id, holding the contract so the id cannot be reused.
_SCHEMAS: dict[int, tuple[SchemaContract, dg.TableSchema]] = {}
_SCHEMAS_MAX = 4096


def table_schema(obj: ObjectPlan) -> dg.TableSchema | None:
    """Dagster table schema from the object's contract (None when discovered at run time)."""
    contract = obj.contract
    if contract is None:
        return None
    cached = _SCHEMAS.get(id(contract))
    if cached is not None and cached[0] is contract:
        return cached[1]
    schema = _table_schema(contract)
    if len(_SCHEMAS) >= _SCHEMAS_MAX:
        _SCHEMAS.clear()
    _SCHEMAS[id(contract)] = (contract, schema)
    return schema


def _table_schema(contract: SchemaContract) -> dg.TableSchema:
    descriptions = {c.name: c.description for c in contract.columns if c.description}
    rows = column_schema_metadata(contract_arrow_schema(contract), descriptions)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=r["name"],
                type=r["type"],
                description=r["description"],
                constraints=dg.TableColumnConstraints(nullable=not r["required"], unique=False),
            )
            for r in rows
        ]
    )


def build_asset_spec(obj: ObjectPlan, job: JobPlan, translator: DativoTranslator) -> dg.AssetSpec:
    """The AssetSpec of one object."""
    metadata: dict[str, object] = {
        "dagster/table_name": f"{job.target.catalog_name}.{obj.namespace}.{obj.table}",
        "dativo/strategy": obj.strategy.value,
        "dativo/write_mode": obj.write_mode.value,
    }
    schema = table_schema(obj)
    if schema is not None:
        metadata["dagster/column_schema"] = schema
    if obj.contract is not None:
        metadata["dativo/contract"] = f"{obj.contract.name} v{obj.contract.version}"
    return dg.AssetSpec(
        key=translator.asset_key(obj),
        group_name=translator.group_name(obj),
        description=translator.description(obj),
        tags=translator.tags(obj),
        kinds=translator.kinds(job),
        owners=list(job.job.owners),
        metadata=metadata,
        skippable=True,
    )


def build_asset_specs(job: JobPlan, translator: DativoTranslator) -> list[dg.AssetSpec]:
    """One AssetSpec per object of ``job``."""
    return [build_asset_spec(obj, job, translator) for obj in job.objects]


def build_check_specs(job: JobPlan, translator: DativoTranslator) -> list[dg.AssetCheckSpec]:
    """In-run checks evaluated from what the write observed (no second scan of the table)."""
    return [
        dg.AssetCheckSpec(
            name=CHECK_CONTRACT,
            asset=translator.asset_key(obj),
            description=(
                f"Share of rows violating the contract stays at or under {obj.max_rejected_rate:.1%}; "
                f"violations are kept in {obj.namespace}.{obj.quarantine_table}"
            ),
            blocking=False,
        )
        for obj in job.objects
    ]
