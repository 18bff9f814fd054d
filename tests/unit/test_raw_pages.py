"""Raw pages: layout, redaction, per-object observers, retention, and the replay's pure functions."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from pathlib import Path

import pytest
import structlog

from dativo_dagster.api.transport import Exchange
from dativo_dagster.config.loader import load_plan
from dativo_dagster.errors import ConfigError
from dativo_dagster.raw_pages import (
    INDEX_FILE,
    PageEntry,
    RawArchive,
    list_runs,
    raw_root,
    read_index,
    read_page,
    run_dir,
    scrub_body,
)
from dativo_dagster.replay import replayable
from tests.conftest import copy_demo_project

SECRET = "sk_live_canary_0123456789abcdef"


def exchange(
    status: int | None = 200, body: bytes = b'{"data": []}', url: str = "https://api.x/v1/items?limit=2"
) -> Exchange:
    return Exchange(
        component="x (1234)",
        method="GET",
        url=url,
        request_headers={"accept": "application/json"},
        request_body=None,
        status=status,
        response_headers={"content-type": "application/json", "set-cookie": "session=abc"},
        response_body=body,
        elapsed_s=0.0123,
        failure=None if status is not None else "refused",
    )


def test_token_fields_are_blanked_and_other_bodies_kept() -> None:
    body = json.dumps({"access_token": "ya29.tok", "nested": [{"client_secret": "s3"}], "email": "a@b.c"}).encode()
    scrubbed = json.loads(scrub_body(body))
    assert scrubbed == {"access_token": "***", "nested": [{"client_secret": "***"}], "email": "a@b.c"}
    assert scrub_body(b"not json {") == b"not json {"
    plain = b'{"data": [1]}'
    assert scrub_body(plain) is plain  # nothing to blank: the bytes are kept as they came


def test_pages_are_stored_compressed_indexed_and_checked(tmp_path: Path) -> None:
    archive = RawArchive(tmp_path, "acme", "crm", retention_days=3)
    observer = archive.observer({"tenant": "acme", "job": "crm", "object": "deals", "run_id": "r1"})
    assert observer is not None
    observer(exchange(body=b'{"data": [{"id": 1}], "access_token": "tok"}'))
    observer(exchange(status=500, body=b"oops"))
    observer(exchange(status=None, body=b""))
    directory = run_dir(tmp_path, "acme", "crm", "deals", "r1")
    entries = list(read_index(directory))
    assert [e.seq for e in entries] == [1, 2, 3]
    assert [e.ok for e in entries] == [True, False, False]
    assert entries[0].path == "/v1/items" and entries[0].query == "limit=2" and entries[2].failure == "refused"
    page = read_page(directory, entries[0])
    assert json.loads(page["body"]) == {"data": [{"id": 1}], "access_token": "***"}
    assert "set-cookie" not in page["response_headers"]
    with gzip.open(directory / entries[0].file, "rt") as handle:
        assert json.load(handle)["status"] == 200
    # A page that does not match its digest is refused.
    with gzip.open(directory / entries[1].file, "wt") as handle:
        json.dump({"body": "changed"}, handle)
    with pytest.raises(ConfigError, match="digest"):
        read_page(directory, entries[1])
    runs = list_runs(tmp_path, "acme", "crm", "deals")
    assert [(r.run_id, r.pages, r.failed) for r in runs] == [("r1", 3, 2)]


def test_parallel_exchanges_get_distinct_pages(tmp_path: Path) -> None:
    archive = RawArchive(tmp_path, "acme", "crm", retention_days=1)
    observer = archive.observer({"object": "deals", "run_id": "r1"})
    assert observer is not None

    def send() -> None:
        for _ in range(25):
            observer(exchange())

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = list(read_index(run_dir(tmp_path, "acme", "crm", "deals", "r1")))
    assert sorted(e.seq for e in entries) == list(range(1, 101))


def test_only_an_objects_run_is_kept(tmp_path: Path) -> None:
    archive = RawArchive(tmp_path, "acme", "crm", retention_days=1)
    assert archive.observer({}) is None  # a connection check outside any object's run
    assert archive.observer({"object": "deals", "run_id": "dry-run"}) is None
    assert archive.observer({"tenant": "other", "job": "crm", "object": "deals", "run_id": "r1"}) is None
    with pytest.raises(ConfigError, match="not a plain name"):
        archive.observer({"object": "deals", "run_id": "../escape"})


def test_runs_past_the_retention_are_removed(tmp_path: Path) -> None:
    archive = RawArchive(tmp_path, "acme", "crm", retention_days=2)
    for run_id, age_days in (("old", 3), ("young", 1)):
        directory = run_dir(tmp_path, "acme", "crm", "deals", run_id)
        directory.mkdir(parents=True)
        (directory / INDEX_FILE).write_text("")
        then = time.time() - age_days * 86_400
        os.utime(directory / INDEX_FILE, (then, then))
    removed = archive.prune()
    assert [p.name for p in removed] == ["old"]
    assert [r.run_id for r in list_runs(tmp_path, "acme", "crm", "deals")] == ["young"]


def test_index_entries_round_trip() -> None:
    entry = PageEntry(1, "2026-01-01T00:00:00+00:00", "GET", "/v1/x", "", 200, True, None, 3, "ab", 0.1)
    assert PageEntry.from_json(entry.to_json()) == entry
    assert json.loads(entry.to_json())["file"] == "000001.json.gz"


def test_raw_root_sits_beside_a_local_warehouse_and_under_home_for_a_remote_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = copy_demo_project(tmp_path / "project")
    job = load_plan(project, strict=True).job("demo/shop")
    monkeypatch.setenv("DATIVO_HOME", ".dativo")
    assert raw_root(job) == (project / ".dativo/raw").resolve()
    remote = job.target.model_copy(update={"warehouse": "s3://bucket/warehouse"})
    import dataclasses

    assert raw_root(dataclasses.replace(job, target=remote)) == project / ".dativo/raw"


def test_raw_retention_on_a_file_source_is_refused(tmp_path: Path) -> None:
    project = copy_demo_project(tmp_path / "project")
    job_file = project / "tenants/demo/jobs/shop.yaml"
    job_file.write_text(job_file.read_text().replace("objects:\n", "raw_retention_days: 3\nobjects:\n", 1))
    plan = load_plan(project)  # refused when the config is validated, before any run
    assert any(
        "raw_retention_days: source type 'csv' is not an API source" in problem
        for broken in plan.broken
        for problem in broken.problems
    )


def test_a_negative_retention_is_a_config_error(tmp_path: Path) -> None:
    project = copy_demo_project(tmp_path / "project")
    job_file = project / "tenants/demo/jobs/shop.yaml"
    job_file.write_text(job_file.read_text().replace("objects:\n", "raw_retention_days: -1\nobjects:\n", 1))
    plan = load_plan(project)
    assert any("raw_retention_days" in problem for broken in plan.broken for problem in broken.problems)


def test_a_full_refresh_object_is_replayed_without_replacing_the_table(tmp_path: Path) -> None:
    from dativo_dagster.config.models import WriteMode

    project = copy_demo_project(tmp_path / "project")
    job_file = project / "tenants/demo/jobs/shop.yaml"
    text = job_file.read_text()
    start = text.index("  - name: customers")
    job_file.write_text(
        text[:start] + "  - name: customers\n    contract: {name: shop/customers, version: 1}\n"
        "    options: {path: customers.csv}\n"
    )
    obj = load_plan(project, strict=True).job("demo/shop").object("customers")
    assert obj.write_mode is WriteMode.OVERWRITE
    assert replayable(obj).write_mode is WriteMode.MERGE
    orders = load_plan(project, strict=True).job("demo/shop").object("orders")
    assert replayable(orders) is orders


def test_transports_made_in_an_objects_log_context_feed_its_archive(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from dativo_dagster.api.source import ApiSource

    # The method alone: a source with an archive, as build_source leaves it for a job with a retention.
    source = SimpleNamespace(raw_archive=RawArchive(tmp_path, "acme", "crm", retention_days=1))
    with structlog.contextvars.bound_contextvars(tenant="acme", job="crm", object="deals", run_id="r9"):
        observers = ApiSource.object_observers(source)  # type: ignore[arg-type]
    assert len(observers) == 1
    observers[0](exchange(body=b'{"data": []}'))
    assert [e.seq for e in read_index(run_dir(tmp_path, "acme", "crm", "deals", "r9"))] == [1]
    assert ApiSource.object_observers(source) == []  # type: ignore[arg-type]  # outside any object's run
