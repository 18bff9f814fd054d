"""The tenant boundary at load: namespaces, one owner per table, data roots, isolated failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dativo_dagster.cli import main
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.models import TenantJob, namespace_belongs_to
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.registry import build_source
from tests.conftest import copy_demo_project

JOB = """tenant: {tenant}
name: {job}
source: {{recipe: csv{connection}}}
target: {{recipe: local{namespace}}}
objects:
  - name: {obj}
    contract: {{name: shop/orders, version: 1}}
    options: {{path: orders.csv}}
    incremental: {{strategy: append, cursor_field: order_id}}
"""


def add_job(
    root: Path, tenant: str, job: str, *, obj: str = "orders", namespace: str = "", connection: str = ""
) -> None:
    jobs = root / "tenants" / tenant / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    data = root / "tenants" / tenant / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "orders.csv").write_text((root / "tenants/demo/data/orders.csv").read_text())
    ns = f", namespace: {namespace}" if namespace else ""
    conn = f", connection: {{{connection}}}" if connection else ""
    (jobs / f"{job}.yaml").write_text(JOB.format(tenant=tenant, job=job, obj=obj, namespace=ns, connection=conn))
    with (root / "runner.yaml").open("a") as runner:
        runner.write(f"  - {{tenant: {tenant}, job: {job}}}\n")


@pytest.mark.parametrize(
    ("namespace", "tenant", "ok"),
    [
        ("acme", "acme", True),
        ("acme__raw", "acme", True),
        ("acme_corp", "acme", False),  # tenant acme_corp's namespace
        ("acme__", "acme", False),
        ("acme___x", "acme", False),
        ("acmecorp", "acme", False),
        ("other", "acme", False),
    ],
)
def test_a_namespace_belongs_to_exactly_one_tenant(namespace: str, tenant: str, ok: bool) -> None:
    assert namespace_belongs_to(namespace, tenant) is ok


def test_ids_cannot_hold_the_reserved_separator() -> None:
    for bad in ("acme__corp", "acme_", "_acme", "Acme", "a" * 64):
        with pytest.raises(ValueError, match="is not a safe identifier"):
            TenantJob.model_validate(
                {
                    "tenant": bad,
                    "name": "j",
                    "source": {"recipe": "csv"},
                    "target": {"recipe": "local"},
                    "objects": [{"name": "o"}],
                }
            )


def test_tenant_cannot_target_a_tenant_whose_id_extends_its_own(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm", namespace="acme_corp")
    plan = load_plan(root)
    assert [j.label for j in plan.jobs] == ["demo/shop"]
    (broken,) = plan.broken
    assert broken.label == "acme/crm"
    assert any("target.namespace 'acme_corp' must be the tenant id 'acme'" in line for line in broken.problems)


def test_two_jobs_of_one_tenant_cannot_share_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "first")
    add_job(root, "acme", "second")  # same object name, same namespace: the same table acme.orders
    plan = load_plan(root)
    assert {j.label for j in plan.jobs} == {"demo/shop", "acme/first"}
    (broken,) = plan.broken
    assert broken.label == "acme/second"
    assert "table acme.orders is already written by acme/first/orders" in broken.problems[0]
    assert main(["--project", str(root), "validate", "--offline"]) == 2
    assert "acme.orders is already written by acme/first/orders" in capsys.readouterr().err


def test_a_broken_tenant_never_stops_the_others(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm")
    (root / "tenants/acme/jobs/crm.yaml").write_text("tenant: acme\nname: crm\nobjects: [")
    plan = load_plan(root)
    assert [j.label for j in plan.jobs] == ["demo/shop"]
    assert plan.broken[0].label == "acme/crm"
    assert "invalid YAML" in plan.broken[0].problems[0]
    with pytest.raises(ConfigProblems):
        load_plan(root, strict=True)


def test_a_broken_shared_recipe_breaks_only_the_jobs_using_it(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm")
    (root / "connectors/sources/broken.yaml").write_text("name: broken\ntype: excel\n")
    job = root / "tenants/acme/jobs/crm.yaml"
    job.write_text(job.read_text().replace("recipe: csv", "recipe: broken"))
    plan = load_plan(root)
    assert [j.label for j in plan.jobs] == ["demo/shop"]
    assert any("connectors/sources/broken.yaml: type:" in line for line in plan.broken[0].problems)


@pytest.mark.parametrize("base_path", ["/etc", "tenants/demo/data/../../..", "tenants/demo/data"])
def test_base_path_outside_the_tenants_data_roots_is_refused_at_load(tmp_path: Path, base_path: str) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm", connection=f"base_path: '{base_path}'")
    plan = load_plan(root)
    (broken,) = plan.broken
    assert "source.connection.base_path" in broken.problems[0]
    assert "outside the tenant's data roots (tenants/acme/data)" in broken.problems[0]


def test_a_symlink_out_of_the_data_root_is_refused(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    (root / "tenants/acme/data").mkdir(parents=True)
    os.symlink(root / "tenants/demo/data", root / "tenants/acme/data/escape")
    add_job(root, "acme", "crm", connection="base_path: tenants/acme/data/escape")
    (broken,) = load_plan(root).broken
    assert "outside the tenant's data roots" in broken.problems[0]


def test_a_base_path_from_a_variable_is_confined_at_run_time(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm", connection="base_path: '${ACME_DIR}'")
    job = load_plan(root, strict=True).job("acme/crm")
    with pytest.raises(ConfigError, match=r"base_path: '/etc' is outside the tenant's data roots"):
        build_source(job, SecretResolver({"ACME_DIR": "/etc"}))
    assert build_source(job, SecretResolver({"ACME_DIR": "tenants/acme/data"})) is not None


def test_data_roots_are_configurable_per_deployment_and_per_job(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    shared = tmp_path / "landing" / "acme"
    shared.mkdir(parents=True)
    add_job(root, "acme", "crm", connection=f"base_path: '{shared}'")
    assert load_plan(root).broken
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace(
            "jobs:", f"data_roots: ['tenants/{{tenant}}/data', '{tmp_path}/landing/{{tenant}}']\njobs:"
        )
    )
    assert not load_plan(root).broken
    # the template names each tenant's own directory: demo may not read acme's landing folder
    demo = root / "tenants/demo/jobs/shop.yaml"
    demo.write_text(demo.read_text().replace("base_path: tenants/demo/data", f"base_path: '{shared}'"))
    assert [b.label for b in load_plan(root).broken] == ["demo/shop"]


def test_a_job_file_linking_outside_its_tenant_is_refused(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "crm")
    (root / "tenants/acme/jobs/crm.yaml").unlink()
    os.symlink(root / "tenants/demo/jobs/shop.yaml", root / "tenants/acme/jobs/crm.yaml")
    (broken,) = load_plan(root).broken
    assert "links outside tenants/acme" in broken.problems[0]


def test_cli_run_of_a_healthy_job_works_while_another_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_demo_project(tmp_path / "p")
    monkeypatch.setenv("DATIVO_HOME", str(root / ".dativo"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    add_job(root, "acme", "crm")
    (root / "tenants/acme/jobs/crm.yaml").write_text("tenant: acme\n")
    assert main(["--project", str(root), "run", "demo/shop", "--dry-run"]) == 0
    assert main(["--project", str(root), "run", "acme/crm", "--dry-run"]) == 2


def test_validate_reports_two_jobs_defining_one_asset_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_demo_project(tmp_path / "p")
    add_job(root, "acme", "first")
    add_job(root, "acme", "second", obj="orders")
    second = root / "tenants/acme/jobs/second.yaml"
    # another table, so only the asset key [acme, csv, orders] is shared
    second.write_text(second.read_text().replace("    contract:", "    table: orders_copy\n    contract:"))
    assert not load_plan(root).broken
    assert main(["--project", str(root), "validate", "--offline"]) == 2
    assert "asset key acme/csv/orders is already defined by acme/first" in capsys.readouterr().err


@pytest.mark.parametrize("link", ["data", "tenant_dir"])
def test_a_tenant_cannot_move_its_data_root_with_a_link(tmp_path: Path, link: str) -> None:
    root = copy_demo_project(tmp_path / "p")
    outside = tmp_path / "elsewhere"
    (outside / "data").mkdir(parents=True)
    (outside / "data" / "orders.csv").write_text("order_id\n1\n")
    if link == "data":
        (root / "tenants/evil/jobs").mkdir(parents=True)
        os.symlink(outside / "data", root / "tenants/evil/data")
    else:
        (outside / "jobs").mkdir()
        os.symlink(outside, root / "tenants/evil")
    (root / "tenants/evil/jobs/x.yaml").write_text(
        JOB.format(tenant="evil", job="x", obj="orders", namespace="", connection="")
    )
    with (root / "runner.yaml").open("a") as runner:
        runner.write("  - {tenant: evil, job: x}\n")
    (broken,) = load_plan(root).broken
    assert "is a symbolic link" in broken.problems[0] or "links outside tenants/evil" in broken.problems[0]


def test_a_platform_root_may_be_a_link(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    landing = tmp_path / "mnt" / "landing"
    (landing / "acme").mkdir(parents=True)
    os.symlink(tmp_path / "mnt", root / "shared")  # the platform's own mount point
    add_job(root, "acme", "crm", connection="base_path: shared/landing/acme")
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace("jobs:", "data_roots: ['tenants/{tenant}/data', 'shared/landing/{tenant}']\njobs:")
    )
    assert not load_plan(root).broken
