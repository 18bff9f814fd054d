"""Integrity: the SHA-256 of every file a commit adds, recorded with the run that wrote it.

Every data and delete file dativo writes goes through :class:`HashingOutputFile`, which hashes
the bytes as they stream to storage (never by reading the file back), on any FileIO (local, S3,
Azure). At commit time :func:`integrity_properties` writes a JSON *integrity manifest* next to
the table's metadata listing each file the commit adds (path, SHA-256, size, rows, content) and
the run's metadata (run id, tenant, job, object, cursor before and after, rows, files), and
returns two snapshot-summary properties: the manifest's location (:data:`PROP_INTEGRITY`) and the
SHA-256 of its bytes (:data:`PROP_INTEGRITY_SHA256`), so a manifest edited afterwards is
detected too. The manifest is referenced only by the snapshot that commits it: an attempt that
does not commit leaves it unreferenced, like its data files.

When snapshots are expired, their manifests would go with them while the files they describe
may still be live: :func:`carry_forward_before_expiry` consolidates the digests of every file the
kept snapshots still reference into one *base* manifest named by a table property
(:data:`TABLE_PROP_INTEGRITY_BASE`), in the same commit as the expiry.

``dativo verify`` (:mod:`~dativo_dagster.cli_verify`) reads the live files back through
:func:`verify_table` and reports any file missing, truncated or altered.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import structlog
from pyiceberg.io import FileIO, InputFile, OutputFile, OutputStream
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot

from dativo_dagster.errors import StorageStateError
from dativo_dagster.iceberg.failures import failure_text
from dativo_dagster.state import PROP_RUN_ID

log = structlog.get_logger("dativo.iceberg")

PROP_INTEGRITY = "dativo.integrity"
"""Snapshot-summary property: the location of the commit's integrity manifest."""

PROP_INTEGRITY_SHA256 = "dativo.integrity-sha256"
"""Snapshot-summary property: the hex SHA-256 of the integrity manifest's bytes."""

TABLE_PROP_INTEGRITY_BASE = "dativo.integrity-base"
"""Table property: the consolidated manifest of files added by snapshots that were expired."""

TABLE_PROP_INTEGRITY_BASE_SHA256 = "dativo.integrity-base-sha256"
"""Table property: the hex SHA-256 of the consolidated manifest's bytes."""

MANIFEST_FORMAT = "dativo-integrity/1"
"""``format`` field of every integrity manifest (a reader refuses any other)."""

MANIFEST_PREFIX = "dativo-integrity-"
"""File-name prefix of integrity manifests, in the table's metadata directory."""

READ_CHUNK_BYTES = 1024 * 1024
"""Bytes read at a time when a file is re-hashed (memory per verified file)."""

VERIFY_THREADS = 4
"""Files re-read in parallel by :func:`verify_table` (object-store reads wait on the network)."""

RUN_FIELDS = ("run_id", "tenant", "job", "object", "cursor_before", "cursor_after", "rows", "files", "operation")
"""The run metadata an integrity manifest records (values are strings; absent ones are left out)."""


class IntegrityError(StorageStateError):
    """STG001, permanent: a file about to be committed has no recorded digest (nothing is committed)."""


# --------------------------------------------------------------------------- hashing while writing


@dataclass(frozen=True)
class FileDigest:
    """The SHA-256 and size of one written file."""

    path: str
    sha256: str
    size: int


class FileDigests:
    """Digests of the files one write produced, by path (one collector per write, never global).

    Writers call :meth:`record` when a file is complete; the commit looks each added file up.
    """

    def __init__(self) -> None:
        self._by_path: dict[str, FileDigest] = {}

    def record(self, path: str, sha256: str, size: int) -> None:
        """Record the digest of a completed file (a later record for the same path replaces it)."""
        self._by_path[path] = FileDigest(path=path, sha256=sha256, size=size)

    def get(self, path: str) -> FileDigest | None:
        """The digest recorded for ``path``, or None."""
        return self._by_path.get(path)

    def __iter__(self) -> Iterator[FileDigest]:
        return iter(list(self._by_path.values()))

    def __len__(self) -> int:
        return len(self._by_path)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path


