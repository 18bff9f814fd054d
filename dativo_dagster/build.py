"""Plan → Definitions: assets (with their automation), sensors and resources; and the plan a code location loads.

Building is pure apart from the plan. The plan comes from :func:`code_location_plan`: read once per
process and, between processes, from a cache of the *validated* plan that is used only while every
input it was validated from is unchanged (see :func:`code_location_plan`).
"""

from __future__ import annotations

import gc

# Whoever loads a code location imports this module first. Everything imported before it (the
# interpreter, Dagster) lives as long as the process: moved out of the cyclic collector's reach,
# it is not rescanned by every collection the imports and the load below trigger.
gc.freeze()

import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager, suppress  # noqa: E402
from functools import cache  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import dagster as dg  # noqa: E402

import dativo_dagster  # noqa: E402
from dativo_dagster.alerts import build_alert_sensors  # noqa: E402
from dativo_dagster.assets import build_job_assets  # noqa: E402
from dativo_dagster.automation import build_schedule_sensors  # noqa: E402
from dativo_dagster.config.loader import default_project_dir, load_plan  # noqa: E402
from dativo_dagster.config.models import is_safe_identifier  # noqa: E402
from dativo_dagster.config.parse_cache import CACHE_ENV as PARSE_CACHE_ENV  # noqa: E402
from dativo_dagster.config.parse_cache import content_digest  # noqa: E402
from dativo_dagster.config.plain_yaml import load_plain  # noqa: E402
from dativo_dagster.config.plan import BrokenJob, JobPlan, Plan  # noqa: E402
from dativo_dagster.file_sensors import build_file_sensors  # noqa: E402
from dativo_dagster.maintenance_jobs import build_maintenance  # noqa: E402
from dativo_dagster.resources import DativoResource, IcebergIOManager  # noqa: E402
from dativo_dagster.translator import DativoTranslator  # noqa: E402


def build_broken_job_asset(
    job: BrokenJob, translator: DativoTranslator, project_dir: Path | None = None, key: dg.AssetKey | None = None
) -> dg.AssetsDefinition:
    """The placeholder asset that shows a broken tenant job in the UI.

    It sits in the tenant's group with the job's CFG001 problems as its description, so a broken
    file is seen where the tenant's assets are, not only in a code server's log; materializing it
    fails at once with those problems and is never retried.

    Args:
        job: The job the loader (or :func:`split_asset_key_clashes`) set aside.
        translator: Decides the placeholder's key, op name, group, tags and kinds.
        project_dir: Shows the job file relative to it.
        key: The placeholder's key, when the translator's is taken by a working job's asset.
    """
    problems = "\n".join(job.problems)
    metadata: dict[str, object] = {"dativo/error_code": "CFG001", "dativo/problems": problems}
    if job.job_file is not None:
        metadata["dativo/job_file"] = _relative(job.job_file, project_dir)
    failure_text = f"CFG001 {job.label} is not loaded: {'; '.join(job.problems)}"
    failure_metadata = {"dativo/error_code": "CFG001", "dativo/error_class": "permanent", "dativo/errors": problems}

    @dg.multi_asset(
        name=translator.broken_op_name(job),
        specs=[
            dg.AssetSpec(
                key=key or translator.broken_asset_key(job),
                group_name=translator.broken_group_name(job),
                description=translator.broken_description(job),
                tags=translator.broken_tags(job),
                kinds=translator.broken_kinds(job),
                metadata=metadata,
            )
        ],
    )
    # No annotation on ``context``: Dagster checks it, and this module's annotations are strings.
    def _broken_job(context) -> None:
        # A new Failure per run: one raised again would carry every earlier run's traceback.
        raise dg.Failure(description=failure_text, metadata=failure_metadata, allow_retries=False)

    return _broken_job


