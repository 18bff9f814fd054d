"""Pure helpers shared by the SQL sources: options, identifiers, incremental predicates.

Nothing here opens a connection. Identifiers from config are validated and quoted here, and
cursor values are always bound as parameters, so no config value is ever spliced into SQL text.
A named ``query`` is checked statically for anything that could modify data or take locks
(the sources also run it in a READ ONLY transaction, which catches what a scan cannot see).
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, DativoError, PermanentExtractError, QualityError
from dativo_dagster.sources.base import ConnectionConfig, Source, SourceOptions
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound
from dativo_dagster.state import CursorState
from dativo_dagster.types import SOURCE_REASON_COLUMN, type_label

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


# ----------------------------------------------------------------------------- read-only queries

# Words that, outside string literals, comments and quoted identifiers, mean the statement can
# change data, schema, grants or session state, or lock rows. None of them belongs in a SELECT.
_MODIFYING_WORDS = frozenset(
    {"insert", "update", "delete", "merge", "truncate", "drop", "alter", "create", "grant", "revoke", "copy",
     "call", "do", "lock", "set", "into"}
)  # fmt: skip
# Built-in functions that write, lock or act on the server although a SELECT may call them (a
# READ ONLY transaction refuses some of them at run time, but not all: dblink opens its own
# connection, pg_terminate_backend and advisory locks are allowed there).
_SIDE_EFFECT_FUNCTIONS = frozenset(
    {"nextval", "setval", "set_config", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_xact_lock",
     "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
     "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared", "pg_advisory_unlock",
     "pg_advisory_unlock_shared", "pg_advisory_unlock_all", "pg_terminate_backend", "pg_cancel_backend",
     "pg_reload_conf", "pg_rotate_logfile", "pg_switch_wal", "pg_create_restore_point", "pg_promote", "pg_notify",
     "pg_logical_emit_message", "pg_create_physical_replication_slot", "pg_create_logical_replication_slot",
     "pg_drop_replication_slot", "pg_replication_origin_create", "pg_replication_origin_drop", "pg_stat_reset",
     "pg_stat_reset_shared", "pg_stat_reset_single_table_counters", "pg_stat_reset_single_function_counters",
     "pg_stat_reset_slru", "pg_stat_reset_replication_slot", "pg_file_write", "pg_file_rename", "pg_file_unlink",
     "pg_file_sync", "lo_import", "lo_export", "lo_unlink", "lo_create", "lo_creat", "lo_from_bytea", "lo_put",
     "lo_truncate", "dblink", "dblink_exec", "dblink_send_query", "dblink_open", "dblink_connect",
     "get_lock", "release_lock", "release_all_locks", "last_insert_id", "sys_exec", "sys_eval"}
)  # fmt: skip
# Row-locking clauses: SELECT ... FOR UPDATE / FOR NO KEY UPDATE / FOR SHARE / FOR KEY SHARE.
_LOCK_AFTER_FOR = frozenset({"update", "share", "no", "key"})


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "punct", "literal" (string), "quoted" (quoted identifier)
    text: str  # lower-cased word, the punctuation character, the identifier's name, or "" for a literal
    start: int
    end: int


def _sql_tokens(query: str, *, postgres: bool) -> list[_Token]:
    """Tokens of ``query`` outside comments, with literals and quoted identifiers opaque.

    ``postgres`` picks the lexical rules: PostgreSQL nests block comments and has backslash
    escapes only in ``E'...'``; MySQL has backslash escapes in every string, ``#`` comments,
    ``--`` comments only before white space, and runs ``/*! ... */`` as code. Dollar quoting
    (``$tag$...$tag$``) is PostgreSQL's and backtick quoting MySQL's, but neither can appear in
    the other dialect's valid SQL, so both rules read them as literals.
    """
    tokens: list[_Token] = []
    i, n = 0, len(query)

    def skip_quoted(start: int, quote: str, backslash: bool) -> int:
        j = start + 1
        while j < n:
            ch = query[j]
            if backslash and ch == "\\":
                j += 2
                continue
            if ch == quote:
                if j + 1 < n and query[j + 1] == quote:
                    j += 2
                    continue
                return j + 1
            j += 1
        return n  # unterminated: the server will refuse it

    while i < n:
        ch = query[i]
        if ch.isspace():
            i += 1
        elif _line_comment(query, i, postgres=postgres):
            end = query.find("\n", i)
            i = n if end < 0 else end + 1
        elif query.startswith("/*", i):
            if not postgres and (query.startswith("/*!", i) or query.startswith("/*M!", i)):
                # MySQL executes the text of a version comment: scan it as code.
                i += 4 if query.startswith("/*M!", i) else 3
                while i < n and query[i].isdigit():
                    i += 1
                continue
            depth, j = 1, i + 2
            while j < n and depth:
                if postgres and query.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif query.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            i = j
        elif ch == "'":
            previous = tokens[-1] if tokens else None
            escaped = not postgres or (
                previous is not None and previous.kind == "word" and previous.text == "e" and previous.end == i
            )
            start, i = i, skip_quoted(i, "'", escaped)
            tokens.append(_Token("literal", "", start, i))
        elif ch == '"':
            start, i = i, skip_quoted(i, '"', not postgres)
            if postgres:  # a quoted identifier: it can still name a function
                tokens.append(_Token("quoted", query[start + 1 : i - 1].replace('""', '"'), start, i))
            else:
                tokens.append(_Token("literal", "", start, i))
        elif ch == "`":
            start, i = i, skip_quoted(i, "`", False)
            tokens.append(_Token("quoted", query[start + 1 : i - 1].replace("``", "`"), start, i))
        elif ch == "$" and (match := _DOLLAR_QUOTE.match(query, i)) and not (tokens and tokens[-1].end == i):
            tag = match.group(0)
            end = query.find(tag, i + len(tag))
            start, i = i, n if end < 0 else end + len(tag)
            tokens.append(_Token("literal", "", start, i))
        elif ch.isalnum() or ch == "_" or ord(ch) > 127:
            j = i + 1
            while j < n and (query[j].isalnum() or query[j] in "_$" or ord(query[j]) > 127):
                j += 1
            tokens.append(_Token("word", query[i:j].lower(), i, j))
            i = j
        else:
            tokens.append(_Token("punct", ch, i, i + 1))
            i += 1
    return tokens


def _line_comment(query: str, i: int, *, postgres: bool) -> bool:
    if query.startswith("--", i):
        return postgres or i + 2 >= len(query) or query[i + 2].isspace()
    return query[i] == "#" and not postgres


_DOLLAR_QUOTE = re.compile(r"\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$")


def _modifying_construct(tokens: list[_Token]) -> str | None:
    """What in ``tokens`` could modify data or lock rows, or None."""
    for index, token in enumerate(tokens):
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == "quoted":
            # "pg_terminate_backend"(...) calls the function as surely as the bare name does.
            name = token.text.lower()
            if name in _SIDE_EFFECT_FUNCTIONS and after is not None and after.kind == "punct" and after.text == "(":
                return f"a call of {name}(), which writes, locks or acts on the server"
            continue
        if token.kind != "word":
            continue
        before = tokens[index - 1] if index else None
        word = token.text
        if word in _SIDE_EFFECT_FUNCTIONS and after is not None and after.text == "(":
            return f"a call of {word}(), which writes, locks or acts on the server"
        if word == "for" and after is not None and after.kind == "word" and after.text in _LOCK_AFTER_FOR:
            return "a row-locking clause (FOR UPDATE / FOR SHARE)"
        if word == "next" and after is not None and after.text == "value":
            return "NEXT VALUE FOR, which advances a sequence"
        if word not in _MODIFYING_WORDS:
            continue
        if before is not None and (before.text == "." or (before.kind == "word" and before.text == "as")):
            continue  # a qualified column (t.update) or an alias (AS update)
        if word == "set" and before is not None and before.text == "character":
            continue  # MySQL: CAST(x AS CHAR CHARACTER SET utf8mb4)
        return word.upper()
    return None


def check_read_only_query(query: str) -> str:
    """Refuse a named query that is not one SELECT or that could modify data or lock rows.

    The text is scanned outside string literals, comments and quoted identifiers, under both
    PostgreSQL's and MySQL's lexical rules (a construct either server would run is refused).
    A name that happens to be one of the refused words can be quoted ("update", `update`).

    Returns:
        The query without a trailing semicolon.

    Raises:
        ValueError: the query is not a single SELECT/WITH statement, or contains INSERT, UPDATE,
            DELETE, MERGE, TRUNCATE, DROP, ALTER, CREATE, GRANT, REVOKE, COPY, CALL, DO, LOCK, SET,
            INTO, FOR UPDATE/SHARE, or a call of a built-in function that writes or locks.
    """
    body = query
    for postgres in (True, False):
        tokens = _sql_tokens(query, postgres=postgres)
        if not tokens or tokens[0].kind != "word" or tokens[0].text not in ("select", "with"):
            raise ValueError("'query' must start with SELECT or WITH")
        semicolons = [t for t in tokens if t.text == ";" and t.kind == "punct"]
        if semicolons and (len(semicolons) > 1 or semicolons[0] is not tokens[-1]):
            raise ValueError("'query' must be a single SELECT statement")
        found = _modifying_construct(tokens)
        if found is not None:
            raise ValueError(
                f"'query' must only read, but it contains {found} (outside string literals and comments); "
                "dativo runs named queries read-only. If that word is a column or table name, quote it"
            )
        if semicolons and postgres:
            body = query[: semicolons[0].start]
    return body.strip()


def query_body(query: str) -> str:
    """The named query as it is embedded in dativo's SQL: no trailing semicolon, and a line
    break before whatever follows, so a trailing ``--`` comment cannot swallow it."""
    return check_read_only_query(query) + "\n"


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


@dataclass(frozen=True)
class IncrementalPredicate:
    """``WHERE <column> >= / > %s`` with its bound parameter (or no predicate)."""

    column: str | None
    operator: str
    value: Any

    @property
    def active(self) -> bool:
        """True when rows must be filtered."""
        return self.column is not None and self.value is not None


def incremental_predicate(obj: ObjectPlan, cursor: CursorState | None) -> IncrementalPredicate:
    """The row filter for an incremental read (the lookback is applied here)."""
    if obj.strategy in (Strategy.FULL_REFRESH, Strategy.FILE_MTIME) or obj.cursor_field is None:
        return IncrementalPredicate(None, "", None)
    codec = CursorCodec(unit=obj.config.incremental.cursor_unit)
    value, inclusive = lower_bound(obj.strategy, cursor, obj.config.incremental.lookback_days, codec)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc)
    return IncrementalPredicate(obj.cursor_field, ">=" if inclusive else ">", value)


def options_for(obj: ObjectPlan) -> SqlObjectOptions:
    """Validated options of a SQL object."""
    return SqlObjectOptions.model_validate(obj.options)


ColumnT = TypeVar("ColumnT")


def contract_columns(obj: ObjectPlan, columns: list[ColumnT], name_of: Callable[[ColumnT], str]) -> list[ColumnT]:
    """Columns to read: the contract's (by source name, in contract order) when there is one, else all.

    Raises:
        ConfigError: CFG001 naming a required contract column the source does not have.
    """
    if obj.contract is None:
        return columns
    by_name = {name_of(c): c for c in columns}
    required = [c.source_name or c.name for c in obj.contract.columns if c.required]
    missing_columns(required, list(by_name), obj)
    wanted = [c.source_name or c.name for c in obj.contract.columns]
    return [by_name[name] for name in wanted if name in by_name]


def missing_columns(wanted: list[str], available: list[str], obj: ObjectPlan) -> None:
    """CFG001 naming the first configured column the source does not have."""
    have = set(available)
    for name in wanted:
        if name not in have:
            raise ConfigError(
                f"{obj.label}: column '{name}' does not exist in the source (available: {', '.join(available)})"
            )


def best_effort_cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Vectorised cast of text from the server to ``target``; on any odd value, keep the text.

    Keeping the text hands the column to the contract enforcer, which converts value by value and
    quarantines just the rows that do not convert (a zero date, ``infinity``, ``NaN`` numeric).
    """
    if column.type == target:
        return column
    if pa.types.is_boolean(target) and not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        # Arrow casts every non-zero number to true; only a column of 0s and 1s is a boolean column
        # (MySQL's tinyint(1) holds -128..127). Anything else goes to the enforcer, which accepts
        # 0 and 1 and quarantines the other values with the reason.
        if pa.types.is_integer(column.type):
            low, high = pc.min_max(column).values()
            if low.as_py() is None or (low.as_py() >= 0 and high.as_py() <= 1):
                return pc.cast(column, target)
        return column
    try:
        return pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    if pa.types.is_timestamp(target) and target.tz is not None:
        try:
            # Servers that print UTC without an offset (MySQL with time_zone '+00:00').
            return pc.assume_timezone(pc.cast(column, pa.timestamp(target.unit)), "UTC")
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    return column


