"""HubSpot properties: discovery, their Arrow types, and the plan of an object read built from them.

Without a contract, an object's properties are discovered (``/crm/v3/properties/{type}``) and
typed from HubSpot's definitions (:func:`property_arrow_type`); with one, the contract's columns
name them. :func:`read_plan` turns either into a :class:`ReadPlan`: the properties and
associations requested, and the columns (``id``, each property, one id list per associated
object type) the records become.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dativo_dagster.api.paging import items_at, parse_json_object
from dativo_dagster.api.transport import Stats
from dativo_dagster.config.models import ColumnType, Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, PaginationError
from dativo_dagster.sources.hubspot.errors import call_api
from dativo_dagster.sources.hubspot.options import HubSpotOptions

MODIFIED_PROPERTY = {"contacts": "lastmodifieddate"}
"""The last-modified property per object type; every other type uses ``hs_lastmodifieddate``."""
ASSOCIATION_PREFIX = "associations_"
"""Column ``associations_<type>``: the ids of the records of ``<type>`` associated with the row
(``-`` in a type id such as ``2-1234`` becomes ``_``)."""

NUMBER_TYPE = pa.decimal128(38, 18)
"""HubSpot ``number`` properties: 20 integer and 18 fractional digits, exact; a value beyond that
is quarantined with the reason, never rounded (a double would round currency amounts)."""
_ID_PROPERTIES = {"hs_object_id"}

_STRING_TYPES = {ColumnType.STRING, ColumnType.JSON}


def modified_property(object_type: str) -> str:
    """The last-modified property of an object type."""
    return MODIFIED_PROPERTY.get(object_type, "hs_lastmodifieddate")


def property_arrow_type(hubspot_type: str, name: str = "") -> pa.DataType:
    """Arrow type of a HubSpot property type (no contract given).

    ``number`` → decimal(38,18) (exact), ``datetime`` → timestamptz, ``date`` → date,
    ``bool`` → boolean; ``enumeration``, ``string`` and anything else → string (HubSpot sends
    every value as text, so text is always exact). ``hs_object_id`` is the record id: int64.
    """
    if name in _ID_PROPERTIES:
        return pa.int64()
    kind = hubspot_type.lower()
    if kind == "number":
        return NUMBER_TYPE
    if kind == "datetime":
        return pa.timestamp("us", tz="UTC")
    if kind == "date":
        return pa.date32()
    if kind in ("bool", "boolean"):
        return pa.bool_()
    return pa.string()


def association_column(object_type: str) -> str:
    """The column holding the ids of the associated records of ``object_type``."""
    return ASSOCIATION_PREFIX + object_type.replace("-", "_")


def association_ids(links: Any, *, where: str) -> list[int]:
    """Sorted unique ids of an association block (list endpoint ``{"results": [{"id"}]}``)."""
    if links is None:
        return []
    results = links.get("results") if isinstance(links, dict) else None
    if not isinstance(results, list):
        raise PaginationError(f"{where}: an association block has no 'results' list")
    ids = set()
    for link in results:
        try:
            ids.add(int(str(link["id"])))
        except (KeyError, TypeError, ValueError):
            raise PaginationError(f"{where}: an association lacks a numeric 'id'") from None
    return sorted(ids)


@dataclass(frozen=True)
class BatchColumn:
    """One column of the batches: its source name, what fills it, and how its text is read."""

    name: str
    kind: str  # "id", "property", "association"
    arrow_type: pa.DataType
    blank_is_null: bool = False
    time_kind: str | None = None  # "datetime" or "date": epoch-ms digits are rewritten as ISO text
    association: str | None = None  # the associated object type of an association column


@dataclass
class ReadPlan:
    """What one object read requests and how its records become rows."""

    object_type: str
    properties: list[str]
    associations: list[str]
    columns: list[BatchColumn]
    schema: pa.Schema
    search_property: str | None = None
    cursor_alias: str | None = None  # the cursor column's table name when it differs from its property

    @property
    def batch_schema(self) -> pa.Schema:
        """Schema of the source batches: ids and association lists typed, property values as text."""
        fields = []
        for column in self.columns:
            if column.kind == "id":
                fields.append(pa.field(column.name, pa.int64()))
            elif column.kind == "association":
                fields.append(pa.field(column.name, pa.list_(pa.int64())))
            else:
                fields.append(pa.field(column.name, pa.string()))
        if self.cursor_alias:
            fields.append(pa.field(self.cursor_alias, pa.string()))
        return pa.schema(fields)


def cursor_property(obj: ObjectPlan) -> str | None:
    """The property an incremental read filters on: the cursor column's source property."""
    if obj.strategy is Strategy.FULL_REFRESH or obj.cursor_field is None:
        return None
    if obj.contract is not None:
        for column in obj.contract.columns:
            if column.name == obj.cursor_field:
                return column.source_name or column.name
    return obj.cursor_field


