"""One place that maps contract types to Arrow (and through Arrow to Iceberg) and enforces them.

:class:`ContractEnforcer` takes whatever a source produced (strings from a CSV, typed columns from
a database) and returns the rows that conform, cast to the contract's Arrow schema, plus the rows
that do not, each with a reason. Casting is vectorised; only a column whose vectorised cast fails
falls back to per-value conversion, so clean data never pays for dirty data.

Modules:

* :mod:`.system_columns`: the names of dativo's own columns (quarantine, source reasons);
* :mod:`.mapping`: contract types to Arrow, and Arrow types to their labels;
* :mod:`.converters`: per-value converters that convert exactly or say why not;
* :mod:`.casts`: :func:`cast_column`, vectorised where exact, value by value elsewhere;
* :mod:`.enforcer`: :class:`ContractEnforcer`, which splits a batch into good and rejected rows;
* :mod:`.checks`: :func:`check_table_schema`, what Iceberg cannot hold, refused up front.
"""

from __future__ import annotations

from dativo_dagster.types.casts import cast_column
from dativo_dagster.types.checks import check_table_schema
from dativo_dagster.types.converters import invalid_json
from dativo_dagster.types.enforcer import ContractEnforcer, EnforcedBatch
from dativo_dagster.types.mapping import (
    JSON_FIELD_METADATA,
    arrow_type,
    column_schema_metadata,
    contract_arrow_schema,
    is_uuid,
    type_label,
)
from dativo_dagster.types.system_columns import (
    CURSOR_FROM_COLUMN,
    KEY_COLUMN,
    REASON_COLUMN,
    REJECTED_AT_COLUMN,
    RUN_ID_COLUMN,
    SOURCE_REASON_COLUMN,
    SYSTEM_PREFIX,
)

__all__ = [
    "CURSOR_FROM_COLUMN",
    "JSON_FIELD_METADATA",
    "KEY_COLUMN",
    "REASON_COLUMN",
    "REJECTED_AT_COLUMN",
    "RUN_ID_COLUMN",
    "SOURCE_REASON_COLUMN",
    "SYSTEM_PREFIX",
    "ContractEnforcer",
    "EnforcedBatch",
    "arrow_type",
    "cast_column",
    "check_table_schema",
    "column_schema_metadata",
    "contract_arrow_schema",
    "invalid_json",
    "is_uuid",
    "type_label",
]
