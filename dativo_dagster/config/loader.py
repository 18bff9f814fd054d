"""Load runner.yaml, tenant jobs, recipes and contracts into a validated :class:`Plan`.

Every problem becomes a one-line CFG001 naming the file (relative to the project) and the field
path, e.g. ``CFG001 tenants/acme/jobs/crm.yaml: objects[2].incremental.cursor_field: Field required``.
The loader collects all problems before raising so an operator fixes them in one pass.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from dativo_dagster.config.models import (
    ContractRef,
    JobEntry,
    RunnerConfig,
    SchemaContract,
    SourceRecipe,
    Strategy,
    TargetRecipe,
    TenantJob,
    WriteMode,
    check_references,
)
from dativo_dagster.config.parse_cache import MISSING, ParseCache, content_digest
from dativo_dagster.config.partition_rules import partition_problems
from dativo_dagster.config.plain_yaml import MAX_FILE_BYTES, YamlRefused, load_plain
from dativo_dagster.config.plan import BrokenJob, JobPlan, ObjectPlan, Plan
from dativo_dagster.config.secrets import SecretGrants, parse_references
from dativo_dagster.errors import ConfigError
from dativo_dagster.paths import confine, tenant_data_roots

if TYPE_CHECKING:
    from dativo_dagster.sources.base import Source

ModelT = TypeVar("ModelT", bound=BaseModel)

PROJECT_DIR_ENV = "DATIVO_PROJECT_DIR"


class ConfigProblems(ConfigError):
    """Several CFG001 problems found in one pass; ``problems`` holds one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        first = problems[0]
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(first + more, problems=problems)

    def __str__(self) -> str:
        # Definitions load shows this text: every problem on its own actionable line.
        return "\n".join(f"{self.code}: {line}" for line in self.problems)


def read_config_bytes(path: Path) -> bytes:
    """A config file's bytes, refusing what is not a small regular file before reading it.

    A FIFO or a device would block or never end; a sparse gigabyte would be read whole. The file
    is opened without blocking and checked on the open descriptor, so it cannot be swapped between
    the check and the read.

    Raises:
        FileNotFoundError: it does not exist.
        ConfigError: it is not a regular file, or larger than the limit.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError("not a regular file (a config file must be a plain file)")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"larger than {MAX_FILE_BYTES >> 20} MB ({info.st_size:,} bytes)")
        chunks = []
        remaining = MAX_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        raw = b"".join(chunks)
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"larger than {MAX_FILE_BYTES >> 20} MB")
        return raw
    finally:
        os.close(fd)


def default_project_dir() -> Path:
    """Where runner.yaml lives: ``$DATIVO_PROJECT_DIR``, else the current directory, else the repo."""
    env = os.environ.get(PROJECT_DIR_ENV)
    if env:
        return Path(env).resolve()
    cwd = Path.cwd()
    if (cwd / "runner.yaml").exists():
        return cwd
    return Path(__file__).resolve().parents[2]


def format_location(loc: Iterable[Any]) -> str:
    """Turn a pydantic error location into ``objects[2].incremental.cursor_field``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def _pydantic_problems(file_label: str, exc: ValidationError, prefix: str = "") -> list[str]:
    problems = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if p not in ("function-after", "function-before")]
        path = format_location([*([prefix] if prefix else []), *loc])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; allowed fields are listed in the README)"
        problems.append(f"{file_label}: {path}: {message}")
    return problems


