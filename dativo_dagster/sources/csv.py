"""CSV files (one path or a glob per object), streamed with Arrow's CSV reader.

Columns are read as text and cast to the contract by the writer's enforcer, so one bad value
sends one row to quarantine instead of failing a whole block. Incremental by a cursor column
(every run scans the files and keeps rows past the cursor) or by file modification time (only
new or changed files are read; a changed file's rows replace the ones it gave before).

What this module guarantees, file by file:

* **Confinement.** ``options.path`` is relative with no ``..`` part (checked at config load).
  Every file and directory the path or glob reaches is resolved with its links followed and
  must lie inside the tenant's data roots, else CFG001 naming it (relative to ``base_path``).
  ``**`` never walks a directory twice, so a link loop cannot make a glob run forever.
* **A consistent cut.** A file is read up to its last line end as of the moment the read starts:
  a last line still being written is never read half (cursor strategies pick it up later;
  ``file_mtime`` leaves the whole file for a later run and reads it once it is complete).
* **Headers matched, not guessed.** Header names match contract columns exactly, else after
  trimming spaces and a BOM, case-insensitively (with a warning); an ambiguous or missing
  column is CFG001 naming it and the file.
* **Bad rows quarantined, good rows loaded.** A row with too many or too few fields (or an
  unterminated quote, whose following lines are parsed again one by one) and a row holding
  bytes that are not valid in the file's encoding are passed on with a reason in
  :data:`~dativo_dagster.types.SOURCE_REASON_COLUMN`, so the writer quarantines exactly those.
* **Re-read files replace their rows.** ``file_mtime`` rows carry the file they came from
  (``_dativo_file``); a changed file's new rows replace its earlier ones in the same commit.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import fnmatch
import os
import queue
import re
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import structlog
from pydantic import Field, ValidationError, field_validator, model_validator

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError
from dativo_dagster.paths import confine, describe_roots
from dativo_dagster.sources.base import ConnectionConfig, Extraction, ReadRequest, Source, SourceOptions, SourceStats
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.incremental import lower_bound, row_filter
from dativo_dagster.types import SOURCE_REASON_COLUMN, arrow_type, cast_column, contract_arrow_schema

log = structlog.get_logger("dativo.sources.csv")

FILE_COLUMN = "_dativo_file"
"""Lineage column of ``file_mtime`` objects: the file a row came from, relative to base_path."""

REASON_TEXT_CHARS = 200
"""How much of a malformed row's text its quarantine reason quotes."""

MAX_NAMES_LOGGED = 50
"""Header names a warning lists at most."""

HEADER_BLOCK_BYTES = 1 << 16
"""Block size of the read that only looks at a file's header."""

_MAGIC = re.compile(r"[*?[]")
_PROBE = "\n\r\t ,;|\"'abcXYZ019"


class CsvConnection(ConnectionConfig):
    """Where a tenant's files live."""

    base_path: str | None = Field(
        default=None,
        description="directory the object paths are relative to (relative to the project; default: the "
        "tenant's first data root); must lie inside the tenant's data roots",
    )


class CsvOptions(SourceOptions):
    """Per-object CSV settings."""

    path: str = Field(description="file name or glob relative to base_path, e.g. 'orders/*.csv' or '**/*.csv'")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = Field(default="utf8", description="any ASCII-compatible encoding: utf8, latin1, cp1252, ...")
    header: bool = True
    skip_rows: int = Field(default=0, ge=0)
    null_values: list[str] = Field(default_factory=lambda: ["", "NULL", "null"])
    missing_columns: Literal["error", "null"] = Field(
        default="error",
        description="a nullable contract column absent from a file's header: 'error' (CFG001, the default) "
        "or null (load it as NULL, with a warning)",
    )
    # Small blocks bound memory: Arrow parses blocks ahead of the consumer.
    block_size_bytes: int = Field(default=1 << 20, ge=1 << 16, le=256 << 20)

    @field_validator("path")
    @classmethod
    def _relative_path(cls, value: str) -> str:
        """A path that cannot name anything outside base_path, whatever the files are."""
        if not value.strip():
            raise ValueError("must name a file or glob relative to base_path")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        if value.startswith(("/", "\\", "~")) or re.match(r"^[A-Za-z]:", value):
            raise ValueError(f"must be relative to base_path (got {value!r})")
        if ".." in re.split(r"[/\\]", value):
            raise ValueError(f"must not contain a '..' part (got {value!r}); files are read only under base_path")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        """An encoding Python knows in which newline, delimiters and quotes are the ASCII bytes."""
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        try:
            decoded = codecs.decode(_PROBE.encode("ascii"), info.name)
        except (UnicodeError, TypeError, LookupError):
            decoded = None
        if not getattr(info, "_is_text_encoding", True) or decoded != _PROBE:
            raise ValueError(
                f"encoding {value!r} is not ASCII-compatible (utf-16 and utf-32 files are not supported; "
                "convert them to utf8)"
            )
        return value

    @field_validator("missing_columns", mode="before")
    @classmethod
    def _yaml_null(cls, value: object) -> object:
        """``missing_columns: null`` in YAML arrives as None."""
        return "null" if value is None else value

    @model_validator(mode="after")
    def _separators(self) -> CsvOptions:
        for name, char in (("delimiter", self.delimiter), ("quote_char", self.quote_char)):
            if not char.isascii() or char in "\r\n":
                raise ValueError(f"{name} must be one ASCII character other than a line break (got {char!r})")
        if self.delimiter == self.quote_char:
            raise ValueError("delimiter and quote_char must differ")
        return self


# --------------------------------------------------------------------------- file-mtime cursor


