"""The pymysql read path: rows of the server's bytes from an unbuffered cursor into Arrow batches.

The connection decodes nothing (no value converters, no text decoding), so each value arrives as
the server's bytes: text is checked as UTF-8 column by column and cast by Arrow, and one
undecodable value quarantines its row instead of failing the read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pymysql

from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.mysql.errors import classify
from dativo_dagster.sources.sql_common import best_effort_cast, checked_utf8, merge_reasons, with_source_reasons


def pymysql_batches(
    cursor: Any, schema: pa.Schema, batch_rows: int, stats: SourceStats, label: str
) -> Iterator[pa.RecordBatch]:
    """Fetch the rows of an executed unbuffered cursor, ``batch_rows`` at a time, as batches of ``schema``.

    Raises:
        DativoError: the server's error, classified (see
            :func:`~dativo_dagster.sources.mysql.errors.classify`).
    """
    binary = [pa.types.is_binary(f.type) for f in schema]
    try:
        while True:
            rows = cursor.fetchmany(batch_rows)
            if not rows:
                break
            stats.add(pages=1)
            yield rows_to_batch(rows, schema, binary)
    except pymysql.err.MySQLError as exc:
        raise classify(exc, label) from None


def rows_to_batch(rows: list[tuple[Any, ...]], schema: pa.Schema, binary: list[bool]) -> pa.RecordBatch:
    """One batch from the server's bytes: text checked as UTF-8, then cast to each column's type.

    A value that is not UTF-8 nulls its column in that row and marks the row with a reason
    naming the column, for the enforcer to quarantine.
    """
    columns = list(zip(*rows, strict=True))
    arrays = []
    reasons: list[list[str | None] | None] = []
    for index, field in enumerate(schema):
        raw = pa.array(columns[index], pa.binary())
        if binary[index]:
            arrays.append(raw)
            continue
        text, bad = checked_utf8(raw, field.name)
        reasons.append(bad)
        arrays.append(best_effort_cast(text, field.type))
    return with_source_reasons(arrays, schema.names, merge_reasons(len(rows), *reasons))
