"""Code locations: runner.yaml splits tenants into locations that load alone; workspace.yaml follows."""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

import dativo_dagster.build as build
import dativo_dagster.locations as locations
from dativo_dagster.cli import main
from dativo_dagster.cli_workspace import check_workspace, workspace_entries, workspace_yaml
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.models import CodeLocations
from dativo_dagster.errors import ConfigError

SPLIT = "{groups: {eu: [acme, globex]}, default: us}"


def add_tenant(project: Path, tenant: str, job: str = "shop") -> Path:
    """The demo's job for ``tenant`` (its data root holds no files: loading never reads them)."""
    jobs = project / "tenants" / tenant / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    text = (project / "tenants/demo/jobs/shop.yaml").read_text()
    text = text.replace("tenant: demo", f"tenant: {tenant}").replace("tenants/demo/data", f"tenants/{tenant}/data")
    path = jobs / f"{job}.yaml"
    path.write_text(text.replace("\nname: shop\n", f"\nname: {job}\n"))
    return path


def write_runner(project: Path, tenants: list[str], code_locations: str | None = SPLIT) -> None:
    lines = ["version: 1"]
    if code_locations is not None:
        lines.append(f"code_locations: {code_locations}")
    lines.append("jobs:")
    lines += [f"  - {{tenant: {t}, job: shop, schedule: {{cron: '0 * * * *'}}}}" for t in tenants]
    (project / "runner.yaml").write_text("\n".join(lines) + "\n")


def settle(project: Path) -> None:
    """Date every file a minute back: the plan cache keeps no plan read while its files change."""
    past = time.time() - 60
    for path in project.rglob("*"):
        os.utime(path, (past, past), follow_symlinks=False)


@pytest.fixture
def split_project(project: Path) -> Path:
    """demo and initech in location ``us``, acme and globex in ``eu``."""
    for tenant in ("acme", "globex", "initech"):
        add_tenant(project, tenant)
    write_runner(project, ["demo", "acme", "globex", "initech"])
    settle(project)
    return project


def tenants_of(defs: dg.Definitions) -> set[str]:
    return {spec.key.path[0] for spec in defs.resolve_all_asset_specs()}


def test_each_location_loads_only_its_own_tenants(split_project: Path) -> None:
    assert locations.location_names() == ["eu", "us"]
    eu = locations.location_definitions("eu")
    us = locations.location_definitions("us")
    dg.Definitions.validate_loadable(eu)
    dg.Definitions.validate_loadable(us)
    assert tenants_of(eu) == {"acme", "globex"}
    assert tenants_of(us) == {"demo", "initech"}
    sensors = {s.name for s in eu.get_repository_def().sensor_defs}
    assert sensors == {"acme__shop__schedule", "globex__shop__schedule"}


def test_module_attribute_is_the_location_built_once_per_process(split_project: Path) -> None:
    # What Dagster's python_module target with `attribute: eu` does (ModuleCodePointer.load_target).
    assert hasattr(locations, "eu")
    first = locations.eu
    assert isinstance(first, dg.Definitions)
    assert locations.eu is first
    assert tenants_of(first) == {"acme", "globex"}