class _HashingStream:
    """An output stream that hashes every byte on its way to the wrapped stream.

    Parquet and JSON are written sequentially, so the running SHA-256 of the writes is the
    SHA-256 of the file. The digest is recorded only when the stream closes cleanly.
    """

    def __init__(self, inner: OutputStream, owner: HashingOutputFile) -> None:
        self._inner = inner
        self._owner = owner
        self._hash = hashlib.sha256()
        self._size = 0
        self.closed = False

    def write(self, b: Any) -> int:
        self._hash.update(b)
        self._size += memoryview(b).nbytes
        written = self._inner.write(b)
        return self._size if written is None else written

    def tell(self) -> int:
        return self._size

    def flush(self) -> None:
        flush = getattr(self._inner, "flush", None)
        if flush is not None:
            flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self._inner.close()
        self.closed = True
        self._owner._finished(self._hash.hexdigest(), self._size)

    def __enter__(self) -> _HashingStream:
        return self

    def __exit__(
        self, exctype: type[BaseException] | None, excinst: BaseException | None, exctb: TracebackType | None
    ) -> None:
        if exctype is None:
            self.close()
        else:
            # A failed write is not a file anyone commits: close the stream, record nothing.
            self.closed = True
            self._inner.close()


class HashingOutputFile(OutputFile):
    """An :class:`~pyiceberg.io.OutputFile` whose stream hashes what is written through it.

    Args:
        inner: The FileIO's output file (local, S3, Azure, ...).
        digests: Where the digest is recorded when the stream closes (None: only kept on this object).
    """

    def __init__(self, inner: OutputFile, digests: FileDigests | None = None) -> None:
        super().__init__(inner.location)
        self._inner = inner
        self._digests = digests
        self.digest: FileDigest | None = None

    def __len__(self) -> int:
        # The bytes counted while writing: the same number, without asking the object store.
        if self.digest is not None:
            return self.digest.size
        return len(self._inner)

    def exists(self) -> bool:
        return self._inner.exists()

    def to_input_file(self) -> InputFile:
        return self._inner.to_input_file()

    def create(self, overwrite: bool = False) -> OutputStream:
        self.digest = None
        return _HashingStream(self._inner.create(overwrite=overwrite), self)

    def _finished(self, sha256: str, size: int) -> None:
        self.digest = FileDigest(path=self.location, sha256=sha256, size=size)
        if self._digests is not None:
            self._digests.record(self.location, sha256, size)


def hashing_output(io: FileIO, path: str, digests: FileDigests | None) -> OutputFile:
    """``io.new_output(path)``, hashing into ``digests`` when given (plain otherwise)."""
    output = io.new_output(path)
    return output if digests is None else HashingOutputFile(output, digests)


# --------------------------------------------------------------------------- manifests at commit


def _content_name(content: DataFileContent | int | None) -> str:
    if content is None:
        return "data"
    return {0: "data", 1: "position_deletes", 2: "equality_deletes"}.get(int(content), str(content))


def _write_json(io: FileIO, location: str, document: Mapping[str, Any]) -> str:
    """Write ``document`` as JSON at ``location``; returns the SHA-256 of the bytes written."""
    payload = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    with io.new_output(location).create(overwrite=True) as stream:
        stream.write(payload)
    return hashlib.sha256(payload).hexdigest()


def _new_manifest_location(table: Table) -> str:
    return table.location_provider().new_metadata_location(f"{MANIFEST_PREFIX}{uuid.uuid4()}.json")


def integrity_properties(
    table: Table, added: Sequence[DataFile], digests: FileDigests, run: Mapping[str, str]
) -> dict[str, str]:
    """Write the integrity manifest of a commit and return the summary properties naming it.

    Args:
        table: The table being committed to (its FileIO and metadata location).
        added: Every file the commit adds (data files and delete files).
        digests: The digests recorded while those files were written.
        run: Run metadata (keys of :data:`RUN_FIELDS`; others are kept too).

    Returns:
        ``{PROP_INTEGRITY: location, PROP_INTEGRITY_SHA256: hex}`` to merge into the snapshot's
        properties.

    Raises:
        IntegrityError: an added file has no digest (the commit must not happen).
    """
    label = ".".join(table.name())
    files = []
    for data_file in added:
        digest = digests.get(data_file.file_path)
        if digest is None:
            raise IntegrityError(
                f"{label}: no SHA-256 was recorded for {data_file.file_path.rsplit('/', 1)[-1]} while it was "
                "written; nothing was committed",
                hint="every file a commit adds must be written through the hashing writer (a bug in dativo)",
            )
        files.append(
            {
                "path": data_file.file_path,
                "sha256": digest.sha256,
                "size": digest.size,
                "record_count": int(data_file.record_count),
                "content": _content_name(data_file.content),
            }
        )
    document = {
        "format": MANIFEST_FORMAT,
        "table": label,
        "run": {key: str(value) for key, value in run.items()},
        "files": files,
    }
    location = _new_manifest_location(table)
    sha256 = _write_json(table.io, location, document)
    return {PROP_INTEGRITY: location, PROP_INTEGRITY_SHA256: sha256}


