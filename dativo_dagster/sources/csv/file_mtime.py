"""The ``file_mtime`` strategy: which files a run reads, the cursor it leaves, and the lineage column.

The cursor is a dict: the latest modification time read (``mtime_ns``), the files seen at exactly
that time (``paths``, with their ``sizes``, so a file that grows within one timestamp tick is read
again) and the files left for a later run because their last row was incomplete: a last line
without a line end in a file modified within ``settle_seconds``, or a quoted value still open at
its end (``pending``).
Every helper here is pure: it works on ``(mtime_ns, relative path)`` pairs, not on files.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from dativo_dagster.sources.cursors import CursorCodec, parse_iso_time

FILE_COLUMN = "_dativo_file"
"""Lineage column of ``file_mtime`` objects: the file a row came from, relative to base_path."""


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
        pending: Files left for a later run (their last row was incomplete); a later run reads
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


class FileCursorCodec(CursorCodec):
    """``file_mtime`` cursors: the latest modification time read, and what was seen at it."""

    def order_key(self, value: Any) -> Any:
        """Files are ordered by modification time."""
        return value.get("mtime_ns", -1) if isinstance(value, dict) else -1

    def from_text(self, text: str, value_type: Any = None) -> Any:
        """Files modified at or after an ISO time or date (UTC when no zone is given) are read again."""
        from dativo_dagster.errors import ConfigError

        try:
            when = parse_iso_time(text.strip(), aware=True)
        except ValueError:
            raise ConfigError(f"{text!r} is not a time (an ISO-8601 time or date)") from None
        delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        # Integer arithmetic: a float timestamp loses nanoseconds; a file modified at exactly
        # this instant is read again too (none is listed as seen at it).
        mtime_ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000
        return {"mtime_ns": mtime_ns, "paths": []}

    def display(self, value: Any, field: str | None = None) -> str:
        """``files modified up to 2024-01-01T10:00:00+00:00``."""
        if not isinstance(value, dict) or "mtime_ns" not in value:
            return "no file read yet"
        stamp = dt.datetime.fromtimestamp(value["mtime_ns"] / 1e9, tz=dt.timezone.utc)
        return f"files modified up to {stamp.isoformat(timespec='seconds')}"
