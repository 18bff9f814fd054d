"""The google_sheets source against the Google emulator: typed cells, quarantine with A1 addresses,
long sheets in blocks, header detection, ranges and gids, the unchanged-sheet skip, quotas, OAuth
user credentials and every error class."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.google_api import Cell, GoogleEmulator
from tests.fakes.server import FakeServer, Limit
from tests.integration.google_project import SA_EMAIL, GoogleProject, ok

FULL = {"strategy": "full_refresh"}
SALES = """name: sheets/sales
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: region, type: string}
  - {name: amount, type: decimal, precision: 12, scale: 2}
  - {name: share, type: decimal, precision: 6, scale: 4}
  - {name: sold_on, type: date}
  - {name: sold_at, type: timestamptz}
  - {name: paid, type: boolean}
  - {name: units, type: int32}
"""
HEADER = ["id", "region", "amount", "share", "sold_on", "sold_at", "paid", "units"]


def sale(i: int) -> list[Any]:
    return [
        i,
        f"region {i % 7}",
        Cell.currency(i + 0.5),
        Cell.percent((i % 100) / 100),
        Cell.date(dt.date(2024, 1, 1) + dt.timedelta(days=i % 366)),
        Cell.datetime(dt.datetime(2024, 1, 1, 12, 30) + dt.timedelta(minutes=i)),
        i % 2 == 0,
        i % 50,
    ]


@pytest.fixture
def google() -> Iterator[tuple[GoogleEmulator, FakeServer, dict[str, Any]]]:
    emulator = GoogleEmulator(sheets_retry_after=True)
    server = emulator.serve().start()
    key = emulator.add_service_account(SA_EMAIL)
    try:
        yield emulator, server, key
    finally:
        server.stop()


def project(
    root: Path, google: Any, spreadsheet: str, key: dict[str, Any] | None = None, **options: Any
) -> GoogleProject:
    _, server, sa = google
    obj = {
        "name": "sales",
        "contract": {"name": "sheets/sales", "version": 1},
        "incremental": FULL,
        "options": {"spreadsheet_id": spreadsheet, **options},
    }
    return GoogleProject(root, "google_sheets", server.url, [obj], sa, contracts={"sheets/sales.v1.yaml": SALES})


def sheet_reads(emulator: GoogleEmulator) -> int:
    return sum(1 for r in emulator.request_log if r.path.startswith("/v4/spreadsheets"))


def test_a_long_sheet_is_read_in_blocks_with_exact_types(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    rows = [HEADER, *(sale(i) for i in range(1, 12_001))]
    book = emulator.add_spreadsheet("Sales", {"2024": rows}, shared_with=[SA_EMAIL])
    run = project(tmp_path, google, book, worksheet="2024", chunk_rows=5000)
    result = ok(run.run("sales"))
    assert result.write is not None and result.write.rows_written == 12_000 and result.write.rows_rejected == 0
    values = [r for r in emulator.request_log if "/values/" in r.path]
    assert len(values) == 3
    assert all(("valueRenderOption", "UNFORMATTED_VALUE") in r.query for r in values)
    loaded = run.rows("sales")
    assert loaded[0] == {
        "id": 1,
        "region": "region 1",
        "amount": decimal.Decimal("1.50"),
        "share": decimal.Decimal("0.0100"),
        "sold_on": dt.date(2024, 1, 2),
        "sold_at": dt.datetime(2024, 1, 1, 12, 31, tzinfo=dt.timezone.utc),
        "paid": False,
        "units": 1,
        "_dativo_sheet_row": 2,
    }
    assert loaded[-1]["id"] == 12_000 and loaded[-1]["_dativo_sheet_row"] == 12_001


def test_cells_that_do_not_fit_are_quarantined_with_their_address(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    rows = [
        HEADER,
        sale(1),
        [2, "north", "lots", 0.5, Cell.date("2024-02-01"), None, True, 3],
        [3, "south", 10, 0.25, Cell.datetime("2024-02-01T08:00:00"), None, "maybe", 4],
        [4, "east", Cell.error("#DIV/0!"), 0.1, None, None, None, 2.5],
        sale(5),
    ]
    book = emulator.add_spreadsheet("Sales", {"Sheet1": rows}, shared_with=[SA_EMAIL])
    run = project(tmp_path, google, book)
    refused = run.run("sales")  # 3 bad rows of 5: above the default threshold, nothing committed
    assert refused.error is not None and refused.error.code == "QUAL001"
    run.edit_object("sales", quality={"max_rejected_rate": 0.9})
    result = ok(run.run("sales", run_id="r2"))
    assert result.write is not None and result.write.rows_written == 2 and result.write.rows_rejected == 3
    assert [r["id"] for r in run.rows("sales")] == [1, 5]
    reasons = " | ".join(str(r["_dativo_reason"]) for r in run.quarantined("sales"))
    for where in ("C3: amount: cannot convert 'lots'", "E4: sold_on", "G4: paid", "C5: amount", "H5: units"):
        assert where in reasons, (where, reasons)


def test_header_detection_gid_and_range(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet(
        "Sales",
        {
            "Notes": [["nothing here"]],
            "Data": [
                [],
                ["Quarterly export"],
                [],
                [None, *HEADER],
                [None, *sale(1)],
                [None, *sale(2)],
                [],
                [None, *sale(3)],
            ],
        },
        shared_with=[SA_EMAIL],
    )
    run = project(tmp_path, google, book, gid=1001, range="B4:I")
    ok(run.run("sales"))
    assert [r["id"] for r in run.rows("sales")] == [1, 2, 3]
    assert [r["_dativo_sheet_row"] for r in run.rows("sales")] == [5, 6, 8]
    detect = project(tmp_path / "detect", google, book, worksheet="Data")
    result = detect.run("sales")
    # Row 2 holds a title, not the header: detection takes it, and the contract's columns are missing.
    assert result.error is not None and result.error.code == "CFG001" and "row 2" in str(result.error)
    explicit = project(tmp_path / "explicit", google, book, worksheet="Data", header_row=4, range="B1:I")
    ok(explicit.run("sales"))
    assert len(explicit.rows("sales")) == 3


def test_an_unchanged_sheet_is_skipped_without_a_read(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet("Sales", {"Sheet1": [HEADER, sale(1), sale(2)]}, shared_with=[SA_EMAIL])
    run = project(tmp_path, google, book)
    first = ok(run.run("sales"))
    assert first.write is not None and first.write.committed
    before = sheet_reads(emulator)
    second = ok(run.run("sales", run_id="r2"))
    assert second.write is not None and not second.write.committed
    assert sheet_reads(emulator) == before  # zero Sheets requests
    assert any("unchanged" in note for note in second.notes)
    emulator.set_cells(book, "Sheet1", [HEADER, sale(1), sale(2), sale(3)])
    third = ok(run.run("sales", run_id="r3"))
    assert third.write is not None and third.write.committed and len(run.rows("sales")) == 3
    # A changed option is a different copy, even of an unchanged sheet.
    run.edit_object("sales", options={"spreadsheet_id": book, "range": "A1:H3"})
    fourth = ok(run.run("sales", run_id="r4"))
    assert fourth.write is not None and fourth.write.committed and len(run.rows("sales")) == 2
    assert not ok(run.run("sales", run_id="r5")).write.committed  # type: ignore[union-attr]
    # So is a changed contract.
    contract = run.root / "connectors/schemas/sheets/sales.v1.yaml"
    contract.write_text(contract.read_text().replace("{name: units, type: int32}", "{name: units, type: int64}"))
    run.reload()
    sixth = ok(run.run("sales", run_id="r6"))
    assert sixth.write is not None and sixth.write.committed


def test_the_read_quota_is_waited_out_with_retry_after(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet(
        "Sales", {"Sheet1": [HEADER, *(sale(i) for i in range(1, 801))]}, shared_with=[SA_EMAIL]
    )
    emulator.configure(
        limits={"sheets_read": Limit(rps=3, kind="rolling", window=1.0, name="ReadRequestsPerMinutePerUser")}
    )
    run = project(tmp_path, google, book, chunk_rows=100)
    result = ok(run.run("sales"))
    assert len(run.rows("sales")) == 800
    assert result.source_stats["http_429"] > 0 and result.source_stats["throttled_s"] > 0
    assert emulator.stats.throttled()


def test_oauth_user_credentials_refresh_their_token(tmp_path: Path, google: Any) -> None:
    emulator, server, _ = google
    user = emulator.add_user("analyst@acme.example")
    book = emulator.add_spreadsheet("Sales", {"Sheet1": [HEADER, sale(1)]}, shared_with=["analyst@acme.example"])
    obj = {
        "name": "sales",
        "contract": {"name": "sheets/sales", "version": 1},
        "incremental": FULL,
        "options": {"spreadsheet_id": book},
    }
    run = GoogleProject(tmp_path, "google_sheets", server.url, [obj], {}, contracts={"sheets/sales.v1.yaml": SALES})
    creds = {k: f"${{G_{k.upper()}}}" for k in ("client_id", "client_secret", "refresh_token", "token_uri")}
    job = run.root / "tenants/acme/jobs/db.yaml"
    data = yaml.safe_load(job.read_text())
    data["source"]["credentials"] = creds
    job.write_text(yaml.safe_dump(data))
    run.env = {f"G_{k.upper()}": str(user[k]) for k in ("client_id", "client_secret", "refresh_token", "token_uri")}
    run.reload()
    ok(run.run("sales"))
    assert len(run.rows("sales")) == 1
    # Token calls are never shown to observers (payload logs, raw archives): their bodies are secrets.
    from dativo_dagster.api.source import ApiRuntime

    exchanges: list[Any] = []
    runtime = ApiRuntime(observers=[exchanges.append])
    emulator.set_cells(book, "Sheet1", [HEADER, sale(1), sale(3)])
    with run.source(runtime) as source:
        from dativo_dagster.engine import ingest_object

        ok(ingest_object(run.job.object("sales"), source=source, writer=run.writer, run_id="observed"))
    assert exchanges and not any(e.url.endswith("/token") for e in exchanges)
    assert all(str(user["refresh_token"]) not in repr(e) for e in exchanges)

    wrong = {**run.env, "G_CLIENT_SECRET": "not-the-secret"}
    bad_client = GoogleProject(
        tmp_path / "bad", "google_sheets", server.url, [obj], {}, contracts={"sheets/sales.v1.yaml": SALES}
    )
    bad_job = bad_client.root / "tenants/acme/jobs/db.yaml"
    bad_data = yaml.safe_load(bad_job.read_text())
    bad_data["source"]["credentials"] = creds
    bad_job.write_text(yaml.safe_dump(bad_data))
    bad_client.env = wrong
    bad_client.reload()
    refused = bad_client.run("sales")
    assert refused.error is not None and refused.error.code == "AUTH001", refused.error
    assert "not-the-secret" not in f"{refused.error} {refused.error.hint}"

    emulator.revoke(str(user["refresh_token"]))
    emulator.set_cells(book, "Sheet1", [HEADER, sale(1), sale(2)])
    emulator.advance_clock(7200)  # the access token expired: a refresh is needed, and refused
    result = run.run("sales", run_id="r2")
    assert result.error is not None and result.error.code == "AUTH001"
    assert str(user["refresh_token"]) not in f"{result.error} {result.error.hint}"


def test_sheet_errors_are_coded(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet("Sales", {"Sheet1": [HEADER, sale(1)]}, shared_with=[SA_EMAIL])
    missing = project(tmp_path / "ws", google, book, worksheet="2025").run("sales")
    assert missing.error is not None and missing.error.code == "CFG001" and "'Sheet1'" in str(missing.error)
    private = emulator.add_spreadsheet("Private", {"Sheet1": [HEADER]})
    hidden = project(tmp_path / "hidden", google, private).run("sales")
    assert hidden.error is not None and hidden.error.code == "CFG001"
    assert private in str(hidden.error) and SA_EMAIL in f"{hidden.error} {hidden.error.hint}"
    nowhere = project(tmp_path / "nowhere", google, "1NoSuchSpreadsheet").run("sales")
    assert nowhere.error is not None and nowhere.error.code == "CFG001" and "1NoSuchSpreadsheet" in str(nowhere.error)
    csv_file = emulator.add_file("export.csv", "id\n1\n", shared_with=[SA_EMAIL])
    not_sheet = project(tmp_path / "csv", google, csv_file).run("sales")
    assert not_sheet.error is not None and not_sheet.error.code == "CFG001" and "gdrive_csv" in not_sheet.error.hint
    emulator.inject("status", status=403, reason="rateLimitExceeded", count=2, path="/v4/spreadsheets")
    throttled = ok(project(tmp_path / "rate", google, book).run("sales"))
    assert throttled.source_stats["http_429"] == 2


def test_a_range_past_the_sheets_edge_reads_up_to_the_edge(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet("Sales", {"Sheet1": [HEADER, sale(1), sale(2)]}, shared_with=[SA_EMAIL])
    run = project(tmp_path, google, book, range="A1:ZZ50000")
    ok(run.run("sales"))
    assert [r["id"] for r in run.rows("sales")] == [1, 2]
    beyond = project(tmp_path / "beyond", google, book, range="AAA1:AAB10").run("sales")
    assert beyond.error is not None and beyond.error.code == "CFG001" and "last column" in str(beyond.error)


def test_an_edit_between_blocks_commits_nothing(tmp_path: Path, google: Any, monkeypatch: Any) -> None:
    from gspread.http_client import HTTPClient

    emulator, _, _ = google
    rows = [HEADER, *(sale(i) for i in range(1, 301))]
    book = emulator.add_spreadsheet("Sales", {"Sheet1": rows}, shared_with=[SA_EMAIL])
    original = HTTPClient.values_get
    calls: list[str] = []

    def editing(self: Any, spreadsheet_id: str, range_name: str, params: Any = None) -> Any:
        calls.append(range_name)
        if len(calls) == 2:  # someone inserts a row at the top while dativo reads the second block
            emulator.set_cells(book, "Sheet1", [HEADER, sale(0), *rows[1:]])
        return original(self, spreadsheet_id, range_name, params=params)

    monkeypatch.setattr(HTTPClient, "values_get", editing)
    run = project(tmp_path, google, book, chunk_rows=100)
    result = run.run("sales")
    assert (
        result.error is not None and result.error.code == "EXT001" and "changed while it was read" in str(result.error)
    )
    assert run.writer.load_table("acme", "sales") is None or not run.rows("sales")
    monkeypatch.undo()
    ok(run.run("sales", run_id="r2"))
    assert [r["id"] for r in run.rows("sales")] == list(range(0, 301))


def test_an_unreadable_answer_is_page001(tmp_path: Path, google: Any) -> None:
    emulator, _, _ = google
    book = emulator.add_spreadsheet("Sales", {"Sheet1": [HEADER, sale(1)]}, shared_with=[SA_EMAIL])
    emulator.inject("malformed_json", count=1, path=f"/v4/spreadsheets/{book}/values")
    result = project(tmp_path, google, book).run("sales")
    assert result.error is not None and result.error.code == "PAGE001", result.error
    emulator.inject("malformed_json", count=1, path=f"/v4/spreadsheets/{book}")
    result = project(tmp_path / "meta", google, book).run("sales")
    assert result.error is not None and result.error.code == "PAGE001", result.error
