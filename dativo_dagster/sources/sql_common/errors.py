"""Errors every SQL source raises the same way: unclassified driver errors, writing queries, undecodable names."""

from __future__ import annotations

from dativo_dagster.errors import ConfigError, DativoError, PermanentExtractError


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
