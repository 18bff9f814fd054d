"""New-file sensors: one per tenant job whose objects watch files, targeting those objects' assets.

An object watches files when its source class says so from its config alone
(:meth:`~dativo_dagster.sources.base.Source.watches_files`: a CSV glob, a Drive folder), so which
jobs get a sensor is decided at load without resolving a secret or reaching a source.

Each evaluation builds the job's source as a run does (``${VAR}`` resolved now, in the code
server, and registered for redaction), lists each watched object's files
(:meth:`~dativo_dagster.sources.base.Source.list_files`) and compares them with the sensor's
cursor. The cursor holds, per object, a :class:`FileMark`: the latest modification time seen
and the files (id and fingerprint) modified at exactly that time. A file is *arrived* when it is
newer than the mark, or at the mark's time but not among its files or with another fingerprint
(two files written within one clock tick, a file re-uploaded within the tick), or one of the
mark's files whose time went backwards (replaced by an older copy). A deleted file never counts,
and the cursor never grows with the number of files ever seen. The price: a file appearing with
a modification time older than the mark (moved in with its old time kept) is not seen; the next
scheduled run reads it as any run would.

When files arrived, the tick requests one run holding the assets of the objects they arrived in,
tagged like the job's runs plus ``dativo/trigger: new_files``, keyed by a digest of the file
versions that triggered it: a tick evaluated again after a crash between the launch and the
cursor's save requests the same key, which Dagster never launches twice.

The first evaluation of an object (no mark in the cursor) starts from what its Iceberg table holds:
a ``file_mtime`` cursor names the files loaded, so the files it does not cover arrive; otherwise
the files modified after the table's last commit, less a margin for files written while that run
was under way, arrive; a table that does not exist, or that no run ever committed to, has every
present file arrive. So a sensor turned on after loads does not load old files again, and a
folder never loaded is loaded by one run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dagster as dg

from dativo_dagster.config.plan import JobPlan, ObjectPlan
from dativo_dagster.errors import DativoError, unexpected
from dativo_dagster.translator import DativoTranslator

if TYPE_CHECKING:
    # Sources and pyiceberg (and pyarrow under them) are imported when a tick lists files: the
    # code location's load never does.
    from pyiceberg.catalog import Catalog

    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.sources.base import FileVersion

TAG_TRIGGER = "dativo/trigger"
"""Run tag: what launched the run (``new_files`` for this sensor)."""

TRIGGER_NEW_FILES = "new_files"

TAG_NEW_FILES = "dativo/new_files"
"""Run tag: the files that triggered the run, per object (shortened past :data:`TAG_TEXT_MAX` characters)."""

TAG_TEXT_MAX = 240

RUN_KEY_PREFIX = "new_files:"


# --------------------------------------------------------------------------- the comparison (pure)


@dataclass(frozen=True)
class FileMark:
    """How far a sensor has seen one object's files.

    Attributes:
        modified_ns: The latest modification time seen (nanoseconds since the epoch; 0 when the
            object was evaluated with no file and nothing committed).
        files: File id → fingerprint of every file modified at exactly ``modified_ns`` when last
            listed: what tells a second file written within that clock tick from one seen.
    """

    modified_ns: int
    files: Mapping[str, str] = field(default_factory=dict)


START_MARGIN_NS = 600 * 10**9
"""Without a file cursor to start from, files modified up to this long before the table's last
commit still count as arrived: the run listed its files before it committed (a Drive read leaves the
newest minute to settle), so a file written in between may not be in the table."""


def starting_mark(files: Iterable[FileVersion], committed_ns: int | None, cursor_value: object = None) -> FileMark:
    """The mark of an object evaluated for the first time.

    Args:
        files: The object's files now.
        committed_ns: When the object's table last committed a load (ns), or None if never.
        cursor_value: The table's committed cursor. A ``file_mtime`` cursor says exactly which
            files the table holds: the mark starts there (its files and their sizes or versions).
            Otherwise files modified up to :data:`START_MARGIN_NS` before the commit count as seen.
    """
    if isinstance(cursor_value, Mapping) and "mtime_ns" in cursor_value:
        if cursor_value.get("pending"):
            return FileMark(0)  # files left for a later run: let everything arrive, the run sorts it out
        sizes = cursor_value.get("sizes") or {}
        paths = cursor_value.get("paths") or []
        return FileMark(int(cursor_value["mtime_ns"]), {str(p): str(sizes.get(p, "")) for p in paths})
    if committed_ns is None:
        return FileMark(0)
    edge = committed_ns - START_MARGIN_NS
    return FileMark(edge, {f.file_id: f.fingerprint for f in files if f.modified_ns == edge})


def arrived_files(files: Iterable[FileVersion], mark: FileMark) -> list[FileVersion]:
    """The files new or changed since ``mark``, oldest first (then by id).

    A file arrived when it is newer than the mark; when it is at the mark's time but not among the
    mark's files, or with another fingerprint; or when it is one of the mark's files and its time
    went back (replaced by an older copy). Deleted files are not in ``files``: they never count.
    """
    found = []
    for file in files:
        seen = mark.files.get(file.file_id)
        if (
            file.modified_ns > mark.modified_ns
            or (file.modified_ns == mark.modified_ns and seen != file.fingerprint)
            or (file.modified_ns < mark.modified_ns and seen is not None)
        ):
            found.append(file)
    return sorted(found, key=lambda f: (f.modified_ns, f.file_id))


def advance_mark(files: Iterable[FileVersion], mark: FileMark) -> FileMark:
    """The mark once ``files`` are seen: the latest time (never earlier than ``mark``'s) and the
    files at exactly that time now (so the cursor holds one clock tick's files, never every file)."""
    listed = list(files)
    top = max([mark.modified_ns, *(f.modified_ns for f in listed)])
    return FileMark(top, {f.file_id: f.fingerprint for f in listed if f.modified_ns == top})


def run_key(arrived: Mapping[str, Sequence[FileVersion]]) -> str:
    """A key derived from the file versions that trigger a run: the same versions, the same key."""
    versions = sorted([name, f.file_id, f.modified_ns, f.fingerprint] for name, found in arrived.items() for f in found)
    digest = hashlib.sha256(json.dumps(versions, separators=(",", ":")).encode()).hexdigest()
    return RUN_KEY_PREFIX + digest[:32]


def describe_arrived(arrived: Mapping[str, Sequence[FileVersion]], limit: int = TAG_TEXT_MAX) -> str:
    """``orders: a.csv, b.csv; refunds: r.csv``, cut to ``limit`` characters with what was left out."""
    text = "; ".join(f"{name}: {', '.join(f.name for f in found)}" for name, found in sorted(arrived.items()))
    if len(text) <= limit:
        return text
    total = sum(len(found) for found in arrived.values())
    suffix = f" … ({total} files)"
    return text[: limit - len(suffix)] + suffix


def parse_cursor(cursor: str | None) -> dict[str, FileMark]:
    """The marks a cursor holds, by object name; an absent or unreadable cursor holds none.

    A cursor edited by hand into something else starts every object afresh (see
    :func:`starting_mark`), as a sensor turned on for the first time does.
    """
    if not cursor:
        return {}
    try:
        document = json.loads(cursor)
        marks = {}
        for name, entry in document["objects"].items():
            files = entry.get("files", {})
            if not isinstance(name, str) or not isinstance(files, dict):
                return {}
            marks[name] = FileMark(int(entry["modified_ns"]), {str(key): str(value) for key, value in files.items()})
        return marks
    except (ValueError, TypeError, KeyError, AttributeError):
        return {}


def format_cursor(marks: Mapping[str, FileMark]) -> str:
    """The cursor Dagster keeps (and shows): JSON, objects and files sorted, stable for equal marks."""
    document = {
        "objects": {
            name: {"modified_ns": mark.modified_ns, "files": dict(sorted(mark.files.items()))}
            for name, mark in sorted(marks.items())
        }
    }
    return json.dumps(document, separators=(",", ":"))


# --------------------------------------------------------------------------- which jobs get a sensor (pure)


def watched_objects(job: JobPlan) -> list[ObjectPlan]:
    """The job's objects whose source watches files (decided from config alone when the plan was validated)."""
    return [obj for obj in job.objects if obj.name in job.watched_objects]


# --------------------------------------------------------------------------- one tick


class FileSensorError(Exception):
    """A tick could not list some watched objects and has nothing to launch: one coded line per failure."""


@dataclass
class _Tick:
    """What one evaluation found: files arrived by object, the next marks, failures by object."""

    arrived: dict[str, list[FileVersion]] = field(default_factory=dict)
    marks: dict[str, FileMark] = field(default_factory=dict)
    failures: dict[str, DativoError] = field(default_factory=dict)
    listed: dict[str, int] = field(default_factory=dict)


def check_files(job: JobPlan, objects: Sequence[ObjectPlan], marks: Mapping[str, FileMark]) -> _Tick:
    """List each watched object's files and compare them with its mark.

    One object failing (its listing, or reading its table's last commit) leaves the others' results
    intact; its mark stays as it was. A failure building the source fails every object.
    """
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.sources.registry import build_source

    tick = _Tick()
    resolver = SecretResolver()
    try:
        source = build_source(job, resolver)
    except DativoError as exc:
        tick.failures = dict.fromkeys((obj.name for obj in objects), exc)
        return tick
    committed = _CommittedTimes(job, resolver)
    with source:
        for obj in objects:
            try:
                files = source.list_files(obj)
                mark = marks.get(obj.name)
                if mark is None:
                    committed_ns, cursor_value = committed.of(obj)
                    mark = starting_mark(files, committed_ns, cursor_value)
            except DativoError as exc:
                tick.failures[obj.name] = exc
                continue
            except Exception as exc:  # a bug in the source: reported with a code, never hidden
                tick.failures[obj.name] = unexpected(exc)
                continue
            tick.listed[obj.name] = len(files)
            found = arrived_files(files, mark)
            if found:
                tick.arrived[obj.name] = found
            tick.marks[obj.name] = advance_mark(files, mark)
    return tick


class _CommittedTimes:
    """When each object's table last committed a load: read only for objects seen the first time."""

    def __init__(self, job: JobPlan, resolver: SecretResolver) -> None:
        self.job = job
        self.resolver = resolver
        self._catalog: Catalog | None = None

    def of(self, obj: ObjectPlan) -> tuple[int | None, object]:
        """The commit time (ns) of the newest snapshot an incremental run (or a reset) committed,
        and the cursor the table holds (None and None when nothing was committed)."""
        from dativo_dagster.iceberg.catalog import build_catalog
        from dativo_dagster.iceberg.tables import Tables, latest_dativo_summary, read_table_cursor

        if self._catalog is None:
            self._catalog = build_catalog(self.job.target, self.resolver, self.job.project_dir)
        table = Tables(self._catalog).load(obj.namespace, obj.table)
        if table is None:
            return None, None
        found = latest_dativo_summary(table)
        if found is None:
            return None, None
        snapshot = table.snapshot_by_id(found[0])
        committed = read_table_cursor(table)
        cursor = committed.cursor.value if committed is not None and committed.cursor is not None else None
        return (None if snapshot is None else int(snapshot.timestamp_ms) * 1_000_000), cursor


def _failure_text(sensor: str, failures: Mapping[str, DativoError]) -> str:
    from dativo_dagster.config.secrets import redact_text

    lines = [f"{name}: {exc}" for name, exc in sorted(failures.items())]
    return redact_text(f"{sensor} could not check every watched object: " + "; ".join(lines))


def build_file_sensor(job: JobPlan, translator: DativoTranslator) -> dg.SensorDefinition | None:
    """The new-file sensor of a tenant job, when some of its objects watch files and it is enabled."""
    settings = job.file_sensor
    if not settings.enabled:
        return None
    objects = watched_objects(job)
    if not objects:
        return None
    keys = {obj.name: translator.asset_key(obj) for obj in objects}
    run_tags: Mapping[str, str] = translator.run_tags(job)
    name = translator.file_sensor_name(job)

    def launch_on_new_files(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        marks = parse_cursor(context.cursor)
        tick = check_files(job, objects, marks)
        # Objects that failed keep their mark; objects no longer watched drop theirs.
        kept = {obj.name: tick.marks.get(obj.name, marks.get(obj.name)) for obj in objects}
        cursor = format_cursor({key: mark for key, mark in kept.items() if mark is not None})
        if tick.failures and not tick.arrived:
            # Raised outside any ``except``: the tick's error carries the coded lines, no chained traceback.
            raise FileSensorError(_failure_text(name, tick.failures))
        if tick.failures:
            # Files arrived elsewhere launch now; the failure shows in this tick's log and fails the
            # next tick that has nothing to launch.
            context.log.error(_failure_text(name, tick.failures))
        if not tick.arrived:
            checked = ", ".join(f"{obj.name} ({tick.listed.get(obj.name, 0)} files)" for obj in objects)
            return dg.SensorResult(skip_reason=dg.SkipReason(f"no new or changed file in {checked}"), cursor=cursor)
        request = dg.RunRequest(
            run_key=run_key(tick.arrived),
            asset_selection=[keys[obj] for obj in sorted(tick.arrived)],
            tags={**run_tags, TAG_TRIGGER: TRIGGER_NEW_FILES, TAG_NEW_FILES: describe_arrived(tick.arrived)},
        )
        return dg.SensorResult(run_requests=[request], cursor=cursor)

    return dg.SensorDefinition(
        name=name,
        evaluation_fn=launch_on_new_files,
        asset_selection=list(keys.values()),
        minimum_interval_seconds=settings.minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Ingest {job.label} when new or changed files arrive in {', '.join(keys)} ({job.source.type}), "
            f"checked every {settings.minimum_interval_seconds} s: one run per tick with the objects whose files "
            "arrived; the cursor keeps, per object, the latest modification time seen and the files at that time"
        ),
    )


def build_file_sensors(jobs: Sequence[JobPlan], translator: DativoTranslator) -> list[dg.SensorDefinition]:
    """One new-file sensor per tenant job with watched files (and the sensor enabled)."""
    return [sensor for job in jobs if (sensor := build_file_sensor(job, translator)) is not None]