def guard_cursor_column(
    batches: Iterator[pa.RecordBatch], obj: ObjectPlan, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """Pass batches through, failing loudly if the cursor column is not of its mapped type.

    Other columns may stay text when a value does not convert (the enforcer quarantines that
    row), but the new cursor is the maximum of the cursor column: over text, ``'infinity'`` or
    ``'0000-00-00'`` would sort after every real timestamp and silently end all later reads.

    Raises:
        QualityError: QUAL001 naming the column and the value; nothing is committed.
    """
    name = obj.cursor_field
    if name is None or schema.get_field_index(name) < 0:
        yield from batches
        return
    expected = schema.field(name).type
    try:
        for batch in batches:
            column = batch.column(name)
            if column.type != expected:
                shown = _first_unconvertible(column, expected)
                raise QualityError(
                    f"{obj.label}: cursor column '{name}' holds {shown!r}, which cannot be read as "
                    f"{type_label(expected)}, so the cursor cannot advance past it; nothing was committed",
                    hint="exclude or convert such rows with a 'query' object, or pick another cursor_field",
                )
            yield batch
    finally:
        # Release the server-side stream now, not when the inner generator is collected.
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _first_unconvertible(column: pa.Array, target: pa.DataType) -> str:
    for value in column.to_pylist():
        if value is None:
            continue
        try:
            best = best_effort_cast(pa.array([value], column.type), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return str(value)
        if best.type != target:
            return str(value)
    return "?"


ICEBERG_MAX_DECIMAL_DIGITS = 38


def decimal_type(
    precision: int, scale: int, *, column: str, source_type: str, label: str, contract: bool
) -> pa.DataType:
    """Arrow type of a fixed-point column: ``decimal(p, s)``, or text when Iceberg cannot hold it.

    Iceberg decimals hold at most 38 digits. With a schema contract the column is read as its
    exact text and the enforcer converts each value to the contract's type (or quarantines the
    row); without one, no type would hold every value, so the object is refused before any table
    exists.

    Raises:
        ConfigError: CFG001 naming the column and its type, without a contract.
    """
    if precision <= ICEBERG_MAX_DECIMAL_DIGITS:
        return pa.decimal128(precision, scale)
    if contract:
        return pa.string()
    raise ConfigError(
        f"{label}: column '{column}' has type {source_type}, wider than Iceberg's "
        f"{ICEBERG_MAX_DECIMAL_DIGITS}-digit decimal",
        hint="cast it in a 'query' object (to text, or to a decimal of at most 38 digits that holds its values), "
        "or declare the column in a schema contract (e.g. as string); its values are then converted exactly or "
        "quarantined",
    )


def checked_utf8(column: pa.Array, name: str) -> tuple[pa.Array, list[str | None] | None]:
    """``column`` (bytes, or text not yet checked) as valid UTF-8 text, with a reason per bad row.

    A value that is not valid UTF-8 (a SQL_ASCII database holding Latin-1 bytes, a MySQL session
    sending another character set) becomes null, and its row is marked with a reason naming the
    column, so the enforcer quarantines that row only.
    """
    raw = column.view(pa.binary()) if pa.types.is_string(column.type) else column
    if pa.types.is_large_string(column.type):
        raw = column.view(pa.large_binary())
    try:
        return pc.cast(raw, pa.large_string() if pa.types.is_large_binary(raw.type) else pa.string()), None
    except pa.ArrowInvalid:
        pass  # some value is not UTF-8: find which
    texts: list[str | None] = []
    reasons: list[str | None] = []
    for value in raw.to_pylist():
        if value is None:
            texts.append(None)
            reasons.append(None)
            continue
        try:
            texts.append(value.decode("utf-8"))
            reasons.append(None)
        except UnicodeDecodeError as exc:
            texts.append(None)
            shown = value[:40].decode("utf-8", "backslashreplace")
            reasons.append(f"{name}: '{shown}' is not valid UTF-8 (byte {exc.start + 1})")
    return pa.array(texts, pa.string()), reasons


def merge_reasons(rows: int, *parts: list[str | None] | None) -> list[str | None] | None:
    """Combine per-row reasons from several columns ("; "-joined), or None when no row has one."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    merged: list[str | None] = []
    for i in range(rows):
        found = [p[i] for p in present if p[i] is not None]
        merged.append("; ".join(r for r in found if r) if found else None)
    return merged if any(m is not None for m in merged) else None


def with_source_reasons(arrays: list[pa.Array], names: list[str], reasons: list[str | None] | None) -> pa.RecordBatch:
    """A batch of ``arrays``, plus :data:`SOURCE_REASON_COLUMN` when some row could not be read exactly.

    The enforcer rejects the marked rows with the reason; batches without such rows carry no
    extra column, so the common path is unchanged.
    """
    if reasons is None:
        return pa.RecordBatch.from_arrays(arrays, names=names)
    return pa.RecordBatch.from_arrays([*arrays, pa.array(reasons, pa.string())], names=[*names, SOURCE_REASON_COLUMN])


def unclassified(driver: str, message: str, label: str) -> DativoError:
    """The error for a driver failure no rule recognises: permanent, saying so, message kept."""
    return PermanentExtractError(
        f"{label}: unclassified {driver} error (not retried): {message}",
        hint="if a retry would help, report the message so dativo can classify it",
    )


def modifies_data(label: str, message: str) -> ConfigError:
    """CFG001 for a query the server refused to run in a READ ONLY transaction."""
    return ConfigError(
        f"{label}: the query modifies data, but dativo reads in a READ ONLY transaction ({message})",
        hint="give a SELECT that only reads (no data-modifying CTE, locking clause or function that writes)",
    )


def undecodable_name(exc: UnicodeError, label: str) -> ConfigError:
    """CFG001 for catalog text (a table or column name) that is not valid UTF-8."""
    return ConfigError(
        f"{label}: the server sent a name (table, column or type) that is not valid UTF-8 ({exc})",
        hint="rename it, or select it under a valid name in a 'query' object",
    )


class SqlConnection(ConnectionConfig):
    """Connection settings every SQL source has; the password comes from ``credentials.password``."""

    host: str = "localhost"
    port: int = Field(ge=1, le=65535)
    database: str
    user: str
    connect_timeout_s: int = Field(default=10, ge=1, le=600)
    statement_timeout_s: int = Field(default=0, ge=0, description="0 = no limit")


class DiscoveredColumn(Protocol):
    """What the shared plumbing needs of a driver's column description."""

    @property
    def name(self) -> str: ...

    @property
    def not_null(self) -> bool: ...


ColumnT_co = TypeVar("ColumnT_co", bound=DiscoveredColumn)


class SqlSource(Source, Generic[ColumnT_co]):
    """Plumbing shared by the SQL sources: a connection per call, errors mapped, discovery cached.

    A driver module supplies ``connect``, ``classify``, the column lookup and the type mapping;
    the read path stays its own (COPY for PostgreSQL, connectorx or a cursor for MySQL).
    """

    options_model = SqlObjectOptions
    supported_strategies = frozenset({Strategy.FULL_REFRESH, Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED})
    ordered_by_cursor = True  # a limited read orders by the cursor column
    driver_error: ClassVar[type[Exception]]
    list_objects_sql: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._columns: dict[str, list[ColumnT_co]] = {}
        self._lock = threading.Lock()

    @property
    def _settings(self) -> SqlConnection:
        assert isinstance(self.connection, SqlConnection)
        return self.connection

    def _label(self) -> str:
        s = self._settings
        return f"{self.type} {s.host}:{s.port}/{s.database}"

    @abc.abstractmethod
    def connect(self) -> Any:
        """A new DB-API connection (one per call: objects of a job are read in parallel threads)."""

    @abc.abstractmethod
    def classify(self, exc: BaseException, label: str) -> DativoError:
        """Map a driver error to the taxonomy (message redacted)."""

    @abc.abstractmethod
    def fetch_columns(self, cursor: Any, options: SqlObjectOptions, obj: ObjectPlan) -> list[ColumnT_co]:
        """Describe the object's columns from the catalog (CFG001 if the table does not exist)."""

    @abc.abstractmethod
    def arrow_type(self, column: ColumnT_co, label: str, *, contract: bool = False) -> pa.DataType:
        """Arrow type of a column (CFG001 naming it when it cannot be mapped).

        Args:
            column: The discovered column.
            label: The object's label, for messages.
            contract: The object has a schema contract, so a column Iceberg cannot hold as is
                (a decimal beyond 38 digits) is read as text for the enforcer to convert.
        """

    @contextlib.contextmanager
    def _connection(self, label: str) -> Iterator[Any]:
        connection = self.connect()
        try:
            yield connection
        except self.driver_error as exc:
            raise self.classify(exc, label) from None
        except UnicodeError as exc:
            raise undecodable_name(exc, label) from None
        finally:
            connection.close()

    def check_connection(self) -> None:
        """Connect and run ``SELECT 1``."""
        with self._connection(self._label()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    def list_objects(self) -> list[str]:
        """``schema.table`` of the tables and views the source can read."""
        with self._connection(self._label()) as connection, connection.cursor() as cursor:
            cursor.execute(self.list_objects_sql)
            return [f"{schema}.{name}" for schema, name in cursor.fetchall()]

    def _discover(self, connection: Any, obj: ObjectPlan) -> list[ColumnT_co]:
        """The object's columns (narrowed to ``options.columns``), looked up once per source instance."""
        with self._lock:
            cached = self._columns.get(obj.name)
        if cached is not None:
            return cached
        options = options_for(obj)
        with connection.cursor() as cursor:
            columns = self.fetch_columns(cursor, options, obj)
        if options.columns:
            missing_columns(options.columns, [c.name for c in columns], obj)
            wanted = set(options.columns)
            columns = [c for c in columns if c.name in wanted]
        with self._lock:
            self._columns[obj.name] = columns
        return columns

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """Arrow schema from the catalog (NOT NULL columns are non-nullable)."""
        with self._connection(obj.label) as connection:
            columns = self._discover(connection, obj)
        contract = obj.contract is not None
        return pa.schema(
            [
                pa.field(c.name, self.arrow_type(c, obj.label, contract=contract), nullable=not c.not_null)
                for c in columns
            ]
        )

    def _selected(self, obj: ObjectPlan, columns: list[ColumnT_co]) -> list[ColumnT_co]:
        """Columns to read: the contract's when there is one, else all."""
        return contract_columns(obj, columns, lambda column: column.name)
