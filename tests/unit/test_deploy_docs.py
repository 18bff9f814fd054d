"""docs/deploy.md cannot rot: every configuration block it shows is checked here.

``dagster.yaml`` blocks go through Dagster's own validation (instance schema, then each named
class's ``config_type()``: EcsRunLauncher, S3ComputeLogManager, dativo's storage and run
coordinator); Helm values and task definitions are parsed, since their schemas (the chart,
dagster-k8s, ECS) are not installed here.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from dativo_dagster.compat.dagster_instance import instance_config_problems
from tests.conftest import REPO
from tests.deploy_docs import GUIDE, Block, compute_logs_block, guide_blocks

FILE_KINDS = {"dagster.yaml", "workspace.yaml", "values.yaml"}


def _yaml_blocks(kind: str) -> list[Block]:
    return [block for block in guide_blocks() if block.language == "yaml" and block.file_kind == kind]


def _ecs_instance() -> dict[str, Any]:
    """The guide's full ECS dagster.yaml (the block with the launcher and compute logs)."""
    (full,) = [b.load() for b in _yaml_blocks("dagster.yaml") if {"run_launcher", "compute_logs"} <= set(b.load())]
    return full


def test_every_yaml_block_names_its_file_and_parses() -> None:
    blocks = [block for block in guide_blocks() if block.language == "yaml"]
    assert len(blocks) >= 5
    for block in blocks:
        assert block.file_kind in FILE_KINDS, f"{GUIDE.name}:{block.line}: first line must name the file"
        assert isinstance(block.load(), dict), f"{GUIDE.name}:{block.line}"


@pytest.mark.parametrize("block", _yaml_blocks("dagster.yaml"), ids=lambda block: f"line{block.line}")
def test_dagster_yaml_blocks_pass_dagsters_validation(block: Block) -> None:
    assert instance_config_problems(block.load()) == [], f"{GUIDE.name}:{block.line}"


def test_the_ecs_instance_uses_the_aws_classes_and_the_repository_limits() -> None:
    full = _ecs_instance()
    assert full["run_launcher"]["class"] == "EcsRunLauncher"
    assert full["compute_logs"]["class"] == "S3ComputeLogManager"
    repository = yaml.safe_load((REPO / "dagster.yaml").read_text())
    # The deployment keeps every setting of the repository's instance; it only adds to it.
    for key, value in repository.items():
        assert full[key] == value, key
    assert full["compute_logs"] == compute_logs_block()["compute_logs"]


def test_the_validation_refuses_what_dagster_refuses() -> None:
    full = _ecs_instance()
    full["run_launcher"]["config"]["task_role"] = "arn:aws:iam::123456789012:role/x"  # task_role_arn
    del full["compute_logs"]["config"]["bucket"]
    full["concurrency"]["runs"]["max_concurrent"] = 3
    problems = instance_config_problems(full)
    assert any(p.startswith("run_launcher:") and "task_role" in p for p in problems), problems
    assert any(p.startswith("compute_logs:") and "bucket" in p for p in problems), problems
    assert any(p.startswith("dagster.yaml:") and "max_concurrent" in p for p in problems), problems
    assert instance_config_problems({"run_launcher": {"module": "no_such_module", "class": "X"}})


def test_the_repository_instance_passes() -> None:
    assert instance_config_problems(yaml.safe_load((REPO / "dagster.yaml").read_text())) == []


def test_workspace_blocks_load_grpc_servers() -> None:
    (block,) = _yaml_blocks("workspace.yaml")
    entries = block.load()["load_from"]
    assert entries and all(set(entry["grpc_server"]) == {"host", "port", "location_name"} for entry in entries)


def test_helm_values_use_this_image_and_dativos_run_coordinator() -> None:
    (block,) = _yaml_blocks("values.yaml")
    values = block.load()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert deployment["dagsterApiGrpcArgs"][:2] == ["--module-name", "dativo_dagster.locations"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    # The chart writes this block into dagster.yaml as the run coordinator: Dagster's checks apply.
    coordinator = values["dagsterDaemon"]["runCoordinator"]["config"]["customRunCoordinator"]
    assert instance_config_problems({"run_coordinator": coordinator}) == []
    mounts = [mount["mountPath"] for mount in deployment["volumeMounts"]]
    assert any(re.search(r"\$\{file:" + re.escape(path) + r"/", GUIDE.read_text()) for path in mounts)


def test_json_blocks_are_task_definitions() -> None:
    blocks = [block for block in guide_blocks() if block.language == "json"]
    assert blocks
    for block in blocks:
        task = json.loads(block.text)
        (container,) = task["containerDefinitions"]
        names = {item["name"] for item in container["environment"]} | {item["name"] for item in container["secrets"]}
        assert {"DAGSTER_CURRENT_IMAGE", "DATIVO_DAGSTER_PG_URL", "DATIVO_COMPUTE_LOGS_BUCKET"} <= names
        assert all(item["valueFrom"].startswith("arn:aws:") for item in container["secrets"])


def test_container_context_is_json() -> None:
    (line,) = [line for line in GUIDE.read_text().splitlines() if line.startswith("DAGSTER_CONTAINER_CONTEXT=")]
    context = json.loads(line.split("=", 1)[1].strip("'"))
    assert set(context) == {"ecs"} and context["ecs"]["task_role_arn"].startswith("arn:aws:iam::")


def test_readme_links_the_guide() -> None:
    readme = (REPO / "README.md").read_text()
    assert "(docs/deploy.md)" in readme
    assert "dagster-aws" in readme


def test_the_commented_block_in_dagster_yaml_is_the_guides() -> None:
    text = (REPO / "dagster.yaml").read_text()
    start = text.index("# compute_logs:")
    commented = "\n".join(line.removeprefix("# ") for line in text[start:].splitlines())
    assert yaml.safe_load(commented) == compute_logs_block()
