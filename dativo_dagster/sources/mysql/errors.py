"""MySQL, MariaDB and connectorx errors to dativo's taxonomy, by the server's error code.

pymysql errors carry the code (:func:`classify`); connectorx's carry it only in their text
(:func:`classify_text`). Both end in :func:`classify_code`. Every message is redacted.
"""

from __future__ import annotations

import re

import pymysql

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, QualityError
from dativo_dagster.sources.sql_common import modifies_data, unclassified

# Error codes of the server (1000-4999) and of the client library (2000-2999), by class.
_TRANSIENT_CODES = {
    2002: "cannot connect", 2003: "cannot connect", 2006: "server has gone away", 2013: "lost connection",
    2055: "lost connection", 2012: "handshake failed", 1040: "too many connections",
    1203: "too many connections for the user", 1226: "a user resource limit is reached (resets hourly)",
    1205: "lock wait timeout", 1213: "deadlock", 1969: "statement timed out", 3024: "statement timed out",
    1317: "query interrupted", 1927: "connection killed", 1053: "server shutdown in progress",
    1037: "server out of memory", 1038: "server out of sort memory", 1041: "server out of memory",
    1135: "server cannot create a thread", 1152: "connection aborted", 1184: "connection aborted",
    1158: "network read error", 1159: "network read timeout", 1160: "network write error",
    1161: "network write timeout", 4031: "disconnected by the server (inactivity)",
}  # fmt: skip
_AUTH_CODES = {1044, 1045, 1142, 1143, 1227, 1698, 1370, 1131, 1132, 1211, 1251, 1275, 1820, 1862, 2059, 2061,
               3118, 4151}  # fmt: skip
_MODIFIES_CODES = {1792, 1290}  # a write in a READ ONLY transaction; the server runs --read-only
_CONFIG_CODES = {
    1046, 1049, 1052, 1054, 1055, 1056, 1060, 1064, 1102, 1103, 1109, 1111, 1140, 1146, 1149, 1166, 1176, 1222,
    1235, 1241, 1247, 1248, 1267, 1270, 1271, 1295, 1305, 1318, 1327, 1356, 1449, 1582, 1583, 1584, 1630, 4078,
}  # fmt: skip
_DATA_CODES = {1242, 1264, 1265, 1292, 1300, 1365, 1366, 1367, 1406, 1411, 1441, 1690, 1916, 1918, 3140, 3141,
               3146, 3156}  # fmt: skip


def classify_code(code: int | None, message: str, label: str, driver: str = "MySQL") -> DativoError:
    """Map a MySQL/MariaDB error code to dativo's taxonomy.

    The rule: connection failures (2002, 2003, 2006, 2013, 2055, ...), lock waits (1205),
    deadlocks (1213), too many connections (1040), statement timeouts (1969, 3024), killed or
    interrupted statements and server resource shortages are EXT001 transient; access denied
    (1044, 1045, 1142, 1143, 1227, 1698, ...) is AUTH001; a write refused in a READ ONLY
    transaction (1792, 1290) is CFG001 "the query modifies data"; syntax errors and unknown
    databases, tables, columns or functions are CFG001; data errors (out of range, truncated,
    invalid string or JSON, subquery returning several rows) are QUAL001. Any other code is
    unclassified: permanent, with the server's message (redacted).
    """
    shown = f"{message} (error {code})" if code else message
    if code in _TRANSIENT_CODES:
        return ExtractError(f"{label}: {_TRANSIENT_CODES[code]}: {shown}")
    if code in _AUTH_CODES:
        return AuthError(f"{label}: access denied: {shown}")
    if code in _MODIFIES_CODES:
        return modifies_data(label, shown)
    if code in _CONFIG_CODES:
        return ConfigError(f"{label}: {shown}")
    if code in _DATA_CODES:
        return QualityError(
            f"{label}: the server could not produce a value: {shown}; nothing was committed",
            hint="fix or exclude the value at the source, or convert it in a 'query' object",
        )
    return unclassified(driver, shown, label)


def classify(exc: BaseException, label: str) -> DativoError:
    """Map a pymysql error to dativo's taxonomy (message redacted; see :func:`classify_code`)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    text = exc.args[1] if len(exc.args) > 1 else str(exc)
    message = redact_text(str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__)
    if isinstance(exc, pymysql.err.InterfaceError) and not code:
        # pymysql raises these only for a connection it already lost or closed.
        return ExtractError(f"{label}: connection lost: {message or type(exc).__name__}")
    return classify_code(code, message, label)


_CONNECTORX_CODE = re.compile(r"ERROR (\d{4,5}) \(")
_CONNECTORX_TRANSIENT = (
    "connection refused", "connection reset", "broken pipe", "timed out", "unexpected eof", "io error",
    "os error", "server has gone away", "lost connection", "connection closed", "connectionclosed",
)  # fmt: skip


def classify_text(message: str, label: str) -> DativoError:
    """Map a connectorx error message to the taxonomy.

    No error object crosses that boundary, but the server's ``ERROR <code> (<state>)`` is in the
    text: it is classified like a pymysql error. Without one: a value connectorx cannot decode is
    QUAL001 (``engine: pymysql`` reads it and quarantines the row); access denied is AUTH001; a
    refused, reset or timed-out socket is EXT001 transient; anything else is unclassified.
    """
    text = redact_text(message.strip().splitlines()[0] if message.strip() else "connectorx failed")
    found = _CONNECTORX_CODE.search(text)
    if found is not None:
        return classify_code(int(found.group(1)), text, label, driver="connectorx")
    lowered = text.lower()
    if "couldn't convert the value" in lowered or "scale is not equal" in lowered:
        return QualityError(
            f"{label}: the source holds a value the connectorx reader cannot decode ({text[-160:]}); "
            "nothing was committed",
            hint="set connection.engine: pymysql for this source; it quarantines such rows",
        )
    if "access denied" in lowered:
        return AuthError(f"{label}: access denied: {text}")
    if any(marker in lowered for marker in _CONNECTORX_TRANSIENT):
        return ExtractError(f"{label}: read failed: {text}")
    return unclassified("connectorx", text, label)