def delete_manifest(table: Table, props: Mapping[str, str]) -> None:
    """Delete the manifest named in ``props`` of a commit that did not happen.

    Cleanup runs while another error is on its way out: a manifest that cannot be deleted, for
    whatever reason the FileIO gives, is logged and left as an unreferenced orphan, never raised
    in place of that error.
    """
    location = props.get(PROP_INTEGRITY)
    if not location:
        return
    try:
        table.io.delete(location)
    except FileNotFoundError:
        return
    except Exception as exc:
        log.warning("orphan_file_left", path=location.rsplit("/", 1)[-1], reason=failure_text(exc))


# --------------------------------------------------------------------------- reading manifests


@dataclass(frozen=True)
class RecordedDigest:
    """A file's digest as a committed manifest recorded it."""

    path: str
    sha256: str
    size: int
    snapshot_id: int | None
    run_id: str | None


ManifestProblemKind = Literal["missing", "tampered", "unreadable"]


@dataclass(frozen=True)
class ManifestProblem:
    """An integrity manifest that cannot be trusted."""

    location: str
    kind: ManifestProblemKind
    snapshot_id: int | None
    detail: str


def _summary(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary is not None else {}


def _read_manifest(io: FileIO, location: str, expected_sha256: str | None) -> dict[str, Any]:
    """The manifest's document; raises ``_ManifestUnusable`` naming what is wrong with it."""
    try:
        with io.new_input(location).open(seekable=False) as stream:
            payload = stream.read()
    except FileNotFoundError as exc:
        raise _ManifestUnusable("missing", "not found") from exc
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise _ManifestUnusable("missing", "not found") from exc
        raise
    actual = hashlib.sha256(payload).hexdigest()
    if expected_sha256 is not None and actual != expected_sha256:
        raise _ManifestUnusable("tampered", f"SHA-256 {actual[:12]}… differs from the recorded {expected_sha256[:12]}…")
    try:
        document = json.loads(payload)
    except ValueError as exc:
        raise _ManifestUnusable("unreadable", f"not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise _ManifestUnusable("unreadable", f"not a {MANIFEST_FORMAT} manifest")
    return document


class _ManifestUnusable(Exception):
    def __init__(self, kind: ManifestProblemKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: ManifestProblemKind = kind
        self.detail = detail


def _entries(document: Mapping[str, Any], snapshot_id: int | None, run_id: str | None) -> Iterator[RecordedDigest]:
    for item in document.get("files", []):
        yield RecordedDigest(
            path=str(item["path"]),
            sha256=str(item["sha256"]),
            size=int(item["size"]),
            # A base manifest records each file's own snapshot and run.
            snapshot_id=item.get("snapshot_id", snapshot_id),
            run_id=item.get("run_id", run_id),
        )


@dataclass
class RecordedDigests:
    """Every digest the table's retained manifests record, and the manifests that failed to load."""

    by_path: dict[str, RecordedDigest] = field(default_factory=dict)
    problems: list[ManifestProblem] = field(default_factory=list)


def recorded_digests(table: Table, snapshot_ids: Iterable[int] | None = None) -> RecordedDigests:
    """Load the base manifest and the manifests of ``snapshot_ids`` (default: every retained snapshot).

    A manifest that is missing, tampered with or unreadable is reported in ``problems`` and
    contributes no digest.
    """
    found = RecordedDigests()
    io = table.io
    base = table.properties.get(TABLE_PROP_INTEGRITY_BASE)
    if base:
        try:
            document = _read_manifest(io, base, table.properties.get(TABLE_PROP_INTEGRITY_BASE_SHA256))
            for recorded in _entries(document, None, None):
                found.by_path[recorded.path] = recorded
        except _ManifestUnusable as exc:
            found.problems.append(ManifestProblem(base, exc.kind, None, exc.detail))
    wanted = None if snapshot_ids is None else set(snapshot_ids)
    for snapshot in table.metadata.snapshots:
        if wanted is not None and snapshot.snapshot_id not in wanted:
            continue
        props = _summary(snapshot)
        location = props.get(PROP_INTEGRITY)
        if not location:
            continue
        try:
            document = _read_manifest(io, location, props.get(PROP_INTEGRITY_SHA256, ""))
        except _ManifestUnusable as exc:
            found.problems.append(ManifestProblem(location, exc.kind, snapshot.snapshot_id, exc.detail))
            continue
        run_id = props.get(PROP_RUN_ID) or document.get("run", {}).get("run_id")
        for recorded in _entries(document, snapshot.snapshot_id, run_id):
            found.by_path[recorded.path] = recorded
    return found


@dataclass(frozen=True)
class LiveFile:
    """A data or delete file the table's current snapshot references."""

    path: str
    size: int
    record_count: int
    content: str
    snapshot_id: int | None


def live_files(
    table: Table, snapshot: Snapshot | None = None, *, cache: dict[str, list[LiveFile]] | None = None
) -> list[LiveFile]:
    """The data and delete files ``snapshot`` (default: the current one) references.

    Each carries the snapshot that added it, as Iceberg's manifests record it.

    Args:
        table: The table.
        snapshot: The snapshot (default: the current one).
        cache: Files by manifest path, shared across calls: snapshots share most manifests.
    """
    snapshot = snapshot if snapshot is not None else table.current_snapshot()
    if snapshot is None:
        return []
    files: dict[str, LiveFile] = {}
    for manifest in snapshot.manifests(table.io):
        entries = cache.get(manifest.manifest_path) if cache is not None else None
        if entries is None:
            entries = [
                LiveFile(
                    path=entry.data_file.file_path,
                    size=int(entry.data_file.file_size_in_bytes),
                    record_count=int(entry.data_file.record_count),
                    content=_content_name(entry.data_file.content),
                    snapshot_id=entry.snapshot_id,
                )
                for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
            ]
            if cache is not None:
                cache[manifest.manifest_path] = entries
        for live in entries:
            files[live.path] = live
    return list(files.values())


def live_file_digests(table: Table) -> dict[str, RecordedDigest]:
    """Recorded digests of the current snapshot's live files (path -> digest; unrecorded files absent)."""
    live = live_files(table)
    recorded = recorded_digests(table, {f.snapshot_id for f in live if f.snapshot_id is not None})
    return {f.path: recorded.by_path[f.path] for f in live if f.path in recorded.by_path}


# --------------------------------------------------------------------------- snapshot expiry


def carry_forward_before_expiry(table: Table, txn: Transaction, expiring: set[int]) -> None:
    """Keep the digests of files that outlive the snapshots about to be expired.

    Writes a consolidated base manifest holding the digests (from the current base and every
    snapshot's manifest) of the files still referenced by the snapshots that are kept, and sets
    :data:`TABLE_PROP_INTEGRITY_BASE` in ``txn``, the transaction that removes the snapshots, so
    both land in one commit. The old base and the expired snapshots' manifests become orphans.

    Raises:
        IntegrityError: a manifest holding digests of kept files is missing or tampered with
            (consolidating it would launder the problem, so nothing is expired).
    """
    if not expiring:
        return
    recorded = recorded_digests(table)
    kept = [s for s in table.metadata.snapshots if s.snapshot_id not in expiring]
    referenced: dict[str, LiveFile] = {}
    cache: dict[str, list[LiveFile]] = {}
    for snapshot in kept:
        for live in live_files(table, snapshot, cache=cache):
            referenced.setdefault(live.path, live)
    label = ".".join(table.name())
    # A problem with a manifest whose files are all gone does not matter once it is expired.
    for problem in recorded.problems:
        if problem.snapshot_id is None or any(f.snapshot_id == problem.snapshot_id for f in referenced.values()):
            raise IntegrityError(
                f"{label}: integrity manifest {problem.location.rsplit('/', 1)[-1]} is {problem.kind} "
                f"({problem.detail}); snapshots were not expired",
                hint=f"run `dativo verify` on the job of {label}",
            )
    files = []
    for path in sorted(referenced):
        digest = recorded.by_path.get(path)
        if digest is None:
            continue  # never recorded (an older commit, another engine): stays unverified
        files.append(
            {
                "path": path,
                "sha256": digest.sha256,
                "size": digest.size,
                "record_count": referenced[path].record_count,
                "content": referenced[path].content,
                "snapshot_id": digest.snapshot_id,
                "run_id": digest.run_id,
            }
        )
    document = {"format": MANIFEST_FORMAT, "table": label, "base": True, "files": files}
    location = _new_manifest_location(table)
    sha256 = _write_json(table.io, location, document)
    txn.set_properties({TABLE_PROP_INTEGRITY_BASE: location, TABLE_PROP_INTEGRITY_BASE_SHA256: sha256})


def retained_integrity_paths(table: Table) -> set[str]:
    """Integrity manifests the table references (retained snapshots and the base): orphan removal keeps them."""
    paths = {location for snapshot in table.metadata.snapshots if (location := _summary(snapshot).get(PROP_INTEGRITY))}
    base = table.properties.get(TABLE_PROP_INTEGRITY_BASE)
    if base:
        paths.add(base)
    return paths


# --------------------------------------------------------------------------- verify


ProblemKind = Literal["missing", "truncated", "altered", "unverified"]


@dataclass(frozen=True)
class FileCheck:
    """The outcome of re-reading one live file."""

    path: str
    content: str
    snapshot_id: int | None
    run_id: str | None
    status: Literal["ok", "missing", "truncated", "altered", "unverified"]
    detail: str = ""


@dataclass
class TableVerification:
    """What :func:`verify_table` found in one table."""

    table: str
    snapshot_id: int | None
    files: list[FileCheck] = field(default_factory=list)
    manifest_problems: list[ManifestProblem] = field(default_factory=list)
    bytes_read: int = 0

    def count(self, status: str) -> int:
        """Files with ``status``."""
        return sum(1 for check in self.files if check.status == status)

    @property
    def failed(self) -> bool:
        """True if any file is missing, truncated or altered, or a manifest cannot be trusted."""
        return bool(self.manifest_problems) or any(
            check.status in ("missing", "truncated", "altered") for check in self.files
        )


def _hash_file(io: FileIO, path: str) -> tuple[str, int] | None:
    """SHA-256 and size of the file (streamed in chunks), or None if it does not exist."""
    digest = hashlib.sha256()
    size = 0
    try:
        with io.new_input(path).open(seekable=False) as stream:
            while chunk := stream.read(READ_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        return None
    except OSError as exc:
        text = str(exc).lower()
        if "not found" in text or "no such file" in text or "does not exist" in text:
            return None
        raise
    return digest.hexdigest(), size


def verify_table(table: Table, *, threads: int = VERIFY_THREADS) -> TableVerification:
    """Re-read every live file of the table's current snapshot and compare it with its recorded digest.

    A file is *missing* (cannot be read), *truncated* (its size differs from the manifest's or
    from Iceberg's ``file_size_in_bytes``), *altered* (same size, another SHA-256) or
    *unverified* (no digest recorded: committed before integrity was recorded, or by another
    engine; its size is still checked).
    """
    snapshot = table.current_snapshot()
    result = TableVerification(table=".".join(table.name()), snapshot_id=snapshot.snapshot_id if snapshot else None)
    live = live_files(table)
    recorded = recorded_digests(table, {f.snapshot_id for f in live if f.snapshot_id is not None})
    result.manifest_problems = recorded.problems
    run_ids = {s.snapshot_id: _summary(s).get(PROP_RUN_ID) for s in table.metadata.snapshots}

    def check(live_file: LiveFile) -> tuple[FileCheck, int]:
        digest = recorded.by_path.get(live_file.path)
        run_id = digest.run_id if digest is not None else run_ids.get(live_file.snapshot_id or -1)
        snapshot_id = live_file.snapshot_id
        if snapshot_id is None and digest is not None:
            snapshot_id = digest.snapshot_id

        def outcome(status: Any, detail: str = "") -> FileCheck:
            return FileCheck(live_file.path, live_file.content, snapshot_id, run_id, status, detail)

        hashed = _hash_file(table.io, live_file.path)
        if hashed is None:
            return outcome("missing", "not found"), 0
        sha256, size = hashed
        expected = digest.size if digest is not None else live_file.size
        if size != expected or size != live_file.size:
            return outcome("truncated", f"{size} bytes, {expected} recorded"), size
        if digest is None:
            return outcome("unverified", "no SHA-256 recorded"), size
        if sha256 != digest.sha256:
            return outcome("altered", f"SHA-256 {sha256[:12]}… differs from the recorded {digest.sha256[:12]}…"), size
        return outcome("ok"), size

    with ThreadPoolExecutor(max_workers=max(1, min(threads, os.cpu_count() or 1, len(live) or 1))) as pool:
        for file_check, size in pool.map(check, sorted(live, key=lambda f: f.path)):
            result.files.append(file_check)
            result.bytes_read += size
    return result


__all__ = [
    "MANIFEST_FORMAT",
    "PROP_INTEGRITY",
    "PROP_INTEGRITY_SHA256",
    "TABLE_PROP_INTEGRITY_BASE",
    "TABLE_PROP_INTEGRITY_BASE_SHA256",
    "FileCheck",
    "FileDigest",
    "FileDigests",
    "HashingOutputFile",
    "IntegrityError",
    "LiveFile",
    "ManifestProblem",
    "RecordedDigest",
    "RecordedDigests",
    "TableVerification",
    "carry_forward_before_expiry",
    "delete_manifest",
    "hashing_output",
    "integrity_properties",
    "live_file_digests",
    "live_files",
    "recorded_digests",
    "retained_integrity_paths",
    "verify_table",
]