def property_types(client: Any, label: str, object_type: str, stats: Stats) -> dict[str, str]:
    """``name → type`` of every property of ``object_type`` (``/crm/v3/properties/{type}``)."""
    what = f"GET /crm/v3/properties/{object_type}"
    response = call_api(
        lambda: client.crm.properties.core_api.get_all(object_type, archived=False, _preload_content=False),
        what=what,
        label=label,
    )
    where = f"{label}: {what} page 1"
    stats.add(pages=1)
    body = parse_json_object(response.data, where=where)
    definitions = items_at(body, "results", where=where, required=("name", "type"))
    return {str(d["name"]): str(d["type"]) for d in definitions}


def read_plan(
    obj: ObjectPlan,
    options: HubSpotOptions,
    *,
    object_type: str,
    search_property: str | None,
    definitions: Mapping[str, str] | None,
) -> ReadPlan:
    """The properties, associations and columns of a CRM object read.

    Args:
        obj: The object.
        options: Its options.
        object_type: The HubSpot object type read.
        search_property: The property an incremental read filters on (None: a full read).
        definitions: ``name → type`` of the type's properties, discovered (None: the contract
            types the columns).

    Raises:
        ConfigError: CFG001 for a property the type does not have, or a cursor property that
            is not a time.
    """
    if definitions is not None:
        names = list(options.properties) if options.properties is not None else sorted(definitions)
        unknown = [n for n in names if n not in definitions]
        if unknown:
            raise ConfigError(
                f"{obj.label}: options.properties: {', '.join(unknown)} not among the properties of {object_type}",
                hint=f"GET /crm/v3/properties/{object_type} lists them",
            )
        if search_property is not None and definitions.get(search_property) not in ("datetime", "date"):
            kind = definitions.get(search_property)
            raise ConfigError(
                f"{obj.label}: incremental.cursor_field: '{search_property}' is "
                + (f"a {kind} property" if kind else f"not a property of {object_type}")
                + ", not a time HubSpot can search by",
                hint=f"use {modified_property(object_type)} (last modified) or createdate",
            )
        typed = {n: property_arrow_type(definitions[n], n) for n in names}
    else:
        assert obj.contract is not None
        columns = [c for c in obj.contract.columns if (c.source_name or c.name) != "id"]
        columns = [c for c in columns if not (c.source_name or c.name).startswith(ASSOCIATION_PREFIX)]
        from dativo_dagster.types import arrow_type

        typed = {(c.source_name or c.name): arrow_type(c) for c in columns}
        if options.properties is not None:
            typed = {n: typed.get(n, pa.string()) for n in options.properties}
        string_like = {(c.source_name or c.name) for c in columns if c.type in _STRING_TYPES}
        typed = {n: (pa.string() if n in string_like else t) for n, t in typed.items()}
        names = list(typed)
    if search_property and search_property not in typed:
        names.append(search_property)
        typed[search_property] = pa.timestamp("us", tz="UTC")
    columns_out = [BatchColumn("id", "id", pa.int64())]
    for name in names:
        arrow = typed[name]
        time_kind = "datetime" if pa.types.is_timestamp(arrow) else "date" if pa.types.is_date(arrow) else None
        columns_out.append(
            BatchColumn(name, "property", arrow, blank_is_null=not pa.types.is_string(arrow), time_kind=time_kind)
        )
    for other in options.associations:
        columns_out.append(
            BatchColumn(association_column(other), "association", pa.list_(pa.int64()), association=other)
        )
    schema = pa.schema(
        [pa.field(c.name, c.arrow_type, nullable=c.kind != "id") for c in columns_out],
        metadata={"dativo.source": f"hubspot/{object_type}"},
    )
    cursor_field = obj.cursor_field
    alias = cursor_field if cursor_field and search_property and cursor_field not in names else None
    return ReadPlan(
        object_type=object_type,
        properties=names,
        associations=list(options.associations),
        columns=columns_out,
        schema=schema,
        search_property=search_property,
        cursor_alias=alias,
    )
