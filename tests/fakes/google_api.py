"""Local emulator of the Google Drive v3 and Sheets v4 read API, with Google's OAuth token endpoint.

One host serves everything; a client rewrites ``https://www.googleapis.com``,
``https://sheets.googleapis.com`` and the credentials' ``token_uri`` to the emulator's URL, so
paths keep their real prefixes:

* ``POST /token``: service-account JWT grants (``urn:ietf:params:oauth:grant-type:jwt-bearer``,
  RS256 signature checked against the account's registered public key, ``iat``/``exp`` checked
  against the real wall clock the signer used) and ``refresh_token`` grants of authorized
  users; answers expiring bearer tokens (lifetime on the emulator's :class:`FakeClock`);
* ``GET /drive/v3/files`` with ``q`` (a real parser of the query grammar: ``'<id>' in parents``,
  ``trashed``, ``mimeType``, ``name`` ``=``/``!=``/``contains``, ``modifiedTime``/``createdTime``
  comparisons, ``and``/``or``/``not``, parentheses, ``\\'`` and ``\\\\`` escapes), ``pageSize``
  (1..1000, default 100), ``pageToken``, ``orderBy``, ``fields`` (partial response),
  ``corpora``/``driveId``/``supportsAllDrives``/``includeItemsFromAllDrives``, ``spaces``;
* ``GET /drive/v3/files/{fileId}`` (metadata, or the bytes with ``alt=media``, honouring a
  ``Range`` header with 206/416) and ``GET /drive/v3/files/{fileId}/export`` (CSV/TSV of a
  native spreadsheet's first sheet, formatted values, 10 MB export limit);
* ``GET /v4/spreadsheets/{id}`` (metadata, ``ranges``, ``includeGridData``, ``fields``),
  ``GET /v4/spreadsheets/{id}/values/{range}`` (A1 ranges, ``valueRenderOption``,
  ``dateTimeRenderOption``, ``majorDimension``) and ``GET .../values:batchGet``;
* Google's error bodies: Drive's v3 format (``errors[]`` with ``domain``/``reason``/``location``)
  and Sheets' ``google.rpc.Status`` format (``status``, ``details``);
* quotas per principal on rolling windows: Sheets "Read requests per minute per user" (429
  ``RESOURCE_EXHAUSTED``), Drive "Queries per 100 seconds per user" (403
  ``userRateLimitExceeded`` or, configurable, 429 ``rateLimitExceeded``).

Visibility: a file is visible to a principal (service-account or user email) when shared with
it directly, through any ancestor folder, or through membership of its shared drive. Files of
shared drives are listed only with ``supportsAllDrives=true&includeItemsFromAllDrives=true`` and
``corpora=drive&driveId=...`` or ``corpora=allDrives``. Without ``orderBy`` files are listed by
id (Google leaves the default order unspecified; the emulator's is stable); every order ends
with the id as a tie-breaker, and a page token carries the last sort key, so files changed
between pages move rather than shift their neighbours (a file whose sort key moves past the
cursor shows up again, as on Drive).

Cells: see :class:`Cell` (numbers, booleans, text, dates as serial numbers, percentages,
currency, formulas with a cached value, error values) — plain Python values are accepted too.

Benchmark use: ``python -m tests.fakes.google_api --port 0 [--latency-ms 30]`` prints the base
URL and serves until SIGTERM; set the data up through ``/__fake__/call/<method>``
(:attr:`GoogleEmulator.admin_methods`).
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime as dt
import functools
import hashlib
import io
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes.server import (
    Emulator,
    FakeClock,
    FakeServer,
    Limit,
    Request,
    Response,
    common_arguments,
    run_cli,
)

FOLDER_MIME = "application/vnd.google-apps.folder"
SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
NATIVE_PREFIX = "application/vnd.google-apps."
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
EXPORT_LIMIT = 10 * 1024 * 1024
SERIAL_EPOCH = dt.datetime(1899, 12, 30)
DRIVE_SCOPES = frozenset(
    f"https://www.googleapis.com/auth/{s}" for s in ("drive", "drive.readonly", "drive.file", "drive.metadata.readonly")
)
SHEETS_SCOPES = DRIVE_SCOPES | frozenset(
    f"https://www.googleapis.com/auth/{s}" for s in ("spreadsheets", "spreadsheets.readonly")
)
DEFAULT_SCOPES = (
    "https://www.googleapis.com/auth/drive.readonly",
    "https://www.googleapis.com/auth/spreadsheets.readonly",
)
#: Quota class names (keys of ``limits``) and their defaults.
DRIVE_QUOTA = "drive"
SHEETS_READ_QUOTA = "sheets_read"
DEFAULT_LIMITS: dict[str, list[Limit]] = {
    DRIVE_QUOTA: [Limit(rps=12_000, kind="rolling", window=100.0, name="QueriesPer100SecondsPerUser")],
    SHEETS_READ_QUOTA: [Limit(rps=300, kind="rolling", window=60.0, name="ReadRequestsPerMinutePerUser")],
}
_AUTH_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
#: Drive 403 reasons a ``status`` fault may pick with ``reason=`` (domain, message).
DRIVE_403_REASONS = {
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "dailyLimitExceeded": ("usageLimits", "Daily Limit Exceeded"),
    "sharingRateLimitExceeded": (
        "global",
        'Rate limit exceeded. User message: "Sorry, you have exceeded your sharing quota."',
    ),
    "insufficientPermissions": ("global", "Insufficient Permission: Request had insufficient authentication scopes."),
    "domainPolicy": ("global", "The domain administrators have disabled Drive apps."),
    "appNotAuthorizedToFile": ("global", "The user has not granted the app access to the file."),
    "forbidden": ("global", "Forbidden"),
}
#: Field names of a Drive ``File`` that a ``fields`` mask may name (Drive rejects others).
FILE_FIELDS = frozenset(
    [
        "appProperties",
        "capabilities",
        "contentHints",
        "contentRestrictions",
        "copyRequiresWriterPermission",
        "createdTime",
        "description",
        "downloadRestrictions",
        "driveId",
        "explicitlyTrashed",
        "exportLinks",
        "fileExtension",
        "folderColorRgb",
        "fullFileExtension",
        "hasAugmentedPermissions",
        "hasThumbnail",
        "headRevisionId",
        "iconLink",
        "id",
        "imageMediaMetadata",
        "isAppAuthorized",
        "kind",
        "labelInfo",
        "lastModifyingUser",
        "linkShareMetadata",
        "md5Checksum",
        "mimeType",
        "modifiedByMe",
        "modifiedByMeTime",
        "modifiedTime",
        "name",
        "originalFilename",
        "ownedByMe",
        "owners",
        "parents",
        "permissionIds",
        "permissions",
        "properties",
        "quotaBytesUsed",
        "resourceKey",
        "sha1Checksum",
        "sha256Checksum",
        "shared",
        "sharedWithMeTime",
        "sharingUser",
        "shortcutDetails",
        "size",
        "spaces",
        "starred",
        "teamDriveId",
        "thumbnailLink",
        "thumbnailVersion",
        "trashed",
        "trashedTime",
        "trashingUser",
        "version",
        "videoMediaMetadata",
        "viewedByMe",
        "viewedByMeTime",
        "viewersCanCopyContent",
        "webContentLink",
        "webViewLink",
        "writersCanShare",
    ]
)
_DEFAULT_FILE_FIELDS = ("kind", "id", "name", "mimeType")
_ORDER_FIELDS = {"createdTime", "folder", "modifiedTime", "name", "name_natural", "quotaBytesUsed"}


class GoogleError(Exception):
    """An API error; :meth:`GoogleEmulator._error_body` renders it per API."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        domain: str = "global",
        location: str | None = None,
        location_type: str = "parameter",
        headers: Mapping[str, str] | None = None,
        details: Sequence[Mapping[str, Any]] = (),
        item_message: str | None = None,
    ) -> None:
        """Describe the error.

        Args:
            status: HTTP status.
            message: ``error.message``.
            reason: Drive's ``errors[0].reason`` (``notFound``, ``invalid``, ...).
            domain: Drive's ``errors[0].domain``.
            location: Drive's ``errors[0].location`` (parameter or header name).
            location_type: ``parameter`` or ``header``.
            headers: Extra response headers.
            details: Sheets' ``error.details``.
            item_message: Drive's ``errors[0].message`` when it differs from ``message``.
        """
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = dict(headers or {})
        self.details = list(details)
        self.item_message = item_message or message


# --------------------------------------------------------------------------------------------
# cells


def _serial(value: dt.date | dt.datetime) -> float:
    """Sheets' serial number: days since 1899-12-30, the time as a fraction of a day."""
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    delta = value.replace(tzinfo=None) - SERIAL_EPOCH
    return delta.days + delta.seconds / 86400 + delta.microseconds / 86_400_000_000


def _auto_number(value: float) -> str:
    """Sheets' "Automatic" number format."""
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e15):
        return str(int(value))
    return f"{value:.15g}"


