"""The static check that a named query only reads: one SELECT, nothing that writes or locks.

The query is lexed outside string literals, comments and quoted identifiers, under both
PostgreSQL's and MySQL's rules, and refused if it holds a word, clause or built-in call that
could modify data or take locks. The sources also run it in a READ ONLY transaction, which
catches what a scan cannot see.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