def file_cursor(
    files: Sequence[tuple[int, str]],
    previous: dict[str, Any] | None,
    *,
    sizes: dict[str, int] | None = None,
    pending: Sequence[str] = (),
) -> dict[str, Any] | None:
    """New ``file_mtime`` cursor: latest mtime, the files seen at exactly that mtime, and pending files.

    Args:
        files: ``(mtime_ns, relative path)`` of the files read completely this run.
        previous: The cursor the run started from.
        sizes: Bytes read per file; kept for the files at the latest mtime, so a file that grows
            within the same timestamp tick is read again.
        pending: Files left for a later run (their last line was incomplete); a later run reads
            them whatever their modification time.
    """
    pending_list = sorted(set(pending))
    if not files:
        if previous is None:
            return None
        if sorted(previous.get("pending", [])) == pending_list:
            return previous
        return _with_extras({**previous, "pending": pending_list})
    latest = max(m for m, _ in files)
    previous_latest = previous.get("mtime_ns", -1) if previous else -1
    if previous_latest > latest:
        # Files older than the cursor were re-read (changed, or pending); the cursor stays.
        assert previous is not None
        seen_sizes = dict(previous.get("sizes", {}))
        value: dict[str, Any] = {**previous, "sizes": seen_sizes, "pending": pending_list}
        return _with_extras(value)
    at_latest = {p for m, p in files if m == latest}
    seen_sizes = {p: s for p, s in (sizes or {}).items() if p in at_latest}
    if previous and previous_latest == latest:
        at_latest |= set(previous.get("paths", []))
        seen_sizes = {**previous.get("sizes", {}), **seen_sizes}
    return _with_extras({"mtime_ns": latest, "paths": sorted(at_latest), "sizes": seen_sizes, "pending": pending_list})


def _with_extras(value: dict[str, Any]) -> dict[str, Any]:
    """Drop empty optional keys so a plain cursor keeps its plain shape."""
    paths = set(value.get("paths", []))
    sizes = {p: s for p, s in sorted(value.get("sizes", {}).items()) if p in paths}
    out = {k: v for k, v in value.items() if k not in ("sizes", "pending")}
    if sizes:
        out["sizes"] = sizes
    if value.get("pending"):
        out["pending"] = sorted(value["pending"])
    return out


def files_after(
    files: Sequence[tuple[int, str]],
    cursor: dict[str, Any] | None,
    *,
    sizes: dict[str, int] | None = None,
) -> list[tuple[int, str]]:
    """Files to read: modified after the cursor, at its mtime but not yet loaded (or grown), or pending.

    Args:
        files: ``(mtime_ns, relative path)`` of every matching file.
        cursor: The committed ``file_mtime`` cursor.
        sizes: Current size per file (compared with the sizes the cursor recorded).
    """
    if not cursor:
        return list(files)
    mtime = cursor.get("mtime_ns", -1)
    seen = set(cursor.get("paths", []))
    seen_sizes = cursor.get("sizes", {})
    pending = set(cursor.get("pending", []))
    current = sizes or {}

    def changed_in_tick(path: str) -> bool:
        return path in seen_sizes and path in current and current[path] != seen_sizes[path]

    return [
        (m, p) for m, p in files if m > mtime or (m == mtime and (p not in seen or changed_in_tick(p))) or p in pending
    ]


# --------------------------------------------------------------------------- finding files


class FileCursorCodec(CursorCodec):
    """``file_mtime`` cursors: the latest modification time read, and what was seen at it."""

    def order_key(self, value: Any) -> Any:
        """Files are ordered by modification time."""
        return value.get("mtime_ns", -1) if isinstance(value, dict) else -1

    def display(self, value: Any, field: str | None = None) -> str:
        """``files modified up to 2024-01-01T10:00:00+00:00``."""
        if not isinstance(value, dict) or "mtime_ns" not in value:
            return "no file read yet"
        stamp = dt.datetime.fromtimestamp(value["mtime_ns"] / 1e9, tz=dt.timezone.utc)
        return f"files modified up to {stamp.isoformat(timespec='seconds')}"


@dataclass(frozen=True)
class CsvFile:
    """One file an object's path or glob matched, checked to lie inside the tenant's data roots."""

    relative: str
    """Path relative to base_path (``/``-separated), as messages and ``_dativo_file`` show it."""
    path: Path
    """The real path (every link followed)."""
    mtime_ns: int
    size: int