def _json_number(value: float) -> float | int:
    """Google renders integral doubles without a fraction (``3``, not ``3.0``)."""
    if isinstance(value, int):
        return value
    return int(value) if math.isfinite(value) and value == int(value) and abs(value) < 2**53 else value


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: its raw value, its formatted text, and optionally a formula.

    Build cells with the class methods below; plain Python values in a sheet are converted by :meth:`of`
    (``int``/``float`` → number, ``bool`` → ``TRUE``/``FALSE``, ``str`` → text, ``None`` → empty,
    ``date``/``datetime`` → :meth:`date`/:meth:`datetime`).

    Renderings, as ``FORMATTED_VALUE`` / ``UNFORMATTED_VALUE`` / ``FORMULA``:

    * ``Cell.number(1234.5)`` or ``1234.5``: ``"1234.5"`` / ``1234.5`` / ``1234.5``;
    * ``Cell.percent(0.25)``: ``"25.00%"`` / ``0.25`` / ``0.25`` (``decimals=0``: ``"25%"``);
    * ``Cell.currency(1234.5)``: ``"$1,234.50"`` / ``1234.5`` / ``1234.5``;
    * ``Cell.date("2024-01-31")``: ``"2024-01-31"`` / ``45322`` / ``45322`` (the serial number;
      with ``dateTimeRenderOption=FORMATTED_STRING`` the text instead);
    * ``Cell.datetime("2024-01-31T12:00:00")``: ``"2024-01-31 12:00:00"`` / ``45322.5`` / ``45322.5``
      (likewise);
    * ``Cell.formula("=SUM(A1:A3)", 6)``: ``"6"`` / ``6`` / ``"=SUM(A1:A3)"``;
    * ``Cell.error("#DIV/0!")``: ``"#DIV/0!"`` in every rendering;
    * ``True``: ``"TRUE"`` / ``true`` / ``true``.

    Attributes:
        raw: The unformatted value (a JSON number, bool or string).
        formatted: The text shown (``FORMATTED_VALUE``).
        formula_text: The formula (``FORMULA`` rendering), if the cell holds one.
        is_datetime: Whether ``raw`` is a date/time serial number.
    """

    raw: Any
    formatted: str
    formula_text: str | None = None
    is_datetime: bool = False

    def render(self, value_option: str, datetime_option: str) -> Any:
        """The cell as ``values.get`` returns it for the two render options."""
        if value_option == "FORMATTED_VALUE":
            return self.formatted
        if value_option == "FORMULA" and self.formula_text is not None:
            return self.formula_text
        if self.is_datetime and datetime_option == "FORMATTED_STRING":
            return self.formatted
        return self.raw

    @classmethod
    def of(cls, value: Any) -> Cell | None:
        """A cell for a plain Python value (a :class:`Cell` is returned as it is; ``None``/``""``: empty)."""
        if value is None or isinstance(value, Cell):
            return value
        if isinstance(value, bool):
            return cls(value, "TRUE" if value else "FALSE")
        if isinstance(value, (int, float)):
            return cls.number(value)
        if isinstance(value, dt.datetime):
            return cls.datetime(value)
        if isinstance(value, dt.date):
            return cls.date(value)
        if isinstance(value, str):
            return cls(value, value) if value != "" else None
        if isinstance(value, Mapping):
            return cls.from_json(value)
        raise TypeError(f"cannot put a {type(value).__name__} in a cell")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cell:
        """Build from a JSON description (for the admin API): ``{"date": "2024-01-31"}``,
        ``{"datetime": ...}``, ``{"percent": 0.25, "decimals": 0}``, ``{"currency": 1234.5}``,
        ``{"formula": "=A1", "value": 6}``, ``{"error": "#N/A"}``, ``{"number": 1.5}``.
        """
        if "date" in data:
            return cls.date(data["date"], fmt=data.get("fmt", "%Y-%m-%d"))
        if "datetime" in data:
            return cls.datetime(data["datetime"], fmt=data.get("fmt", "%Y-%m-%d %H:%M:%S"))
        if "percent" in data:
            return cls.percent(float(data["percent"]), decimals=int(data.get("decimals", 2)))
        if "currency" in data:
            return cls.currency(float(data["currency"]), symbol=data.get("symbol", "$"))
        if "formula" in data:
            return cls.formula(data["formula"], data.get("value"))
        if "error" in data:
            return cls.error(data["error"])
        if "number" in data:
            return cls.number(data["number"])
        raise ValueError(f"unknown cell description {dict(data)!r}")

    @classmethod
    def number(cls, value: float) -> Cell:
        """A number in the "Automatic" format."""
        return cls(_json_number(value), _auto_number(value))

    @classmethod
    def percent(cls, value: float, decimals: int = 2) -> Cell:
        """A fraction shown as a percentage (``0.25`` → ``25.00%``)."""
        return cls(_json_number(value), f"{value * 100:.{decimals}f}%")

    @classmethod
    def currency(cls, value: float, symbol: str = "$") -> Cell:
        """An amount in the en_US currency format (``1234.5`` → ``$1,234.50``, ``-3`` → ``-$3.00``)."""
        sign = "-" if value < 0 else ""
        return cls(_json_number(value), f"{sign}{symbol}{abs(value):,.2f}")

    @classmethod
    def date(cls, value: str | dt.date, fmt: str = "%Y-%m-%d") -> Cell:
        """A date stored as its serial number, shown with the ``strftime`` format ``fmt``."""
        day = dt.date.fromisoformat(value) if isinstance(value, str) else value
        if isinstance(day, dt.datetime):
            day = day.date()
        return cls(_json_number(_serial(day)), day.strftime(fmt), None, True)

    @classmethod
    def datetime(cls, value: str | dt.datetime, fmt: str = "%Y-%m-%d %H:%M:%S") -> Cell:
        """A date and time stored as a serial number with a day fraction."""
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        return cls(_json_number(_serial(moment)), moment.strftime(fmt), None, True)

    @classmethod
    def formula(cls, formula: str, value: Any) -> Cell:
        """A formula with its cached result (``value``: a plain value or a :class:`Cell`)."""
        cached = cls.of(value) or cls("", "")
        return cls(cached.raw, cached.formatted, formula, cached.is_datetime)

    @classmethod
    def error(cls, code: str = "#DIV/0!") -> Cell:
        """An error value; every rendering shows its code."""
        return cls(code, code, None, False)


# --------------------------------------------------------------------------------------------
# A1 notation


def _col_number(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n


def _col_letters(n: int) -> str:
    out = ""
    while n > 0:
        n, rem = divmod(n - 1, 26)
        out = chr(65 + rem) + out
    return out


_CELL_REF = re.compile(r"^([A-Za-z]{0,3})(\d*)$")


def _quote_sheet(title: str) -> str:
    """A sheet name as Google writes it in a range (quoted unless plain)."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", title) and not re.fullmatch(r"[A-Za-z]{1,3}\d+", title):
        return title
    return "'" + title.replace("'", "''") + "'"


def _split_sheet(text: str) -> tuple[str | None, str | None]:
    """Split ``'My Sheet'!A1:B`` into the sheet name and the cell part (either may be None)."""
    if text.startswith("'"):
        i, name = 1, []
        while i < len(text):
            if text[i] == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    name.append("'")
                    i += 2
                    continue
                rest = text[i + 1 :]
                if rest == "":
                    return "".join(name), None
                if rest.startswith("!"):
                    return "".join(name), rest[1:]
                raise ValueError(text)
            name.append(text[i])
            i += 1
        raise ValueError(text)
    if "!" in text:
        sheet, _, cells = text.rpartition("!")
        return sheet, cells
    return None, text


# --------------------------------------------------------------------------------------------
# Drive query language


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<=|>=|=|<|>)|(?P<paren>[()])|(?P<word>[A-Za-z_][\w.]*))"
)


