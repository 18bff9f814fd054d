"""Pure functions: validated plan → AssetSpecs and AssetCheckSpecs (no I/O, no secrets).

Every process that loads the code location builds one spec per object (10,000 for 1,000 tenant
jobs; their check specs come from :mod:`dativo_dagster.checks.specs`), so what the specs share is
built once: a contract's column schema (one immutable :class:`dagster.TableSchema` for all its
objects), a job's kinds and owners. Nothing
here imports pyarrow (an import a code server need not pay): the column types shown for a
contract are the labels :func:`dativo_dagster.types.type_label` gives their Arrow types, computed
from the contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from dativo_dagster.checks.specs import CHECK_CONTRACT, build_check_specs
from dativo_dagster.config.models import ColumnContract, ColumnType, SchemaContract
from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.translator import DativoTranslator

__all__ = ["CHECK_CONTRACT", "build_asset_spec", "build_asset_specs", "build_check_specs", "table_schema"]

# What types.type_label(types.arrow_type(column)) says for each contract type (a unit test holds
# the two together); the run's own column schema metadata uses those labels.
_SCALAR_LABELS: dict[ColumnType, str] = {
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


def column_type_label(column: ColumnContract) -> str:
    """The type shown for a contract column (as the run's metadata shows the column's Arrow type)."""
    if column.type is ColumnType.DECIMAL:
        return f"decimal({column.precision or 38},{column.scale or 0})"
    if column.type is ColumnType.LIST:
        assert column.item_type is not None  # guaranteed by the model validator
        return f"list<{_SCALAR_LABELS[column.item_type]}>"
    return _SCALAR_LABELS[column.type]


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
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=column.name,
                type=column_type_label(column),
                description=column.description or None,
                constraints=dg.TableColumnConstraints(nullable=not column.required, unique=False),
            )
            for column in contract.columns
        ]
    )
    if len(_SCHEMAS) >= _SCHEMAS_MAX:
        _SCHEMAS.clear()
    _SCHEMAS[id(contract)] = (contract, schema)
    return schema


def build_asset_spec(
    obj: ObjectPlan,
    job: JobPlan,
    translator: DativoTranslator,
    *,
    kinds: set[str] | None = None,
    owners: Sequence[str] | None = None,
) -> dg.AssetSpec:
    """The AssetSpec of one object.

    Args:
        obj: The object.
        job: Its tenant job.
        translator: Decides key, group, description, tags and kinds.
        kinds: The job's kinds when already computed (every object of a job has them).
        owners: The job's owners when already computed.
    """
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
        kinds=kinds if kinds is not None else translator.kinds(job),
        owners=owners if owners is not None else list(job.job.owners),
        metadata=metadata,
        skippable=True,
    )


def build_asset_specs(job: JobPlan, translator: DativoTranslator) -> list[dg.AssetSpec]:
    """One AssetSpec per object of ``job``."""
    kinds = translator.kinds(job)
    owners = list(job.job.owners)
    return [build_asset_spec(obj, job, translator, kinds=kinds, owners=owners) for obj in job.objects]