def split_asset_key_clashes(plan: Plan, translator: DativoTranslator) -> tuple[list[JobPlan], list[BrokenJob]]:
    """The jobs that can load together, and those set aside because they repeat an asset key.

    Two tenant jobs whose objects map to one Dagster asset key (the same tenant, source recipe and
    object name in two jobs, or a translator that maps them together) would make Dagster refuse the
    whole code location. The first job in runner.yaml order keeps the key, as with table ownership;
    a later one is broken with a CFG001 naming both.
    """
    owners: dict[dg.AssetKey, tuple[JobPlan, int]] = {}
    ops: dict[str, JobPlan] = {}
    kept: list[JobPlan] = []
    broken: list[BrokenJob] = []
    for job in plan.jobs:
        label = _relative(job.job_file, plan.project_dir)
        problems: list[str] = []
        claimed: dict[dg.AssetKey, int] = {}
        for index, obj in enumerate(job.objects):
            key = translator.asset_key(obj)
            if key in owners:
                other, other_index = owners[key]
                problems.append(
                    f"{label}: objects[{index}].name: asset key {key.to_user_string()} is already defined by "
                    f"{other.label} ({_relative(other.job_file, plan.project_dir)} objects[{other_index}]); "
                    "two tenant jobs cannot define the same Dagster asset (rename the object or use another "
                    "source recipe)"
                )
            claimed[key] = index
        op_name = translator.op_name(job)
        if op_name in ops:
            problems.append(f"{label}: name: op name {op_name} is already used by {ops[op_name].label}")
        if problems:
            broken.append(BrokenJob(job.tenant, job.name, tuple(problems), job.job_file, job.code_location))
            continue
        owners.update({key: (job, index) for key, index in claimed.items()})
        ops[op_name] = job
        kept.append(job)
    return kept, broken


def build_definitions(plan: Plan, translator: DativoTranslator | None = None) -> dg.Definitions:
    """Everything the code location exposes for ``plan``.

    Working tenant jobs become multi_assets, with a cron sensor per scheduled job targeting its
    assets (:mod:`dativo_dagster.automation`) and a new-file sensor per job whose objects watch
    files (:mod:`dativo_dagster.file_sensors`); broken ones, and jobs repeating another job's asset
    key, become placeholder assets, so one tenant's bad file never keeps the others, or itself, out
    of sight. With alert routes in runner.yaml, the alert sensors come too
    (:func:`dativo_dagster.alerts.build_alert_sensors`); with a tenant's ``maintenance`` entry, its
    upkeep job and schedule (:mod:`dativo_dagster.maintenance_jobs`).
    """
    translator = translator or DativoTranslator()
    resources = {
        "dativo": DativoResource(project_dir=str(plan.project_dir)),
        "io_manager": IcebergIOManager(project_dir=str(plan.project_dir)),
    }
    assets = []
    with _gc_paused():
        jobs, clashes = split_asset_key_clashes(plan, translator)
        built: list[JobPlan] = []
        for job in jobs:
            try:
                job_assets = build_job_assets(job, translator)
            except (dg.DagsterInvalidDefinitionError, dg.DagsterInvariantViolationError) as exc:
                # Dagster refused something of this job that the config models let through: the
                # job is set aside with Dagster's reason, and every other job still loads.
                clashes.append(
                    BrokenJob(
                        job.tenant,
                        job.name,
                        (f"{_relative(job.job_file, plan.project_dir)}: Dagster refused the job: {exc}",),
                        job.job_file,
                        job.code_location,
                    )
                )
                continue
            built.append(job)
            assets.append(job_assets)
        jobs = built
        sensors = [*build_schedule_sensors(jobs, translator), *build_file_sensors(jobs, translator)]
        if plan.broken or clashes:
            taken = {translator.asset_key(obj) for job in jobs for obj in job.objects}
            for broken in (*plan.broken, *clashes):
                key = translator.broken_asset_key(broken)
                # Only a source recipe named like the placeholder's key part could take it; the
                # placeholder then steps aside rather than hide the broken job.
                placeholder = key if key not in taken else dg.AssetKey([*key.path, "job"])
                assets.append(build_broken_job_asset(broken, translator, plan.project_dir, placeholder))
    upkeep_jobs, upkeep_schedules = build_maintenance(plan.runner.maintenance, jobs)
    return dg.Definitions(
        assets=assets,
        sensors=[*sensors, *build_alert_sensors(plan, translator)],
        jobs=upkeep_jobs,
        schedules=upkeep_schedules,
        resources=resources,
    )


