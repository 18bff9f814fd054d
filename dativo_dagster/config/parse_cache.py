"""Parsed YAML documents by content digest, kept between loads of the same project.

Parsing YAML is most of the cost of loading a large project's configuration (PyYAML builds its
Python objects in Python even with the C parser: about 1.5 ms per tenant job file, 1.5 s for
1,000 tenants), and every process that loads the code location pays it: the code server, each
run worker, ``dativo`` commands. This cache stores the parsed form of each file as JSON keyed by a
digest of the file's bytes, so an unchanged file is decoded by the C JSON decoder instead, and a
changed file misses by construction: there is no timestamp to trust, nothing to invalidate.

Only documents that round-trip through JSON unchanged are stored (a YAML date or a non-string key
is parsed again each time), and the cache is tied to the dativo and PyYAML versions that wrote it.
Every check after parsing (variable references, pydantic, cross-references) runs on cached
documents too, so the cache can only save parsing, never change what a file means. It is
best-effort: an unreadable, corrupt or unwritable cache is ignored and the load reads the YAML.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import structlog
import yaml

import dativo_dagster

log = structlog.get_logger("dativo.config")

CACHE_ENV = "DATIVO_PARSE_CACHE"
"""``off`` disables the cache; a file path (relative to the project) moves it."""

_OFF = ("off", "0", "false", "no")
_ON = ("", "on", "1", "true", "yes")

_FORMAT = 2  # 2: plain-data YAML (bare dates stay text)

MISSING: Any = object()
"""What :meth:`ParseCache.get` returns for an unknown digest (``None`` is a valid document)."""


def content_digest(raw: bytes) -> str:
    """Stable key of a file's content."""
    return hashlib.blake2b(raw, digest_size=20).hexdigest()


class ParseCache:
    """Parsed documents of one project, read once and written back only when they changed.

    Args:
        path: The cache file; ``None`` keeps the cache in memory for this load only.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._header = {"format": _FORMAT, "dativo": dativo_dagster.__version__, "pyyaml": yaml.__version__}
        self._stored: dict[str, Any] = self._read() if path is not None else {}
        self._used: dict[str, Any] = {}
        self._added = False

    @classmethod
    def for_project(cls, project_dir: Path) -> ParseCache:
        """The cache of ``project_dir``: ``.dativo/cache/parsed-yaml.json``, unless ``$DATIVO_PARSE_CACHE``
        is ``off`` (no cache) or a file path (that file, relative to the project)."""
        setting = os.environ.get(CACHE_ENV, "").strip()
        if setting.lower() in _OFF:
            return cls(None)
        if setting.lower() in _ON:
            return cls(project_dir / ".dativo" / "cache" / "parsed-yaml.json")
        return cls(project_dir / setting)

    def get(self, digest: str) -> Any:
        """The parsed document with this digest, or :data:`MISSING`."""
        value = self._used.get(digest, MISSING)
        if value is MISSING:
            value = self._stored.get(digest, MISSING)
            if value is not MISSING:
                self._used[digest] = value
        return value

    def put(self, digest: str, document: Any) -> None:
        """Remember a freshly parsed document if JSON represents it exactly."""
        try:
            stored = json.loads(json.dumps(document))
        except (TypeError, ValueError):
            return
        if stored != document:
            return
        # Keep a copy: the caller's document goes on to validation and must not be shared.
        self._used[digest] = stored
        self._added = True

    def save(self) -> None:
        """Write the documents used by this load (dropping stale ones) if anything changed."""
        if self.path is None or not (self._added or self._used.keys() != self._stored.keys()):
            return
        payload = json.dumps({**self._header, "entries": self._used}, separators=(",", ":"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Atomic replace: concurrent loaders (code server, run workers) never see half a file.
            fd, tmp = tempfile.mkstemp(prefix=".parsed-yaml.", dir=self.path.parent)
            try:
                # Owner-only (mkstemp's mode): recipes may hold literal catalog settings.
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            # A read-only project or a full disk: the next load parses again, nothing else changes.
            log.warning("parse_cache_not_saved", reason=f"{type(exc).__name__}: {exc.strerror or exc}")
            return
        self._stored = dict(self._used)
        self._added = False

    def _read(self) -> dict[str, Any]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("parse_cache_ignored", reason=f"{type(exc).__name__}: {exc}")
            return {}
        if not isinstance(data, dict) or any(data.get(k) != v for k, v in self._header.items()):
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}
