"""Raw pages (bronze): the responses an API source received, kept per run for inspection and replay.

A job with ``raw_retention_days: N`` keeps every exchange its API transports make while reading an
object: one compressed file per response plus one index line, under::

    <raw root>/<tenant>/<job>/<object>/<run id>/
        index.jsonl        one JSON object per exchange (see :class:`PageEntry`)
        000001.json.gz     the exchange: method, URL, status, headers, request and response bodies

The raw root is the directory ``raw`` beside a local warehouse (``.dativo/raw`` for the default
``.dativo/warehouse``); for a remote warehouse (``s3://...``) it is ``raw`` under ``$DATIVO_HOME``
(default ``.dativo`` in the project). Everything stored has already been redacted by the transport
(the credential's values, registered secrets; credential headers are never shown to observers),
and token fields of JSON bodies (``access_token``, ``client_secret``, ...) are blanked on top.

Failed exchanges (an error status, no answer) are kept too, flagged ``ok: false``: they show what
went wrong. Runs older than the retention are removed when a run of the job starts.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from dativo_dagster.api.transport import Exchange, Observer
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import REDACTED, SecretResolver, redact_text
from dativo_dagster.errors import ConfigError

log = structlog.get_logger("dativo.raw")

INDEX_FILE = "index.jsonl"
PAGE_SUFFIX = ".json.gz"
RAW_DIR_NAME = "raw"

TOKEN_FIELDS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "private_key",
        "password",
        "api_key",
        "apikey",
        "secret",
        "token",
    }
)
"""JSON fields of a stored body whose values are blanked whatever they hold (a token exchange's answer)."""

_DROPPED_HEADERS = frozenset({"set-cookie", "cookie", "authorization", "proxy-authorization", "x-api-key"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")

NOT_ARCHIVED_RUNS = frozenset({"dry-run"})
"""Run ids whose exchanges are never kept (a dry run loads nothing that could be replayed)."""


def raw_root(job: JobPlan, resolver: SecretResolver | None = None) -> Path:
    """Where ``job``'s raw pages live: ``raw`` beside a local warehouse, else under ``$DATIVO_HOME``.

    Raises:
        ConfigError: CFG001 when the warehouse refers to a variable that is not set.
    """
    resolver = resolver or SecretResolver()
    warehouse = str(resolver.resolve(job.target.warehouse, where=f"target {job.target.name}: warehouse"))
    if "://" in warehouse and not warehouse.startswith("file://"):
        home = Path(os.environ.get("DATIVO_HOME") or ".dativo")
        base = home if home.is_absolute() else job.project_dir / home
        return base / RAW_DIR_NAME
    local = Path(os.path.expanduser(warehouse.removeprefix("file://")))
    if not local.is_absolute():
        local = job.project_dir / local
    return local.resolve().parent / RAW_DIR_NAME


def job_dir(root: Path, tenant: str, job: str) -> Path:
    """The directory of one job's raw pages."""
    return root / tenant / job


def run_dir(root: Path, tenant: str, job: str, obj: str, run_id: str) -> Path:
    """The directory of one object's pages in one run.

    Raises:
        ConfigError: CFG001 for a run id that is not a plain name (it becomes a directory).
    """
    if not _SAFE_NAME.match(run_id) or run_id in (".", ".."):
        raise ConfigError(f"run id {run_id!r} is not a plain name")
    return job_dir(root, tenant, job) / obj / run_id


@dataclass(frozen=True)
class PageEntry:
    """One line of a run's ``index.jsonl``.

    Attributes:
        seq: Order of the exchange in the run (1, 2, ...); the page file is ``{seq:06d}.json.gz``.
        at: When the answer came (UTC, ISO).
        method: HTTP method.
        path: URL path (no query, no host).
        query: The query string, redacted.
        status: HTTP status, or None when no answer came.
        ok: A 2xx answer.
        failure: Why no answer came, or None.
        bytes: Size of the stored (redacted) response body.
        sha256: Digest of the stored response body.
        elapsed_s: Seconds the exchange took.
    """

    seq: int
    at: str
    method: str
    path: str
    query: str
    status: int | None
    ok: bool
    failure: str | None
    bytes: int
    sha256: str
    elapsed_s: float

    @property
    def file(self) -> str:
        """The page's file name."""
        return f"{self.seq:06d}{PAGE_SUFFIX}"

    def to_json(self) -> str:
        """The index line."""
        return json.dumps({**self.__dict__, "file": self.file}, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> PageEntry:
        """Parse an index line (unknown fields ignored)."""
        data = json.loads(line)
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


def scrub_body(body: bytes) -> bytes:
    """A body with the values of token fields blanked (bodies that are not JSON unchanged)."""
    stripped = body.lstrip()
    if not stripped.startswith((b"{", b"[")):
        return body
    try:
        data = json.loads(body)
    except ValueError:
        return body
    cleaned, changed = _scrub(data)
    return json.dumps(cleaned, separators=(",", ":")).encode() if changed else body


def _scrub(value: Any) -> tuple[Any, bool]:
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            if str(key).lower() in TOKEN_FIELDS and isinstance(item, str) and item:
                out[key] = REDACTED
                changed = True
            else:
                out[key], sub = _scrub(item)
                changed = changed or sub
        return out, changed
    if isinstance(value, list):
        items = [_scrub(item) for item in value]
        return [item for item, _ in items], any(sub for _, sub in items)
    return value, False


def _split_url(url: str) -> tuple[str, str]:
    without_scheme = url.split("://", 1)[-1]
    rest = "/" + without_scheme.split("/", 1)[1] if "/" in without_scheme else "/"
    path, _, query = rest.partition("?")
    return path, query


class RunPages:
    """The pages of one object in one run, appended as exchanges arrive (thread-safe)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._seq = len(list(read_index(directory))) if (directory / INDEX_FILE).exists() else 0

    def add(self, exchange: Exchange) -> None:
        """Store one exchange (already redacted by the transport) and index it."""
        text = redact_text(exchange.response_body.decode("utf-8", "replace"))
        body = scrub_body(text.encode("utf-8")).decode("utf-8", "replace").encode("utf-8")
        request_body = exchange.request_body
        path, query = _split_url(exchange.url)
        record = {
            "component": exchange.component,
            "method": exchange.method,
            "url": redact_text(exchange.url),
            "status": exchange.status,
            "failure": exchange.failure,
            "elapsed_s": round(exchange.elapsed_s, 3),
            "request_headers": _headers(exchange.request_headers),
            "request_body": scrub_body(request_body).decode("utf-8", "replace") if request_body is not None else None,
            "response_headers": _headers(exchange.response_headers),
            "body": body.decode("utf-8"),
        }
        with self._lock:
            self._seq += 1
            entry = PageEntry(
                seq=self._seq,
                at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                method=exchange.method,
                path=path,
                query=redact_text(query),
                status=exchange.status,
                ok=exchange.status is not None and 200 <= exchange.status < 300,
                failure=exchange.failure,
                bytes=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                elapsed_s=round(exchange.elapsed_s, 3),
            )
            self.directory.mkdir(parents=True, exist_ok=True)
            # The page first, renamed into place, then its index line: an index line always names a
            # complete page, even when the process is killed in between.
            target = self.directory / entry.file
            partial = target.with_suffix(".partial")
            with gzip.open(partial, "wt", encoding="utf-8") as handle:
                json.dump(record, handle)
            os.replace(partial, target)
            with (self.directory / INDEX_FILE).open("a", encoding="utf-8") as index:
                index.write(entry.to_json() + "\n")


def _headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {
        name: redact_text(value)
        for name, value in headers.items()
        if name.lower() not in _DROPPED_HEADERS and "token" not in name.lower()
    }


class RawArchive:
    """Keeps one job's raw pages: an observer per object read, and the retention.

    Args:
        root: The raw root (:func:`raw_root`).
        tenant: Tenant id.
        job: Job name.
        retention_days: Runs older than this many days are removed by :meth:`prune`.
    """

    def __init__(self, root: Path, tenant: str, job: str, retention_days: float) -> None:
        self.root = root
        self.tenant = tenant
        self.job = job
        self.retention_days = retention_days
        self._runs: dict[tuple[str, str], RunPages] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_job(cls, job: JobPlan, resolver: SecretResolver | None = None) -> RawArchive | None:
        """The job's archive, or None when it keeps no raw pages; old runs are pruned now."""
        days = job.job.raw_retention_days
        if not days:
            return None
        archive = cls(raw_root(job, resolver), job.tenant, job.name, days)
        archive.prune()
        return archive

    def observer(self, context: Mapping[str, Any]) -> Observer | None:
        """An observer storing the exchanges of one object read, from the log context of the read
        (``object`` and ``run_id``, bound by the engine); None outside an object's run."""
        obj = context.get("object")
        run_id = context.get("run_id")
        if not isinstance(obj, str) or not isinstance(run_id, str) or run_id in NOT_ARCHIVED_RUNS:
            return None
        if context.get("tenant") not in (None, self.tenant) or context.get("job") not in (None, self.job):
            return None
        directory = run_dir(self.root, self.tenant, self.job, obj, run_id)
        with self._lock:
            pages = self._runs.get((obj, run_id))
            if pages is None:
                pages = self._runs[(obj, run_id)] = RunPages(directory)
        return _Keeper(pages)

    def prune(self, now: float | None = None) -> list[Path]:
        """Remove the runs (of every object of the job) last written more than the retention ago."""
        cutoff = (time.time() if now is None else now) - self.retention_days * 86_400
        removed: list[Path] = []
        base = job_dir(self.root, self.tenant, self.job)
        if not base.is_dir():
            return removed
        for object_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for directory in sorted(p for p in object_dir.iterdir() if p.is_dir()):
                if last_written(directory) < cutoff:
                    shutil.rmtree(directory)
                    removed.append(directory)
        if removed:
            log.info("raw_pages_pruned", job=f"{self.tenant}/{self.job}", runs=len(removed))
        return removed


class _Keeper:
    """Stores each exchange; a failure to store one is logged and the read goes on (an observer
    must not raise: the archive is a record of the run, never a reason to fail it)."""

    def __init__(self, pages: RunPages) -> None:
        self.pages = pages
        self._warned = False

    def __call__(self, exchange: Exchange) -> None:
        try:
            self.pages.add(exchange)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("raw_page_not_kept", directory=str(self.pages.directory), error=str(exc))


def last_written(directory: Path) -> float:
    """When a run's pages were last written (its index, else the directory)."""
    index = directory / INDEX_FILE
    return (index if index.exists() else directory).stat().st_mtime


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RawRun:
    """One retained run of one object."""

    run_id: str
    directory: Path
    pages: int
    failed: int
    bytes: int
    last_written: float


def read_index(directory: Path) -> Iterator[PageEntry]:
    """The index entries of a run (a line cut by a kill is skipped)."""
    index = directory / INDEX_FILE
    if not index.exists():
        return
    for line in index.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            yield PageEntry.from_json(line)
        except (ValueError, TypeError):
            continue


def list_runs(root: Path, tenant: str, job: str, obj: str) -> list[RawRun]:
    """The retained runs of an object, oldest first."""
    base = job_dir(root, tenant, job) / obj
    if not base.is_dir():
        return []
    runs = []
    for directory in base.iterdir():
        if not directory.is_dir():
            continue
        entries = list(read_index(directory))
        runs.append(
            RawRun(
                run_id=directory.name,
                directory=directory,
                pages=len(entries),
                failed=sum(1 for e in entries if not e.ok),
                bytes=sum(e.bytes for e in entries),
                last_written=last_written(directory),
            )
        )
    return sorted(runs, key=lambda r: (r.last_written, r.run_id))


def read_page(directory: Path, entry: PageEntry) -> dict[str, Any]:
    """The stored exchange of one index entry.

    Raises:
        ConfigError: CFG001 when the page is missing or does not match its recorded digest.
    """
    path = directory / entry.file
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            record: dict[str, Any] = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"raw page {path.name} of run {directory.name} cannot be read: {exc}") from None
    body = str(record.get("body", "")).encode("utf-8")
    if hashlib.sha256(body).hexdigest() != entry.sha256:
        raise ConfigError(f"raw page {path.name} of run {directory.name} does not match its recorded digest")
    return record
