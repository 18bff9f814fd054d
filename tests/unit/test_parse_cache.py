"""The parse cache saves YAML parsing only: a changed file is always read again, a bad cache is ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dativo_dagster.config import parse_cache
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.parse_cache import MISSING, ParseCache, content_digest

JOB_FILE = Path("tenants/demo/jobs/shop.yaml")


def cache_file(project: Path) -> Path:
    return project / ".dativo" / "cache" / "parsed-yaml.json"


def count_yaml_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls to PyYAML made by the loader."""
    import dativo_dagster.config.loader as loader

    calls = [0]
    real_load = loader.load_plain

    def counting_load(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return real_load(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader, "load_plain", counting_load)
    return calls


def test_second_load_parses_nothing_and_gives_the_same_plan(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_yaml_parses(monkeypatch)
    first = load_plan(project, strict=True)
    parsed_first = calls[0]
    assert parsed_first >= 4 and cache_file(project).exists()  # runner, job, recipes, contracts
    second = load_plan(project, strict=True)
    assert calls[0] == parsed_first  # nothing parsed again
    assert second.jobs == first.jobs and second.runner == first.runner


def test_a_changed_file_is_parsed_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_plan(project, strict=True)
    calls = count_yaml_parses(monkeypatch)
    job_file = project / JOB_FILE
    text = job_file.read_text()
    assert "description: Orders and" in text
    # Same size, same modification time: only the content differs, and the cache still sees it.
    stat = job_file.stat()
    job_file.write_text(text.replace("description: Orders and", "description: Orders und", 1))
    os.utime(job_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert job_file.stat().st_size == stat.st_size
    plan = load_plan(project, strict=True)
    assert calls[0] == 1  # only the job file
    assert plan.job("demo/shop").job.description == "Orders und customers of the demo shop"


def test_a_file_broken_after_caching_is_reported(project: Path) -> None:
    load_plan(project, strict=True)
    (project / JOB_FILE).write_text("tenant: demo\nname: shop\nobjects: [\n")
    with pytest.raises(ConfigProblems) as raised:
        load_plan(project, strict=True)
    assert "tenants/demo/jobs/shop.yaml: line" in str(raised.value)


def test_stale_entries_are_dropped(project: Path) -> None:
    load_plan(project, strict=True)
    before = json.loads(cache_file(project).read_text())["entries"]
    job_file = project / JOB_FILE
    job_file.write_text(job_file.read_text() + "\n# a comment changes the digest\n")
    load_plan(project, strict=True)
    after = json.loads(cache_file(project).read_text())["entries"]
    assert len(after) == len(before)
    assert content_digest(job_file.read_bytes()) in after
    assert set(before) - set(after)  # the old digest of the job file is gone


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "entries": {}}', "[]", ""])
def test_a_corrupt_or_foreign_cache_is_ignored(project: Path, content: str) -> None:
    expected = load_plan(project, strict=True)
    cache_file(project).write_text(content)
    assert load_plan(project, strict=True).jobs == expected.jobs
    assert json.loads(cache_file(project).read_text())["format"] == parse_cache._FORMAT  # rewritten


def test_cached_documents_are_checked_again(project: Path) -> None:
    """A cache written by another dativo version (or edited) cannot skip the reference check."""
    load_plan(project, strict=True)
    job_file = project / JOB_FILE
    data = json.loads(cache_file(project).read_text())
    digest = content_digest(job_file.read_bytes())
    data["entries"][digest] = {**data["entries"][digest], "description": "bad ${FOO"}
    cache_file(project).write_text(json.dumps(data))
    with pytest.raises(ConfigProblems, match=r"tenants/demo/jobs/shop.yaml: malformed variable reference"):
        load_plan(project, strict=True)
    data["entries"][digest] = ["not", "a", "mapping"]
    cache_file(project).write_text(json.dumps(data))
    with pytest.raises(ConfigProblems, match=r"shop.yaml: \(top level\): expected a mapping, got list"):
        load_plan(project, strict=True)


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_an_empty_file_is_reported_every_time(project: Path, text: str) -> None:
    (project / JOB_FILE).write_text(text)
    for _ in range(2):  # parsed, then (None is valid JSON) found in the cache
        with pytest.raises(ConfigProblems, match=r"shop.yaml: \(top level\): expected a mapping, got NoneType"):
            load_plan(project, strict=True)


def test_a_foreign_version_cache_is_not_used(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_plan(project, strict=True)
    data = json.loads(cache_file(project).read_text())
    data["dativo"] = "0.0.0-other"
    cache_file(project).write_text(json.dumps(data))
    calls = count_yaml_parses(monkeypatch)
    load_plan(project, strict=True)
    assert calls[0] >= 4


def test_disabled_by_environment(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parse_cache.CACHE_ENV, "off")
    load_plan(project, strict=True)
    assert not cache_file(project).exists()


def test_cache_path_from_environment(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere" / "cache.json"
    monkeypatch.setenv(parse_cache.CACHE_ENV, str(elsewhere))
    load_plan(project, strict=True)
    assert elsewhere.exists() and not cache_file(project).exists()
    monkeypatch.setenv(parse_cache.CACHE_ENV, "state/parsed.json")  # relative: to the project
    load_plan(project, strict=True)
    assert (project / "state" / "parsed.json").exists()


@pytest.mark.parametrize("switch", ["on", "1", "true", "yes", ""])
def test_switch_words_mean_the_default_location(project: Path, monkeypatch: pytest.MonkeyPatch, switch: str) -> None:
    monkeypatch.setenv(parse_cache.CACHE_ENV, switch)
    load_plan(project, strict=True)
    assert cache_file(project).exists() and not (project / switch).is_file()


def test_unwritable_cache_location_does_not_fail_the_load(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = project / "blocker"
    blocker.write_text("a file where a directory would go")
    monkeypatch.setenv(parse_cache.CACHE_ENV, str(blocker / "cache.json"))
    assert load_plan(project, strict=True).jobs


def test_documents_json_cannot_represent_are_not_stored(tmp_path: Path) -> None:
    import datetime as dt

    cache = ParseCache(tmp_path / "c.json")
    cache.put("a", {"when": dt.date(2024, 1, 1)})
    cache.put("b", {1: "integer key"})
    cache.put("c", {"plain": [1, 2.5, True, None, "x"]})
    assert cache.get("a") is MISSING and cache.get("b") is MISSING
    cache.save()
    reread = ParseCache(tmp_path / "c.json")
    assert reread.get("c") == {"plain": [1, 2.5, True, None, "x"]}
    assert reread.get("a") is MISSING