@pytest.mark.parametrize("name", ["nowhere", "Not-A-Name"])
def test_an_unknown_location_is_a_cfg001_listing_the_real_ones(split_project: Path, name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        getattr(locations, name)
    text = str(raised.value)
    assert text.startswith("CFG001: runner.yaml: code_locations:") and f"'{name}'" in text
    assert "locations: eu, us" in text


def test_private_names_stay_plain_attribute_errors(split_project: Path) -> None:
    assert not hasattr(locations, "__wrapped__")
    assert not hasattr(locations, "_anything")


def test_shards_put_every_tenant_in_exactly_one_location(project: Path) -> None:
    tenants = [f"tenant{i}" for i in range(12)]
    for tenant in tenants:
        add_tenant(project, tenant)
    write_runner(project, tenants, "{shards: 3}")
    names = locations.location_names()
    assert names == ["dativo_0", "dativo_1", "dativo_2"]
    loaded = [tenants_of(locations.location_definitions(name)) for name in names]
    assert sorted(t for group in loaded for t in group) == sorted(tenants)
    assert all(loaded)  # 12 tenants hash onto all 3 shards
    for name, group in zip(names, loaded, strict=True):
        assert {CodeLocations(shards=3).location_of(t) for t in group} == {name}


def test_the_definitions_module_keeps_every_tenant(split_project: Path) -> None:
    import dativo_dagster.definitions as module

    defs = importlib.reload(module).defs
    assert tenants_of(defs) == {"demo", "acme", "globex", "initech"}


def test_a_broken_job_stays_in_its_own_location(split_project: Path) -> None:
    job = split_project / "tenants/acme/jobs/shop.yaml"
    job.write_text(job.read_text().replace("strategy: append", "strategy: sometimes"))
    eu = locations.location_definitions("eu")
    keys = {spec.key.to_user_string() for spec in eu.resolve_all_asset_specs()}
    assert "acme/config_error/shop" in keys and "globex/csv/orders" in keys
    assert tenants_of(locations.location_definitions("us")) == {"demo", "initech"}


# --------------------------------------------------------------------------- the plan a location loads


def test_the_plan_is_read_once_per_process(split_project: Path) -> None:
    plan = build.code_location_plan(location="eu")
    assert build.code_location_plan(location="eu") is plan
    assert {job.tenant for job in plan.jobs} == {"acme", "globex"}


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def counting(project_dir: Path | str | None = None, **kwargs: object) -> object:
        calls.append(Path(str(project_dir)))
        return load_plan(project_dir, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "load_plan", counting)
    return calls


def _reload_plan(location: str = "eu") -> object:
    build.forget_plans()  # a new process
    return build.code_location_plan(location=location)


def test_a_later_process_takes_the_validated_plan_from_the_cache(
    split_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build.code_location_plan(location="eu")
    assert (split_project / ".dativo/cache/plan-eu.pickle").exists()
    loads = _count_loads(monkeypatch)
    again = _reload_plan()
    assert loads == []
    assert again is not first and again == first


def _edit_job(project: Path) -> None:
    job = project / "tenants/acme/jobs/shop.yaml"
    job.write_text(job.read_text().replace("Orders and customers", "Everything"))


def _add_recipe(project: Path) -> None:
    (project / "connectors/sources/extra.yaml").write_text("name: extra\ntype: csv\n")


def _edit_runner(project: Path) -> None:
    with (project / "runner.yaml").open("a") as runner:
        runner.write("  - {tenant: acme, job: shop2}\n")


def _relink_data_root(project: Path) -> None:
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, project / "tenants/acme/data")


@pytest.mark.parametrize("change", [_edit_job, _add_recipe, _edit_runner, _relink_data_root])
def test_any_changed_input_is_a_miss(split_project: Path, monkeypatch: pytest.MonkeyPatch, change: object) -> None:
    build.code_location_plan(location="eu")
    change(split_project)  # type: ignore[operator]
    loads = _count_loads(monkeypatch)
    plan = _reload_plan()
    assert loads == [split_project]
    if change is _edit_job:
        assert plan.job("acme/shop").job.description == "Everything of the demo shop"  # type: ignore[attr-defined]


def test_a_path_fixed_by_a_link_alone_is_seen(split_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job broken only by where a link leads loads again once the link is fixed, no file touched."""
    outside = split_project / "outside"
    outside.mkdir()
    data = split_project / "tenants/acme/data"
    data.mkdir()
    os.symlink(outside, data / "files")
    job = split_project / "tenants/acme/jobs/shop.yaml"
    job.write_text(job.read_text().replace("base_path: tenants/acme/data", "base_path: tenants/acme/data/files"))
    settle(split_project)
    assert [b.label for b in build.code_location_plan(location="eu").broken] == ["acme/shop"]
    (data / "files").unlink()
    (data / "files").mkdir()
    assert _reload_plan().broken == ()


def test_a_cache_file_others_may_write_is_ignored(split_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build.code_location_plan(location="eu")
    (split_project / ".dativo/cache/plan-eu.pickle").chmod(0o666)
    loads = _count_loads(monkeypatch)
    _reload_plan()
    assert loads == [split_project]


def test_a_plan_read_while_its_files_change_is_not_kept(split_project: Path) -> None:
    _edit_job(split_project)  # as if edited while the plan was being read
    build.code_location_plan(location="eu")
    assert not (split_project / ".dativo/cache/plan-eu.pickle").exists()


def test_a_corrupt_cache_file_is_a_miss(split_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build.code_location_plan(location="eu")
    cached = split_project / ".dativo/cache/plan-eu.pickle"
    cached.write_bytes(cached.read_bytes()[:-100])
    loads = _count_loads(monkeypatch)
    assert {job.tenant for job in _reload_plan().jobs} == {"acme", "globex"}  # type: ignore[attr-defined]
    assert loads == [split_project]


@pytest.mark.parametrize("env", ["DATIVO_PLAN_CACHE", "DATIVO_PARSE_CACHE"])
def test_the_plan_cache_can_be_switched_off(split_project: Path, monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "off")
    build.code_location_plan(location="eu")
    assert not (split_project / ".dativo/cache/plan-eu.pickle").exists()


# --------------------------------------------------------------------------- workspace.yaml


def test_workspace_has_one_entry_per_location(split_project: Path) -> None:
    runner = load_plan(split_project).runner
    document = yaml.safe_load(workspace_yaml(runner))
    assert document["load_from"] == [
        {"python_module": {"module_name": "dativo_dagster.locations", "attribute": name, "location_name": name}}
        for name in ("eu", "us")
    ]


def test_a_project_without_a_split_keeps_the_definitions_module(project: Path) -> None:
    runner = load_plan(project).runner
    assert workspace_entries(runner) == [
        {"python_module": {"module_name": "dativo_dagster.definitions", "location_name": "dativo"}}
    ]
    # The repository's own workspace.yaml is what `dativo workspace` writes for its runner.yaml.
    assert check_workspace(Path(__file__).resolve().parents[2] / "workspace.yaml", runner) == []


def test_workspace_command_writes_and_checks(split_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--project", str(split_project), "workspace", "--check"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--project", str(split_project), "workspace"]) == 0
    assert main(["--project", str(split_project), "workspace", "--check"]) == 0
    # Hand-edited comments and layout are fine; a location runner.yaml no longer has is not.
    path = split_project / "workspace.yaml"
    path.write_text("# ours\n" + path.read_text())
    assert main(["--project", str(split_project), "workspace", "--check"]) == 0
    write_runner(split_project, ["demo", "acme", "globex", "initech"], "{groups: {eu: [acme]}, shards: 2}")
    capsys.readouterr()
    assert main(["--project", str(split_project), "workspace", "--check"]) == 2
    err = capsys.readouterr().err
    assert "location 'dativo_0' is missing" in err and "location 'us' is not in runner.yaml" in err
    assert "run `dativo workspace`" in err
