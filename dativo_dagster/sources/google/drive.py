"""Drive v3: listing a folder, downloading a file in ranges, exporting a native spreadsheet as CSV.

Pure helpers (queries, times, name patterns) first, then :class:`Drive`, the calls of one read.
Listing pages through ``files.list`` (``pageSize``, ``pageToken``) with the shared-drive flags on
every call (``supportsAllDrives``, ``includeItemsFromAllDrives``), so a folder in a shared drive
lists like one in My Drive.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import fnmatch
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dativo_dagster.errors import ConfigError, PaginationError
from dativo_dagster.sources.google.client import GoogleApi

DRIVE_FILES = "https://www.googleapis.com/drive/v3/files"
FOLDER_MIME = "application/vnd.google-apps.folder"
SPREADSHEET_MIME = "application/vnd.google-apps.spreadsheet"
NATIVE_PREFIX = "application/vnd.google-apps."
FILE_FIELDS = "id,name,mimeType,modifiedTime,size,version,md5Checksum,parents,driveId,trashed"
LIST_FIELDS = f"nextPageToken,incompleteSearch,files({FILE_FIELDS})"
PAGE_SIZE = 1000
"""Drive's largest page: fewer list calls against the per-user query quota."""
OK, CHANGED, VANISHED = "ok", "changed", "vanished"
"""What a download found: the listed version, a newer one, or no file any more."""


@dataclass(frozen=True)
class DriveFile:
    """One file of a watched folder, as ``files.list`` described it."""

    id: str
    name: str
    mime_type: str
    modified_time: str
    modified_ns: int
    version: int
    size: int | None = None
    md5: str | None = None

    @property
    def is_spreadsheet(self) -> bool:
        """A native Google Sheets file (read through an export as CSV)."""
        return self.mime_type == SPREADSHEET_MIME


