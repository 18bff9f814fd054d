"""``gdrive_csv``: the CSV files of a Drive folder (and native spreadsheets in it, exported as CSV).

Each file is downloaded in ranges into a temporary file (bounded memory whatever its size) and
parsed by the CSV source's reader, so headers, encodings, malformed rows and quarantine behave
exactly as for local files. Files are downloaded ahead of the parser (``prefetch_files``), which
hides Drive's latency behind parsing.

Incremental by ``file_mtime``: Drive's ``modifiedTime`` is the cursor. A run lists the files
modified at or after it, drops those the cursor records as read at exactly that time (ties), and
loads the rest; a re-uploaded file (new ``modifiedTime`` and ``version``) replaces its own earlier
rows, keyed by its file id, in the same commit. ``full_refresh`` reads every file and replaces the
table. Every row carries its file's id, name and modified time (``_dativo_file``,
``_dativo_file_name``, ``_dativo_file_modified``).
"""

from __future__ import annotations

import contextvars
import itertools
import os
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import structlog
from pydantic import Field, field_validator

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ExtractError
from dativo_dagster.sources.base import Extraction, FileVersion, ReadRequest, SourceStats
from dativo_dagster.sources.csv.file_mtime import FILE_COLUMN, FileCursorCodec, file_cursor, files_after
from dativo_dagster.sources.csv.options import CsvFormat
from dativo_dagster.sources.csv.reader import FileReader, ReadState
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.google.common import GoogleSource
from dativo_dagster.sources.google.drive import CHANGED, OK, PAGE_SIZE, VANISHED, Drive, DriveFile
from dativo_dagster.types import contract_arrow_schema

log = structlog.get_logger("dativo.sources.gdrive_csv")

FILE_NAME_COLUMN = "_dativo_file_name"
FILE_MODIFIED_COLUMN = "_dativo_file_modified"
LINEAGE = [
    pa.field(FILE_COLUMN, pa.string()),
    pa.field(FILE_NAME_COLUMN, pa.string()),
    pa.field(FILE_MODIFIED_COLUMN, pa.timestamp("us", tz="UTC")),
]
"""The file a row came from: Drive file id, name, and the modified time of the version read."""


class GDriveCsvOptions(CsvFormat):
    """Per-object settings of a Drive folder of CSV files."""

    folder_id: str = Field(min_length=1, description="the Drive folder's id (from its URL)")
    recursive: bool = Field(default=False, description="also read the folder's subfolders, at any depth")
    name_pattern: str = Field(default="*.csv", min_length=1, description="glob on file names (case-sensitive)")
    google_sheets: bool = Field(
        default=True, description="also read the native Google Sheets files in the folder (their first sheet)"
    )
    sheet_pattern: str = Field(default="*", min_length=1, description="glob on the names of those spreadsheets")
    shared_drive_id: str | None = Field(default=None, description="the shared drive holding the folder, if any")
    page_size: int = Field(default=1000, ge=1, le=1000, description="files per files.list page (Drive's largest: 1000)")
    download_chunk_bytes: int = Field(default=8 << 20, ge=1 << 10, le=256 << 20, description="bytes per range request")
    prefetch_files: int = Field(default=2, ge=0, le=8, description="files downloaded ahead of the parser")
    settle_seconds: float = Field(
        default=60,
        ge=0,
        le=86_400,
        description="files modified within this many seconds (by Drive's clock) wait for a later run: Drive's "
        "listing can show a new file after a later one for a short while",
    )

    @field_validator("folder_id", "shared_drive_id")
    @classmethod
    def _plain_id(cls, value: str | None) -> str | None:
        """Drive ids are letters, digits, ``-`` and ``_``: anything else cannot be one (and would
        change the meaning of the list query)."""
        if value is not None and not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"{value!r} is not a Drive id (letters, digits, '-' and '_')")
        return value


