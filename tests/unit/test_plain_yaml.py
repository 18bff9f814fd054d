"""Config YAML is plain, bounded data: bombs, cycles, duplicate keys and tags are CFG001 with a line."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.plain_yaml import MAX_DEPTH, YamlRefused, load_plain
from tests.conftest import copy_demo_project

BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
    "h: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
)


def test_alias_bomb_is_refused_without_expanding_it() -> None:
    assert len(BOMB) < 1024  # under a kilobyte, a billion nodes once expanded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(YamlRefused, match=r"aliases expand the document by [\d,]+ nodes"):
        load_plain(BOMB)
    grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kb < 50_000


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("a: &x [1, *x]\n", "a cycle", 1),
        ("a: &x {b: *x}\n", "a cycle", 1),
        ("name: shop\ntenant: demo\nname: other\n", "duplicate key 'name' (first at line 1)", 3),
        ("a: !!python/object/apply:os.system [ls]\n", "tag !!python/object/apply:os.system is not plain data", 1),
        ("a: !!binary aGVsbG8=\n", "tag !!binary is not plain data", 1),
        ("a: !!set {x, y}\n", "tag !!set is not plain data", 1),
        ("a: !custom x\n", "tag !custom is not plain data", 1),
        ("base: &b {x: 1}\nother:\n  <<: *b\n", "merge keys", 3),
        ("? [a, b]\n: 1\n", "mapping keys must be plain scalars", 1),
    ],
)
def test_not_plain_data_is_refused_with_its_line(text: str, message: str, line: int) -> None:
    with pytest.raises(YamlRefused) as refused:
        load_plain(text)
    assert message in str(refused.value)
    assert refused.value.line == line


def test_nesting_is_bounded() -> None:
    deep = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    with pytest.raises(YamlRefused, match="nesting deeper than"):
        load_plain(deep)


def test_plain_values_load_and_bare_dates_stay_text() -> None:
    data = load_plain("a: [1, 2.5, true, null]\nday: 2024-01-01\nat: 2024-01-01T10:00:00Z\nsmall: &s x\ncopy: *s\n")
    assert data == {
        "a": [1, 2.5, True, None],
        "day": "2024-01-01",
        "at": "2024-01-01T10:00:00Z",
        "small": "x",
        "copy": "x",
    }


@pytest.mark.parametrize("cache", ["off", "on"])
def test_loader_reports_the_bomb_as_cfg001_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str
) -> None:
    monkeypatch.setenv("DATIVO_PARSE_CACHE", cache)
    root = copy_demo_project(tmp_path / "p")
    job = root / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text() + BOMB.replace("a:", "x_a:", 1).replace("\nb:", "\nx_b:"))
    with pytest.raises(ConfigProblems) as problems:
        load_plan(root, strict=True)
    (line,) = problems.value.problems
    assert line.startswith("tenants/demo/jobs/shop.yaml: line ")
    assert "aliases expand the document" in line


def test_duplicate_key_in_a_job_file_is_cfg001(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    job = root / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text() + "name: shadow\n")
    with pytest.raises(ConfigProblems, match=r"shop.yaml: line \d+, column 1: duplicate key 'name'"):
        load_plan(root, strict=True)


def test_an_explicit_tag_with_a_bad_value_is_cfg001_with_its_line() -> None:
    with pytest.raises(YamlRefused, match=r"line 2, column 14: 'abc' is not a valid !!int"):
        load_plain("name: x\nmax_workers: !!int abc\n")


def test_aliases_are_bounded_by_the_text_they_add_too() -> None:
    text = 'd: &d "' + "x" * 600_000 + '"\nobjects: [*d, *d]\n'
    with pytest.raises(YamlRefused, match="bytes of text"):
        load_plain(text)


@pytest.mark.parametrize("kind", ["fifo", "sparse", "directory"])
def test_a_job_file_that_is_not_a_small_regular_file_breaks_only_its_job(tmp_path: Path, kind: str) -> None:
    import os

    root = copy_demo_project(tmp_path / "p")
    jobs = root / "tenants/evil/jobs"
    jobs.mkdir(parents=True)
    target = jobs / "x.yaml"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "sparse":
        with target.open("wb") as handle:
            handle.truncate(1 << 30)
    else:
        target.mkdir()
    with (root / "runner.yaml").open("a") as runner:
        runner.write("  - {tenant: evil, job: x}\n")
    plan = load_plan(root)  # returns at once: nothing blocks, nothing big is read
    assert [j.label for j in plan.jobs] == ["demo/shop"]
    (broken,) = plan.broken
    assert any(m in broken.problems[0] for m in ("not a regular file", "larger than 4 MB", "cannot be read"))
