"""PostgreSQL: ``COPY (SELECT …) TO STDOUT`` streamed through a pipe into Arrow's CSV reader.

COPY is the server's fastest way out, and Arrow's multi-threaded CSV parser is the fastest way
in; a background thread pumps COPY into an OS pipe while the caller consumes Arrow batches, so
memory is bounded by the pipe and one CSV block, never by the table. Each read runs in its own
``REPEATABLE READ READ ONLY`` transaction: one consistent snapshot per object per run.

Modules, in the order a read goes through them:

* :mod:`.source`: :class:`PostgresSource`, its connection settings, discovery and the read;
* :mod:`.types`: PostgreSQL types to Arrow, numeric typmods, how each column is selected;
* :mod:`.copy`: COPY pumped through a pipe into Arrow's CSV reader;
* :mod:`.convert`: the parsed text converted to each column's type, a reason per odd row;
* :mod:`.arrays`: element parsers, and array texts into ``list<item>``;
* :mod:`.errors`: psycopg2 errors classified by SQLSTATE or by libpq's message.

Importing this package defines (and so registers) :class:`PostgresSource`.
"""

from __future__ import annotations

from dativo_dagster.sources.postgres.arrays import arrays_from_json
from dativo_dagster.sources.postgres.convert import Converter
from dativo_dagster.sources.postgres.copy import BLOCK_BYTES, PIPE_BYTES, stream_copy
from dativo_dagster.sources.postgres.copy import _row_end_in as _row_end_in
from dativo_dagster.sources.postgres.copy import _unparsable as _unparsable
from dativo_dagster.sources.postgres.copy import _WholeRowReader as _WholeRowReader
from dativo_dagster.sources.postgres.errors import classify
from dativo_dagster.sources.postgres.source import PostgresConnection, PostgresSource
from dativo_dagster.sources.postgres.types import (
    UNCONSTRAINED_NUMERIC,
    PgColumn,
    array_item_type,
    column_arrow_type,
    csv_parse_type,
    numeric_arrow_type,
    numeric_typmod,
    result_typmod,
    scalar_arrow_type,
    select_expression,
)

# The names these helpers had when the source was one module; tests import them.
_arrays = arrays_from_json
_result_typmod = result_typmod

__all__ = [
    "BLOCK_BYTES",
    "PIPE_BYTES",
    "UNCONSTRAINED_NUMERIC",
    "Converter",
    "PgColumn",
    "PostgresConnection",
    "PostgresSource",
    "array_item_type",
    "arrays_from_json",
    "classify",
    "column_arrow_type",
    "csv_parse_type",
    "numeric_arrow_type",
    "numeric_typmod",
    "result_typmod",
    "scalar_arrow_type",
    "select_expression",
    "stream_copy",
]