class _Matcher:
    """Expands a relative glob under a base directory without leaving the tenant's data roots.

    Unlike :func:`glob.glob`, every directory is checked (links followed) before it is listed, and
    ``**`` visits each real directory once, so neither a link out of the tenant's files nor a link
    loop is followed. Hidden names match only a pattern part that starts with a dot, like glob.
    """

    def __init__(self, base: Path, roots: Sequence[Path], *, label: str, pattern: str, project_dir: Path) -> None:
        self.base = base
        self.roots = roots
        self.label = label
        self.pattern = pattern
        self.project_dir = project_dir

    def outside(self, relative: str, what: str) -> ConfigError:
        """CFG001 for a path the pattern reached that resolves outside the data roots."""
        return ConfigError(
            f"{self.label}: options.path {self.pattern!r} reaches {what} {relative!r} (under base_path), which "
            f"resolves outside the tenant's data roots ({describe_roots(self.roots, self.project_dir)})",
            hint="a symbolic link may not lead out of the tenant's data roots; copy the file in instead",
        )

    def _inside(self, real: str) -> bool:
        path = Path(real)
        return any(path == root or root in path.parents for root in self.roots)

    def _join(self, relative: str, name: str) -> str:
        return f"{relative}/{name}" if relative else name

    def _real_dir(self, relative: str) -> str:
        real = os.path.realpath(self.base / relative) if relative else str(self.base)
        if not self._inside(real):
            raise self.outside(relative, "directory")
        return real

    def _list(self, relative: str) -> list[str]:
        self._real_dir(relative)
        try:
            with os.scandir(self.base / relative if relative else self.base) as entries:
                return sorted(entry.name for entry in entries)
        except (NotADirectoryError, FileNotFoundError):
            return []
        except PermissionError:
            raise AuthError(f"{self.label}: directory {relative or '.'!r} under base_path is not readable") from None

    def _is_dir(self, relative: str) -> bool:
        return os.path.isdir(self.base / relative)

    def _tree(self, relative: str) -> list[str]:
        """``relative`` and every non-hidden directory below it, each real directory once (links followed)."""
        visited: set[str] = set()
        found: list[str] = []
        stack = [relative]
        while stack:
            current = stack.pop()
            real = self._real_dir(current)
            if real in visited:
                continue  # a link back into the tree: walking it again would never end
            visited.add(real)
            found.append(current)
            children = [self._join(current, n) for n in self._list(current) if not n.startswith(".")]
            stack.extend(reversed([c for c in children if self._is_dir(c)]))
        return found

    def expand(self) -> list[str]:
        """Relative paths (files, directories and links alike) the pattern matches, sorted."""
        parts = [p for p in self.pattern.split("/") if p not in ("", ".")]
        found: set[str] = set()
        if parts:
            self._descend("", parts, found)
        return sorted(found)

    def _descend(self, relative: str, parts: list[str], found: set[str]) -> None:
        part, rest = parts[0], parts[1:]
        if part == "**":
            for directory in self._tree(relative):
                if rest:
                    self._descend(directory, rest, found)
                else:
                    found.update(self._join(directory, n) for n in self._list(directory) if not n.startswith("."))
            return
        if _MAGIC.search(part):
            names = [
                n
                for n in self._list(relative)
                if fnmatch.fnmatchcase(n, part) and (not n.startswith(".") or part.startswith("."))
            ]
        else:
            names = [part] if os.path.lexists(self.base / self._join(relative, part)) else []
        for name in names:
            child = self._join(relative, name)
            if not rest:
                found.add(child)
            elif self._is_dir(child):
                self._descend(child, rest, found)


# --------------------------------------------------------------------------- reading one file


_SENTINEL_BASE = 0x10FF00
"""Bytes 0x80-0xFF that are not valid text become U+10FF80-U+10FFFF (private use) on the way into
Arrow: the reader then only sees valid UTF-8 (its malformed-row handler cannot take anything else),
and the rows holding such a character are rejected with the column named."""
_ESCAPE_SURROGATES = {0xDC00 + b: _SENTINEL_BASE + b for b in range(0x80, 0x100)}
_SHOW_SENTINELS = {_SENTINEL_BASE + b: f"\\x{b:02x}" for b in range(0x80, 0x100)}
_SENTINEL_PATTERN = "[\U0010ff80-\U0010ffff]"
_SURROGATE_RE = re.compile("[\udc80-\udcff]")
_SENTINEL_RE = re.compile(_SENTINEL_PATTERN)


def _is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name == "utf-8"


class _FileCut:
    """The bytes ``[0, end)`` of an open file as UTF-8, for ``pyarrow.csv.open_csv``.

    Reads with ``os.pread`` (so several readers can share the descriptor), never past ``end``,
    in the size Arrow asks for: memory stays one block however large the file. Text that is not
    valid in ``encoding`` passes as private-use characters (see ``_SENTINEL_BASE``); ``dirty``
    tells whether any did.
    """

    def __init__(self, fd: int, end: int, encoding: str, *, label: str) -> None:
        self._fd = fd
        self._label = label
        self._end = end
        self._position = 0
        self._utf8 = _is_utf8(encoding)
        self._decoder = None if self._utf8 else codecs.getincrementaldecoder(encoding)("surrogateescape")
        self._carry = b""
        self._out = b""
        self._done = end <= 0
        self.closed = False
        self.dirty = False

    def readable(self) -> bool:
        """Arrow checks this."""
        return True

    def seekable(self) -> bool:
        """A forward-only stream."""
        return False

    def close(self) -> None:
        """The descriptor belongs to the caller; only this view closes."""
        self.closed = True

    def tell(self) -> int:
        """Bytes of the file consumed so far."""
        return self._position

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes of UTF-8 (all that is left for a negative size)."""
        want = self._end if size is None or size < 0 else size
        while len(self._out) < want and not self._done:
            count = min(max(want - len(self._out), 1 << 16), self._end - self._position)
            raw = os.pread(self._fd, count, self._position)
            if not raw:
                raise ExtractError(f"{self._label}: the file was truncated while it was being read")
            self._position += len(raw)
            self._done = self._position >= self._end
            self._out += self._convert(raw, final=self._done)
        if len(self._out) <= want:
            data, self._out = self._out, b""
        else:
            data, self._out = self._out[:want], self._out[want:]
        return data

    def _convert(self, raw: bytes, *, final: bool) -> bytes:
        if self._decoder is None:
            data = self._carry + raw if self._carry else raw
            self._carry = b""
            if data.isascii():
                return data
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError:
                text, consumed = codecs.utf_8_decode(data, "surrogateescape", final)
                self._carry = data[consumed:]
                self.dirty = True
                return text.translate(_ESCAPE_SURROGATES).encode("utf-8")
            self._carry = data[consumed:]
            return data if consumed == len(data) else data[:consumed]
        text = self._decoder.decode(raw, final)
        if _SURROGATE_RE.search(text):
            self.dirty = True
            text = text.translate(_ESCAPE_SURROGATES)
        return text.encode("utf-8")


def _last_newline_end(fd: int, size: int) -> int:
    """Offset just past the last line end (``\\n`` or ``\\r``) in the first ``size`` bytes; 0 if there is none."""
    position = size
    step = 1 << 16
    while position > 0:
        start = max(0, position - step)
        chunk = os.pread(fd, position - start, start)
        index = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def _show(text: str) -> str:
    """Text as a person should see it: invalid bytes written as ``\\xNN``."""
    return text.translate(_SHOW_SENTINELS)


@dataclass
class _Malformed:
    """Rows Arrow's parser could not split into the header's fields, collected from its thread."""

    rows: list[tuple[int | None, int, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self, row: Any) -> str:
        """``ParseOptions.invalid_row_handler``: remember the row and skip it."""
        with self.lock:
            self.rows.append((row.number, row.expected_columns, row.actual_columns, row.text))
        return "skip"

    def drain(self) -> list[tuple[int | None, int, int, str]]:
        """The rows collected since the last call."""
        with self.lock:
            rows, self.rows = self.rows, []
        return rows


_END = object()


class _Prefetch:
    """Reads batches in a worker thread, one or two ahead of the consumer.

    Arrow numbers malformed rows only when it parses on the calling thread, so the reader runs
    with ``use_threads=False`` and this thread restores the overlap between parsing and the
    consumer's work that Arrow's own read-ahead gave (parsing releases the GIL).
    """

    def __init__(self, reader: pacsv.CSVStreamingReader, malformed: _Malformed, depth: int = 2) -> None:
        self._reader = reader
        self._malformed = malformed
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="dativo-csv-read", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    batch = self._reader.read_next_batch()
                except StopIteration:
                    self._put((_END, self._malformed.drain()))
                    return
                if not self._put((batch, self._malformed.drain())):
                    return
        except Exception as exc:  # handed to the consumer, which raises it
            self._put((exc, []))

    def __iter__(self) -> Iterator[tuple[pa.RecordBatch | None, list[tuple[int | None, int, int, str]]]]:
        while True:
            item, malformed = self._queue.get()
            if item is _END:
                yield None, malformed
                return
            if isinstance(item, Exception):
                raise item
            yield item, malformed

    def close(self) -> None:
        """Stop the worker and wait for it (it finishes the block it is parsing)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
        self._thread.join()


