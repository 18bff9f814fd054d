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
from urllib.parse import urlsplit

import structlog
from pyiceberg.io import FileIO, InputFile, OutputFile, OutputStream
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Snapshot

from dativo_dagster.errors import ConfigError, StorageStateError
from dativo_dagster.iceberg.failures import failure_text, is_missing_file, storage_failure
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

TABLE_PROP_INTEGRITY_SINCE = "dativo.integrity-since-sequence"
"""Table property: every file dativo commits with this sequence number or a later one has its
SHA-256 recorded (set when dativo creates the table, or first writes one it did not create)."""

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
        """Write ``b``; returns the number of bytes written (as ``io.RawIOBase.write`` does)."""
        view = memoryview(b).cast("B")
        written = self._inner.write(b)
        count = view.nbytes if written is None else written
        # Only what reached the stream is part of the file.
        self._hash.update(view[:count])
        self._size += count
        return count

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


def _raise_unless_missing(exc: Exception, location: str) -> None:
    """Return if reading ``location`` failed because the file does not exist; raise otherwise.

    The storage mapping decides first: a missing bucket or container (CFG001), rejected
    credentials (AUTH001) or an outage (STG001, transient) stop the verification with their code
    instead of being counted as one missing file each.
    """
    mapped = storage_failure(exc, f"reading {location}")
    if mapped is not None and isinstance(mapped, StorageStateError) and is_missing_file(exc):
        return
    if mapped is None:
        raise exc  # not a known storage failure: a bug, with its traceback
    raise mapped from None


def _read_manifest(io: FileIO, location: str, expected_sha256: str | None) -> dict[str, Any]:
    """The manifest's document; raises ``_ManifestUnusable`` naming what is wrong with it.

    ``expected_sha256`` None: the manifest has no recorded SHA-256, so it cannot be trusted.
    """
    try:
        with io.new_input(location).open(seekable=False) as stream:
            payload = stream.read()
    except Exception as exc:
        _raise_unless_missing(exc, location)
        raise _ManifestUnusable("missing", "not found") from exc
    actual = hashlib.sha256(payload).hexdigest()
    if not expected_sha256:
        raise _ManifestUnusable("tampered", "no SHA-256 of the manifest is recorded")
    if actual != expected_sha256:
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
    """Every digest the table's retained manifests record, and the manifests that failed to load.

    ``unrecorded`` holds the live files the base manifest lists as never recorded (added by
    another engine, or before digests were recorded) when their snapshots were expired.
    """

    by_path: dict[str, RecordedDigest] = field(default_factory=dict)
    problems: list[ManifestProblem] = field(default_factory=list)
    unrecorded: set[str] = field(default_factory=set)


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
            found.unrecorded = {str(item["path"]) for item in document.get("unrecorded", [])}
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
    sequence_number: int | None = None
    """The sequence number of the commit that added the file."""


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
                    sequence_number=(
                        entry.file_sequence_number if entry.file_sequence_number is not None else entry.sequence_number
                    ),
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
    unrecorded = []
    # Snapshots that recorded no manifest (another engine's, or older than digests): their files
    # were never recorded, which the base keeps saying once the snapshots are gone. A file whose
    # snapshot is already gone without its digest carried forward is not listed: it stays lost.
    without_manifest = {s.snapshot_id for s in table.metadata.snapshots if not _summary(s).get(PROP_INTEGRITY)}
    for path in sorted(referenced):
        digest = recorded.by_path.get(path)
        if digest is None:
            if path in recorded.unrecorded or referenced[path].snapshot_id in without_manifest:
                unrecorded.append({"path": path, "snapshot_id": referenced[path].snapshot_id})
            continue
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
    document = {"format": MANIFEST_FORMAT, "table": label, "base": True, "files": files, "unrecorded": unrecorded}
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


FileStatus = Literal["ok", "missing", "truncated", "altered", "digest_lost", "unverified"]
"""``digest_lost``: the file was committed after the table began recording digests, but no
digest of it survives (the snapshot that added it was expired by a tool that did not carry its
digest forward)."""

ProblemKind = Literal["missing", "truncated", "altered", "digest_lost", "unverified"]

FAILED_STATUSES: tuple[str, ...] = ("missing", "truncated", "altered", "digest_lost")
"""File statuses that make a verification fail."""


@dataclass(frozen=True)
class FileCheck:
    """The outcome of re-reading one live file."""

    path: str
    content: str
    snapshot_id: int | None
    run_id: str | None
    status: FileStatus
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
        """True if any file is missing, truncated, altered or lost its digest, or a manifest cannot be trusted."""
        return bool(self.manifest_problems) or any(check.status in FAILED_STATUSES for check in self.files)


