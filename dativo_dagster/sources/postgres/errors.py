"""psycopg2 errors to dativo's taxonomy: by SQLSTATE when there is one, else by libpq's message.

See :func:`classify` for the rule; every message is redacted and never shows the DSN.
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, PermanentExtractError, QualityError
from dativo_dagster.sources.sql_common import modifies_data, unclassified

# Errors that carry a SQLSTATE are classified by it (the class is its first two characters).
# Classes whose errors may pass with time: retried.
_TRANSIENT_CLASSES = {
    "08": "connection failure",
    "40": "transaction rolled back (serialization failure or deadlock)",
    "53": "insufficient resources",
    "57": "operator intervention or cancel (statement timeout, shutdown)",
    "58": "system error",
}
_TRANSIENT_STATES = {
    "55P03": "lock not available",
    "72000": "snapshot too old",
}
# Classes that name a problem with the object's configuration (its table, columns or query).
_CONFIG_CLASSES = {
    "42": "syntax error or undefined object",
    "25": "invalid transaction state",
    "0A": "feature not supported",
    "3F": "invalid schema name",
    "3D": "invalid database name",
    "54": "program limit exceeded",
}
# Connection-level failures reported by libpq carry no SQLSTATE: classified by their message
# (lower-cased), in this order. Anything else without a SQLSTATE is unclassified (permanent).
_AUTH_MARKERS = (
    "password authentication failed", "no pg_hba.conf entry", "authentication failed", 'role "',
    "no password supplied", "permission denied",
)  # fmt: skip
_CONFIG_MARKERS = (
    "does not exist", "name or service not known", "nodename nor servname", "invalid sslmode",
    "server does not support ssl", "root certificate", "certificate verify failed", "invalid connection option",
    "invalid port", "invalid integer value",
)  # fmt: skip
_TRANSIENT_MARKERS = (
    "could not connect", "connection refused", "timeout expired", "timed out", "server closed the connection",
    "terminating connection", "could not receive data", "could not send data", "ssl syscall error",
    "ssl connection has been closed", "eof detected", "connection already closed", "no connection to the server",
    "network is unreachable", "no route to host", "temporary failure in name resolution", "connection reset",
    "broken pipe", "the database system is", "too many clients", "too many connections", "lost synchronization",
    # psycopg2 when the connection breaks during COPY: libpq has no error message to give
    "no message from the libpq",
)  # fmt: skip


# psycopg2 raises one class per SQLSTATE; the class tells the state when ``pgcode`` is unset
# (an error raised by the client library rather than received from the server).
_SQLSTATE_OF_CLASS: dict[type, str] = {
    cls: code for code, cls in getattr(psycopg2.extensions, "sqlstate_errors", {}).items()
} or {cls: code for code, cls in getattr(psycopg2._psycopg, "sqlstate_errors", {}).items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a psycopg2 (or pipe) error to dativo's taxonomy (message redacted, no DSN).

    The rule, in order:

    * SQLSTATE class 08 (connection), 53 (insufficient resources), 57 (operator intervention,
      cancel, statement timeout), 40 (serialization failure, deadlock), 58 (system I/O), and
      55P03 (lock not available), 72000 (snapshot too old): EXT001, transient.
    * class 28 (invalid authorization) and 42501 (insufficient privilege): AUTH001.
    * 25006 (a write in a READ ONLY transaction): CFG001, the query modifies data.
    * class 42 (syntax, undefined table/column/function), 25, 0A, 3F, 3D, 54: CFG001.
    * class 22 (data exception): QUAL001, naming the column when the server does.
    * class XX (internal error, corruption) and any other SQLSTATE: EXT001, permanent.
    * no SQLSTATE (libpq's connection-level errors): by message; authentication → AUTH001, a
      missing database, unknown host or TLS setting → CFG001, a refused, dropped or timed-out
      connection → EXT001 transient.
    * anything else is unclassified: permanent, with the driver's message (redacted).
    """
    message = _first_line(exc)
    if isinstance(exc, OSError):
        # The COPY pipe: only broken when the consumer went away or the server stopped mid-stream.
        return ExtractError(f"{label}: I/O error while streaming: {message}")
    code = getattr(exc, "pgcode", None) or _SQLSTATE_OF_CLASS.get(type(exc))
    if isinstance(code, str) and len(code) == 5:
        return _classify_sqlstate(exc, code, message, label)
    if isinstance(exc, (psycopg2.DatabaseError, psycopg2.InterfaceError)):
        lowered = message.lower()
        if any(m in lowered for m in _AUTH_MARKERS):
            return AuthError(f"{label}: authentication failed: {message}")
        if any(m in lowered for m in _CONFIG_MARKERS):
            return ConfigError(f"{label}: cannot connect: {message}")
        if any(m in lowered for m in _TRANSIENT_MARKERS):
            return ExtractError(f"{label}: connection failed: {message}")
    return unclassified("PostgreSQL", f"{type(exc).__name__}: {message}", label)


def _classify_sqlstate(exc: BaseException, code: str, message: str, label: str) -> DativoError:
    klass = code[:2]
    shown = f"{message} (SQLSTATE {code})"
    if code in _TRANSIENT_STATES:
        return ExtractError(f"{label}: {_TRANSIENT_STATES[code]}: {shown}")
    if klass in _TRANSIENT_CLASSES:
        return ExtractError(f"{label}: {_TRANSIENT_CLASSES[klass]}: {shown}")
    if klass == "28" or code == "42501":
        return AuthError(f"{label}: permission denied: {shown}")
    if code == "25006":
        return modifies_data(label, shown)
    if klass in _CONFIG_CLASSES:
        return ConfigError(f"{label}: {_CONFIG_CLASSES[klass]}: {shown}")
    if klass == "22":
        diag = getattr(exc, "diag", None)
        column = getattr(diag, "column_name", None)
        where = f"column '{column}': " if column else ""
        return QualityError(
            f"{label}: {where}the server could not produce a value: {shown}; nothing was committed",
            hint="fix or exclude the value at the source, or convert it in a 'query' object",
        )
    if klass == "XX":
        return PermanentExtractError(f"{label}: internal error of the server (not retried): {shown}")
    return unclassified("PostgreSQL", shown, label)