def _modified_array(rows: int, file: DriveFile) -> pa.Array:
    return pa.array([file.modified_ns // 1000] * rows, pa.int64()).cast(pa.timestamp("us", tz="UTC"))


class GDriveCsvSource(GoogleSource):
    """CSV files in a Google Drive folder."""

    type = "gdrive_csv"
    options_model = GDriveCsvOptions
    supported_strategies = frozenset({Strategy.FULL_REFRESH, Strategy.FILE_MTIME})
    needs_contract = True

    def _options(self, obj: ObjectPlan) -> GDriveCsvOptions:
        options: GDriveCsvOptions = self.object_options(obj)
        return options

    def drive(self, stats: SourceStats, obj: ObjectPlan | None = None) -> Drive:
        """Drive calls for one read, on a transport counting into ``stats``."""
        options = self._options(obj) if obj is not None else None
        return Drive(
            self.api(stats, obj),
            drive_id=options.shared_drive_id if options else None,
            page_size=options.page_size if options else PAGE_SIZE,
        )

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
        """File modification times (Drive's ``modifiedTime``) for ``file_mtime``."""
        if obj.strategy is Strategy.FILE_MTIME:
            return FileCursorCodec()
        return super().cursor_codec(obj)

    @classmethod
    def watches_files(cls, obj: ObjectPlan) -> bool:
        """A folder always can gain files."""
        return True

    def check_connection(self) -> None:
        """Obtain a token and list one file (proves the credential and that Drive is enabled for it)."""
        drive = self.drive(SourceStats())
        response = drive.api.request(
            "GET",
            "https://www.googleapis.com/drive/v3/files",
            params={"pageSize": 1, "fields": "files(id)", "q": "trashed = false"},
            what="Drive files.list",
        )
        if response.status != 200:
            raise drive.api.refused(response, "Drive files.list")

    def list_objects(self) -> list[str]:
        """Objects are folders named in the job; there is nothing to enumerate."""
        return []

    def check_object(self, obj: ObjectPlan) -> None:
        """The folder exists, is shared with the credential and is a folder."""
        options = self._options(obj)
        self.drive(SourceStats(), obj).check_folder(options.folder_id)

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The contract's schema (CSV carries no types of its own)."""
        assert obj.contract is not None
        return contract_arrow_schema(obj.contract)

    def list_files(self, obj: ObjectPlan) -> list[FileVersion]:
        """Every file the object reads now: id, name, ``modifiedTime``, version (a sensor's poll)."""
        options = self._options(obj)
        drive = self.drive(SourceStats(), obj)
        drive.check_folder(options.folder_id)
        files = drive.list_files(
            options.folder_id,
            recursive=options.recursive,
            pattern=options.name_pattern,
            sheet_pattern=options.sheet_pattern if options.google_sheets else None,
        )
        # Only what a run would read now: a file still inside the settle window waits for a later poll.
        settled = _settled_before(drive, options)
        return [FileVersion(f.id, f.name, f.modified_ns, str(f.version)) for f in files if f.modified_ns <= settled]

    def read(self, request: ReadRequest) -> Extraction:
        """Stream the folder's files modified since the cursor (all of them for a full refresh)."""
        obj = request.obj
        assert obj.contract is not None
        options = self._options(obj)
        stats = SourceStats()
        drive = self.drive(stats, obj)
        by_mtime = obj.strategy is Strategy.FILE_MTIME
        # Drive lists nothing in a folder the credential cannot see: without this check a folder
        # that is not shared would look like an empty one, and a full refresh would empty the table.
        drive.check_folder(options.folder_id)
        previous = request.cursor.value if request.cursor and by_mtime else None
        since = previous.get("mtime_ns") if isinstance(previous, dict) and not previous.get("pending") else None
        listed = drive.list_files(
            options.folder_id,
            recursive=options.recursive,
            pattern=options.name_pattern,
            sheet_pattern=options.sheet_pattern if options.google_sheets else None,
            since_ns=since,
        )
        # Drive's index is eventually consistent: a file uploaded a moment ago may be listed after a
        # later one. Files modified within the settle window wait for a later run, so the cursor
        # never passes a file the listing has not shown yet.
        settled = _settled_before(drive, options)
        waiting = [f for f in listed if f.modified_ns > settled]
        listed = [f for f in listed if f.modified_ns <= settled]
        by_id = {f.id: f for f in listed}
        files = listed
        if by_mtime:
            # Drive's version number stands in for a local file's size: it changes with every
            # upload, even one within the same millisecond as the cursor.
            pairs = files_after(
                [(f.modified_ns, f.id) for f in listed], previous, sizes={f.id: f.version for f in listed}
            )
            files = [by_id[file_id] for _, file_id in pairs]
        if waiting:
            log.info(
                "gdrive_files_settling", object=obj.label, files=len(waiting), settle_seconds=options.settle_seconds
            )
        source_columns = [c.source_name or c.name for c in obj.contract.columns]
        schema = pa.schema([pa.field(name, pa.string()) for name in source_columns] + LINEAGE)
        state = ReadState()
        reader = FileReader(
            self.data_roots,
            obj,
            options,
            source_columns,
            cursor_source=None,
            cursor_type=None,
            bound=None,
            inclusive=True,
            by_mtime=True,  # rows carry their file (its id), whatever the strategy
            state=state,
            stats=stats,
            count_reads=False,  # the transport counts Drive's calls and bytes
        )
        skipped: dict[str, list[str]] = {CHANGED: [], VANISHED: []}

        def batches() -> Iterator[pa.RecordBatch]:
            for file, fd, outcome in _prefetched(drive, files, options):
                if outcome == VANISHED:
                    # Deleted or unshared since it was listed: not read, not recorded (as a local
                    # file that vanished).
                    skipped[VANISHED].append(file.id)
                    log.warning("gdrive_file_vanished", object=obj.label, file=file.id, name=file.name)
                    continue
                if outcome == CHANGED:
                    if not by_mtime:
                        raise ExtractError(
                            f"{obj.label}: Drive file {file.name!r} ({file.id}) kept changing while it was read; "
                            "a full refresh without it would drop its rows, so nothing was committed",
                            hint="the next run reads it again; pause the uploads if this repeats",
                        )
                    # Its bytes mixed two versions twice over: nothing of it is loaded; its newest
                    # version has a later modifiedTime, so a later run reads it whole.
                    skipped[CHANGED].append(file.id)
                    log.warning("gdrive_file_changed_while_read", object=obj.label, file=file.id, name=file.name)
                    continue
                try:
                    if os.fstat(fd).st_size == 0:
                        # An empty upload is complete: it holds no row (and replaces what it held).
                        state.read.append((file.modified_ns, file.id))
                    else:
                        for batch in reader.read_descriptor(fd, file.id, mtime_ns=file.modified_ns):
                            rows = batch.num_rows
                            yield batch.append_column(
                                LINEAGE[1], pa.array([file.name] * rows, pa.string())
                            ).append_column(LINEAGE[2], _modified_array(rows, file))
                    # Drive uploads are atomic: nothing is left pending for a later run.
                    state.deferred = [d for d in state.deferred if d != file.id]
                    state.sizes[file.id] = file.version
                finally:
                    os.close(fd)

        def new_file_cursor() -> Any:
            return file_cursor(state.read, previous, sizes=state.sizes, pending=state.deferred)

        def replaced_files() -> list[str]:
            return [file_id for _, file_id in state.read]

        def on_close() -> None:
            if skipped[CHANGED]:
                stats.note(
                    f"{len(skipped[CHANGED])} file(s) changed while being read; a later run reads their new version"
                )
            if skipped[VANISHED]:
                stats.note(f"{len(skipped[VANISHED])} file(s) were deleted or unshared after they were listed")

        return Extraction(
            schema,
            batches(),
            request,
            stats,
            cursor_override=new_file_cursor if by_mtime else None,
            codec=self.cursor_codec(obj),
            on_close=on_close,
            lineage=LINEAGE,
            replaces=(FILE_COLUMN, replaced_files) if by_mtime else None,
        )


def _settled_before(drive: Drive, options: GDriveCsvOptions) -> int:
    """The newest ``modifiedTime`` (ns) a read takes: Drive's clock at the listing minus ``settle_seconds``."""
    return drive.server_now_ns - int(options.settle_seconds * 1e9)


def _prefetched(
    drive: Drive, files: list[DriveFile], options: GDriveCsvOptions
) -> Iterator[tuple[DriveFile, int, str]]:
    """``(file, open spool descriptor at offset 0, outcome)`` in order, downloads running ahead.

    While the consumer parses one file, up to ``prefetch_files`` more download; each goes to a
    temporary file already unlinked, so nothing is left behind if the run dies. A file that changed
    while it downloaded is looked up again and downloaded once more (its new version). The
    descriptor is -1 unless the outcome is ``ok``; the caller closes each other one it receives.
    """

    def fetch(file: DriveFile) -> tuple[DriveFile, int, str]:
        for attempt in (1, 2):
            handle = tempfile.TemporaryFile(prefix="dativo-gdrive-")  # noqa: SIM115 - the fd outlives this call
            fd = os.dup(handle.fileno())
            handle.close()
            try:
                outcome = drive.download(file, fd, chunk_bytes=options.download_chunk_bytes)
                os.lseek(fd, 0, os.SEEK_SET)
            except BaseException:
                os.close(fd)
                raise
            if outcome == OK:
                return file, fd, OK
            os.close(fd)
            if outcome == VANISHED:
                return file, -1, VANISHED
            fresh = drive.current(file.id) if attempt == 1 else None
            if attempt == 1 and fresh is None:
                return file, -1, VANISHED
            if fresh is not None:
                file = fresh
        return file, -1, CHANGED

    if options.prefetch_files == 0:
        for file in files:
            yield fetch(file)
        return
    upcoming = iter(files)
    window: deque[tuple[DriveFile, Future[tuple[DriveFile, int, str]]]] = deque()
    with ThreadPoolExecutor(max_workers=options.prefetch_files, thread_name_prefix="gdrive") as pool:
        try:
            for file in itertools.islice(upcoming, options.prefetch_files):
                window.append((file, pool.submit(contextvars.copy_context().run, fetch, file)))
            while window:
                file, future = window.popleft()
                following = next(upcoming, None)
                if following is not None:
                    window.append((following, pool.submit(contextvars.copy_context().run, fetch, following)))
                yield future.result()
        finally:
            # Stopped early (a failure, a row limit): downloads not started are cancelled, those
            # running finish and their descriptors are closed, never leaked.
            while window:
                file, future = window.popleft()
                if future.cancel():
                    continue
                error = future.exception()
                if error is None:
                    fd = future.result()[1]
                    if fd >= 0:
                        os.close(fd)
                else:
                    log.warning("gdrive_download_abandoned", file=file.id, error=str(error))


__all__ = ["FILE_MODIFIED_COLUMN", "FILE_NAME_COLUMN", "LINEAGE", "GDriveCsvOptions", "GDriveCsvSource"]
