"""Pure functions: validated plan → AssetSpecs and AssetCheckSpecs (no I/O, no secrets)."""

from __future__ import annotations

import dagster as dg

from dativo_dagster.config.models import ColumnContract, ColumnType, SchemaContract
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.translator import DativoTranslator

CHECK_CONTRACT = "rows_conform_to_contract"

# The label ``types.type_label`` gives the Arrow type of each contract type, without importing
# pyarrow at definitions load (a test keeps the two in step).
_TYPE_LABELS: dict[ColumnType, str] = {
    ColumnType.INT32: "int32",
    ColumnType.INT64: "int64",
    ColumnType.FLOAT32: "float",
    ColumnType.FLOAT64: "double",
    ColumnType.STRING: "string",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.DATE: "date",
    ColumnType.TIME: "time",
    ColumnType.TIMESTAMP: "timestamp",
    ColumnType.TIMESTAMPTZ: "timestamptz",
    ColumnType.BINARY: "binary",
    ColumnType.UUID: "uuid",
    ColumnType.JSON: "string",
}


def contract_type_label(column: ColumnContract) -> str:
    """Type of a contract column as ``dagster/column_schema`` shows it after a run."""
    if column.type is ColumnType.DECIMAL:
        return f"decimal({column.precision},{column.scale or 0})"
    if column.type is ColumnType.LIST:
        assert column.item_type is not None  # guaranteed by the model validator
        return f"list<{_TYPE_LABELS[column.item_type]}>"
    return _TYPE_LABELS[column.type]


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
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=contract_type_label(c),
                description=c.description,
                constraints=dg.TableColumnConstraints(nullable=not c.required, unique=False),
            )
            for c in contract.columns
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
