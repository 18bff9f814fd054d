"""Settings of the SQL sources: the connection every one has, and an object's table or query.

Identifiers from config are validated here (they are quoted where they are used, never spliced
raw into SQL), and a named ``query`` is checked to only read
(:func:`~dativo_dagster.sources.sql_common.read_only.check_read_only_query`).
"""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.sources.base import ConnectionConfig, SourceOptions
from dativo_dagster.sources.sql_common.read_only import check_read_only_query

# Names may hold anything a database allows except control characters; quoting makes them
# inert. The check rejects what no sane table name contains and what quoting would not fix.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SqlObjectOptions(SourceOptions):
    """Per-object settings of a SQL source: a table/view, or a named query."""

    table: str | None = Field(default=None, description="'schema.table' or 'table'")
    query: str | None = Field(default=None, description="a SELECT whose rows are the object")
    columns: list[str] | None = Field(default=None, description="subset of columns to read (default: all)")
    batch_rows: int = Field(default=100_000, ge=1_000, le=5_000_000, description="rows per Arrow batch")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SqlObjectOptions:
        if (self.table is None) == (self.query is None):
            raise ValueError("give exactly one of 'table' or 'query'")
        if self.table is not None:
            parse_table_name(self.table)
        if self.query is not None:
            check_read_only_query(self.query)
        for column in self.columns or []:
            check_identifier(column)
        return self


def check_identifier(name: str) -> str:
    """Validate one identifier from config (it will be quoted, never interpolated raw)."""
    if not name or len(name) > 128 or _CONTROL.search(name):
        raise ValueError(f"invalid identifier {name!r}")
    return name


def parse_table_name(text: str) -> tuple[str | None, str]:
    """Split ``schema.table`` (either part may be double-quoted to contain dots)."""
    parts: list[str] = []
    current = ""
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            if quoted and i + 1 < len(text) and text[i + 1] == '"':
                current += '"'
                i += 1
            else:
                quoted = not quoted
        elif ch == "." and not quoted:
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if quoted:
        raise ValueError(f"unbalanced quotes in table name {text!r}")
    parts.append(current)
    if len(parts) > 2:
        raise ValueError(f"table name {text!r} has more than two parts (use schema.table)")
    for part in parts:
        check_identifier(part)
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def options_for(obj: ObjectPlan) -> SqlObjectOptions:
    """Validated options of a SQL object."""
    return SqlObjectOptions.model_validate(obj.options)


class SqlConnection(ConnectionConfig):
    """Connection settings every SQL source has; the password comes from ``credentials.password``."""

    host: str = "localhost"
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    connect_timeout_s: int = Field(default=10, ge=1, le=600)
    statement_timeout_s: int = Field(default=0, ge=0, description="0 = no limit")
