"""A corpus of broken config files: each must give a CFG001 naming the file and the field path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dativo_dagster.cli import main
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.errors import ConfigError
from tests.conftest import copy_demo_project

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "broken_config"
CASES = sorted(CORPUS.glob("*.yaml"))


def _header(path: Path, key: str) -> str:
    match = re.search(rf"^# {key}: (.+)$", path.read_text(), re.M)
    assert match, f"{path.name} lacks a '# {key}:' header"
    return match.group(1).strip()


def _broken_project(tmp_path: Path, case: Path) -> Path:
    root = copy_demo_project(tmp_path / "p")
    (root / _header(case, "target")).write_text(case.read_text())
    return root


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_broken_file_gives_cfg001_with_file_and_path(tmp_path: Path, case: Path) -> None:
    root = _broken_project(tmp_path, case)
    with pytest.raises(ConfigProblems) as info:
        load_plan(root, strict=True)
    error = info.value
    assert isinstance(error, ConfigError)
    assert error.code == "CFG001"
    expected = _header(case, "expect")
    assert any(expected in line for line in error.problems), error.problems
    for line in error.problems:
        assert "\n" not in line and "Traceback" not in line
        assert str(tmp_path) not in line, "messages name files relative to the project"


@pytest.mark.parametrize("case", CASES[:5], ids=[c.stem for c in CASES[:5]])
def test_cli_validate_prints_one_line_per_problem(
    tmp_path: Path, case: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _broken_project(tmp_path, case)
    code = main(["--project", str(root), "validate", "--offline"])
    captured = capsys.readouterr()
    assert code == 2
    assert "CFG001" in captured.err
    assert _header(case, "expect").split(": ")[0] in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    (root / "connectors/sources/csv.yaml").write_text("name: csv\ntype: excel\n")
    (root / "connectors/schemas/shop/orders.v1.yaml").write_text("name: shop/orders\nversion: 1\ncolumns: []\n")
    with pytest.raises(ConfigProblems) as info:
        load_plan(root, strict=True)
    assert len(info.value.problems) >= 2
    assert str(info.value).count("CFG001: ") == len(info.value.problems)


def test_missing_runner_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems) as info:
        load_plan(tmp_path)
    assert info.value.problems == ["runner.yaml: file not found"]