def _hash_file(io: FileIO, path: str) -> tuple[str, int] | None:
    """SHA-256 and size of the file (streamed in chunks), or None if it does not exist.

    Raises:
        DativoError: reading failed for another reason (a missing bucket or container, rejected
            credentials, an outage): the coded error of :func:`~dativo_dagster.iceberg.failures.storage_failure`.
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with io.new_input(path).open(seekable=False) as stream:
            while chunk := stream.read(READ_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    except Exception as exc:
        _raise_unless_missing(exc, path)
        return None
    return digest.hexdigest(), size


def recording_since(table: Table) -> int | None:
    """The sequence number from which every file dativo commits to the table has a recorded digest.

    :data:`TABLE_PROP_INTEGRITY_SINCE`, or else the oldest retained snapshot that names a manifest;
    None when the table records no digests, or is a format-version 1 table (no sequence numbers).
    """
    if table.metadata.format_version < 2:
        return None
    recorded = table.properties.get(TABLE_PROP_INTEGRITY_SINCE)
    if recorded is not None and recorded.strip().isdigit():
        return int(recorded)
    numbers = [s.sequence_number for s in table.metadata.snapshots if _summary(s).get(PROP_INTEGRITY)]
    known = [n for n in numbers if n is not None]
    return min(known) if known else None


def _check_bucket_roots(table: Table, missing: Sequence[str]) -> None:
    """Raise CFG001 if the bucket or container of files reported missing does not exist.

    Object stores answer a read in a deleted bucket or container like a read of a deleted file:
    one probe per bucket tells the two apart.
    """
    roots = sorted({f"{parts.scheme}://{parts.netloc}" for parts in map(urlsplit, missing) if parts.netloc})
    for root in roots:
        try:
            exists = table.io.new_input(root).exists()
        except Exception as exc:
            mapped = storage_failure(exc, f"checking {root}")
            if mapped is None:
                raise
            raise mapped from None
        if not exists:
            label = ".".join(table.name())
            raise ConfigError(
                f"verifying {label}: the bucket or container of {root} does not exist (its live files cannot be read)",
                hint="check the target's warehouse and storage settings; restore the bucket or container",
            )


def verify_table(table: Table, *, threads: int = VERIFY_THREADS) -> TableVerification:
    """Re-read every live file of the table's current snapshot and compare it with its recorded digest.

    A file is *missing* (cannot be read), *truncated* (its size differs from the manifest's or
    from Iceberg's ``file_size_in_bytes``), *altered* (same size, another SHA-256),
    *digest_lost* (committed after the table began recording digests, but no digest of it
    survives: its snapshot was expired without carrying it forward; its size is still checked)
    or *unverified* (no digest recorded: committed before integrity was recorded, or by another
    engine; its size is still checked). Every status but ``ok`` and ``unverified`` is a failure.

    Raises:
        DativoError: a read failed for another reason than a missing file (CFG001 a missing bucket
            or container, AUTH001, STG001).
    """
    snapshot = table.current_snapshot()
    result = TableVerification(table=".".join(table.name()), snapshot_id=snapshot.snapshot_id if snapshot else None)
    live = live_files(table)
    recorded = recorded_digests(table, {f.snapshot_id for f in live if f.snapshot_id is not None})
    result.manifest_problems = recorded.problems
    summaries = {s.snapshot_id: _summary(s) for s in table.metadata.snapshots}
    run_ids = {snapshot_id: summary.get(PROP_RUN_ID) for snapshot_id, summary in summaries.items()}
    untrusted = {problem.snapshot_id for problem in recorded.problems}
    since = recording_since(table)

    def lost_digest(live_file: LiveFile) -> str | None:
        """Why ``live_file`` should have a digest, or None if it never had one."""
        if live_file.path in recorded.unrecorded:
            return None
        summary = summaries.get(live_file.snapshot_id) if live_file.snapshot_id is not None else None
        if summary is not None:
            if summary.get(PROP_INTEGRITY) and live_file.snapshot_id not in untrusted:
                return "the integrity manifest of the snapshot that added it does not list it"
            return None  # another engine's snapshot, or one older than digests: never recorded
        if since is not None and live_file.sequence_number is not None and live_file.sequence_number >= since:
            return (
                "committed after digests were recorded on this table, but the snapshot that added it was "
                "expired without carrying its SHA-256 forward (expire snapshots through `dativo maintain`)"
            )
        return None

    def check(live_file: LiveFile) -> tuple[FileCheck, int]:
        digest = recorded.by_path.get(live_file.path)
        run_id = digest.run_id if digest is not None else run_ids.get(live_file.snapshot_id or -1)
        snapshot_id = live_file.snapshot_id
        if snapshot_id is None and digest is not None:
            snapshot_id = digest.snapshot_id

        def outcome(status: FileStatus, detail: str = "") -> FileCheck:
            return FileCheck(live_file.path, live_file.content, snapshot_id, run_id, status, detail)

        hashed = _hash_file(table.io, live_file.path)
        if hashed is None:
            return outcome("missing", "not found"), 0
        sha256, size = hashed
        expected = digest.size if digest is not None else live_file.size
        if size != expected or size != live_file.size:
            return outcome("truncated", f"{size} bytes, {expected} recorded"), size
        if digest is None:
            lost = lost_digest(live_file)
            if lost is not None:
                return outcome("digest_lost", lost), size
            return outcome("unverified", "no SHA-256 recorded"), size
        if sha256 != digest.sha256:
            return outcome("altered", f"SHA-256 {sha256[:12]}… differs from the recorded {digest.sha256[:12]}…"), size
        return outcome("ok"), size

    with ThreadPoolExecutor(max_workers=max(1, min(threads, os.cpu_count() or 1, len(live) or 1))) as pool:
        for file_check, size in pool.map(check, sorted(live, key=lambda f: f.path)):
            result.files.append(file_check)
            result.bytes_read += size
    missing = [check.path for check in result.files if check.status == "missing"]
    if missing:
        _check_bucket_roots(table, missing)
    return result


__all__ = [
    "FAILED_STATUSES",
    "MANIFEST_FORMAT",
    "PROP_INTEGRITY",
    "PROP_INTEGRITY_SHA256",
    "TABLE_PROP_INTEGRITY_BASE",
    "TABLE_PROP_INTEGRITY_BASE_SHA256",
    "TABLE_PROP_INTEGRITY_SINCE",
    "FileCheck",
    "FileDigest",
    "FileDigests",
    "FileStatus",
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
    "recording_since",
    "retained_integrity_paths",
    "verify_table",
]