# --------------------------------------------------------------------------- the plan a code location loads

PLAN_CACHE_ENV = "DATIVO_PLAN_CACHE"
"""``off`` disables the validated-plan cache (so does ``DATIVO_PARSE_CACHE=off``)."""

_OFF = ("off", "0", "false", "no")
_PLAN_CACHE_MAGIC = b"dativo-plan 1\n"

_PLANS: dict[tuple[Path, str | None], Plan] = {}


def code_location_plan(project_dir: Path | str | None = None, location: str | None = None) -> Plan:
    """The plan of one code location (or, with ``location=None``, of every tenant), read once per process.

    Every process that loads a code location (its code server, each run worker) needs the
    validated plan, and validating 1,000 tenant jobs costs a second. So the plan is also kept in
    ``.dativo/cache/plan[-<location>].pickle`` under the project, and a process takes it from
    there only if nothing it was validated from has changed: the bytes of runner.yaml, of the
    location's job files and of every file under the connectors directory; the files present
    there; where the job files, tenant directories, data roots and the literal paths of each job's
    connection lead once links are followed; dativo's code, the installed packages (a source
    plugin registers its type) and the versions of Python, pydantic, PyYAML and Dagster. Anything
    else is a miss, and the plan is loaded and validated again. The cache is best-effort (an
    unreadable, corrupt or foreign file is ignored) and is only read if the process's own user
    wrote it and nobody else may write it. ``DATIVO_PLAN_CACHE=off`` (or ``DATIVO_PARSE_CACHE=off``)
    disables it; a source plugin installed in editable mode is developed with it off.

    Args:
        project_dir: Directory holding runner.yaml; defaults to the loader's default.
        location: A code location runner.yaml defines; ``None`` for every tenant.

    Raises:
        ConfigProblems: CFG001 when runner.yaml itself is invalid.
    """
    root = Path(project_dir).resolve() if project_dir is not None else default_project_dir()
    key = (root, location)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = _read_plan(root, location)
    return plan


def forget_plans() -> None:
    """Read plans again at the next :func:`code_location_plan` (for a process that reloads its code)."""
    _PLANS.clear()


def _read_plan(root: Path, location: str | None) -> Plan:
    path = _plan_cache_path(root, location)
    if path is not None:
        cached = _cached_plan(path, root)
        if cached is not None:
            return cached
    started = time.time()
    full = _PLANS.get((root, None))
    if full is None:
        full = _PLANS[(root, None)] = load_plan(root)
    if location is None:
        plan = full
    elif location in full.runner.code_locations.names():
        plan = full.for_location(location)
    else:
        return full.for_location(location)  # empty; the caller reports the unknown name, nothing is cached
    if path is not None:
        _store_plan(path, plan, location, started)
    return plan


def _plan_cache_path(root: Path, location: str | None) -> Path | None:
    for env in (PLAN_CACHE_ENV, PARSE_CACHE_ENV):
        if os.environ.get(env, "").strip().lower() in _OFF:
            return None
    if location is not None and not is_safe_identifier(location):
        return None  # never a file name built from an arbitrary attribute name
    return root / ".dativo" / "cache" / ("plan.pickle" if location is None else f"plan-{location}.pickle")


def _cached_plan(path: Path, root: Path) -> Plan | None:
    """The cached plan if it is ours and still valid, else None."""
    try:
        with path.open("rb") as handle:
            info = os.fstat(handle.fileno())
            # Unpickling runs code: only a file this user wrote and nobody else can change.
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                return None
            if handle.readline() != _PLAN_CACHE_MAGIC:
                return None
            header = json.loads(handle.readline())
            if header.get("code") != _code_fingerprint() or not _inputs_unchanged(root, header.get("inputs")):
                return None
            payload = handle.read()
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None
    try:
        # Hundreds of thousands of small objects: the cyclic GC would scan the growing heap many
        # times while they arrive, and once more right after. They live as long as the process (the
        # plan is read once per process), so they go straight out of the collector's reach.
        with _gc_paused():
            plan = pickle.loads(payload)
            gc.freeze()
    except Exception:  # a truncated or foreign payload is a miss, like any other
        return None
    return plan if isinstance(plan, Plan) and plan.project_dir == root else None