class _Loader:
    """Reads and validates files once per load, remembering each file's problems.

    A problem belongs to the file it was found in; a job that references a broken shared file
    (a recipe, a contract) is reported broken with that file's problems, and the others load.
    """

    def __init__(self, project_dir: Path, parse_cache: ParseCache | None = None) -> None:
        self.project_dir = project_dir
        self.parse_cache = parse_cache if parse_cache is not None else ParseCache(None)
        self._cache: dict[Path, Any] = {}
        self._parsed: dict[tuple[type[BaseModel], Path], Any] = {}
        self._contracts: dict[Path, SchemaContract] = {}
        self._file_problems: dict[Path, list[str]] = {}

    @property
    def problems(self) -> list[str]:
        """Every problem found so far, file by file."""
        return [line for lines in self._file_problems.values() for line in lines]

    def problems_of(self, path: Path) -> list[str]:
        """The problems found in one file."""
        return list(self._file_problems.get(path, ()))

    def _problem(self, path: Path, line: str) -> None:
        self._file_problems.setdefault(path, []).append(line)

    def label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.project_dir))
        except ValueError:
            return str(path)

    def read_yaml(self, path: Path) -> Any:
        if path in self._cache:
            return self._cache[path]
        if path in self._file_problems:
            return None
        try:
            raw = read_config_bytes(path)
        except FileNotFoundError:
            self._problem(path, f"{self.label(path)}: file not found")
            return None
        except ConfigError as exc:
            self._problem(path, f"{self.label(path)}: {exc.message}")
            return None
        except OSError as exc:
            self._problem(path, f"{self.label(path)}: cannot be read ({exc.__class__.__name__})")
            return None
        digest = content_digest(raw)
        data = self.parse_cache.get(digest)
        if data is MISSING:
            data = self._parse_yaml(path, raw)
            if data is MISSING:
                return None
            self.parse_cache.put(digest, data)
        # Checked on every load, cached or not: a newer dativo may check more than the one that
        # filled the cache.
        if not self._usable_document(path, data):
            return None
        self._cache[path] = data
        return data

    def _parse_yaml(self, path: Path, raw: bytes) -> Any:
        """Parse one file; MISSING (with the problem recorded) if it is not plain UTF-8 YAML data."""
        label = self.label(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self._problem(path, f"{label}: byte {exc.start}: not valid UTF-8")
            return MISSING
        try:
            return load_plain(text)
        except YamlRefused as exc:
            self._problem(path, f"{label}: {exc}")
            return MISSING
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            self._problem(path, f"{label}: {where}invalid YAML ({problem})")
            return MISSING

    def _usable_document(self, path: Path, data: Any) -> bool:
        """A mapping whose ``${...}`` references are well formed (records the problem if not)."""
        if not isinstance(data, dict):
            self._problem(path, f"{self.label(path)}: (top level): expected a mapping, got {type(data).__name__}")
            return False
        try:
            check_references(data)
        except ValueError as exc:
            self._problem(path, f"{self.label(path)}: {exc}")
            return False
        return True

    def parse(self, model: type[ModelT], path: Path) -> ModelT | None:
        key = (model, path)
        if key in self._parsed:
            cached: ModelT | None = self._parsed[key]
            return cached
        data = self.read_yaml(path)
        if data is None:
            return None
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            for line in _pydantic_problems(self.label(path), exc):
                self._problem(path, line)
            parsed = None
        self._parsed[key] = parsed
        return parsed


def load_plan(project_dir: Path | str | None = None, *, strict: bool = False) -> Plan:
    """Read and validate a project's configuration.

    A tenant job whose files are broken is set aside in ``Plan.broken`` with its CFG001 problems;
    every other job loads. Only a broken runner.yaml stops the whole load.

    Args:
        project_dir: Directory holding runner.yaml; defaults to :func:`default_project_dir`.
        strict: Raise when any job is broken too (``dativo validate``, tests).

    Raises:
        ConfigProblems: CFG001 with one line per problem: runner.yaml's, or with ``strict`` any.
    """
    root = Path(project_dir).resolve() if project_dir else default_project_dir()
    loader = _Loader(root, ParseCache.for_project(root))
    runner_path = root / "runner.yaml"
    runner = loader.parse(RunnerConfig, runner_path)
    if runner is None:
        raise ConfigProblems(loader.problems_of(runner_path))
    jobs: list[JobPlan] = []
    broken: list[BrokenJob] = []
    for index, entry in enumerate(runner.jobs):
        if not entry.enabled:
            continue
        problems: list[str] = []
        job = _load_job(loader, runner, entry, index, problems)
        if job is None or problems:
            broken.append(_broken(loader, runner, entry, problems))
        else:
            jobs.append(job)
    jobs, clashes = _one_owner_per_table(loader, runner, jobs)
    broken.extend(clashes)
    plan = Plan(project_dir=root, runner=runner, jobs=tuple(jobs), broken=tuple(broken))
    if strict and plan.broken:
        raise ConfigProblems(plan.problems)
    loader.parse_cache.save()
    return plan


def load_target_recipe(project_dir: Path, name: str) -> TargetRecipe:
    """One target recipe (connectors/targets/<name>.yaml), validated.

    Raises:
        ConfigProblems: CFG001 when it is missing or invalid.
    """
    loader = _Loader(project_dir)
    runner = loader.parse(RunnerConfig, project_dir / "runner.yaml")
    connectors = project_dir / (runner.connectors_dir if runner else "connectors")
    path = connectors / "targets" / f"{name}.yaml"
    recipe = loader.parse(TargetRecipe, path)
    if recipe is None:
        raise ConfigProblems(loader.problems or [f"{loader.label(path)}: could not be loaded"])
    return recipe


def _broken(loader: _Loader, runner: RunnerConfig, entry: JobEntry, problems: list[str]) -> BrokenJob:
    job_path = loader.project_dir / runner.tenants_dir / entry.tenant / "jobs" / f"{entry.job}.yaml"
    return BrokenJob(
        tenant=entry.tenant,
        job=entry.job,
        problems=tuple(dict.fromkeys(problems)) or (f"{loader.label(job_path)}: could not be loaded",),
        job_file=job_path,
        code_location=runner.code_locations.location_of(entry.tenant),
    )


def _one_owner_per_table(
    loader: _Loader, runner: RunnerConfig, jobs: list[JobPlan]
) -> tuple[list[JobPlan], list[BrokenJob]]:
    """Every Iceberg table (and quarantine table) has exactly one owner: tenant/job/object.

    The first job in runner.yaml order keeps a contested table; a later job naming it is broken.
    """
    owners: dict[tuple[str, str], str] = {}
    kept: list[JobPlan] = []
    broken: list[BrokenJob] = []
    for job in jobs:
        label = loader.label(job.job_file)
        problems = []
        claimed: dict[tuple[str, str], str] = {}
        for index, obj in enumerate(job.objects):
            for table in (obj.table, obj.quarantine_table):
                key = (obj.namespace, table)
                owner = owners.get(key) or claimed.get(key)
                if owner is not None and owner != obj.owner:
                    problems.append(
                        f"{label}: objects[{index}]: table {obj.namespace}.{table} is already written by "
                        f"{owner} (every table has exactly one owner; set 'table' or target.namespace)"
                    )
                claimed[key] = obj.owner
        if problems:
            broken.append(BrokenJob(job.tenant, job.name, tuple(problems), job.job_file, job.code_location))
            continue
        owners.update(claimed)
        kept.append(job)
    return kept, broken


def _load_job(
    loader: _Loader, runner: RunnerConfig, entry: JobEntry, index: int, problems: list[str]
) -> JobPlan | None:
    """One tenant job resolved against its recipes and contracts; its problems go to ``problems``."""
    root = loader.project_dir
    tenant_dir = root / runner.tenants_dir / entry.tenant
    job_path = tenant_dir / "jobs" / f"{entry.job}.yaml"
    if not job_path.exists():
        problems.append(
            f"runner.yaml: jobs[{index}]: job file {loader.label(job_path)} not found for {entry.tenant}/{entry.job}"
        )
        return None
    # The tenants directory is the platform's (its links are followed); the tenant's own directory
    # and what is under it may not lead elsewhere.
    if not _inside(job_path, Path(os.path.realpath(root / runner.tenants_dir)) / entry.tenant):
        problems.append(
            f"{loader.label(job_path)}: the file links outside {loader.label(tenant_dir)} (a tenant's job files "
            "live in its own directory)"
        )
        return None
    job = loader.parse(TenantJob, job_path)
    if job is None:
        problems.extend(loader.problems_of(job_path))
        return None
    label = loader.label(job_path)
    if job.tenant != entry.tenant:
        problems.append(f"{label}: tenant: '{job.tenant}' but the file lives under tenant '{entry.tenant}'")
    if job.name != entry.job:
        problems.append(f"{label}: name: '{job.name}' but the file is named '{entry.job}.yaml'")
    connectors = root / runner.connectors_dir
    source_path = connectors / "sources" / f"{job.source.recipe}.yaml"
    target_path = connectors / "targets" / f"{job.target.recipe}.yaml"
    source = loader.parse(SourceRecipe, source_path)
    target = loader.parse(TargetRecipe, target_path)
    if source is None:
        problems.extend(loader.problems_of(source_path))
        problems.append(f"{label}: source.recipe: recipe '{job.source.recipe}' could not be loaded")
    if target is None:
        problems.extend(loader.problems_of(target_path))
        problems.append(f"{label}: target.recipe: recipe '{job.target.recipe}' could not be loaded")
    if source is None or target is None or problems:
        return None

    from dativo_dagster.sources.registry import source_class

    source_cls: type[Source] | None
    try:
        source_cls = source_class(source.type)
    except ConfigError as exc:
        problems.append(f"{loader.label(source_path)}: type: {exc.message}")
        source_cls = None  # go on: the objects' contracts may have problems of their own to report
    try:
        data_roots = tenant_data_roots(entry.data_roots or runner.data_roots, job.tenant, root)
    except ConfigError as exc:
        problems.append(f"{label}: {exc.message}")
        return None
    grants = _secret_grants(runner, entry, index)
    _check_secret_references(problems, label, job, grants)
    connection = {**source.connection_defaults, **job.source.connection}
    settable = source.tenant_settable()
    if settable is not None:
        for key in job.source.connection:
            if key not in settable:
                problems.append(
                    f"{label}: source.connection.{key}: recipe '{source.name}' does not let a tenant set this "
                    f"connector setting (it may set: {', '.join(sorted(settable)) or 'nothing'}; the recipe's "
                    "tenant_settings lists them)"
                )
    for setting, held in source.credential_redirects(job.source):
        problems.append(
            f"{label}: source.{setting}: recipe '{source.name}' supplies credentials ({held}) and this setting "
            "decides where they are sent, so a tenant job may not set it (list it in the recipe's "
            "tenant_settings if tenants may choose it, or give the job its own credentials)"
        )
    if source.path_settings:
        _check_engine_paths(problems, label, source.path_settings, connection, data_roots, root)
    if source_cls is not None:
        _check_connection_keys(problems, label, source_cls.connection_model, connection)
        _check_local_paths(problems, label, source_cls.local_path_fields, connection, data_roots, root)
        if job.raw_retention_days:
            from dativo_dagster.api.source import ApiSource

            if not issubclass(source_cls, ApiSource):
                problems.append(
                    f"{label}: raw_retention_days: source type '{source.type}' is not an API source; only API "
                    "responses are kept as raw pages (remove raw_retention_days from the job)"
                )
        # Key files named in credentials (``service_account_file``) are local paths too.
        credentials = {**source.credentials, **job.source.credentials}
        key_files = [name for name in credentials if name.endswith("_file")]
        _check_local_paths(problems, label, key_files, credentials, data_roots, root, section="source.credentials")
    objects = []
    for obj_index, obj in enumerate(job.objects):
        where = f"{label}: objects[{obj_index}]"
        contract = None
        if obj.contract is not None:
            contract = _load_contract(loader, connectors, obj.contract, where, problems)
            if contract is None:
                continue
        if source_cls is None:
            continue
        if obj.contract is None and source_cls.needs_contract:
            problems.append(f"{where}.contract: source type '{source.type}' needs a schema contract")
            continue
        options = {**source.objects.get(obj.name, {}), **obj.options}
        try:
            source_cls.options_model.model_validate(options)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(label, exc, prefix=f"objects[{obj_index}].options"))
            continue
        if obj.incremental.strategy not in source_cls.supported_strategies:
            allowed = ", ".join(sorted(s.value for s in source_cls.supported_strategies))
            problems.append(
                f"{where}.incremental.strategy: '{obj.incremental.strategy.value}' is not supported by "
                f"source type '{source.type}' (use one of: {allowed})"
            )
            continue
        primary_key = tuple(
            obj.primary_key
            if obj.primary_key is not None
            else (contract.primary_key if contract else list(source_cls.default_primary_key))
        )
        if contract is not None:
            declared = {c.name for c in contract.columns}
            missing = [c for c in primary_key if c not in declared]
            if obj.incremental.cursor_field and obj.incremental.cursor_field not in declared:
                missing.append(obj.incremental.cursor_field)
            if missing:
                problems.append(
                    f"{where}: column(s) {', '.join(missing)} not declared in contract "
                    f"{obj.contract.name if obj.contract else ''} v{contract.version}"
                )
                continue
        if obj.effective_write_mode is WriteMode.MERGE and not primary_key:
            problems.append(f"{where}.primary_key: write mode 'merge' needs a primary key (object or contract)")
            continue
        if obj.incremental.strategy in (Strategy.UPDATED, Strategy.CREATED) and (
            obj.effective_write_mode is not WriteMode.MERGE
        ):
            problems.append(
                f"{where}.write_mode: strategy '{obj.incremental.strategy.value}' re-reads a lookback window "
                "and must use write_mode 'merge' so rows are not duplicated"
            )
            continue
        quality = obj.quality or job.quality
        objects.append(
            ObjectPlan(
                tenant=job.tenant,
                job=job.name,
                source_name=source.name,
                config=obj,
                contract=contract,
                options=options,
                primary_key=primary_key,
                namespace=job.target.namespace or job.tenant,
                table=obj.table or obj.name,
                max_rejected_rate=quality.max_rejected_rate,
                allow_empty_refresh=quality.allow_empty_refresh,
                checks=job.checks.overridden_by(obj.checks),
                config_where=where,
            )
        )
    problems.extend(partition_problems(label, job, source_cls, objects))
    if problems or source_cls is None or len(objects) != len(job.objects):
        return None
    # Decided here, from config alone, so a code location loading a cached plan never imports a source.
    watched = tuple(obj.name for obj in objects if source_cls.watches_files(obj))
    return JobPlan(
        job=job,
        source=source,
        target=target,
        objects=tuple(objects),
        retry=entry.retry or runner.defaults.retry,
        schedule=entry.schedule,
        tags=dict(entry.tags),
        job_file=job_path,
        project_dir=root,
        connection=connection,
        credentials={**source.credentials, **job.source.credentials},
        data_roots=data_roots,
        code_location=runner.code_locations.location_of(job.tenant),
        file_sensor=entry.file_sensor,
        watched_objects=watched,
        secrets=grants,
    )