# --------------------------------------------------------------------------- header matching


@dataclass(frozen=True)
class HeaderMatch:
    """How a file's header lines up with the contract's columns.

    Attributes:
        columns: Contract column (source name) → the header name it was found under.
        respelled: ``(header spelling, contract spelling)`` pairs matched only after trimming
            spaces and a BOM and ignoring case.
        missing: Contract columns the header does not have.
        ignored: Header names that match no contract column.
    """

    columns: dict[str, str]
    respelled: list[tuple[str, str]]
    missing: list[str]
    ignored: list[str]


def _loose(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().casefold()


def match_header(header: Sequence[str], wanted: Sequence[str], *, where: str) -> HeaderMatch:
    """Match header names to contract columns: exactly, else trimmed and case-insensitively.

    Args:
        header: The file's header names, in file order.
        wanted: The contract's columns as the source names them (``source_name`` or ``name``).
        where: ``object: file`` for messages.

    Raises:
        ConfigError: CFG001 when two header names match one contract column, or one header name
            matches two contract columns.
    """
    wanted_set = set(wanted)
    claims: dict[int, list[str]] = {}
    columns: dict[str, str] = {}
    respelled: list[tuple[str, str]] = []
    missing: list[str] = []
    for name in wanted:
        exact = [i for i, h in enumerate(header) if h == name]
        loose = [i for i, h in enumerate(header) if h != name and h not in wanted_set and _loose(h) == _loose(name)]
        candidates = exact + loose
        if len(candidates) > 1:
            shown = ", ".join(repr(header[i]) for i in sorted(candidates))
            raise ConfigError(
                f"{where}: header columns {shown} all match contract column {name!r}; rename or remove all but one",
            )
        if not candidates:
            missing.append(name)
            continue
        index = candidates[0]
        claims.setdefault(index, []).append(name)
        columns[name] = header[index]
        if header[index] != name:
            respelled.append((header[index], name))
    for index, names in claims.items():
        if len(names) > 1:
            raise ConfigError(
                f"{where}: header column {header[index]!r} matches contract columns "
                f"{', '.join(repr(n) for n in names)}; name it exactly as one of them",
            )
    ignored = [h for i, h in enumerate(header) if i not in claims]
    return HeaderMatch(columns, respelled, missing, ignored)


# --------------------------------------------------------------------------- the source


class _Vanished(Exception):
    """A listed file is gone by the time it is opened."""


@dataclass
class _ReadState:
    """What one run read, for the cursor and the replacement of re-read files."""

    read: list[tuple[int, str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)
    skipped_rows: int = 0
    skipped_malformed: list[str] = field(default_factory=list)


class CsvSource(Source):
    """Local CSV files; object stores plug in through the same options later."""

    type = "csv"
    connection_model = CsvConnection
    options_model = CsvOptions
    supported_strategies = frozenset(
        {Strategy.FULL_REFRESH, Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED, Strategy.FILE_MTIME}
    )
    needs_contract = True
    local_path_fields = frozenset({"base_path"})

    @property
    def base_path(self) -> Path:
        """Resolved base directory (inside the tenant's data roots)."""
        assert isinstance(self.connection, CsvConnection)
        if self.connection.base_path is None:
            if not self.data_roots:
                raise ConfigError("csv source: no base_path and no data root configured for this tenant")
            return self.data_roots[0]
        return confine(
            self.connection.base_path, self.data_roots, base=self.project_dir, what="source.connection.base_path"
        )

    def check_connection(self) -> None:
        """The base directory must exist and be readable."""
        base = self.base_path
        if not base.is_dir():
            raise ConfigError(f"csv base_path {base.name!r} is not a directory")
        if not os.access(base, os.R_OK | os.X_OK):
            raise ExtractError(f"csv base_path {base.name!r} is not readable")

    def list_objects(self) -> list[str]:
        """CSV file stems under the base directory."""
        return sorted(p.stem for p in self.base_path.glob("*.csv"))

    def _options(self, obj: ObjectPlan) -> CsvOptions:
        try:
            return CsvOptions.model_validate(obj.options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(["options", *(str(p) for p in first["loc"])])
            raise ConfigError(f"{obj.label}: {where}: {first['msg'].removeprefix('Value error, ')}") from None

    def cursor_codec(self, obj: ObjectPlan) -> CursorCodec:
        """File modification times for ``file_mtime``; the cursor column's values otherwise."""
        if obj.strategy is Strategy.FILE_MTIME:
            return FileCursorCodec()
        return super().cursor_codec(obj)

    def matching_files(self, obj: ObjectPlan) -> list[CsvFile]:
        """Every regular file the object's path or glob matches, each checked against the data roots.

        Raises:
            ConfigError: CFG001 naming the path (relative to base_path) of a file or directory
                that resolves outside the tenant's data roots, a dangling or looping link, or
                something that is not a regular file.
        """
        options = self._options(obj)
        base = self.base_path
        matcher = _Matcher(base, self.data_roots, label=obj.label, pattern=options.path, project_dir=self.project_dir)
        files: list[CsvFile] = []
        seen: dict[Path, str] = {}
        for relative in matcher.expand():
            lexical = base / relative
            real = Path(os.path.realpath(lexical))
            if not any(real == root or root in real.parents for root in self.data_roots):
                raise matcher.outside(relative, "directory" if real.is_dir() else "file")
            try:
                info = os.stat(real)
            except FileNotFoundError:
                if os.path.islink(lexical):
                    raise ConfigError(
                        f"{obj.label}: {relative!r} (under base_path) is a dangling symbolic link"
                    ) from None
                continue  # deleted since it was listed
            except OSError as exc:
                raise ConfigError(
                    f"{obj.label}: {relative!r} (under base_path) cannot be read: {exc.strerror}"
                ) from None
            if stat.S_ISDIR(info.st_mode):
                continue
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{obj.label}: {relative!r} (under base_path) is not a regular file")
            if real in seen:
                log.warning("csv_same_file_twice", object=obj.label, file=relative, read_as=seen[real])
                continue
            seen[real] = relative
            files.append(CsvFile(relative, real, info.st_mtime_ns, info.st_size))
        return files

    def check_object(self, obj: ObjectPlan) -> None:
        """At least one file must match, with every contract column in its header."""
        files = self.matching_files(obj)
        if not files:
            raise ConfigError(f"{obj.label}: no file matches options.path {self._options(obj).path!r}")
        options = self._options(obj)
        try:
            fd = self._open(obj, files[0])
        except _Vanished:
            raise ConfigError(f"{obj.label}: {files[0].relative} disappeared while it was being checked") from None
        try:
            end = _last_newline_end(fd, os.fstat(fd).st_size)
            if end == 0:
                raise ConfigError(
                    f"{obj.label}: {files[0].relative}: no complete line yet (empty, or its first line is still "
                    "being written)"
                )
            self._match(obj, options, fd, end, files[0].relative)
        finally:
            os.close(fd)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The contract's schema (CSV carries no types of its own)."""
        assert obj.contract is not None
        return contract_arrow_schema(obj.contract)

    # ------------------------------------------------------------------ one file

    def _open(self, obj: ObjectPlan, file: CsvFile) -> int:
        """Open the checked real path without following a link swapped in since, and re-check it.

        Raises:
            _Vanished: the file was deleted (or moved away) since it was listed.
            ConfigError: it is no longer a regular file inside the data roots.
        """
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(file.path, flags)
        except FileNotFoundError:
            raise _Vanished(file.relative) from None
        except PermissionError:
            raise AuthError(f"{obj.label}: {file.relative}: permission denied") from None
        except OSError as exc:
            raise ExtractError(f"{obj.label}: cannot open {file.relative}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ConfigError(f"{obj.label}: {file.relative!r} (under base_path) is not a regular file")
            try:
                opened = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                opened = None  # no /proc: the check before opening stands alone
            if opened and opened.startswith("/") and not opened.endswith(" (deleted)"):
                real = Path(opened)
                if not any(real == root or root in real.parents for root in self.data_roots):
                    raise ConfigError(
                        f"{obj.label}: {file.relative!r} (under base_path) resolves outside the tenant's data roots"
                    )
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _header(self, obj: ObjectPlan, options: CsvOptions, fd: int, end: int, relative: str) -> list[str]:
        """The file's header names, as Arrow reads them."""
        parse = pacsv.ParseOptions(
            delimiter=options.delimiter, quote_char=options.quote_char, invalid_row_handler=lambda _row: "skip"
        )
        # Arrow infers types on the whole first block: a small one keeps this cheap for a file set
        # of thousands; a header wider than that is read again with the configured block.
        sizes = sorted({min(options.block_size_bytes, HEADER_BLOCK_BYTES), options.block_size_bytes})
        for attempt, block_size in enumerate(sizes, 1):
            cut = _FileCut(fd, end, options.encoding, label=f"{obj.label}: {relative}")
            read = pacsv.ReadOptions(
                block_size=block_size, skip_rows=options.skip_rows, encoding="utf8", use_threads=False
            )
            try:
                with pacsv.open_csv(
                    cut,
                    read_options=read,
                    parse_options=parse,
                    convert_options=pacsv.ConvertOptions(check_utf8=False, strings_can_be_null=True),
                ) as reader:
                    names = list(reader.schema.names)
                break
            except pa.ArrowInvalid as exc:
                if attempt == len(sizes):
                    raise ConfigError(f"{obj.label}: {relative}: not a readable CSV file ({exc})") from None
        if cut.dirty:
            bad = [_show(n) for n in names if _SENTINEL_RE.search(n)]
            if bad:
                raise ConfigError(
                    f"{obj.label}: {relative}: header name(s) {', '.join(repr(b) for b in bad)} are not valid "
                    f"{options.encoding} text"
                )
        return names

    def _match(
        self, obj: ObjectPlan, options: CsvOptions, fd: int, end: int, relative: str
    ) -> tuple[list[str], HeaderMatch]:
        """Read and match one file's header; CFG001 for what cannot be loaded exactly."""
        assert obj.contract is not None
        wanted = [c.source_name or c.name for c in obj.contract.columns]
        if not options.header:
            # Without a header the contract's columns are the file's, in order: a row with another
            # number of fields is malformed (quarantined), never shifted.
            header = [f"column {i + 1}" for i in range(len(wanted))]
            return header, HeaderMatch(dict(zip(wanted, header, strict=True)), [], [], [])
        header = self._header(obj, options, fd, end, relative)
        where = f"{obj.label}: {relative}"
        match = match_header(header, wanted, where=where)
        for spelled, name in match.respelled:
            log.warning("csv_header_respelled", object=obj.label, file=relative, header=spelled, column=name)
        if match.ignored:
            # One line per file, bounded: a wide export may carry thousands of columns the contract skips.
            log.warning(
                "csv_header_columns_ignored",
                object=obj.label,
                file=relative,
                count=len(match.ignored),
                columns=match.ignored[:MAX_NAMES_LOGGED],
            )
        if match.missing:
            required = {c.source_name or c.name for c in obj.contract.columns if c.required}
            missing_required = [m for m in match.missing if m in required]
            shown = missing_required or match.missing
            if missing_required or options.missing_columns == "error":
                kind = "required " if missing_required else ""
                raise ConfigError(
                    f"{where}: {kind}contract column(s) {', '.join(repr(m) for m in shown)} missing from the header",
                    hint=None
                    if missing_required
                    else "add the column to the file, or set options.missing_columns: null to load it as NULL",
                )
            log.warning("csv_columns_missing_loaded_as_null", object=obj.label, file=relative, columns=match.missing)
        return header, match

    def read(self, request: ReadRequest) -> Extraction:
        """Stream matching files past the cursor as text batches."""
        obj = request.obj
        assert obj.contract is not None
        options = self._options(obj)
        stats = SourceStats()
        listed = self.matching_files(obj)
        is_glob = bool(_MAGIC.search(options.path))
        if not listed and (obj.strategy is not Strategy.FILE_MTIME or not is_glob):
            # An empty read here would look like a successful load (or, for a full refresh, empty
            # the table): a missing file is a configuration problem, not "no new rows".
            raise ConfigError(f"{obj.label}: no file matches options.path {options.path!r} under base_path")
        by_mtime = obj.strategy is Strategy.FILE_MTIME
        previous_files = request.cursor.value if request.cursor and by_mtime else None
        files = listed
        if by_mtime:
            wanted = set(
                files_after(
                    [(f.mtime_ns, f.relative) for f in listed],
                    previous_files,
                    sizes={f.relative: f.size for f in listed},
                )
            )
            files = [f for f in listed if (f.mtime_ns, f.relative) in wanted]
        source_columns = [c.source_name or c.name for c in obj.contract.columns]
        schema = pa.schema([pa.field(name, pa.string()) for name in source_columns])
        bound, inclusive = lower_bound(
            obj.strategy, request.cursor, obj.config.incremental.lookback_days, self.cursor_codec(obj)
        )
        cursor_type = None
        cursor_source = None
        if obj.cursor_field:
            cursor_column = obj.contract.column(obj.cursor_field)
            cursor_type = arrow_type(cursor_column)
            cursor_source = cursor_column.source_name or cursor_column.name
        state = _ReadState()
        reader = _FileReader(
            self,
            obj,
            options,
            source_columns,
            cursor_source,
            cursor_type,
            bound,
            inclusive,
            by_mtime,
            state,
            stats,
        )

        def batches() -> Iterator[pa.RecordBatch]:
            for file in files:
                yield from reader.read(file)

        def on_close() -> None:
            if state.skipped_rows:
                log.warning("rows_without_cursor_skipped", object=obj.label, rows=state.skipped_rows)
            if state.skipped_malformed:
                log.warning(
                    "malformed_rows_without_cursor_skipped",
                    object=obj.label,
                    rows=len(state.skipped_malformed),
                    lines=state.skipped_malformed[:20],
                )

        def new_file_cursor() -> Any:
            return file_cursor(state.read, previous_files, sizes=state.sizes, pending=state.deferred)

        def replaced_files() -> list[str]:
            return [relative for _, relative in state.read]

        typed_schema = schema
        if cursor_source is not None and cursor_type is not None:
            index = typed_schema.get_field_index(cursor_source)
            typed_schema = typed_schema.set(index, pa.field(cursor_source, cursor_type))
        lineage = [pa.field(FILE_COLUMN, pa.string())] if by_mtime else None
        if lineage:
            typed_schema = typed_schema.append(lineage[0])
        return Extraction(
            typed_schema,
            batches(),
            request,
            stats,
            cursor_override=new_file_cursor if by_mtime else None,
            codec=self.cursor_codec(obj),
            on_close=on_close,
            lineage=lineage,
            replaces=(FILE_COLUMN, replaced_files) if by_mtime else None,
        )


class _FileReader:
    """Reads one object's files into text batches (one instance per run)."""

    def __init__(
        self,
        source: CsvSource,
        obj: ObjectPlan,
        options: CsvOptions,
        source_columns: list[str],
        cursor_source: str | None,
        cursor_type: pa.DataType | None,
        bound: Any,
        inclusive: bool,
        by_mtime: bool,
        state: _ReadState,
        stats: SourceStats,
    ) -> None:
        self.source = source
        self.obj = obj
        self.options = options
        self.source_columns = source_columns
        self.cursor_source = cursor_source
        self.cursor_type = cursor_type
        self.bound = bound
        self.inclusive = inclusive
        self.by_mtime = by_mtime
        self.state = state
        self.stats = stats
        assert obj.contract is not None
        self.table_names = {c.source_name or c.name: c.name for c in obj.contract.columns}
        # Physical lines Arrow's row numbers are behind by in the current file (see _malformed_batch).
        self._line_shift = 0

    def read(self, file: CsvFile) -> Iterator[pa.RecordBatch]:
        """Batches of one file, cut at its last newline as of now; malformed and undecodable rows carry a reason."""
        obj, options, relative = self.obj, self.options, file.relative
        try:
            fd = self.source._open(obj, file)
        except _Vanished:
            # Moved away since it was listed (a drop folder being archived): not read, not recorded.
            log.warning("csv_file_vanished", object=obj.label, file=relative)
            return
        try:
            opened = os.fstat(fd)
            size = opened.st_size
            end = _last_newline_end(fd, size)
            if end < size:
                # The last line is still being written (or lacks its newline): never read half a row.
                if self.by_mtime:
                    log.info("csv_file_incomplete_deferred", object=obj.label, file=relative, bytes=size)
                    self.state.deferred.append(relative)
                    return
                log.info("csv_partial_last_line_left", object=obj.label, file=relative, bytes=size - end)
            if end == 0:
                if self.by_mtime:
                    self.state.deferred.append(relative)
                log.warning("csv_file_has_no_complete_line", object=obj.label, file=relative)
                return
            header, match = self.source._match(obj, options, fd, end, relative)
            yield from self._batches(fd, end, relative, header, match)
            self.stats.add(api_calls=1, bytes_read=end)
            self.state.read.append((opened.st_mtime_ns, relative))
            self.state.sizes[relative] = end
        finally:
            os.close(fd)

    def _batches(
        self, fd: int, end: int, relative: str, header: list[str], match: HeaderMatch
    ) -> Iterator[pa.RecordBatch]:
        obj, options = self.obj, self.options
        included = [match.columns[name] for name in self.source_columns if name in match.columns]
        cut = _FileCut(fd, end, options.encoding, label=f"{obj.label}: {relative}")
        malformed = _Malformed()
        read = pacsv.ReadOptions(
            block_size=options.block_size_bytes,
            skip_rows=options.skip_rows,
            encoding="utf8",  # _FileCut hands Arrow UTF-8 whatever the file's encoding
            column_names=None if options.header else header,
            use_threads=False,  # row numbers for malformed rows; _Prefetch reads ahead instead
        )
        parse = pacsv.ParseOptions(
            delimiter=options.delimiter, quote_char=options.quote_char, invalid_row_handler=malformed.handler
        )
        convert = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in included},
            include_columns=included,
            strings_can_be_null=True,
            null_values=options.null_values,
            quoted_strings_can_be_null=False,
            check_utf8=False,  # _FileCut already guarantees valid UTF-8
        )
        try:
            reader = pacsv.open_csv(cut, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"{obj.label}: {relative}: malformed CSV ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise ExtractError(f"{obj.label}: cannot read {relative}: {exc}") from None
        self._line_shift = 0
        prefetch = _Prefetch(reader, malformed)
        try:
            for batch, bad_rows in prefetch:
                if batch is not None and batch.num_rows:
                    self.stats.add(pages=1)
                    out = self._finish(self._columns(batch, match, cut.dirty), relative)
                    if out is not None:
                        yield out
                if bad_rows:
                    parsed, reasons, flags = self._malformed_batch(bad_rows, header, match)
                    columns, byte_reasons = self._columns(parsed, match, cut.dirty)
                    if byte_reasons is not None:
                        reasons = [
                            r if b is None else b if r is None else f"{r}; {b}"
                            for r, b in zip(reasons, byte_reasons, strict=True)
                        ]
                    out = self._finish((columns, reasons), relative, malformed=flags)
                    if out is not None:
                        yield out
        except DativoError:
            raise
        except pa.ArrowInvalid as exc:
            raise ConfigError(f"{obj.label}: {relative}: malformed CSV ({exc})") from None
        except (OSError, pa.ArrowException) as exc:
            raise ExtractError(f"{obj.label}: cannot read {relative}: {exc}") from None
        finally:
            prefetch.close()
            reader.close()

    def _columns(
        self, batch: pa.RecordBatch, match: HeaderMatch, dirty: bool
    ) -> tuple[dict[str, pa.Array], list[str | None] | None]:
        """The contract's columns of a parsed batch, and a reason per row holding undecodable bytes."""
        rows = batch.num_rows
        columns: dict[str, pa.Array] = {}
        reasons: list[str | None] | None = None
        for name in self.source_columns:
            header_name = match.columns.get(name)
            if header_name is None:
                columns[name] = pa.nulls(rows, pa.string())
                continue
            column = batch.column(header_name)
            if dirty:
                flagged = pc.match_substring_regex(column, _SENTINEL_PATTERN)
                if pc.any(flagged).as_py():
                    reasons = reasons or [None] * rows
                    values = column.to_pylist()
                    for i, bad in enumerate(flagged.to_pylist()):
                        if bad:
                            shown = _show(values[i])[:60]
                            text = f"{self.table_names[name]}: not valid {self.options.encoding} text ({shown!r})"
                            reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
                    column = pa.array([None if v is None else _show(v) for v in values], pa.string())
            columns[name] = column
        return columns, reasons

    def _malformed_batch(
        self, rows: list[tuple[int | None, int, int, str]], header: list[str], match: HeaderMatch
    ) -> tuple[pa.RecordBatch, list[str | None], list[bool]]:
        """Rows Arrow's parser could not split, as text rows under the header's names.

        Each malformed row becomes a row of nulls with its reason (and its cursor value, where the
        text shows it unambiguously, so the cursor moves past it and a later run does not offer it
        again). An unterminated quote runs on over the following lines; those lines are split off
        and parsed one by one, so one stray quote does not swallow the rows after it.

        Returns:
            The batch (columns named as in the header), a reason per row (None for a recovered
            row) and whether each row is malformed.
        """
        quote, delimiter = self.options.quote_char, self.options.delimiter
        included = [match.columns[name] for name in self.source_columns if name in match.columns]
        position = {name: header.index(name) for name in included}
        cursor_header = match.columns.get(self.cursor_source) if self.cursor_source is not None else None
        cursor_position = header.index(cursor_header) if cursor_header is not None else None
        values: dict[str, list[str | None]] = {name: [] for name in included}
        reasons: list[str | None] = []
        malformed: list[bool] = []

        def add(fields: list[str] | None, reason: str | None, cursor: str | None = None) -> None:
            for name in included:
                if fields is not None:
                    value: str | None = fields[position[name]]
                    values[name].append(None if value in self.options.null_values else value)
                else:
                    values[name].append(cursor if name == cursor_header else None)
            reasons.append(reason)
            malformed.append(fields is None)

        def split(line: str) -> list[str]:
            return next(csv.reader([line], delimiter=delimiter, quotechar=quote), [])

        for number, expected, actual, text in rows:
            lines = [text]
            if text.count(quote) % 2 and ("\n" in text or "\r" in text):
                lines = text.splitlines()
                actual = len(split(lines[0]))
            where = f"line {number + self._line_shift}" if number is not None else "a line"
            shown = _show(lines[0])[:REASON_TEXT_CHARS]
            cursor = self._field_at(lines[0], cursor_position, expected, actual)
            add(None, f"{where}: expected {expected} fields, found {actual}: {shown}", cursor)
            for offset, line in enumerate(lines[1:], 1):
                if not line:
                    continue
                fields = split(line)
                if line.count(quote) % 2 == 0 and len(fields) == expected:
                    add(fields, None)
                    continue
                line_number = f"line {number + self._line_shift + offset}" if number is not None else "a line"
                cursor = self._field_at(line, cursor_position, expected, len(fields))
                text_shown = _show(line)[:REASON_TEXT_CHARS]
                add(None, f"{line_number}: expected {expected} fields, found {len(fields)}: {text_shown}", cursor)
            # Arrow counted the swallowed lines as one row: later row numbers are behind by that many.
            self._line_shift += len(lines) - 1
        batch = pa.RecordBatch.from_arrays([pa.array(values[name], pa.string()) for name in included], names=included)
        return batch, reasons, malformed

    def _field_at(self, text: str, position: int | None, expected: int, actual: int) -> str | None:
        """The field at ``position`` of a malformed line, where it can be trusted (else None).

        Fields before a missing one are where the header says. With extra fields, an unquoted
        delimiter may sit anywhere before the cursor's field, so only the first field is trusted.
        An unterminated quote swallows the rest of its line: only the fields before it count.
        """
        if position is None or not text:
            return None
        try:
            fields = next(csv.reader([text], delimiter=self.options.delimiter, quotechar=self.options.quote_char))
        except (csv.Error, StopIteration):
            return None
        usable = len(fields) - 1 if text.count(self.options.quote_char) % 2 else len(fields)
        if position >= usable or (actual > expected and position > 0):
            return None
        value = fields[position]
        return None if value in self.options.null_values else value

    def _finish(
        self,
        parts: tuple[dict[str, pa.Array], list[str | None] | None],
        relative: str,
        *,
        malformed: list[bool] | None = None,
    ) -> pa.RecordBatch | None:
        """One output batch: contract columns, typed cursor filtered by the bound, reason, file lineage.

        Args:
            parts: The contract's columns (as text) and a reason per row (or None).
            relative: The file, for the ``_dativo_file`` lineage column.
            malformed: Per row, whether it is a malformed row (its cursor may be unknown).
        """
        columns, reasons = parts
        names = list(self.source_columns)
        arrays = [columns[name] for name in names]
        rows = len(arrays[0])
        extra_names: list[str] = []
        extra: list[pa.Array] = []
        keep = None
        if self.cursor_source is not None and self.cursor_type is not None:
            typed, errors = cast_column(columns[self.cursor_source], self.cursor_type)
            if errors is not None:
                # A cursor value that does not convert exactly: quarantine the row with the reason
                # rather than let it pass as a row without a cursor.
                reasons = reasons or [None] * rows
                for i, error in enumerate(errors):
                    if error is not None and not (malformed and malformed[i]):
                        text = f"{self.obj.cursor_field}: {error}"
                        reasons[i] = text if reasons[i] is None else f"{reasons[i]}; {text}"
            if self.bound is not None:
                keep = row_filter(typed, self.bound, self.inclusive)
                # Rows without a usable cursor were offered on the first run (and quarantined there if
                # the column is required); later runs skip them.
                if typed.null_count:
                    for i, valid in enumerate(typed.is_valid().to_pylist()):
                        if valid:
                            continue
                        if malformed and malformed[i] and reasons is not None:
                            self.state.skipped_malformed.append((reasons[i] or "").split(":", 1)[0])
                        else:
                            self.state.skipped_rows += 1
            if self.obj.cursor_field != self.cursor_source:
                extra_names.append(self.obj.cursor_field or "")
                extra.append(typed)
            else:
                arrays[names.index(self.cursor_source)] = typed
        if reasons is not None:
            extra_names.append(SOURCE_REASON_COLUMN)
            extra.append(pa.array(reasons, pa.string()))
        if self.by_mtime:
            extra_names.append(FILE_COLUMN)
            extra.append(pa.array([relative] * rows, pa.string()))
        batch = pa.RecordBatch.from_arrays(arrays + extra, names=names + extra_names)
        if keep is not None:
            batch = batch.filter(keep)
        return batch if batch.num_rows else None