def _store_plan(path: Path, plan: Plan, location: str | None, started: float) -> None:
    try:
        inputs = _plan_inputs(plan, location)
        # A file edited while the plan was being read may be recorded with its new bytes next to
        # a plan validated from the old ones: such a plan is not kept (clocks and file systems
        # round timestamps, hence the margin).
        if any(_modified_since(plan.project_dir / rel, started - 2) for rel in inputs["files"]):
            return
        header = {"code": _code_fingerprint(), "inputs": inputs}
        with _gc_paused():
            payload = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic replace: code servers and run workers of several locations share the directory.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:  # owner-only (mkstemp's mode)
                handle.write(_PLAN_CACHE_MAGIC)
                handle.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
                handle.write(payload)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, pickle.PicklingError, TypeError, ValueError):
        return  # read-only project or full disk: the next process validates again, nothing else changes


@cache
def _code_fingerprint() -> str:
    """What decides how a configuration validates, besides the configuration itself.

    dativo's code (every module's size and mtime), the versions of Python, pydantic, PyYAML and
    Dagster, and the installed distributions (the mtime of the site-packages directories changes
    when a package is installed, upgraded or removed: a source plugin registers its type through
    an entry point).
    """
    import pydantic
    import yaml

    h = hashlib.blake2b(digest_size=20)
    h.update(
        f"{sys.version}|{dativo_dagster.__version__}|{pydantic.VERSION}|{yaml.__version__}|{dg.__version__}".encode()
    )
    package = Path(dativo_dagster.__file__).parent
    for module in sorted(package.rglob("*.py")):
        info = module.stat()
        h.update(f"|{module.relative_to(package)}:{info.st_size}:{info.st_mtime_ns}".encode())
    for directory in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
        with suppress(OSError):
            h.update(f"|{directory}:{os.stat(directory).st_mtime_ns}".encode())
    return h.hexdigest()


def _plan_inputs(plan: Plan, location: str | None) -> dict[str, Any]:
    """Everything :func:`load_plan` read or resolved for ``plan``'s jobs, as it is now."""
    root = plan.project_dir
    runner = plan.runner
    files: dict[str, str | None] = {"runner.yaml": _digest(root / "runner.yaml")}
    connectors = _files_under(root / runner.connectors_dir)
    for path in connectors:
        files[_rel(path, root)] = _digest(path)
    links: dict[str, str] = {}
    roots: list[list[Any]] = []
    resolve = _Resolver(root)
    plans = {job.label: job for job in plan.jobs}
    for entry in runner.jobs:
        if not entry.enabled or (location is not None and runner.code_locations.location_of(entry.tenant) != location):
            continue
        tenant_dir = root / runner.tenants_dir / entry.tenant
        job_file = tenant_dir / "jobs" / f"{entry.job}.yaml"
        files[_rel(job_file, root)] = _digest(job_file)
        for linked in (str(tenant_dir), str(job_file)):
            links[linked] = resolve(linked)
        templates = list(entry.data_roots or runner.data_roots)
        roots.append([entry.tenant, templates, resolve.data_roots(templates, entry.tenant)])
        job = plans.get(f"{entry.tenant}/{entry.job}")
        connection = job.connection if job is not None else _connection_of_broken_job(job_file, root, runner)
        for value in connection.values():
            # Any literal string may be a local path the loader confined to the data roots.
            if isinstance(value, str) and "${" not in value:
                links[value] = resolve(value)
    return {
        "root": str(root),
        "files": files,
        "connectors": runner.connectors_dir,
        "listing": [_rel(path, root) for path in connectors],
        "links": links,
        "roots": roots,
    }


