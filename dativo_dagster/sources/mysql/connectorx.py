"""The connectorx read path: one SELECT decoded by a Rust reader straight into Arrow batches.

connectorx runs the session and snapshot statements first, on the same connection, then the
object's ``SELECT`` (its parameters rendered by pymysql), so InnoDB serves one snapshot. Columns
it could reject or round arrive as text (see
:func:`~dativo_dagster.sources.mysql.types.select_expression`) and are cast by Arrow here, so an
odd value quarantines a row. connectorx is imported only when a read takes this path.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pyarrow as pa

from dativo_dagster.errors import DativoError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.mysql.errors import classify_text
from dativo_dagster.sources.sql_common import SqlConnection, best_effort_cast


def connectorx_url(settings: SqlConnection, password: str) -> str:
    """The ``mysql://`` URL connectorx connects with (user, password and database quoted)."""
    auth = quote(settings.user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"mysql://{auth}@{settings.host}:{settings.port}/{quote(settings.database, safe='')}"


def connectorx_batches(
    url: str,
    query: str,
    session: list[str],
    schema: pa.Schema,
    batch_rows: int,
    stats: SourceStats,
    label: str,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of ``query`` as batches of ``schema``.

    Args:
        url: Where to connect (see :func:`connectorx_url`).
        query: The object's SELECT, its parameters rendered.
        session: Statements run first on the same connection (session settings, the snapshot).
        schema: The object's Arrow schema; each column is cast to it where Arrow can.
        batch_rows: Rows per batch (connectorx reads at most 65,536 at a time).
        stats: Counts the batches.
        label: The object's label, for messages.

    Raises:
        DativoError: connectorx's failure, classified from its text (see
            :func:`~dativo_dagster.sources.mysql.errors.classify_text`).
    """
    import connectorx

    try:
        reader = connectorx.read_sql(
            url,
            query,
            return_type="arrow_stream",
            batch_size=min(batch_rows, 65_536),
            pre_execution_query=session,
        )
        for batch in reader:
            stats.add(pages=1)
            yield pa.RecordBatch.from_arrays(
                [best_effort_cast(batch.column(i), field.type) for i, field in enumerate(schema)],
                names=schema.names,
            )
    except DativoError:
        raise
    except BaseException as exc:  # connectorx reports server errors as RuntimeError, bugs as panics
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise classify_text(str(exc), label) from None