def parse_time_ns(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (Drive's ``modifiedTime``), exactly.

    Raises:
        ValueError: not an RFC 3339 time with a zone.
    """
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def format_time_ns(ns: int) -> str:
    """RFC 3339 in UTC with milliseconds (Drive's precision), rounded down."""
    when = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=ns // 1_000)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def quote_q(value: str) -> str:
    """A string literal of Drive's query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def children_query(folder_id: str, *, folders: bool, since_ns: int | None = None) -> str:
    """The ``q`` listing a folder's files (or its subfolders), not trashed, modified at or after ``since_ns``.

    At *or after*: files modified in the same millisecond as the cursor may not have been read
    yet (the cursor records which were); the caller drops those it has.
    """
    kind = f"mimeType {'=' if folders else '!='} {quote_q(FOLDER_MIME)}"
    parts = [f"{quote_q(folder_id)} in parents", "trashed = false", kind]
    if since_ns is not None and not folders:
        parts.append(f"modifiedTime >= {quote_q(format_time_ns(since_ns))}")
    return " and ".join(parts)


def wanted(name: str, mime_type: str, *, pattern: str, sheet_pattern: str | None) -> bool:
    """Whether a listed file is one of the object's: a CSV by name, or a native spreadsheet."""
    if mime_type == SPREADSHEET_MIME:
        return sheet_pattern is not None and fnmatch.fnmatchcase(name, sheet_pattern)
    if mime_type.startswith(NATIVE_PREFIX):
        return False  # Docs, Slides, shortcuts, forms: nothing to read as CSV
    return fnmatch.fnmatchcase(name, pattern)


def drive_file(entry: dict[str, Any], label: str) -> DriveFile:
    """A ``files.list`` entry as a :class:`DriveFile`.

    Raises:
        PaginationError: PAGE001 when Drive left out a field dativo asked for or sent one it cannot read.
    """
    try:
        modified = str(entry["modifiedTime"])
        return DriveFile(
            id=str(entry["id"]),
            name=str(entry["name"]),
            mime_type=str(entry["mimeType"]),
            modified_time=modified,
            modified_ns=parse_time_ns(modified),
            version=int(entry.get("version") or 0),
            size=int(entry["size"]) if entry.get("size") is not None else None,
            md5=entry.get("md5Checksum"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise PaginationError(f"{label}: Drive listed a file without a usable {exc} ({entry.get('id', '?')})") from None


class Drive:
    """The Drive calls of one object read.

    Args:
        api: The read's authorized requests.
        drive_id: The shared drive holding the folder (lists ``corpora=drive``), or None.
        page_size: Files per ``files.list`` page.
    """

    def __init__(self, api: GoogleApi, *, drive_id: str | None = None, page_size: int = PAGE_SIZE) -> None:
        self.api = api
        self.drive_id = drive_id
        self.page_size = page_size
        # Drive's own clock at the last listing (its Date header): what "settled" is measured on.
        self.server_now_ns = time.time_ns()

    def _drive_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self.drive_id:
            params.update(corpora="drive", driveId=self.drive_id)
        return params

    def metadata(self, file_id: str, fields: str = FILE_FIELDS) -> dict[str, Any]:
        """``files.get`` of one file (CFG001 naming it when it is missing or not shared)."""
        what = f"Drive files.get {file_id}"
        response = self.api.request(
            "GET",
            f"{DRIVE_FILES}/{file_id}",
            params={"fields": fields, "supportsAllDrives": True},
            what=what,
            file_id=file_id,
        )
        if response.status != 200:
            raise self.api.refused(response, what, file_id=file_id)
        data = self.api.json(response, what)
        if not isinstance(data, dict):
            raise PaginationError(f"{self.api.label}: {what}: the answer is not a file")
        return data

    def check_folder(self, folder_id: str) -> None:
        """The folder must exist, be visible and be a folder (CFG001 otherwise)."""
        data = self.metadata(folder_id, "id,name,mimeType")
        if data.get("mimeType") != FOLDER_MIME:
            raise ConfigError(
                f"{self.api.label}: options.folder_id {folder_id!r} is a {data.get('mimeType')}, not a folder"
            )

    def _pages(self, query: str) -> Iterator[list[dict[str, Any]]]:
        token: str | None = None
        pages = 0
        while True:
            params = {"q": query, "pageSize": self.page_size, "fields": LIST_FIELDS, "pageToken": token}
            params.update(self._drive_params())
            what = "Drive files.list"
            response = self.api.request("GET", DRIVE_FILES, params=params, what=what)
            if response.status != 200:
                raise self.api.refused(response, what)
            data = self.api.json(response, what)
            if data.get("incompleteSearch"):
                # Drive could not search every corpus: files may be missing from this answer, and
                # a cursor moved past them (or a full refresh without them) would lose them.
                raise PaginationError(
                    f"{self.api.label}: Drive answered that its file list is incomplete (incompleteSearch)",
                    hint="list one shared drive (options.shared_drive_id) instead of every drive; the next run "
                    "tries again",
                )
            self.server_now_ns = _server_time_ns(response.header("date")) or time.time_ns()
            pages += 1
            self.api.transport.stats.add(pages=1)
            yield list(data.get("files") or [])
            token = data.get("nextPageToken")
            if not token:
                return
            if pages > 100_000:
                raise PaginationError(f"{self.api.label}: Drive kept answering with a next page after {pages} pages")

    def list_files(
        self,
        folder_id: str,
        *,
        recursive: bool,
        pattern: str,
        sheet_pattern: str | None,
        since_ns: int | None = None,
    ) -> list[DriveFile]:
        """The object's files in ``folder_id`` (and its subfolders when ``recursive``), by (modified, id)."""
        found: dict[str, DriveFile] = {}
        folders = [folder_id]
        seen = {folder_id}
        while folders:
            current = folders.pop()
            for page in self._pages(children_query(current, folders=False, since_ns=since_ns)):
                for entry in page:
                    if wanted(
                        str(entry.get("name", "")),
                        str(entry.get("mimeType", "")),
                        pattern=pattern,
                        sheet_pattern=sheet_pattern,
                    ):
                        file = drive_file(entry, self.api.label)
                        found[file.id] = file  # a file in two listed folders is read once
            if recursive:
                for page in self._pages(children_query(current, folders=True)):
                    for entry in page:
                        child = str(entry.get("id", ""))
                        if child and child not in seen:  # a folder reachable twice is walked once
                            seen.add(child)
                            folders.append(child)
        return sorted(found.values(), key=lambda f: (f.modified_ns, f.id))

    def download(self, file: DriveFile, fd: int, *, chunk_bytes: int) -> str:
        """Write the file's bytes to ``fd`` in ranges of ``chunk_bytes`` (bounded memory).

        Returns:
            ``"ok"``; ``"changed"`` when the file changed while it was being read (its bytes no
            longer match the listed size and checksum: nothing of them may be loaded); ``"vanished"``
            when it was deleted (or unshared) since it was listed.
        """
        if file.is_spreadsheet:
            return self._export(file, fd)
        what = f"Drive download {file.id}"
        digest = hashlib.md5(usedforsecurity=False)
        offset = 0
        total = file.size
        while total is None or offset < total:
            response = self.api.request(
                "GET",
                f"{DRIVE_FILES}/{file.id}",
                params={"alt": "media", "supportsAllDrives": True},
                headers={"Range": f"bytes={offset}-{offset + chunk_bytes - 1}"},
                what=what,
                file_id=file.id,
            )
            if response.status == 416:
                break  # the file shrank (it changed since it was listed): the checksum says so below
            if response.status == 404:
                return VANISHED
            if response.status not in (200, 206):
                raise self.api.refused(response, what, file_id=file.id)
            body = response.body
            if response.status == 200:
                # The server ignored the range: this is the whole file, from its first byte.
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                digest = hashlib.md5(usedforsecurity=False)
                offset = 0
                total = len(body)
            else:
                total = _content_total(response.header("content-range"), total)
            _write_all(fd, body)
            digest.update(body)
            offset += len(body)
            if not body:
                break
        if file.size is not None and offset != file.size:
            return CHANGED
        return OK if file.md5 is None or digest.hexdigest() == file.md5 else CHANGED

    def current(self, file_id: str) -> DriveFile | None:
        """The file as Drive describes it now (None when it was deleted or unshared since)."""
        what = f"Drive files.get {file_id}"
        response = self.api.request(
            "GET",
            f"{DRIVE_FILES}/{file_id}",
            params={"fields": FILE_FIELDS, "supportsAllDrives": True},
            what=what,
            file_id=file_id,
        )
        if response.status == 404:
            return None
        if response.status != 200:
            raise self.api.refused(response, what, file_id=file_id)
        data = self.api.json(response, what)
        if not isinstance(data, dict) or data.get("trashed"):
            return None
        return drive_file(data, self.api.label)

    def _export(self, file: DriveFile, fd: int) -> str:
        what = f"Drive export {file.id} as CSV"
        response = self.api.request(
            "GET",
            f"{DRIVE_FILES}/{file.id}/export",
            params={"mimeType": "text/csv"},
            what=what,
            file_id=file.id,
        )
        if response.status == 404:
            return VANISHED
        if response.status != 200:
            raise self.api.refused(response, what, file_id=file.id)
        _write_all(fd, response.body)
        return OK


def _server_time_ns(header: str | None) -> int | None:
    """An HTTP ``Date`` header in nanoseconds since the epoch (None when absent or unreadable)."""
    if not header:
        return None
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    # The header has whole seconds: the server's clock was somewhere in the second after it.
    return (int(when.timestamp()) + 1) * 10**9


def _content_total(header: str | None, known: int | None) -> int | None:
    """The total of ``Content-Range: bytes a-b/total`` (``known`` when absent or ``*``)."""
    if not header or "/" not in header:
        return known
    tail = header.rsplit("/", 1)[1].strip()
    return int(tail) if tail.isdigit() else known


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


__all__ = [
    "FOLDER_MIME",
    "SPREADSHEET_MIME",
    "Drive",
    "DriveFile",
    "children_query",
    "format_time_ns",
    "parse_time_ns",
    "quote_q",
    "wanted",
]
