"""Load runner.yaml, tenant jobs, recipes and contracts into a validated :class:`Plan`.

Every problem becomes a one-line CFG001 naming the file (relative to the project) and the field
path, e.g. ``CFG001 tenants/acme/jobs/crm.yaml: objects[2].incremental.cursor_field: Field required``.
The loader collects all problems before raising so an operator fixes them in one pass.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

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
from dativo_dagster.config.plan import JobPlan, ObjectPlan, Plan
from dativo_dagster.errors import ConfigError

try:  # the C loader is ~10x faster; it matters for thousands of tenant files
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

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
    def __init__(self, project_dir: Path, parse_cache: ParseCache | None = None) -> None:
        self.project_dir = project_dir
        self.problems: list[str] = []
        self.parse_cache = parse_cache if parse_cache is not None else ParseCache(None)
        self._cache: dict[Path, Any] = {}
        self._parsed: dict[tuple[type[BaseModel], Path], Any] = {}
        self._contracts: dict[Path, SchemaContract] = {}

    def label(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.project_dir))
        except ValueError:
            return str(path)

    def read_yaml(self, path: Path) -> Any:
        if path in self._cache:
            return self._cache[path]
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.problems.append(f"{self.label(path)}: file not found")
            return None
        except OSError as exc:
            self.problems.append(f"{self.label(path)}: cannot be read ({exc.__class__.__name__})")
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
        """Parse one file; MISSING (with the problem recorded) if it is not valid UTF-8 YAML."""
        label = self.label(path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.problems.append(f"{label}: cannot be read ({exc.__class__.__name__})")
            return MISSING
        try:
            return yaml.load(text, Loader=_YamlLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problem = getattr(exc, "problem", None) or "invalid YAML"
            self.problems.append(f"{label}: {where}invalid YAML ({problem})")
            return MISSING

    def _usable_document(self, path: Path, data: Any) -> bool:
        """A mapping whose ``${...}`` references are well formed (records the problem if not)."""
        if not isinstance(data, dict):
            self.problems.append(f"{self.label(path)}: (top level): expected a mapping, got {type(data).__name__}")
            return False
        try:
            check_references(data)
        except ValueError as exc:
            self.problems.append(f"{self.label(path)}: {exc}")
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
            self.problems.extend(_pydantic_problems(self.label(path), exc))
            parsed = None
        self._parsed[key] = parsed
        return parsed


def load_plan(project_dir: Path | str | None = None) -> Plan:
    """Read and validate a project's configuration.

    Args:
        project_dir: Directory holding runner.yaml; defaults to :func:`default_project_dir`.

    Raises:
        ConfigProblems: CFG001 with one line per problem found.
    """
    root = Path(project_dir).resolve() if project_dir else default_project_dir()
    loader = _Loader(root, ParseCache.for_project(root))
    runner = loader.parse(RunnerConfig, root / "runner.yaml")
    if runner is None:
        raise ConfigProblems(loader.problems)
    jobs = []
    for index, entry in enumerate(runner.jobs):
        if not entry.enabled:
            continue
        plan = _load_job(loader, runner, entry, index)
        if plan is not None:
            jobs.append(plan)
    if loader.problems:
        raise ConfigProblems(loader.problems)
    loader.parse_cache.save()
    return Plan(project_dir=root, runner=runner, jobs=tuple(jobs))


def _load_job(loader: _Loader, runner: RunnerConfig, entry: JobEntry, index: int) -> JobPlan | None:
    root = loader.project_dir
    job_path = root / runner.tenants_dir / entry.tenant / "jobs" / f"{entry.job}.yaml"
    if not job_path.exists():
        loader.problems.append(
            f"runner.yaml: jobs[{index}]: job file {loader.label(job_path)} not found for {entry.tenant}/{entry.job}"
        )
        return None
    job = loader.parse(TenantJob, job_path)
    if job is None:
        return None
    label = loader.label(job_path)
    ok = True
    if job.tenant != entry.tenant:
        loader.problems.append(f"{label}: tenant: '{job.tenant}' but the file lives under tenant '{entry.tenant}'")
        ok = False
    if job.name != entry.job:
        loader.problems.append(f"{label}: name: '{job.name}' but the file is named '{entry.job}.yaml'")
        ok = False
    connectors = root / runner.connectors_dir
    source = loader.parse(SourceRecipe, connectors / "sources" / f"{job.source.recipe}.yaml")
    target = loader.parse(TargetRecipe, connectors / "targets" / f"{job.target.recipe}.yaml")
    if source is None:
        loader.problems.append(f"{label}: source.recipe: recipe '{job.source.recipe}' could not be loaded")
    if target is None:
        loader.problems.append(f"{label}: target.recipe: recipe '{job.target.recipe}' could not be loaded")
    if source is None or target is None or not ok:
        return None

    from dativo_dagster.sources.registry import source_class

    source_cls = source_class(source.type)
    connection = {**source.defaults, **job.source.connection}
    _check_connection_keys(loader, label, source_cls.connection_model, connection)
    objects = []
    for obj_index, obj in enumerate(job.objects):
        where = f"{label}: objects[{obj_index}]"
        contract = None
        if obj.contract is not None:
            contract = _load_contract(loader, connectors, obj.contract, where)
            if contract is None:
                continue
        elif source_cls.needs_contract:
            loader.problems.append(f"{where}.contract: source type '{source.type}' needs a schema contract")
            continue
        options = {**source.objects.get(obj.name, {}), **obj.options}
        try:
            source_cls.options_model.model_validate(options)
        except ValidationError as exc:
            loader.problems.extend(_pydantic_problems(label, exc, prefix=f"objects[{obj_index}].options"))
            continue
        if obj.incremental.strategy not in source_cls.supported_strategies:
            allowed = ", ".join(sorted(s.value for s in source_cls.supported_strategies))
            loader.problems.append(
                f"{where}.incremental.strategy: '{obj.incremental.strategy.value}' is not supported by "
                f"source type '{source.type}' (use one of: {allowed})"
            )
            continue
        primary_key = tuple(
            obj.primary_key if obj.primary_key is not None else (contract.primary_key if contract else [])
        )
        if contract is not None:
            declared = {c.name for c in contract.columns}
            missing = [c for c in primary_key if c not in declared]
            if obj.incremental.cursor_field and obj.incremental.cursor_field not in declared:
                missing.append(obj.incremental.cursor_field)
            if missing:
                loader.problems.append(
                    f"{where}: column(s) {', '.join(missing)} not declared in contract "
                    f"{obj.contract.name if obj.contract else ''} v{contract.version}"
                )
                continue
        if obj.effective_write_mode is WriteMode.MERGE and not primary_key:
            loader.problems.append(f"{where}.primary_key: write mode 'merge' needs a primary key (object or contract)")
            continue
        if obj.incremental.strategy in (Strategy.UPDATED, Strategy.CREATED) and (
            obj.effective_write_mode is not WriteMode.MERGE
        ):
            loader.problems.append(
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
            )
        )
    if len(objects) != len(job.objects):
        return None
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
    )


def _check_connection_keys(loader: _Loader, label: str, model: type[BaseModel], connection: dict[str, Any]) -> None:
    """Unknown connection keys are caught at load; values are validated after ``${VAR}`` resolution."""
    allowed = set(model.model_fields)
    for key in connection:
        if key not in allowed:
            loader.problems.append(
                f"{label}: source.connection.{key}: unknown field (allowed: {', '.join(sorted(allowed))})"
            )
    literal = {k: v for k, v in connection.items() if k in allowed}
    has_reference = any(isinstance(v, str) and "${" in v for v in literal.values())
    if not has_reference:
        try:
            model.model_validate(literal)
        except ValidationError as exc:
            loader.problems.extend(
                p for p in _pydantic_problems(label, exc, prefix="source.connection") if "unknown field" not in p
            )


def _load_contract(loader: _Loader, connectors: Path, ref: ContractRef, where: str) -> SchemaContract | None:
    path = connectors / "schemas" / f"{ref.name}.v{ref.version}.yaml"
    # Thousands of objects share a handful of contracts: read each valid one once (a broken one is
    # reported for every object that names it).
    contract = loader._contracts.get(path)
    if contract is None:
        contract = _read_contract(loader, path, ref, where)
        if contract is not None:
            loader._contracts[path] = contract
    return contract


def _read_contract(loader: _Loader, path: Path, ref: ContractRef, where: str) -> SchemaContract | None:
    if not path.exists():
        loader.problems.append(f"{where}.contract: {loader.label(path)} not found ({ref.name} v{ref.version})")
        return None
    contract = loader.parse(SchemaContract, path)
    if contract is None:
        return None
    if contract.name != ref.name or contract.version != ref.version:
        loader.problems.append(
            f"{loader.label(path)}: name/version: file declares {contract.name} v{contract.version}, "
            f"expected {ref.name} v{ref.version}"
        )
        return None
    return contract
