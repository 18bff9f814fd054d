"""The gdrive_csv source against the Google emulator: paging, the modifiedTime cursor, ties,
re-uploads, exports, subfolders, shared drives, ranges, quotas and every error class."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.google_api import GoogleEmulator
from tests.fakes.server import FakeServer, Limit
from tests.integration.google_project import QUICK_RETRIES, SA_EMAIL, GoogleProject, ok

MTIME = {"strategy": "file_mtime"}
UPLOADS = itertools.count(1)
CONTRACT = {"name": "drive/items", "version": 1}


def csv_rows(first: int, count: int, label: str = "item") -> str:
    return "id,label,amount\n" + "".join(f"{i},{label} {i},{i}.25\n" for i in range(first, first + count))


@pytest.fixture
def google() -> Iterator[tuple[GoogleEmulator, FakeServer, dict[str, Any]]]:
    emulator = GoogleEmulator()
    server = emulator.serve().start()
    key = emulator.add_service_account(SA_EMAIL)
    try:
        yield emulator, server, key
    finally:
        server.stop()


def project(tmp_path: Path, google: Any, folder: str, **options: Any) -> GoogleProject:
    _, server, key = google
    strategy = options.pop("incremental", MTIME)
    options.setdefault("settle_seconds", 0)  # files are added "now" by most tests
    obj = {"name": "items", "contract": CONTRACT, "incremental": strategy, "options": {"folder_id": folder, **options}}
    return GoogleProject(tmp_path, "gdrive_csv", server.url, [obj], key)


def media_reads(emulator: GoogleEmulator) -> list[Any]:
    return [r for r in emulator.request_log if ("alt", "media") in r.query]


def test_pages_of_files_incremental_cursor_and_a_quiet_rerun(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    for n in range(12):
        emulator.add_file(
            f"part-{n:02d}.csv", csv_rows(n * 10 + 1, 10), parent=folder, modified_time=f"2024-05-01T10:00:{n:02d}.000Z"
        )
    emulator.add_file("readme.txt", "not a csv", parent=folder)
    run = project(tmp_path, google, folder, page_size=5)
    first = ok(run.run("items"))
    assert first.write is not None and first.write.rows_written == 120
    lists = [r for r in emulator.request_log if r.path == "/drive/v3/files"]
    assert len(lists) == 3 and all(("pageSize", "5") in r.query for r in lists)
    rows = run.rows("items")
    assert [r["id"] for r in rows] == list(range(1, 121))
    assert rows[0]["amount"] == decimal.Decimal("1.25") and rows[0]["_dativo_file_name"] == "part-00.csv"
    assert rows[0]["_dativo_file_modified"] == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc)
    assert len({r["_dativo_file"] for r in rows}) == 12

    emulator.add_file("part-12.csv", csv_rows(121, 10), parent=folder, modified_time="2024-05-02T00:00:00.000Z")
    before = len(media_reads(emulator))
    second = ok(run.run("items", run_id="r2"))
    assert second.write is not None and second.write.rows_written == 10
    assert len(media_reads(emulator)) - before == 1  # only the new file was downloaded
    # The listing asked Drive for files modified at or after the cursor, not for every file.
    assert any("modifiedTime >= '2024-05-01T10:00:11.000Z'" in dict(r.query).get("q", "") for r in emulator.request_log)

    before = len(media_reads(emulator))
    third = ok(run.run("items", run_id="r3"))
    assert third.write is not None and third.write.rows_written == 0 and not third.write.committed
    assert len(media_reads(emulator)) == before
    assert len(run.rows("items")) == 130


def test_a_reuploaded_file_replaces_its_own_rows(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    first = emulator.add_file("a.csv", csv_rows(1, 5), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
    emulator.add_file("b.csv", csv_rows(6, 5), parent=folder, modified_time="2024-05-01T10:00:01.000Z")
    run = project(tmp_path, google, folder)
    ok(run.run("items"))
    emulator.update_file(first, csv_rows(1, 3, label="fixed"), modified_time="2024-05-03T00:00:00.000Z")
    result = ok(run.run("items", run_id="r2"))
    assert result.write is not None and result.write.rows_written == 3
    rows = run.rows("items")
    assert [r["id"] for r in rows] == [1, 2, 3, 6, 7, 8, 9, 10]
    assert {r["label"] for r in rows if r["_dativo_file"] == first} == {"fixed 1", "fixed 2", "fixed 3"}


def test_ties_on_modified_time_load_each_file_once(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    stamp = "2024-05-01T10:00:00.500Z"
    emulator.add_file("a.csv", csv_rows(1, 5), parent=folder, modified_time=stamp)
    run = project(tmp_path, google, folder)
    ok(run.run("items"))
    # Another file lands in the very millisecond the cursor records, after the first run read it.
    emulator.add_file("b.csv", csv_rows(6, 5), parent=folder, modified_time=stamp)
    result = ok(run.run("items", run_id="r2"))
    assert result.write is not None and result.write.rows_written == 5
    assert [r["id"] for r in run.rows("items")] == list(range(1, 11))
    assert ok(run.run("items", run_id="r3")).write.rows_written == 0  # type: ignore[union-attr]


def test_native_spreadsheets_subfolders_and_ranges(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    sub = emulator.add_folder("2024", parent=folder)
    deeper = emulator.add_folder("05", parent=sub)
    emulator.add_file("top.csv", csv_rows(1, 3), parent=folder)
    emulator.add_file("nested.csv", csv_rows(4, 3), parent=deeper)
    emulator.add_spreadsheet("Sheet export", {"Data": [["id", "label", "amount"], [7, "sheet 7", 7.5]]}, parent=sub)
    big = "id,label,amount\n" + "".join(f"{i},{'x' * 50},{i}.00\n" for i in range(100, 400))
    emulator.add_file("big.csv", big, parent=folder)
    run = project(tmp_path, google, folder, recursive=True, download_chunk_bytes=4096)
    ok(run.run("items"))
    ids = [r["id"] for r in run.rows("items")]
    assert ids == [1, 2, 3, 4, 5, 6, 7, *range(100, 400)]
    assert next(r for r in run.rows("items") if r["id"] == 7)["amount"] == decimal.Decimal("7.50")
    big_id = next(r["_dativo_file"] for r in run.rows("items") if r["id"] == 100)
    ranges = [r for r in media_reads(emulator) if r.path.endswith(big_id)]
    assert len(ranges) == -(-len(big.encode()) // 4096)  # streamed in range requests of the chunk size
    assert any(r.path.endswith("/export") for r in emulator.request_log)

    flat = project(tmp_path / "flat", google, folder, google_sheets=False)
    ok(flat.run("items"))
    assert [r["id"] for r in flat.rows("items")][:3] == [1, 2, 3] and 4 not in [r["id"] for r in flat.rows("items")]


def test_a_folder_in_a_shared_drive(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    drive = emulator.add_shared_drive("Finance", members=[SA_EMAIL])
    folder = emulator.add_folder("exports", drive_id=drive)
    emulator.add_file("a.csv", csv_rows(1, 4), parent=folder)
    run = project(tmp_path, google, folder, shared_drive_id=drive)
    ok(run.run("items"))
    assert len(run.rows("items")) == 4
    listed = [r for r in emulator.request_log if r.path == "/drive/v3/files"]
    assert all(("supportsAllDrives", "true") in r.query and ("driveId", drive) in r.query for r in listed)


def test_drive_quota_answers_are_waited_out(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    for n in range(6):
        emulator.add_file(f"p{n}.csv", csv_rows(n * 2 + 1, 2), parent=folder)
    emulator.configure(limits={"drive": Limit(rps=4, kind="rolling", window=1.0, name="QueriesPer100SecondsPerUser")})
    run = project(tmp_path, google, folder, prefetch_files=0)
    result = ok(run.run("items"))
    assert len(run.rows("items")) == 12
    assert result.source_stats["http_429"] > 0 and result.source_stats["retries"] > 0
    assert emulator.stats.status_count(403) > 0  # Drive said userRateLimitExceeded, dativo waited


def test_errors_are_coded_and_name_what_to_fix(tmp_path: Path, google: Any) -> None:
    emulator, server, _ = google
    hidden = emulator.add_folder("private")  # not shared with the service account
    run = project(tmp_path, google, hidden)
    result = run.run("items")
    assert result.error is not None and result.error.code == "CFG001"
    assert hidden in str(result.error) and SA_EMAIL in f"{result.error} {result.error.hint}"
    with run.source() as source, pytest.raises(Exception) as checked:
        source.check_object(run.job.object("items"))
    assert getattr(checked.value, "code", None) == "CFG001"

    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    emulator.add_file("a.csv", csv_rows(1, 2), parent=folder)
    # A key the token endpoint does not know (signed by a key registered for another account).
    forged = {**google[2], "client_email": "nobody@acme-data.iam.gserviceaccount.com"}
    denied = GoogleProject(
        tmp_path / "forged",
        "gdrive_csv",
        server.url,
        [{"name": "items", "contract": CONTRACT, "incremental": MTIME, "options": {"folder_id": folder}}],
        forged,
    )
    result = denied.run("items")
    assert result.error is not None and result.error.code == "AUTH001"
    assert forged["private_key"] not in str(result.error)

    emulator.inject("status", status=403, reason="insufficientPermissions", count=1, path="/drive/v3/files")
    result = project(tmp_path / "scopes", google, folder).run("items")
    assert result.error is not None and result.error.code == "AUTH001"

    emulator.inject("status", status=503, count=50, path="/drive/v3/files")
    result = GoogleProject(
        tmp_path / "down2",
        "gdrive_csv",
        server.url,
        [{"name": "items", "contract": CONTRACT, "incremental": MTIME, "options": {"folder_id": folder}}],
        google[2],
        connection=QUICK_RETRIES,
    ).run("items")
    emulator.clear_faults()
    assert result.error is not None and result.error.code == "RETRY001"


def test_dativo_requests_conform_to_the_discovery_documents(tmp_path: Path, google: Any) -> None:
    from tests.fakes.specs import require_vendor_specs, validate_request

    require_vendor_specs("drive")
    require_vendor_specs("sheets")
    emulator, server, key = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    sub = emulator.add_folder("sub", parent=folder)
    emulator.add_file("a.csv", csv_rows(1, 300), parent=sub)
    emulator.add_spreadsheet("Sheet", {"Data": [["id", "label", "amount"], [900, "x", 1]]}, parent=folder)
    ok(project(tmp_path, google, folder, recursive=True, download_chunk_bytes=2048, page_size=1).run("items"))
    book = emulator.add_spreadsheet(
        "Book", {"Sheet1": [["id", "label", "amount"], [1, "a", 2.5]]}, shared_with=[SA_EMAIL]
    )
    sheet = GoogleProject(
        tmp_path / "sheets",
        "google_sheets",
        server.url,
        [{"name": "items", "contract": CONTRACT, "incremental": {"strategy": "full_refresh"},
          "options": {"spreadsheet_id": book, "range": "A1:C"}}],
        key,
    )  # fmt: skip
    ok(sheet.run("items"))
    problems: list[str] = []
    checked = {"drive": 0, "sheets": 0}
    for request in emulator.request_log:
        api = "drive" if request.path.startswith("/drive/") else "sheets" if request.path.startswith("/v4/") else None
        if api is None:
            continue  # the OAuth token endpoint is not in the discovery documents
        checked[api] += 1
        found = validate_request(api, request.method, request.path, request.query)
        problems += [f"{request.method} {request.path}: {problem}" for problem in found]
    assert not problems, problems
    assert checked["drive"] >= 8 and checked["sheets"] >= 2, checked


def test_the_new_file_sensor_watches_the_drive_folder(tmp_path: Path, google: Any, monkeypatch: Any) -> None:
    import dagster as dg

    from dativo_dagster.build import build_definitions
    from dativo_dagster.config.loader import load_plan

    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    emulator.add_file("a.csv", csv_rows(1, 2), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
    run = project(tmp_path, google, folder)
    for name, value in run.env.items():
        monkeypatch.setenv(name, value)
    defs = build_definitions(load_plan(run.root, strict=True))
    sensor = defs.resolve_sensor_def("acme__db__new_files")
    assert sensor.asset_selection is not None
    cursor: str | None = None

    def tick(instance: dg.DagsterInstance) -> Any:
        nonlocal cursor
        with dg.build_sensor_context(cursor=cursor, instance=instance, definitions=defs) as context:
            data = sensor.evaluate_tick(context)
        cursor = data.cursor
        return data

    with dg.instance_for_test() as instance:
        (first,) = tick(instance).run_requests or []  # never loaded: the folder's file arrives
        assert "a.csv" in first.tags["dativo/new_files"]
        assert not tick(instance).run_requests
        emulator.add_file("b.csv", csv_rows(3, 2), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
        (tie,) = tick(instance).run_requests or []  # the same millisecond as a.csv: still new
        assert "b.csv" in tie.tags["dativo/new_files"] and "a.csv" not in tie.tags["dativo/new_files"]
        first_id = next(f for f in emulator.items.values() if f.name == "a.csv").id
        emulator.update_file(first_id, csv_rows(1, 3), modified_time="2024-05-02T00:00:00.000Z")
        (reupload,) = tick(instance).run_requests or []
        assert "a.csv" in reupload.tags["dativo/new_files"] and reupload.run_key not in (first.run_key, tie.run_key)
        assert not tick(instance).run_requests


def test_files_inside_the_settle_window_wait_for_a_later_run(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    emulator.add_file("old.csv", csv_rows(1, 2), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
    fresh = emulator.add_file("fresh.csv", csv_rows(3, 2), parent=folder)  # modified just now
    run = project(tmp_path, google, folder, settle_seconds=600)
    ok(run.run("items"))
    assert [r["id"] for r in run.rows("items")] == [1, 2]
    with run.source() as source:  # the sensor does not see it yet either
        assert [f.name for f in source.list_files(run.job.object("items"))] == ["old.csv"]
    emulator.set_modified(fresh, "2024-05-01T11:00:00.000Z")  # as if the window had passed
    ok(run.run("items", run_id="r2"))
    assert [r["id"] for r in run.rows("items")] == [1, 2, 3, 4]


def _reupload_before_each_download(monkeypatch: Any, emulator: GoogleEmulator, times: int) -> list[str]:
    """Re-upload a file just before dativo downloads it, ``times`` times (a busy uploader)."""
    from dativo_dagster.sources.google import drive as drive_module

    original = drive_module.Drive.download
    seen: list[str] = []

    def racing(self: Any, file: Any, fd: int, *, chunk_bytes: int) -> str:
        if file.name == "busy.csv" and len(seen) < times:
            seen.append(file.id)
            version = next(UPLOADS)  # every upload's bytes differ from every earlier one's
            emulator.update_file(file.id, csv_rows(100 + len(seen) * 10, 2, label=f"v{version}"))
        return original(self, file, fd, chunk_bytes=chunk_bytes)

    monkeypatch.setattr(drive_module.Drive, "download", racing)
    return seen


def test_a_file_changed_while_downloaded_is_read_again_or_nothing_is_committed(
    tmp_path: Path, google: Any, monkeypatch: Any
) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    emulator.add_file("calm.csv", csv_rows(1, 2), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
    emulator.add_file("busy.csv", csv_rows(50, 2), parent=folder, modified_time="2024-05-01T10:00:01.000Z")

    # Changed once: the new version is looked up and read whole.
    once = _reupload_before_each_download(monkeypatch, emulator, times=1)
    run = project(tmp_path, google, folder, incremental={"strategy": "full_refresh"}, prefetch_files=0)
    ok(run.run("items"))
    assert len(once) == 1 and [r["id"] for r in run.rows("items")] == [1, 2, 110, 111]

    # Changed at every download: a full refresh commits nothing rather than drop the file's rows.
    monkeypatch.undo()
    _reupload_before_each_download(monkeypatch, emulator, times=10)
    result = run.run("items", run_id="r2")
    assert result.error is not None and result.error.code == "EXT001" and "busy.csv" in str(result.error)
    assert [r["id"] for r in run.rows("items")] == [1, 2, 110, 111]

    # An incremental read skips it with a note; its newest version is read by a later run.
    incremental = project(tmp_path / "inc", google, folder, prefetch_files=0)
    result = ok(incremental.run("items"))
    assert [r["id"] for r in incremental.rows("items")] == [1, 2]
    assert any("changed while being read" in note for note in result.notes)


def test_deleted_and_empty_files(tmp_path: Path, google: Any, monkeypatch: Any) -> None:
    from dativo_dagster.sources.google import drive as drive_module

    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    emulator.add_file("a.csv", csv_rows(1, 2), parent=folder, modified_time="2024-05-01T10:00:00.000Z")
    doomed = emulator.add_file("gone.csv", csv_rows(3, 2), parent=folder, modified_time="2024-05-01T10:00:01.000Z")
    emulator.add_file("empty.csv", "", parent=folder, modified_time="2024-05-01T10:00:02.000Z")
    original = drive_module.Drive.download

    def deleting(self: Any, file: Any, fd: int, *, chunk_bytes: int) -> str:
        if file.id == doomed:
            emulator.delete(doomed)  # deleted between the listing and its download
        return original(self, file, fd, chunk_bytes=chunk_bytes)

    monkeypatch.setattr(drive_module.Drive, "download", deleting)
    run = project(tmp_path, google, folder, prefetch_files=0)
    result = ok(run.run("items"))
    assert [r["id"] for r in run.rows("items")] == [1, 2]
    assert any("deleted or unshared" in note for note in result.notes)
    assert result.write is not None and result.write.cursor is not None
    cursor = result.write.cursor.value
    assert "pending" not in cursor and cursor["paths"] and cursor["mtime_ns"] == 1714557602000000000
    # Nothing is pending: the next run asks only for files modified since the cursor.
    ok(run.run("items", run_id="r2"))
    last_list = [r for r in emulator.request_log if r.path == "/drive/v3/files"][-1]
    assert "modifiedTime >= '2024-05-01T10:00:02.000Z'" in dict(last_list.query)["q"]


def test_drive_refusals_of_one_file_are_named(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    folder = emulator.add_folder("drops", shared_with=[SA_EMAIL])
    book = emulator.add_spreadsheet("Huge", {"Data": [["id", "label", "amount"], [1, "x", 1]]}, parent=folder)
    emulator.inject(
        "status", status=403, reason="exportSizeLimitExceeded", count=1, path=f"/drive/v3/files/{book}/export"
    )
    result = project(tmp_path, google, folder).run("items")
    assert result.error is not None and result.error.code == "EXT001" and not result.error.transient
    assert "exportSizeLimitExceeded" in str(result.error) and book in str(result.error)
    emulator.inject("status", status=403, reason="insufficientFilePermissions", count=1, path=f"/drive/v3/files/{book}")
    result = project(tmp_path / "perm", google, folder).run("items")
    assert (
        result.error is not None and result.error.code == "CFG001" and SA_EMAIL in f"{result.error} {result.error.hint}"
    )
    emulator.inject("status", status=403, reason="dailyLimitExceeded", count=1, path="/drive/v3/files")
    result = project(tmp_path / "daily", google, folder).run("items")
    assert result.error is not None and result.error.code == "RETRY001" and "daily" in str(result.error)


def test_a_key_file_outside_the_data_roots_is_refused_at_load(tmp_path: Path) -> None:
    from dativo_dagster.config.loader import ConfigProblems, load_plan
    from tests.integration.sql_harness import write_project

    objects = [{"name": "items", "contract": CONTRACT, "incremental": MTIME, "options": {"folder_id": "F1"}}]
    write_project(tmp_path, "gdrive_csv", {}, objects, {"service_account_file": "/etc/hostname"})
    with pytest.raises(ConfigProblems) as refused:
        load_plan(tmp_path, strict=True)
    assert "source.credentials.service_account_file" in str(refused.value)
    assert "outside the tenant's data roots" in str(refused.value)