def _inputs_unchanged(root: Path, inputs: Any) -> bool:
    """True if every input recorded by :func:`_plan_inputs` is as it was."""
    if not isinstance(inputs, dict) or inputs.get("root") != str(root):
        return False
    for rel, digest in inputs["files"].items():
        if _digest(root / rel) != digest:
            return False
    if [_rel(path, root) for path in _files_under(root / inputs["connectors"])] != inputs["listing"]:
        return False
    resolve = _Resolver(root)
    for value, real in inputs["links"].items():
        if resolve(value) != real:
            return False
    return all(resolve.data_roots(templates, tenant) == resolved for tenant, templates, resolved in inputs["roots"])


def _modified_since(path: Path, moment: float) -> bool:
    try:
        return path.stat().st_mtime >= moment
    except OSError:
        return False


def _digest(path: Path) -> str | None:
    try:
        return content_digest(path.read_bytes())
    except OSError:
        return None


def _files_under(top: Path) -> list[Path]:
    """Every file under ``top``, links followed (each real directory once, so a link loop ends)."""
    found: list[Path] = []
    seen: set[str] = set()
    stack = [top]
    while stack:
        directory = stack.pop()
        real = os.path.realpath(directory)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir():
                stack.append(Path(entry.path))
            elif entry.is_file():
                found.append(Path(entry.path))
    return sorted(found)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class _Resolver:
    """Where configured paths lead (``~`` expanded, anchored at the project, links followed).

    What :func:`os.path.realpath` answers, with each directory resolved once: a thousand tenants'
    paths share most of their directories, and resolving each path from the root again would cost
    a ``stat`` per component per path.
    """

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._directories: dict[str, str] = {}

    def __call__(self, value: str) -> str:
        """The real path ``value`` leads to."""
        path = os.path.expanduser(value)
        if not os.path.isabs(path):
            path = os.path.join(self.root, path)
        if ".." in path.split(os.sep):
            return os.path.realpath(path)  # ".." after a link is the link target's parent: the slow way
        return self._real(os.path.normpath(path))

    def data_roots(self, templates: list[str], tenant: str) -> list[str]:
        """A tenant's data roots as :func:`dativo_dagster.paths.tenant_data_roots` resolves them."""
        return [self(template.format(tenant=tenant)) for template in templates]

    def _real(self, path: str) -> str:
        head, tail = os.path.split(path)
        if not tail:
            return os.path.realpath(path)
        real_head = self._directories.get(head)
        if real_head is None:
            real_head = self._directories[head] = self._real(head)
        candidate = os.path.join(real_head, tail)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate


def _connection_of_broken_job(job_file: Path, root: Path, runner: Any) -> dict[str, Any]:
    """Best effort: the connection a broken job names (its recipe's defaults, then its own).

    A job may be broken because a path it names leads outside its data roots; where that path
    leads is an input of the plan even though the job did not load.
    """
    try:
        document = load_plain(job_file.read_text(encoding="utf-8"))
        source = document["source"]
        connection = dict(source.get("connection") or {})
        recipe_file = root / runner.connectors_dir / "sources" / f"{source['recipe']}.yaml"
        recipe = load_plain(recipe_file.read_text(encoding="utf-8"))
        return {**dict(recipe.get("defaults") or {}), **connection}
    except Exception:  # a file that does not parse names no path; its digest covers it
        return {}


def code_location_definitions(plan: Plan | None = None) -> dg.Definitions:
    """The code location's definitions: ``plan`` (default: the project's) built, then frozen.

    The definitions live as long as the code server (or run worker) that loads them. Moving them
    out of the cyclic collector's reach (``gc.freeze``) spares Dagster's snapshot of thousands of
    assets the repeated full collections of a heap that only grows.
    """
    defs = build_definitions(plan if plan is not None else code_location_plan())
    gc.freeze()
    return defs


def _relative(path: Path, project_dir: Path | None) -> str:
    if project_dir is not None:
        try:
            return str(path.relative_to(project_dir))
        except ValueError:
            pass
    return str(path)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building: the build only allocates long-lived objects, and with
    10,000 assets the repeated full collections of the growing heap cost seconds of the load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
