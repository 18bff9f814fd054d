"""MySQL and MariaDB, streamed into Arrow batches.

Two read paths, one result:

* **connectorx** (default): a Rust reader that decodes the wire protocol straight into Arrow
  batches; it reads the object with one ``SELECT`` inside ``START TRANSACTION WITH CONSISTENT
  SNAPSHOT, READ ONLY`` (run first on the same connection), so InnoDB serves one snapshot.
  Columns whose values it could reject or round (TIME, decimals it holds in fewer digits) are
  selected as text and cast by Arrow, so an odd value quarantines a row.
  Legacy zero dates (``0000-00-00``) stop it: the run fails with QUAL001 and nothing is
  committed; ``engine: pymysql`` reads such a table and quarantines those rows instead.
* **pymysql** (``engine: pymysql``, and whenever TLS options are set): an unbuffered server-side
  cursor inside ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``, opened without value
  converters and without decoding, so the server's bytes are checked (UTF-8) and cast by Arrow
  column by column; FLOAT and DOUBLE travel as ``CAST(col AS DOUBLE)``, whose text round-trips
  (the server prints a FLOAT with 6 significant digits).

Metadata (columns, unique indexes) always comes from pymysql.

Modules:

* :mod:`.source`: :class:`MySQLSource`, its connection settings, discovery and the read;
* :mod:`.types`: MySQL types to Arrow, result metadata to columns, how each column is selected;
* :mod:`.connectorx`: the connectorx read path;
* :mod:`.pymysql_rows`: the pymysql read path, the server's bytes into batches;
* :mod:`.errors`: error codes (and connectorx's messages) classified.

Importing this package defines (and so registers) :class:`MySQLSource`.
"""

from __future__ import annotations

from dativo_dagster.sources.mysql.connectorx import connectorx_batches, connectorx_url
from dativo_dagster.sources.mysql.errors import classify, classify_code, classify_text
from dativo_dagster.sources.mysql.pymysql_rows import pymysql_batches, rows_to_batch
from dativo_dagster.sources.mysql.source import MySQLConnection, MySQLSource
from dativo_dagster.sources.mysql.types import (
    MyColumn,
    column_arrow_type,
    column_from_field,
    quote_identifier,
    select_expression,
)

# The name this helper had when the source was one module; tests import it.
_to_batch = rows_to_batch

__all__ = [
    "MyColumn",
    "MySQLConnection",
    "MySQLSource",
    "classify",
    "classify_code",
    "classify_text",
    "column_arrow_type",
    "column_from_field",
    "connectorx_batches",
    "connectorx_url",
    "pymysql_batches",
    "quote_identifier",
    "rows_to_batch",
    "select_expression",
]