def _secret_grants(runner: RunnerConfig, entry: JobEntry, index: int) -> SecretGrants:
    """The job entry's own secret allowlist, else the runner's (as data roots are chosen).

    An entry that sets no ``env`` list keeps the runner's: giving a job its own secret patterns
    must not quietly lift the restriction on environment variables.
    """
    inherited = runner.secrets.grants(entry.tenant, "runner.yaml: secrets")
    if entry.secrets is None:
        return inherited
    own = entry.secrets.grants(entry.tenant, f"runner.yaml: jobs[{index}].secrets")
    return own if entry.secrets.env is not None else dataclasses.replace(own, env=inherited.env)


def _check_secret_references(problems: list[str], label: str, job: TenantJob, grants: SecretGrants) -> None:
    """Every file or AWS reference (and ``${VAR}``, when the grants govern them) in the tenant's job
    file must be one its grants allow.

    Recipes, targets and runner.yaml are the platform's and not checked; a job setting that
    overrides a recipe's value is the tenant's and is. Nothing is read or fetched here.
    """
    try:
        dumped = job.model_dump_json()  # a quick look first: most jobs use no file or AWS reference
    except ValueError:  # a value JSON cannot hold: look at every field
        dumped = "${file:"
    governed = ("${",) if grants.env is not None else ("${file:", "${aws-")
    if not any(marker in dumped for marker in governed):
        return
    for field, text in _model_strings(job, ""):
        for reference in parse_references(text):
            if not grants.allows(reference):
                problems.append(f"{label}: {field}: {grants.refusal(reference)}")