def _tokenize(q: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = _TOKEN.match(q, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unexpected text at {pos}: {q[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        tokens.append((kind, text))
        pos = m.end()
    return tokens


Predicate = Callable[["DriveItem"], bool]


class _QueryParser:
    """Recursive-descent parser of Drive's ``q``: ``or`` < ``and`` < ``not`` < term."""

    def __init__(self, q: str) -> None:
        self.tokens = _tokenize(q)
        self.pos = 0

    def parse(self) -> Predicate:
        if not self.tokens:
            raise ValueError("empty query")
        pred = self._or()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.tokens[self.pos][1]!r}")
        return pred

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, kind: str | None = None, word: str | None = None) -> str:
        tok = self._peek()
        if tok is None or (kind and tok[0] != kind) or (word and (tok[0] != "word" or tok[1].lower() != word)):
            raise ValueError(f"expected {word or kind}, got {tok[1] if tok else 'end of query'!r}")
        self.pos += 1
        return tok[1]

    def _is_word(self, word: str) -> bool:
        tok = self._peek()
        return tok is not None and tok[0] == "word" and tok[1].lower() == word

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._is_word("or"):
            self.pos += 1
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._not()]
        while self._is_word("and"):
            self.pos += 1
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def _not(self) -> Predicate:
        if self._is_word("not"):
            self.pos += 1
            inner = self._not()
            return lambda f: not inner(f)
        tok = self._peek()
        if tok == ("paren", "("):
            self.pos += 1
            inner = self._or()
            self._take("paren")
            return inner
        return self._term()

    def _term(self) -> Predicate:
        tok = self._peek()
        if tok is not None and tok[0] == "str":
            value = self._take("str")
            self._take(word="in")
            target = self._take("word")
            if target != "parents":
                raise ValueError(f"'in' applies to parents, not {target!r}")
            return lambda f: value in f.parents
        name = self._take("word")
        if self._is_word("contains"):
            self.pos += 1
            value = self._take("str")
            if name == "name":
                return lambda f: _name_contains(f.name, value)
            if name == "fullText":
                return lambda f: value.lower() in f.name.lower()
            raise ValueError(f"'contains' does not apply to {name!r}")
        op = self._take("op")
        tok = self._peek()
        if tok is None:
            raise ValueError("missing value")
        self.pos += 1
        if name == "trashed":
            if (tok != ("word", "true") and tok != ("word", "false")) or op not in ("=", "!="):
                raise ValueError("trashed takes = or != and true/false")
            want = tok[1] == "true"
            return (lambda f: f.trashed == want) if op == "=" else (lambda f: f.trashed != want)
        if tok[0] != "str":
            raise ValueError(f"{name} takes a quoted value")
        value = tok[1]
        if name in ("name", "mimeType"):
            if op not in ("=", "!="):
                raise ValueError(f"{name} takes = or !=")
            attr = "mime_type" if name == "mimeType" else "name"
            if op == "=":
                return lambda f: getattr(f, attr) == value
            return lambda f: getattr(f, attr) != value
        if name in ("modifiedTime", "createdTime"):
            ms = parse_rfc3339_ms(value)
            attr = "modified_ms" if name == "modifiedTime" else "created_ms"
            compare: dict[str, Callable[[int], bool]] = {
                "=": lambda v: v == ms,
                "!=": lambda v: v != ms,
                "<": lambda v: v < ms,
                "<=": lambda v: v <= ms,
                ">": lambda v: v > ms,
                ">=": lambda v: v >= ms,
            }
            check = compare[op]
            return lambda f: check(getattr(f, attr))
        raise ValueError(f"unknown query term {name!r}")


def _name_contains(name: str, value: str) -> bool:
    """Drive matches ``name contains`` on word prefixes, case-insensitively (``'Hello'`` finds
    ``HelloWorld`` and ``my hello``, not ``world`` in ``HelloWorld``)."""
    needle = value.lower()
    low = name.lower()
    if low.startswith(needle):
        return True
    return any(low[m.start() :].startswith(needle) for m in re.finditer(r"(?<=[^0-9a-z])[0-9a-z]", low))


def parse_query(q: str) -> Predicate:
    """Compile a Drive ``q`` string into a predicate on :class:`DriveItem` (``ValueError`` if malformed)."""
    return _QueryParser(q).parse()


# --------------------------------------------------------------------------------------------
# fields masks


def parse_fields(mask: str) -> dict[str, Any]:
    """Parse a partial-response mask (``nextPageToken,files(id,name)``, ``a/b``, ``a.b``, ``*``)
    into a tree: name → subtree (``{}`` = the whole value)."""
    pos = 0

    def parse_list(end: str | None) -> dict[str, Any]:
        nonlocal pos
        tree: dict[str, Any] = {}
        while True:
            m = re.compile(r"\s*([A-Za-z_*@$][\w@$.]*(?:/[A-Za-z_*][\w.]*)*|\*)\s*").match(mask, pos)
            if m is None:
                raise ValueError(f"bad field mask at {pos}: {mask!r}")
            path = re.split(r"[/.]", m.group(1))
            pos = m.end()
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            leaf = node.setdefault(path[-1], {})
            if pos < len(mask) and mask[pos] == "(":
                pos += 1
                _merge(leaf, parse_list(")"))
            if pos < len(mask) and mask[pos] == ",":
                pos += 1
                continue
            if end is not None:
                if pos < len(mask) and mask[pos] == end:
                    pos += 1
                    return tree
                raise ValueError(f"unbalanced parentheses in field mask {mask!r}")
            if pos != len(mask):
                raise ValueError(f"bad field mask at {pos}: {mask!r}")
            return tree

    return parse_list(None)


def _merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, sub in other.items():
        _merge(into.setdefault(key, {}), sub)


def apply_fields(value: Any, tree: Mapping[str, Any]) -> Any:
    """Keep only the parts of ``value`` that ``tree`` (from :func:`parse_fields`) selects."""
    if not tree or ("*" in tree and len(tree) == 1):
        return value
    if isinstance(value, list):
        return [apply_fields(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    if "*" in tree:
        return value
    return {k: apply_fields(value[k], sub) for k, sub in tree.items() if k in value}


# --------------------------------------------------------------------------------------------
# time


def rfc3339_ms(ms: int) -> str:
    """``2024-05-01T10:00:00.123Z`` for epoch milliseconds."""
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_rfc3339_ms(value: str | float | int) -> int:
    """Epoch milliseconds of an RFC 3339 text (``Z`` or an offset; date-only means midnight UTC) or of epoch seconds."""
    if isinstance(value, (int, float)):
        return round(float(value) * 1000)
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text += "T00:00:00Z"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?", text):
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return round(moment.timestamp() * 1000)


# --------------------------------------------------------------------------------------------
# data model


@dataclass
class Sheet:
    """One grid sheet of a spreadsheet."""

    sheet_id: int
    title: str
    rows: list[list[Cell | None]]
    row_count: int = 1000
    column_count: int = 26

    def fit(self) -> None:
        """Grow the grid to hold the data (new sheets have 1000 rows and 26 columns)."""
        width = max((len(r) for r in self.rows), default=0)
        self.row_count = max(self.row_count, len(self.rows))
        self.column_count = max(self.column_count, width)


@dataclass
class Spreadsheet:
    """A native spreadsheet: its sheets, in order."""

    spreadsheet_id: str
    title: str
    sheets: list[Sheet]
    locale: str = "en_US"
    time_zone: str = "Etc/GMT"

    def sheet(self, title: str) -> Sheet | None:
        """The sheet with this title (Sheets matches titles case-insensitively)."""
        low = title.lower()
        return next((s for s in self.sheets if s.title.lower() == low), None)


@dataclass
class DriveItem:
    """A Drive file or folder.

    Attributes:
        id: Drive id.
        name: Title.
        mime_type: MIME type (``application/vnd.google-apps.*`` for native files).
        parents: Parent folder ids (Drive allows one).
        created_ms: Creation time, epoch ms.
        modified_ms: Last modification, epoch ms.
        version: Incremented on every change.
        content: The bytes of a blob file, or None for generated content / native files.
        generator: Produces the bytes on demand (bulk files are not stored).
        shared_with: Principals the item is shared with directly.
        drive_id: The shared drive holding it, if any.
        trashed: In the trash.
        spreadsheet: The grid of a native spreadsheet.
    """

    id: str
    name: str
    mime_type: str
    parents: list[str]
    created_ms: int
    modified_ms: int
    version: int = 1
    content: bytes | None = None
    generator: Callable[[], bytes] | None = None
    shared_with: set[str] = field(default_factory=set)
    drive_id: str | None = None
    trashed: bool = False
    spreadsheet: Spreadsheet | None = None
    _size: int | None = None
    _md5: str | None = None

    @property
    def native(self) -> bool:
        """A Google Docs Editors file or folder (no binary content)."""
        return self.mime_type.startswith(NATIVE_PREFIX)

    def data(self) -> bytes:
        """The bytes of a blob file."""
        if self.content is not None:
            return self.content
        if self.generator is not None:
            return self.generator()
        return b""

    def _digest(self) -> None:
        if self._size is None:
            data = self.data()
            self._size, self._md5 = len(data), hashlib.md5(data).hexdigest()

    def set_content(self, content: bytes | None, generator: Callable[[], bytes] | None = None) -> None:
        """Replace the bytes (sizes and checksums are recomputed on demand)."""
        self.content, self.generator, self._size, self._md5 = content, generator, None, None

    def to_json(self, wanted: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The emulated fields, as Drive v3 renders a ``File``.

        Args:
            wanted: A parsed ``fields`` tree; size and checksum (which read generated content)
                are computed only when it asks for them or is empty (``None``: all fields).
        """
        out: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "createdTime": rfc3339_ms(self.created_ms),
            "modifiedTime": rfc3339_ms(self.modified_ms),
            "version": str(self.version),
            "trashed": self.trashed,
            "explicitlyTrashed": self.trashed,
            "spaces": ["drive"],
        }
        if not self.native and (not wanted or "*" in wanted or "size" in wanted or "md5Checksum" in wanted):
            self._digest()
            out["size"] = str(self._size)
            out["md5Checksum"] = self._md5
        if self.drive_id is not None:
            out["driveId"] = self.drive_id
            out["teamDriveId"] = self.drive_id
        if self.spreadsheet is not None:
            out["webViewLink"] = f"https://docs.google.com/spreadsheets/d/{self.id}/edit?usp=drivesdk"
        return out


@dataclass
class SharedDrive:
    """A shared drive and its members."""

    id: str
    name: str
    members: set[str]


@dataclass
class TokenInfo:
    """An issued access token."""

    principal: str
    scopes: frozenset[str]
    expires_at: float


@dataclass
class UserGrant:
    """An authorized user's OAuth client and refresh token."""

    email: str
    client_id: str
    client_secret: str
    scopes: frozenset[str]
    revoked: bool = False


@functools.lru_cache(maxsize=4)
def _private_key(slot: int = 0) -> rsa.RSAPrivateKey:
    """An RSA key, generated once per process and slot (2048-bit generation takes ~100 ms)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _private_pem(slot: int = 0) -> str:
    return (
        _private_key(slot)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _stable_id(seed: str, length: int, prefix: str = "1") -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest() * 2).decode().rstrip("=")
    return prefix + digest[: length - len(prefix)]


def _csv_generator(seed: int, index: int, rows: int, base_epoch: int) -> Callable[[], bytes]:
    """Deterministic CSV content (``id,label,amount,created_at``) for bulk file ``index``."""

    def generate() -> bytes:
        lines = ["id,label,amount,created_at"]
        first = index * rows + 1
        for rid in range(first, first + rows):
            amount = ((rid * 7919 + seed * 104729) % 1_000_000) / 100
            created = dt.datetime.fromtimestamp(base_epoch + rid * 37, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            lines.append(f"{rid},item-{seed}-{rid},{amount:.2f},{created}")
        return ("\n".join(lines) + "\n").encode()

    return generate


# --------------------------------------------------------------------------------------------
# emulator


class GoogleEmulator(Emulator):
    """Emulates Drive v3, Sheets v4 (read) and Google's OAuth token endpoint on one host."""

    name = "google"
    list_key = "files"
    admin_methods = frozenset(
        {
            "add_service_account",
            "add_user",
            "revoke",
            "issue_token",
            "expire_token",
            "add_folder",
            "add_file",
            "update_file",
            "trash",
            "delete",
            "set_modified",
            "share",
            "add_shared_drive",
            "add_spreadsheet",
            "set_cells",
            "add_csv_files",
            "advance_clock",
        }
    )

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None,
        token_lifetime: float = 3600.0,
        drive_rate_error: str = "userRateLimitExceeded",
        sheets_retry_after: bool = False,
        project_number: str = "614788512345",
        seed: int = 1,
    ) -> None:
        """Create an empty emulator.

        Args:
            clock: Fake clock (token expiry and file times read it).
            latency_ms: Latency added to each API request.
            jitter_ms: Random extra latency.
            limits: Per-principal quotas for the classes :data:`DRIVE_QUOTA` (``"drive"``) and
                :data:`SHEETS_READ_QUOTA` (``"sheets_read"``), merged over :data:`DEFAULT_LIMITS`
                (12,000 Drive queries per 100 s, 300 Sheets reads per minute, rolling windows).
            token_lifetime: Seconds an access token lives (on the fake clock).
            drive_rate_error: The Drive quota answer: ``userRateLimitExceeded`` (403) or
                ``rateLimitExceeded`` (429).
            sheets_retry_after: Send ``Retry-After`` with Sheets' 429 (Google usually does not).
            project_number: The consumer project quoted in quota errors.
            seed: Seed of generated ids and contents.
        """
        if drive_rate_error not in ("userRateLimitExceeded", "rateLimitExceeded"):
            raise ValueError("drive_rate_error must be userRateLimitExceeded or rateLimitExceeded")
        merged: dict[str, Limit | Sequence[Limit] | None] = dict(DEFAULT_LIMITS)
        merged.update(limits or {})
        super().__init__(clock=clock, latency_ms=latency_ms, jitter_ms=jitter_ms, limits=merged)
        self.token_lifetime = float(token_lifetime)
        self.drive_rate_error = drive_rate_error
        self.sheets_retry_after = sheets_retry_after
        self.project_number = project_number
        self.seed = seed
        self.base_url = ""
        self.items: dict[str, DriveItem] = {}
        self.drives: dict[str, SharedDrive] = {}
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self.users: dict[str, UserGrant] = {}
        self.tokens: dict[str, TokenInfo] = {}
        self._counter = 0
        self._counter_lock = threading.Lock()

    # -- serving --

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> FakeServer:
        """A :class:`FakeServer` for this emulator; the emulator learns its base URL."""
        server = super().serve(host, port)
        self.base_url = server.url
        return server

    def _learn(self, req: Request) -> None:
        if not self.base_url and req.base_url:
            self.base_url = req.base_url

    def admin(self, req: Request) -> Response:
        """Answer a ``/__fake__/`` request (and learn the base URL for credential dicts)."""
        self._learn(req)
        return super().admin(req)

    def _next_id(self, kind: str, length: int = 33, prefix: str = "1") -> str:
        with self._counter_lock:
            self._counter += 1
            n = self._counter
        return _stable_id(f"{self.seed}:{kind}:{n}", length, prefix)

    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _token_uri(self, token_uri: str | None) -> str:
        if token_uri:
            return token_uri
        if not self.base_url:
            raise ValueError("the emulator is not served yet: pass token_uri or call serve() first")
        return f"{self.base_url}/token"

    # -- principals and tokens --

    def add_service_account(
        self, email: str, *, token_uri: str | None = None, project_id: str = "dativo-test", key_slot: int = 0
    ) -> dict[str, Any]:
        """Register a service account and return its complete JSON key file content.

        Args:
            email: The account's email (``client_email``), also its principal.
            token_uri: Where tokens come from (default: ``<base_url>/token`` once served).
            project_id: The project in the key file.
            key_slot: Which cached RSA key signs for it (accounts share slot 0 by default).

        Returns:
            The ``service_account`` info dict for ``google.oauth2.service_account``.
        """
        key = _private_key(key_slot)
        key_id = hashlib.sha1(f"{email}:{key_slot}".encode()).hexdigest()
        with self.lock:
            self.service_accounts[email] = key.public_key()
        client_id = str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16))
        return {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": _private_pem(key_slot),
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self._token_uri(token_uri),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
            "universe_domain": "googleapis.com",
        }

    def add_user(
        self, email: str, *, token_uri: str | None = None, scopes: Sequence[str] = DEFAULT_SCOPES
    ) -> dict[str, Any]:
        """Register a user who authorized an OAuth client; returns the ``authorized_user`` info dict.

        Args:
            email: The user's email, also its principal.
            token_uri: Where tokens come from (default: ``<base_url>/token`` once served).
            scopes: Scopes the user granted.
        """
        refresh = "1//0" + secrets.token_urlsafe(40)
        client_id = f"{abs(hash(email)) % 10**12}-fake.apps.googleusercontent.com"
        grant = UserGrant(email, client_id, "GOCSPX-" + secrets.token_urlsafe(20), frozenset(scopes))
        with self.lock:
            self.users[refresh] = grant
        return {
            "type": "authorized_user",
            "client_id": grant.client_id,
            "client_secret": grant.client_secret,
            "refresh_token": refresh,
            "token_uri": self._token_uri(token_uri),
            "account": email,
            "universe_domain": "googleapis.com",
        }

    def revoke(self, refresh_token: str) -> None:
        """Revoke a user's refresh token (and the access tokens issued from it stay valid until expiry)."""
        with self.lock:
            self.users[refresh_token].revoked = True

    def issue_token(self, principal: str, scopes: Sequence[str] = DEFAULT_SCOPES, lifetime: float | None = None) -> str:
        """Issue an access token directly (tests that do not exercise OAuth)."""
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        expires = self.clock.now() + (self.token_lifetime if lifetime is None else float(lifetime))
        with self.lock:
            self.tokens[token] = TokenInfo(principal, frozenset(scopes), expires)
        return token

    def expire_token(self, token: str) -> None:
        """Make an access token expire now."""
        with self.lock:
            self.tokens[token].expires_at = self.clock.now()

    def advance_clock(self, seconds: float) -> float:
        """Move the fake clock forward (tokens expire, new changes get later times)."""
        return self.clock.advance(seconds)

    def principal_of(self, token: str) -> str | None:
        """The principal an access token was issued to (None: unknown token)."""
        info = self.tokens.get(token)
        return info.principal if info else None

    def credential(self, req: Request) -> str | None:
        """The principal of a request's bearer token (counters and faults are keyed by it)."""
        token = req.bearer()
        info = self.tokens.get(token or "")
        return info.principal if info else token

    # -- Drive data --

    def _add(
        self,
        name: str,
        mime_type: str,
        parent: str | None,
        shared_with: Iterable[str] | None,
        modified_time: str | float | None,
        drive_id: str | None = None,
        content: bytes | None = None,
    ) -> DriveItem:
        now = self._now_ms()
        modified = parse_rfc3339_ms(modified_time) if modified_time is not None else now
        with self.lock:
            parents = []
            if parent is not None:
                folder = self.items.get(parent)
                if folder is None or folder.mime_type != FOLDER_MIME:
                    raise KeyError(f"no folder {parent!r}")
                parents = [parent]
                drive_id = drive_id or folder.drive_id
            elif drive_id is not None:
                if drive_id not in self.drives:
                    raise KeyError(f"no shared drive {drive_id!r}")
                parents = [drive_id]
            item = DriveItem(
                self._next_id("file"),
                name,
                mime_type,
                parents,
                min(now, modified),
                modified,
                content=content,
                shared_with=set(shared_with or ()),
                drive_id=drive_id,
            )
            self.items[item.id] = item
        return item

    def add_folder(
        self,
        name: str,
        parent: str | None = None,
        shared_with: Sequence[str] | None = None,
        drive_id: str | None = None,
    ) -> str:
        """Create a folder; returns its id.

        Args:
            name: Folder name.
            parent: Parent folder id (None: the root of My Drive, or of ``drive_id``).
            shared_with: Principals it is shared with (everything under it is visible to them).
            drive_id: Shared drive to create it in (inherited from ``parent`` when given).
        """
        return self._add(name, FOLDER_MIME, parent, shared_with, None, drive_id).id

    def add_file(
        self,
        name: str,
        content: bytes | str,
        parent: str | None = None,
        mime_type: str = "text/csv",
        shared_with: Sequence[str] | None = None,
        modified_time: str | float | None = None,
    ) -> str:
        """Upload a blob file; returns its id.

        Args:
            name: File name.
            content: Its bytes (text is UTF-8 encoded).
            parent: Folder id.
            mime_type: MIME type.
            shared_with: Principals it is shared with directly.
            modified_time: RFC 3339 text or epoch seconds (default: the fake clock's now).
        """
        data = content.encode() if isinstance(content, str) else bytes(content)
        return self._add(name, mime_type, parent, shared_with, modified_time, content=data).id

    def _touch(self, item: DriveItem, modified_time: str | float | None) -> None:
        item.modified_ms = parse_rfc3339_ms(modified_time) if modified_time is not None else self._now_ms()
        item.version += 1

    def _item(self, file_id: str) -> DriveItem:
        item = self.items.get(file_id)
        if item is None:
            raise KeyError(f"no file {file_id!r}")
        return item

    def update_file(self, file_id: str, content: bytes | str, modified_time: str | float | None = None) -> None:
        """Re-upload a file: new bytes and checksum, a new ``modifiedTime`` (now or given), ``version`` + 1."""
        data = content.encode() if isinstance(content, str) else bytes(content)
        with self.lock:
            item = self._item(file_id)
            item.set_content(data)
            self._touch(item, modified_time)

    def trash(self, file_id: str) -> None:
        """Move a file to the trash (a change: ``version`` + 1, ``modifiedTime`` unchanged, as on Drive)."""
        with self.lock:
            item = self._item(file_id)
            item.trashed = True
            item.version += 1

    def delete(self, file_id: str) -> None:
        """Delete a file for good."""
        with self.lock:
            del self.items[file_id]

    def set_modified(self, file_id: str, modified_time: str | float) -> None:
        """Set ``modifiedTime`` (RFC 3339 or epoch seconds), e.g. to create ties; ``version`` + 1."""
        with self.lock:
            self._touch(self._item(file_id), modified_time)

    def share(self, file_id: str, principal: str) -> None:
        """Share a file or folder with a principal."""
        with self.lock:
            item = self._item(file_id)
            item.shared_with.add(principal)
            item.version += 1

    def add_shared_drive(self, name: str, members: Sequence[str]) -> str:
        """Create a shared drive whose files all ``members`` see; returns its id."""
        drive = SharedDrive(self._next_id("drive", 19, "0A"), name, set(members))
        with self.lock:
            self.drives[drive.id] = drive
        return drive.id

    def add_csv_files(
        self,
        folder_id: str,
        count: int,
        rows_per_file: int,
        *,
        prefix: str = "part",
        seed: int | None = None,
        start_time: str | float | None = None,
        step_seconds: float = 1.0,
    ) -> list[str]:
        """Add ``count`` CSV files (``id,label,amount,created_at``) generated on demand, not stored.

        Args:
            folder_id: The folder they go in.
            count: Number of files.
            rows_per_file: Data rows per file (ids run on across files).
            prefix: File names are ``<prefix>-00000.csv``...
            seed: Seed of the amounts (default: the emulator's).
            start_time: ``modifiedTime`` of the first file (default: now); each next one is
                ``step_seconds`` later.
            step_seconds: Time between consecutive files' ``modifiedTime``.

        Returns:
            The new file ids, in order.
        """
        seed = self.seed if seed is None else seed
        start_ms = parse_rfc3339_ms(start_time) if start_time is not None else self._now_ms()
        ids = []
        for i in range(count):
            item = self._add(
                f"{prefix}-{i:05d}.csv", "text/csv", folder_id, None, (start_ms + int(i * step_seconds * 1000)) / 1000
            )
            item.set_content(None, _csv_generator(seed, i, rows_per_file, 1_700_000_000))
            ids.append(item.id)
        return ids

    # -- Sheets data --

    def add_spreadsheet(
        self,
        title: str,
        sheets: Mapping[str, Sequence[Sequence[Any]]],
        parent: str | None = None,
        shared_with: Sequence[str] | None = None,
        modified_time: str | float | None = None,
    ) -> str:
        """Create a native spreadsheet (also a Drive file); returns its id.

        Args:
            title: Spreadsheet (and Drive file) name.
            sheets: Sheet title → rows of cells (:class:`Cell`, plain values, or the JSON cell
                descriptions of :meth:`Cell.from_json`), in order.
            parent: Folder id.
            shared_with: Principals it is shared with directly.
            modified_time: Initial ``modifiedTime`` (default: now).
        """
        item = self._add(title, SPREADSHEET_MIME, parent, shared_with, modified_time)
        grid = []
        for index, (name, rows) in enumerate(sheets.items()):
            sheet = Sheet(0 if index == 0 else 1000 + index, name, _cells(rows))
            sheet.fit()
            grid.append(sheet)
        with self.lock:
            item.spreadsheet = Spreadsheet(item.id, title, grid)
        return item.id

    def set_cells(
        self, spreadsheet_id: str, sheet: str, rows: Sequence[Sequence[Any]], modified_time: str | float | None = None
    ) -> None:
        """Replace a sheet's cells (a new sheet if the title is new); bumps ``modifiedTime`` and ``version``."""
        with self.lock:
            item = self._item(spreadsheet_id)
            book = item.spreadsheet
            if book is None:
                raise KeyError(f"{spreadsheet_id!r} is not a spreadsheet")
            found = book.sheet(sheet)
            if found is None:
                found = Sheet(1000 + len(book.sheets), sheet, [])
                book.sheets.append(found)
            found.rows = _cells(rows)
            found.fit()
            self._touch(item, modified_time)

    # -- errors --

    def _error(self, api: str, err: GoogleError) -> Response:
        headers = dict(err.headers)
        if api == "oauth":
            return Response(err.status, {"error": err.reason, "error_description": err.message}, headers=headers)
        if err.status == 401:
            headers.setdefault("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/", error="invalid_token"')
        body: dict[str, Any] = {"code": err.status, "message": err.message}
        if api == "drive":
            entry: dict[str, Any] = {
                "message": err.item_message,
                "domain": err.domain,
                "reason": err.reason or "badRequest",
            }
            if err.location:
                entry["locationType"] = err.location_type
                entry["location"] = err.location
            body["errors"] = [entry]
        else:
            body["status"] = _RPC_STATUS.get(err.status, "UNKNOWN")
            if err.details:
                body["details"] = list(err.details)
        return Response(err.status, {"error": body}, headers=headers, content_type="application/json; charset=UTF-8")

    @staticmethod
    def _api(path: str) -> str:
        if path.startswith("/drive/"):
            return "drive"
        if path.rstrip("/") == "/token":
            return "oauth"
        return "sheets"

    def error_response(self, status: int, req: Request) -> Response:
        """Google's answer for an injected error ``status`` (``Fault.reason`` picks a Drive 403/429 reason)."""
        api = self._api(req.path)
        reason = req.fault.reason if req.fault is not None else None
        if status == 502:
            html = (
                "<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
                "<p><b>502.</b> <ins>That's an error.</ins><p>The server encountered a temporary error and "
                "could not complete your request.<p>Please try again in 30 seconds. <ins>That's all we know.</ins>"
            )
            return Response(502, raw=html.encode(), content_type="text/html; charset=UTF-8")
        if api == "oauth":
            return self._error(api, GoogleError(status, "Internal error", reason=reason or "internal_failure"))
        if status in (403, 429) and (api == "drive" or reason):
            if api == "sheets" and reason in ("rateLimitExceeded", "userRateLimitExceeded"):
                return self._sheets_quota(self.credential(req) or "-", None)
            default = "userRateLimitExceeded" if status == 403 else "rateLimitExceeded"
            name = reason or default
            domain, message = DRIVE_403_REASONS.get(name, ("global", name))
            if api == "sheets":
                return self._error(api, GoogleError(status, message))
            return self._error(api, GoogleError(status, message, reason=name, domain=domain))
        if status == 429:
            return self._sheets_quota(self.credential(req) or "-", None)
        messages = {
            400: ("badRequest", "Bad Request"),
            401: ("authError", "Invalid Credentials"),
            403: ("forbidden", "The caller does not have permission"),
            404: ("notFound", "Requested entity was not found."),
            500: ("backendError", "Internal Error"),
            503: ("backendError", "The service is currently unavailable."),
            504: ("backendError", "Deadline exceeded"),
        }
        drive_reason, message = messages.get(status, ("backendError", "Internal Error"))
        if status == 401:
            return self._error(api, self._auth_error(api, expired=False))
        return self._error(api, GoogleError(status, message, reason=reason or drive_reason))

    def _auth_error(self, api: str, expired: bool) -> GoogleError:
        if api == "drive":
            return GoogleError(
                401,
                _AUTH_MESSAGE,
                reason="authError",
                domain="global",
                location="Authorization",
                location_type="header",
                item_message="Invalid Credentials",
            )
        details = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "ACCESS_TOKEN_EXPIRED" if expired else "ACCESS_TOKEN_TYPE_UNSUPPORTED",
                "domain": "googleapis.com",
                "metadata": {"service": "sheets.googleapis.com", "method": "google.apps.sheets.v4.SpreadsheetsService"},
            }
        ]
        return GoogleError(401, _AUTH_MESSAGE, details=details)

    def _sheets_quota(self, principal: str, retry_after: float | None) -> Response:
        message = (
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' of "
            f"service 'sheets.googleapis.com' for consumer 'project_number:{self.project_number}'."
        )
        details: list[dict[str, Any]] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "RATE_LIMIT_EXCEEDED",
                "domain": "googleapis.com",
                "metadata": {
                    "quota_limit": "ReadRequestsPerMinutePerUser",
                    "quota_metric": "sheets.googleapis.com/read_requests",
                    "quota_location": "global",
                    "quota_limit_value": str(self._sheets_limit()),
                    "consumer": f"projects/{self.project_number}",
                    "service": "sheets.googleapis.com",
                },
            },
            {
                "@type": "type.googleapis.com/google.rpc.Help",
                "links": [
                    {
                        "description": "Request a higher quota limit.",
                        "url": "https://cloud.google.com/docs/quotas/help/request_increase",
                    }
                ],
            },
        ]
        headers = {"X-Fake-Policy": "ReadRequestsPerMinutePerUser"}
        if self.sheets_retry_after and retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return self._error("sheets", GoogleError(429, message, headers=headers, details=details))

    def _sheets_limit(self) -> int:
        configured = self.limiter.limits().get(SHEETS_READ_QUOTA) or []
        return int(configured[0].rps) if configured else 0

    # -- routing --

    def handle(self, req: Request) -> Response:
        """Route one API request."""
        self._learn(req)
        api = self._api(req.path)
        try:
            if api == "oauth":
                if req.method != "POST":
                    raise GoogleError(405, "Method Not Allowed", reason="invalid_request")
                return self._token(req)
            if req.method != "GET":
                raise GoogleError(405, f"Method {req.method} is not emulated", reason="methodNotAllowed")
            if api == "drive":
                return self._drive(req)
            if req.path.startswith("/v4/spreadsheets/"):
                return self._sheets(req)
            raise GoogleError(404, f"No route for {req.path}", reason="notFound")
        except GoogleError as err:
            return self._error(api, err)

    def _authenticate(self, req: Request, api: str) -> TokenInfo:
        token = req.bearer() or dict(req.query).get("access_token")
        info = self.tokens.get(token or "")
        if info is None:
            raise self._auth_error(api, expired=False)
        if info.expires_at <= self.clock.now():
            raise self._auth_error(api, expired=True)
        wanted = DRIVE_SCOPES if api == "drive" else SHEETS_SCOPES
        if not info.scopes & wanted:
            if api == "drive":
                raise GoogleError(
                    403,
                    "Request had insufficient authentication scopes.",
                    reason="insufficientPermissions",
                )
            raise GoogleError(403, "Request had insufficient authentication scopes.")
        return info

    # -- OAuth --

    def _token(self, req: Request) -> Response:
        form = dict(req.form())
        grant = form.get("grant_type", "")
        if grant == JWT_GRANT:
            principal, scopes = self._verify_jwt(form.get("assertion", ""), req)
        elif grant == "refresh_token":
            principal, scopes = self._verify_refresh(form)
        else:
            raise GoogleError(400, f"Invalid grant_type: {grant}", reason="unsupported_grant_type")
        token = self.issue_token(principal, sorted(scopes))
        body = {
            "access_token": token,
            "expires_in": int(self.token_lifetime),
            "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
        }
        return Response(200, body, headers={"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})

    def _verify_jwt(self, assertion: str, req: Request) -> tuple[str, frozenset[str]]:
        bad = GoogleError(400, "Invalid JWT Signature.", reason="invalid_grant")
        parts = assertion.split(".")
        if len(parts) != 3:
            raise GoogleError(400, "Invalid JWT: malformed assertion.", reason="invalid_grant")
        try:
            header = json.loads(_b64decode(parts[0]))
            claims = json.loads(_b64decode(parts[1]))
            signature = _b64decode(parts[2])
        except ValueError as exc:
            raise GoogleError(400, "Invalid JWT: malformed assertion.", reason="invalid_grant") from exc
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            raise bad
        key = self.service_accounts.get(str(claims.get("iss", "")))
        if key is None:
            raise bad
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature as exc:
            raise bad from exc
        # The signer stamps iat/exp from its own wall clock, not from the emulator's fake clock.
        now = time.time()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (
            not isinstance(iat, (int, float))
            or not isinstance(exp, (int, float))
            or exp <= now
            or iat > now + 300
            or exp - iat > 3600
        ):
            raise GoogleError(
                400,
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
                "Check your iat and exp values in the JWT claim.",
                reason="invalid_grant",
            )
        audiences = {GOOGLE_TOKEN_URI, f"{req.base_url}/token", f"{self.base_url}/token"}
        if claims.get("aud") not in audiences:
            raise GoogleError(400, "Invalid JWT: Failed audience check.", reason="invalid_grant")
        scope = str(claims.get("scope", ""))
        if not scope.strip():
            raise GoogleError(400, "Invalid OAuth scope or ID token audience provided.", reason="invalid_scope")
        return str(claims.get("sub") or claims["iss"]), frozenset(scope.split())

    def _verify_refresh(self, form: Mapping[str, str]) -> tuple[str, frozenset[str]]:
        grant = self.users.get(form.get("refresh_token", ""))
        if grant is None or grant.revoked:
            raise GoogleError(400, "Token has been expired or revoked.", reason="invalid_grant")
        if form.get("client_id") != grant.client_id or form.get("client_secret") != grant.client_secret:
            raise GoogleError(401, "Unauthorized", reason="invalid_client")
        requested = frozenset((form.get("scope") or "").split())
        if requested and not requested <= grant.scopes:
            raise GoogleError(400, "Bad Request", reason="invalid_scope")
        return grant.email, requested or grant.scopes

    # -- quotas --

    def _quota(self, principal: str, cls: str, api: str) -> None:
        decisions = self.limiter.check(principal, cls)
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is None:
            return
        if api == "sheets":
            raise _Answer(self._sheets_quota(principal, refused.retry_after))
        reason = self.drive_rate_error
        status = 403 if reason == "userRateLimitExceeded" else 429
        domain, message = DRIVE_403_REASONS[reason]
        headers = {"X-Fake-Policy": refused.policy}
        raise GoogleError(status, message, reason=reason, domain=domain, headers=headers)

    # -- Drive --

    def _visible(self, item: DriveItem, principal: str) -> bool:
        if item.drive_id is not None:
            drive = self.drives.get(item.drive_id)
            if drive is not None and principal in drive.members:
                return True
        seen = 0
        node: DriveItem | None = item
        while node is not None and seen < 64:
            if principal in node.shared_with:
                return True
            node = self.items.get(node.parents[0]) if node.parents else None
            seen += 1
        return False

    def _drive(self, req: Request) -> Response:
        parts = [unquote(p) for p in req.path.split("/") if p]
        if len(parts) < 3 or parts[:3] != ["drive", "v3", "files"] or len(parts) > 5:
            raise GoogleError(404, f"Not Found: {req.path}", reason="notFound")
        info = self._authenticate(req, "drive")
        try:
            self._quota(info.principal, DRIVE_QUOTA, "drive")
        except _Answer as answer:
            return answer.response
        query = _Query(req)
        with self.lock:
            if len(parts) == 3:
                body = self._list(query, info.principal)
                return _json(body)
            item = self._get_item(parts[3], info.principal, query)
            if len(parts) == 5:
                if parts[4] != "export":
                    raise GoogleError(404, f"Not Found: {req.path}", reason="notFound")
                return self._export(item, query)
            if query.get("alt") == "media":
                return self._media(item, req)
            tree = _mask(query, FILE_FIELDS) or {k: {} for k in _DEFAULT_FILE_FIELDS}
            return _json(apply_fields(item.to_json(tree), tree))

    def _get_item(self, file_id: str, principal: str, query: _Query) -> DriveItem:
        item = self.items.get(file_id)
        all_drives = query.flag("supportsAllDrives") or query.flag("supportsTeamDrives")
        if item is None or not self._visible(item, principal) or (item.drive_id is not None and not all_drives):
            raise GoogleError(404, f"File not found: {file_id}.", reason="notFound", location="fileId")
        return item

    def _list(self, query: _Query, principal: str) -> dict[str, Any]:
        size_text = query.get("pageSize", "100") or "100"
        if not re.fullmatch(r"-?\d+", size_text) or not 1 <= int(size_text) <= 1000:
            raise GoogleError(
                400,
                f"Invalid value '{size_text}'. Values must be within the range: [1, 1000]",
                reason="invalid",
                location="pageSize",
            )
        page_size = int(size_text)
        corpora = query.get("corpora") or "user"
        drive_id = query.get("driveId") or query.get("teamDriveId")
        all_drives = query.flag("supportsAllDrives") or query.flag("supportsTeamDrives")
        include_drives = query.flag("includeItemsFromAllDrives") or query.flag("includeTeamDriveItems")
        if corpora not in ("user", "drive", "domain", "allDrives"):
            raise GoogleError(400, "Invalid Value", reason="invalid", location="corpora")
        if (corpora == "drive") != (drive_id is not None):
            raise GoogleError(
                400,
                "The driveId parameter must be specified if and only if corpora is set to drive.",
                reason="invalid",
                location="driveId",
            )
        if (drive_id is not None or corpora == "allDrives") and not (include_drives and all_drives):
            raise GoogleError(
                403,
                "The includeItemsFromAllDrives parameter must be set to true when driveId is specified.",
                reason="teamDrivesParameterRequired" if not include_drives else "teamDrivesFolderMoveInNotSupported",
                location="includeItemsFromAllDrives",
            )
        if drive_id is not None:
            drive = self.drives.get(drive_id)
            if drive is None or principal not in drive.members:
                raise GoogleError(404, f"Shared drive not found: {drive_id}", reason="notFound", location="driveId")
        predicate: Predicate | None = None
        q = query.get("q")
        if q:
            try:
                predicate = parse_query(q)
            except ValueError as exc:
                raise GoogleError(400, "Invalid Value", reason="invalid", location="q") from exc
        order = _parse_order(query.get("orderBy"))
        tree = _mask(query, {"kind", "nextPageToken", "incompleteSearch", "files"})
        files_tree = ({"*": {}} if "*" in tree else tree.get("files")) if tree else None
        if files_tree:
            _check_file_fields(files_tree)
        spaces = set((query.get("spaces") or "drive").split(","))
        fingerprint = hashlib.sha1(
            json.dumps([q, query.get("orderBy"), corpora, drive_id, include_drives, sorted(spaces)]).encode()
        ).hexdigest()[:12]
        after: list[Any] | None = None
        token = query.get("pageToken")
        if token:
            try:
                decoded = json.loads(_b64decode(token))
                if decoded["f"] != fingerprint:
                    raise ValueError("token of another query")
                after = list(decoded["k"])
            except (ValueError, KeyError, TypeError) as exc:
                raise GoogleError(400, "Invalid Value", reason="invalid", location="pageToken") from exc
        matches: list[tuple[list[Any], DriveItem]] = []
        if "drive" in spaces:
            for item in self.items.values():
                if item.drive_id is not None:
                    if not (all_drives and include_drives and corpora in ("drive", "allDrives")):
                        continue
                    if drive_id is not None and item.drive_id != drive_id:
                        continue
                elif corpora == "drive":
                    continue
                if not self._visible(item, principal) or (predicate is not None and not predicate(item)):
                    continue
                matches.append((_sort_key(item, order), item))

        def by_key(a: tuple[list[Any], DriveItem], b: tuple[list[Any], DriveItem]) -> int:
            return _compare(a[0], b[0], order)

        matches.sort(key=functools.cmp_to_key(by_key))
        if after is not None:
            matches = [m for m in matches if _compare(m[0], after, order) > 0]
        page = matches[:page_size]
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
        if len(matches) > page_size:
            last = page[-1][0]
            body["nextPageToken"] = (
                base64.urlsafe_b64encode(json.dumps({"f": fingerprint, "k": last}, separators=(",", ":")).encode())
                .decode()
                .rstrip("=")
            )
        wanted = files_tree or {k: {} for k in _DEFAULT_FILE_FIELDS}
        body["files"] = [apply_fields(item.to_json(wanted), wanted) for _, item in page]
        return apply_fields(body, tree) if tree else body

    def _media(self, item: DriveItem, req: Request) -> Response:
        if item.native:
            raise GoogleError(
                403,
                "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                reason="fileNotDownloadable",
                location="alt",
            )
        data = item.data()
        total = len(data)
        header = req.header("range")
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{item.version}"'}
        if header:
            m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
                else:
                    start, end = max(total - int(m.group(2)), 0), total - 1
                if start >= total or end < start:
                    return Response(
                        416,
                        {"error": {"code": 416, "message": "Request range not satisfiable"}},
                        headers={"Content-Range": f"bytes */{total}"},
                    )
                headers["Content-Range"] = f"bytes {start}-{end}/{total}"
                return Response(206, raw=data[start : end + 1], headers=headers, content_type=item.mime_type)
        return Response(200, raw=data, headers=headers, content_type=item.mime_type)

    def _export(self, item: DriveItem, query: _Query) -> Response:
        mime = query.get("mimeType")
        if not mime:
            raise GoogleError(400, "Required parameter: mimeType", reason="required", location="mimeType")
        if not item.native or item.mime_type == FOLDER_MIME:
            raise GoogleError(403, "Export only supports Docs Editors files.", reason="fileNotExportable")
        if item.spreadsheet is None or mime not in ("text/csv", "text/tab-separated-values"):
            raise GoogleError(
                400, "The requested conversion is not supported.", reason="badRequest", location="convertTo"
            )
        sheet = item.spreadsheet.sheets[0]
        out = io.StringIO()
        writer = csv.writer(out, delimiter="," if mime == "text/csv" else "\t", lineterminator="\r\n")
        # Google pads every row to the width of the sheet's data.
        width = max((len(r) for r in sheet.rows), default=0)
        for row in sheet.rows:
            writer.writerow(["" if c is None else c.formatted for c in row] + [""] * (width - len(row)))
        data = out.getvalue().encode()
        if len(data) > EXPORT_LIMIT:
            raise GoogleError(403, "This file is too large to be exported.", reason="exportSizeLimitExceeded")
        return Response(200, raw=data, content_type=mime)

    # -- Sheets --

    def _sheets(self, req: Request) -> Response:
        rest = req.path[len("/v4/spreadsheets/") :]
        info = self._authenticate(req, "sheets")
        try:
            self._quota(info.principal, SHEETS_READ_QUOTA, "sheets")
        except _Answer as answer:
            return answer.response
        query = _Query(req)
        spreadsheet_id, _, tail = rest.partition("/")
        spreadsheet_id = unquote(spreadsheet_id)
        with self.lock:
            book = self._book(spreadsheet_id, info.principal)
            if tail == "":
                return _json(self._spreadsheet_json(book, query))
            if tail == "values:batchGet":
                ranges = query.all("ranges")
                body = {
                    "spreadsheetId": book.spreadsheet_id,
                    "valueRanges": [self._values(book, r, query) for r in ranges],
                }
                return _json(apply_fields(body, _mask(query, None)))
            if tail.startswith("values/") and "/" not in tail[len("values/") :]:
                body = self._values(book, unquote(tail[len("values/") :]), query)
                return _json(apply_fields(body, _mask(query, None)))
        raise GoogleError(404, "Requested entity was not found.")

    def _book(self, spreadsheet_id: str, principal: str) -> Spreadsheet:
        item = self.items.get(spreadsheet_id)
        if item is None or item.spreadsheet is None:
            raise GoogleError(404, "Requested entity was not found.")
        if not self._visible(item, principal):
            raise GoogleError(403, "The caller does not have permission")
        return item.spreadsheet

    def _spreadsheet_json(self, book: Spreadsheet, query: _Query) -> dict[str, Any]:
        wanted: list[tuple[Sheet, int, int, int, int]] | None = None
        ranges = query.all("ranges")
        if ranges:
            wanted = [self._resolve_range(book, r)[:5] for r in ranges]
        grid_data = query.flag("includeGridData") and not query.get("fields")
        sheets_json = []
        for index, sheet in enumerate(book.sheets):
            selected = [w for w in wanted if w[0] is sheet] if wanted is not None else None
            if selected is not None and not selected:
                continue
            entry: dict[str, Any] = {
                "properties": {
                    "sheetId": sheet.sheet_id,
                    "title": sheet.title,
                    "index": index,
                    "sheetType": "GRID",
                    "gridProperties": {"rowCount": sheet.row_count, "columnCount": sheet.column_count},
                }
            }
            if grid_data:
                spans = selected or [(sheet, 1, 1, sheet.row_count, sheet.column_count)]
                entry["data"] = [_grid_data(sheet, *span[1:]) for span in spans]
            sheets_json.append(entry)
        body = {
            "spreadsheetId": book.spreadsheet_id,
            "properties": {
                "title": book.title,
                "locale": book.locale,
                "autoRecalc": "ON_CHANGE",
                "timeZone": book.time_zone,
                "defaultFormat": {
                    "backgroundColor": {"red": 1, "green": 1, "blue": 1},
                    "verticalAlignment": "BOTTOM",
                    "wrapStrategy": "OVERFLOW_CELL",
                    "textFormat": {"fontFamily": "arial,sans,sans-serif", "fontSize": 10},
                },
            },
            "sheets": sheets_json,
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{book.spreadsheet_id}/edit",
        }
        tree = _mask(query, None)
        return apply_fields(body, tree) if tree else body

    def _resolve_range(self, book: Spreadsheet, text: str) -> tuple[Sheet, int, int, int, int, str]:
        """(sheet, first row, first col, last row, last col, canonical range); 1-based, inclusive."""
        bad = GoogleError(400, f"Unable to parse range: {text}")
        try:
            sheet_name, cells = _split_sheet(text)
        except ValueError as exc:
            raise bad from exc
        sheet: Sheet | None
        if sheet_name is None:
            # A bare name is a sheet if one has it, else an A1 range on the first sheet.
            sheet = book.sheet(cells or "")
            if sheet is not None:
                cells = None
            else:
                sheet = book.sheets[0] if book.sheets else None
        else:
            sheet = book.sheet(sheet_name)
        if sheet is None:
            raise bad
        r1, c1, r2, c2 = 1, 1, sheet.row_count, sheet.column_count
        if cells:
            start, _, end = cells.partition(":")
            m1, m2 = _CELL_REF.match(start), _CELL_REF.match(end) if end else None
            if (
                m1 is None
                or not (m1.group(1) or m1.group(2))
                or (end and (m2 is None or not (m2.group(1) or m2.group(2))))
            ):
                raise bad
            if not end:
                if not (m1.group(1) and m1.group(2)):
                    raise bad
                m2 = m1
            assert m2 is not None
            if m1.group(1):
                c1 = _col_number(m1.group(1))
            if m1.group(2):
                r1 = int(m1.group(2))
            if m2.group(1):
                c2 = _col_number(m2.group(1))
            if m2.group(2):
                r2 = int(m2.group(2))
            elif not m1.group(2) and m2.group(1):
                r1 = 1
            if not m2.group(1) and m1.group(1) and m2.group(2):
                c2 = sheet.column_count
            if r1 < 1 or c1 < 1 or r2 < r1 or c2 < c1:
                raise bad
            if r2 > sheet.row_count or c2 > sheet.column_count:
                raise GoogleError(
                    400,
                    f"Range ({_quote_sheet(sheet.title)}!{cells}) exceeds grid limits. "
                    f"Max rows: {sheet.row_count}, max columns: {sheet.column_count}",
                )
        corner = f"{_col_letters(c1)}{r1}"
        span = corner if (r1, c1) == (r2, c2) else f"{corner}:{_col_letters(c2)}{r2}"
        canonical = f"{_quote_sheet(sheet.title)}!{span}"
        return sheet, r1, c1, r2, c2, canonical

    def _values(self, book: Spreadsheet, text: str, query: _Query) -> dict[str, Any]:
        value_option = query.get("valueRenderOption") or "FORMATTED_VALUE"
        datetime_option = query.get("dateTimeRenderOption") or "SERIAL_NUMBER"
        major = query.get("majorDimension") or "ROWS"
        for name, value, allowed in (
            ("valueRenderOption", value_option, ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA")),
            ("dateTimeRenderOption", datetime_option, ("SERIAL_NUMBER", "FORMATTED_STRING")),
            ("majorDimension", major, ("ROWS", "COLUMNS", "DIMENSION_UNSPECIFIED")),
        ):
            if value not in allowed:
                raise GoogleError(
                    400,
                    f"Invalid value at '{_snake(name)}' (type.googleapis.com/google.apps.sheets.v4.{name[0].upper()}"
                    f'{name[1:]}), "{value}"',
                )
        if major == "DIMENSION_UNSPECIFIED":
            major = "ROWS"
        sheet, r1, c1, r2, c2, canonical = self._resolve_range(book, text)
        values: list[list[Any]] = []
        last_row = min(r2, len(sheet.rows))
        for row in sheet.rows[r1 - 1 : last_row]:
            cut = row[c1 - 1 : c2]
            end = len(cut)
            while end and cut[end - 1] is None:
                end -= 1
            values.append(["" if c is None else c.render(value_option, datetime_option) for c in cut[:end]])
        while values and not values[-1]:
            values.pop()
        if major == "COLUMNS":
            width = max((len(r) for r in values), default=0)
            columns = []
            for j in range(width):
                column = [r[j] if j < len(r) else "" for r in values]
                while column and column[-1] == "":
                    column.pop()
                columns.append(column)
            while columns and not columns[-1]:
                columns.pop()
            values = columns
        body: dict[str, Any] = {"range": canonical, "majorDimension": major}
        if values:
            body["values"] = values
        return body


class _Answer(Exception):
    """A ready response raised out of a nested check (quota answers that are not plain errors)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Query:
    """Query parameters of a request (repeatable, with Google's boolean spelling)."""

    def __init__(self, req: Request) -> None:
        self.pairs = req.query

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.pairs:
            if key == name:
                return value
        return default

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.pairs if k == name]

    def flag(self, name: str) -> bool:
        value = self.get(name)
        if value is None:
            return False
        if value.lower() not in ("true", "false", "1", "0"):
            raise GoogleError(400, f"Invalid value '{value}'. Expected a boolean.", reason="invalid", location=name)
        return value.lower() in ("true", "1")


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


def _json(body: Any) -> Response:
    # Always compact, whatever prettyPrint says: clients parse JSON, and faults edit the payload.
    return Response(200, body, content_type="application/json; charset=UTF-8")


def _mask(query: _Query, allowed: frozenset[str] | set[str] | None) -> dict[str, Any]:
    """The parsed ``fields`` mask ({} without one: callers apply their default)."""
    text = query.get("fields")
    if not text:
        return {}
    try:
        tree = parse_fields(text)
    except ValueError as exc:
        raise GoogleError(400, f"Invalid field selection {text}", reason="invalidParameter", location="fields") from exc
    if allowed is not None:
        for name in tree:
            if name != "*" and name not in allowed:
                raise GoogleError(400, f"Invalid field selection {name}", reason="invalidParameter", location="fields")
    return tree


def _check_file_fields(tree: Mapping[str, Any]) -> None:
    for name in tree:
        if name != "*" and name not in FILE_FIELDS:
            raise GoogleError(400, f"Invalid field selection {name}", reason="invalidParameter", location="fields")


def _parse_order(text: str | None) -> list[tuple[str, bool]]:
    """``orderBy`` → [(field, descending)], always ending with the id."""
    order: list[tuple[str, bool]] = []
    for part in (text or "").split(","):
        words = part.split()
        if not words:
            continue
        name = words[0]
        if name not in _ORDER_FIELDS or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise GoogleError(400, "Invalid Value", reason="invalid", location="orderBy")
        order.append((name, len(words) == 2 and words[1].lower() == "desc"))
    order.append(("id", False))
    return order


def _sort_key(item: DriveItem, order: Sequence[tuple[str, bool]]) -> list[Any]:
    key: list[Any] = []
    for name, _ in order:
        if name == "createdTime":
            key.append(item.created_ms)
        elif name == "modifiedTime":
            key.append(item.modified_ms)
        elif name in ("name", "name_natural"):
            key.append(item.name.lower())
        elif name == "folder":
            key.append(0 if item.mime_type == FOLDER_MIME else 1)
        elif name == "quotaBytesUsed":
            if not item.native:
                item._digest()
            key.append(item._size or 0)
        else:
            key.append(item.id)
    return key


def _compare(a: Sequence[Any], b: Sequence[Any], order: Sequence[tuple[str, bool]]) -> int:
    for (_, desc), x, y in zip(order, a, b, strict=True):
        if x != y:
            less = x < y
            return (1 if less else -1) if desc else (-1 if less else 1)
    return 0


def _cells(rows: Sequence[Sequence[Any]]) -> list[list[Cell | None]]:
    return [[Cell.of(v) for v in row] for row in rows]


def _grid_data(sheet: Sheet, r1: int, c1: int, r2: int, c2: int) -> dict[str, Any]:
    row_data = []
    for row in sheet.rows[r1 - 1 : min(r2, len(sheet.rows))]:
        values: list[dict[str, Any]] = []
        for cell in row[c1 - 1 : c2]:
            if cell is None:
                values.append({})
                continue
            raw = cell.raw
            kind = (
                "boolValue"
                if isinstance(raw, bool)
                else "numberValue"
                if isinstance(raw, (int, float))
                else "stringValue"
            )
            if (
                cell.formula_text is None
                and cell.raw == cell.formatted
                and kind == "stringValue"
                and raw.startswith("#")
            ):
                kind = "errorValue"
            effective: dict[str, Any] = (
                {kind: raw} if kind != "errorValue" else {"errorValue": {"type": "ERROR", "message": raw}}
            )
            entered = {"formulaValue": cell.formula_text} if cell.formula_text else effective
            values.append({"userEnteredValue": entered, "effectiveValue": effective, "formattedValue": cell.formatted})
        row_data.append({"values": values})
    return {"startRow": r1 - 1, "startColumn": c1 - 1, "rowData": row_data}


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator as a process (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Local Google Drive v3 / Sheets v4 / OAuth emulator")
    common_arguments(parser)
    parser.add_argument("--drive-per-100s", type=int, default=12_000, help="Drive queries per 100 s per principal")
    parser.add_argument(
        "--sheets-reads-per-minute", type=int, default=300, help="Sheets reads per minute per principal"
    )
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="access-token lifetime in seconds")
    parser.add_argument(
        "--drive-rate-error",
        choices=("userRateLimitExceeded", "rateLimitExceeded"),
        default="userRateLimitExceeded",
        help="Drive's quota answer: 403 userRateLimitExceeded or 429 rateLimitExceeded",
    )
    parser.add_argument("--sheets-retry-after", action="store_true", help="send Retry-After with Sheets' 429")
    args = parser.parse_args(argv)
    limits = {
        DRIVE_QUOTA: [Limit(rps=args.drive_per_100s, kind="rolling", window=100.0, name="QueriesPer100SecondsPerUser")],
        SHEETS_READ_QUOTA: [
            Limit(rps=args.sheets_reads_per_minute, kind="rolling", window=60.0, name="ReadRequestsPerMinutePerUser")
        ],
    }
    clock = FakeClock(args.now) if args.now is not None else None
    emu = GoogleEmulator(
        clock=clock,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        limits=limits,
        token_lifetime=args.token_lifetime,
        drive_rate_error=args.drive_rate_error,
        sheets_retry_after=args.sheets_retry_after,
        seed=args.seed,
    )
    run_cli(emu, args.host, args.port)


if __name__ == "__main__":
    main()
