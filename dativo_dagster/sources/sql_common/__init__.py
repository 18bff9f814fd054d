"""Pure helpers shared by the SQL sources: options, identifiers, incremental predicates.

Nothing here but :class:`SqlSource` opens a connection. Identifiers from config are validated and
quoted, and cursor values are always bound as parameters, so no config value is ever spliced into
SQL text. A named ``query`` is checked statically for anything that could modify data or take
locks (the sources also run it in a READ ONLY transaction, which catches what a scan cannot see).

Modules:

* :mod:`.options`: the connection settings and an object's table or query, validated;
* :mod:`.read_only`: the static check that a named query only reads;
* :mod:`.selection`: the rows (incremental predicate) and columns a read selects;
* :mod:`.values`: casts, decimals, UTF-8 checks and per-row reasons on the server's values;
* :mod:`.errors`: the errors every SQL source raises the same way;
* :mod:`.source`: :class:`SqlSource`, the base class with discovery and the connection plumbing.
"""

from __future__ import annotations

# Defined in dativo_dagster.errors; still importable from here, as when this package was one module.
from dativo_dagster.errors import PermanentExtractError
from dativo_dagster.sources.sql_common.errors import modifies_data, unclassified, undecodable_name
from dativo_dagster.sources.sql_common.options import (
    SqlConnection,
    SqlObjectOptions,
    check_identifier,
    options_for,
    parse_table_name,
)
from dativo_dagster.sources.sql_common.read_only import check_read_only_query, query_body
from dativo_dagster.sources.sql_common.selection import (
    ColumnT,
    IncrementalPredicate,
    contract_columns,
    incremental_predicate,
    missing_columns,
    read_predicates,
)
from dativo_dagster.sources.sql_common.source import ColumnT_co, DiscoveredColumn, SqlSource
from dativo_dagster.sources.sql_common.values import (
    ICEBERG_MAX_DECIMAL_DIGITS,
    best_effort_cast,
    checked_utf8,
    decimal_type,
    guard_cursor_column,
    merge_reasons,
    with_source_reasons,
)

__all__ = [
    "ICEBERG_MAX_DECIMAL_DIGITS",
    "ColumnT",
    "ColumnT_co",
    "DiscoveredColumn",
    "IncrementalPredicate",
    "PermanentExtractError",
    "SqlConnection",
    "SqlObjectOptions",
    "SqlSource",
    "best_effort_cast",
    "check_identifier",
    "check_read_only_query",
    "checked_utf8",
    "contract_columns",
    "decimal_type",
    "guard_cursor_column",
    "incremental_predicate",
    "merge_reasons",
    "missing_columns",
    "modifies_data",
    "options_for",
    "parse_table_name",
    "query_body",
    "read_predicates",
    "unclassified",
    "undecodable_name",
    "with_source_reasons",
]