def _model_strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    """``(field path, text)`` of every string holding ``${`` in a model, its fields named as in YAML."""
    if isinstance(value, str):
        if "${" in value:
            yield where, value
    elif isinstance(value, BaseModel):
        for name, item in value.__dict__.items():  # a pydantic model keeps its field values here
            yield from _model_strings(item, f"{where}.{name}" if where else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _model_strings(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _model_strings(item, f"{where}[{index}]")


def _inside(path: Path, directory: Path) -> bool:
    """Whether the real ``path`` lies inside ``directory`` (taken as it is, links not followed)."""
    return directory in Path(os.path.realpath(path)).parents


def _check_local_paths(
    problems: list[str],
    label: str,
    fields: Iterable[str],
    connection: dict[str, Any],
    roots: tuple[Path, ...],
    project_dir: Path,
    section: str = "source.connection",
) -> None:
    """Literal local paths of the connection must lie in the tenant's data roots (``${VAR}``s: at run time)."""
    for name in fields:
        value = connection.get(name)
        if not isinstance(value, str) or "${" in value:
            continue
        try:
            confine(value, roots, base=project_dir, what=f"{label}: {section}.{name}")
        except ConfigError as exc:
            problems.append(exc.message)


def _check_engine_paths(
    problems: list[str],
    label: str,
    keys: Iterable[str],
    connection: dict[str, Any],
    roots: tuple[Path, ...],
    project_dir: Path,
) -> None:
    """Literal paths under an engine recipe's ``path_settings`` must lie in the tenant's data roots."""
    from dativo_dagster.paths import confine_setting_paths

    for key in keys:
        if key not in connection:
            continue
        try:
            confine_setting_paths(
                connection[key], roots, base=project_dir, what=f"{label}: source.connection.{key}", literal_only=True
            )
        except ConfigError as exc:
            problems.append(exc.message)


def _check_connection_keys(problems: list[str], label: str, model: type[BaseModel], connection: dict[str, Any]) -> None:
    """Unknown connection keys are caught at load; values are validated after ``${VAR}`` resolution."""
    if model.model_config.get("extra") == "allow":
        return  # an external connector's config: its keys are the connector's to judge (its check)
    allowed = set(model.model_fields)
    for key in connection:
        if key not in allowed:
            problems.append(f"{label}: source.connection.{key}: unknown field (allowed: {', '.join(sorted(allowed))})")
    literal = {k: v for k, v in connection.items() if k in allowed}
    has_reference = any(isinstance(v, str) and "${" in v for v in literal.values())
    if not has_reference:
        try:
            model.model_validate(literal)
        except ValidationError as exc:
            problems.extend(
                p for p in _pydantic_problems(label, exc, prefix="source.connection") if "unknown field" not in p
            )


def _load_contract(
    loader: _Loader, connectors: Path, ref: ContractRef, where: str, problems: list[str]
) -> SchemaContract | None:
    path = connectors / "schemas" / f"{ref.name}.v{ref.version}.yaml"
    # Thousands of objects share a handful of contracts: read each valid one once (a broken one is
    # reported for every object that names it).
    contract = loader._contracts.get(path)
    if contract is None:
        contract = _read_contract(loader, path, ref, where, problems)
        if contract is not None:
            loader._contracts[path] = contract
    return contract


def _read_contract(
    loader: _Loader, path: Path, ref: ContractRef, where: str, problems: list[str]
) -> SchemaContract | None:
    if not path.exists():
        problems.append(f"{where}.contract: {loader.label(path)} not found ({ref.name} v{ref.version})")
        return None
    contract = loader.parse(SchemaContract, path)
    if contract is None:
        problems.extend(loader.problems_of(path))
        return None
    if contract.name != ref.name or contract.version != ref.version:
        problems.append(
            f"{loader.label(path)}: name/version: file declares {contract.name} v{contract.version}, "
            f"expected {ref.name} v{ref.version}"
        )
        return None
    return contract
