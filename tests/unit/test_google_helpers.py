"""Pure helpers of the Google sources: A1 notation, serial dates, cell typing, Drive queries, errors."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path

import pyarrow as pa
import pytest

from dativo_dagster.api.transport import HttpResponse
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.google.auth import service_account_info
from dativo_dagster.sources.google.client import (
    NotShared,
    TokenRejected,
    google_error,
    google_sender,
    query_pairs,
    rebase,
)
from dativo_dagster.sources.google.drive import (
    children_query,
    format_time_ns,
    parse_time_ns,
    quote_q,
    wanted,
)
from dativo_dagster.sources.google.gdrive import GDriveCsvOptions
from dativo_dagster.sources.google.sheets import GoogleSheetsOptions
from dativo_dagster.sources.google.sheets_values import (
    address,
    block,
    column_index,
    column_letters,
    header_names,
    header_row,
    parse_a1_range,
    serial_datetime,
    time_zone,
    typed_column,
)

UTC = dt.timezone.utc


@pytest.mark.parametrize(("index", "letters"), [(0, "A"), (25, "Z"), (26, "AA"), (51, "AZ"), (701, "ZZ"), (702, "AAA")])
def test_column_letters_round_trip(index: int, letters: str) -> None:
    assert column_letters(index) == letters
    assert column_index(letters) == index
    assert column_index(letters.lower()) == index


def test_a1_ranges() -> None:
    assert parse_a1_range("B2:F").first_column == 1
    grid = parse_a1_range("B2:F100")
    assert (grid.first_column, grid.first_row, grid.last_column, grid.last_row) == (1, 2, 5, 100)
    grid = parse_a1_range("A:D")
    assert (grid.first_row, grid.last_row, grid.last_column) == (1, None, 3)
    for bad in ("Sheet1!A1:B2", "A1", "F1:A2", "A5:B2", "A0:B2", "1A:B2", ""):
        with pytest.raises(ValueError):
            parse_a1_range(bad)
    assert block("It's Q1", 1, 3, 2, 10) == "'It''s Q1'!B2:D10"
    assert address(27, 7) == "AB7"


def test_serial_numbers_are_sheets_dates() -> None:
    assert serial_datetime(45322) == dt.datetime(2024, 1, 31)
    assert serial_datetime(45322.75) == dt.datetime(2024, 1, 31, 18, 0)
    assert serial_datetime(0.5) == dt.datetime(1899, 12, 30, 12, 0)
    # A float serial that is not exactly representable still lands on its millisecond.
    assert serial_datetime(45322 + 1 / 3) == dt.datetime(2024, 1, 31, 8, 0)


def test_header_row_is_the_first_row_with_a_value() -> None:
    assert header_row([[], ["", ""], ["", "id"], ["x"]], 3) == 5
    with pytest.raises(ValueError):
        header_row([[], [""]], 1)
    assert header_names([2024.0, " name ", None, True]) == ["2024", "name", "", "True"]


def _typed(values: list[object], target: pa.DataType, zone: dt.tzinfo = UTC) -> tuple[list[object], list[str | None]]:
    array, reasons = typed_column(values, target, column=2, rows=list(range(5, 5 + len(values))), name="c", zone=zone)
    return array.to_pylist(), reasons or [None] * len(values)


def test_numbers_percentages_and_currency_are_exact() -> None:
    values, reasons = _typed([1, 2.5, 0.1, "$1,234.50", "25%", "-12.5%", "1.234,50", 0.12345], pa.decimal128(12, 4))
    assert values[:7] == [
        decimal.Decimal("1"),
        decimal.Decimal("2.5"),
        decimal.Decimal("0.1"),
        decimal.Decimal("1234.50"),
        decimal.Decimal("0.25"),
        decimal.Decimal("-0.125"),
        None,
    ]
    assert reasons[6] is not None and reasons[6].startswith("C11: c: cannot convert '1.234,50'")
    # More decimal places than the column holds: quarantined, never rounded.
    assert reasons[7] == "C12: c: cannot convert '0.12345' (has more than 4 decimal places)"


def test_integers_refuse_fractions_booleans_and_overflow() -> None:
    values, reasons = _typed([3, 3.0, 3.5, True, 2**70, "7", "$1,000.00", "100%", "$2.50"], pa.int64())
    assert values == [3, 3, None, None, None, 7, 1000, 1, None]
    assert [r is not None for r in reasons] == [False, False, True, True, True, False, False, False, True]
    assert reasons[2] is not None and reasons[2].startswith("C7: c:")


def test_dates_times_and_zones() -> None:
    values, reasons = _typed([45322, 45322.5, "2024-02-01", "not a date"], pa.date32())
    assert values[0] == dt.date(2024, 1, 31) and values[2] == dt.date(2024, 2, 1)
    assert reasons[1] is not None and "not a date" in reasons[1] and reasons[3] is not None
    paris = time_zone("Europe/Paris")
    values, _ = _typed([45322.5], pa.timestamp("us", tz="UTC"), paris)
    assert values == [dt.datetime(2024, 1, 31, 11, 0, tzinfo=UTC)]
    values, _ = _typed([45322.5], pa.timestamp("us"), paris)
    assert values == [dt.datetime(2024, 1, 31, 12, 0)]
    values, reasons = _typed([0.75, 1.25], pa.time64("us"))
    assert values[0] == dt.time(18, 0) and reasons[1] is not None
    assert time_zone("Nowhere/Else") is None and time_zone(None) is UTC
    # Text without a zone is a wall-clock time in the spreadsheet's zone, like its date cells.
    york = time_zone("America/New_York")
    assert york is not None
    values, _ = _typed(
        ["2024-05-01 10:00:00", "2024-05-01T10:00:00Z", 45413 + 10 / 24], pa.timestamp("us", tz="UTC"), york
    )
    assert values == [
        dt.datetime(2024, 5, 1, 14, 0, tzinfo=UTC),
        dt.datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        dt.datetime(2024, 5, 1, 14, 0, tzinfo=UTC),
    ]
    # A wall-clock time a daylight-saving change skips or repeats names no single instant.
    values, reasons = _typed(["2024-03-10 02:30:00", "2024-11-03 01:30:00"], pa.timestamp("us", tz="UTC"), york)
    assert values == [None, None]
    assert reasons[0] is not None and "does not exist" in reasons[0]
    assert reasons[1] is not None and "ambiguous" in reasons[1]


def test_formula_errors_and_text_rendering() -> None:
    values, reasons = _typed(["#DIV/0!", "#N/A", 5.0, True, "x"], pa.string())
    assert values[2:] == ["5", "TRUE", "x"]
    assert reasons[0] == "C5: c: cannot convert '#DIV/0!' (holds the formula error #DIV/0!)"
    assert reasons[1] is not None
    values, reasons = _typed([True, False, "TRUE", "no", 2], pa.bool_())
    assert values == [True, False, True, False, None] and reasons[4] is not None


def test_empty_cells_are_null_not_errors() -> None:
    values, reasons = _typed([None, "", 1], pa.int32())
    assert values == [None, None, 1] and reasons == [None, None, None]


def test_drive_times_round_trip_to_the_millisecond() -> None:
    ns = parse_time_ns("2024-05-01T10:00:00.123Z")
    assert ns == 1714557600123000000
    assert format_time_ns(ns) == "2024-05-01T10:00:00.123Z"
    assert parse_time_ns("2024-05-01T12:00:00.123+02:00") == ns
    with pytest.raises(ValueError):
        parse_time_ns("2024-05-01T10:00:00")


def test_drive_queries_quote_and_filter() -> None:
    assert quote_q("it's a \\ path") == "'it\\'s a \\\\ path'"
    query = children_query("F1", folders=False, since_ns=parse_time_ns("2024-05-01T10:00:00.123Z"))
    assert query == (
        "'F1' in parents and trashed = false and mimeType != 'application/vnd.google-apps.folder' "
        "and modifiedTime >= '2024-05-01T10:00:00.123Z'"
    )
    assert "modifiedTime" not in children_query("F1", folders=True, since_ns=1)
    assert wanted("a.csv", "text/csv", pattern="*.csv", sheet_pattern="*")
    assert not wanted("a.CSV", "text/csv", pattern="*.csv", sheet_pattern="*")
    assert wanted("Budget", "application/vnd.google-apps.spreadsheet", pattern="*.csv", sheet_pattern="*")
    assert not wanted("Budget", "application/vnd.google-apps.spreadsheet", pattern="*.csv", sheet_pattern=None)
    assert not wanted("notes.csv", "application/vnd.google-apps.document", pattern="*.csv", sheet_pattern="*")


def test_query_pairs_and_hosts() -> None:
    assert query_pairs({"a": True, "b": None, "ranges": ["A1", "B2"], "n": 5}) == [
        ("a", "true"),
        ("ranges", "A1"),
        ("ranges", "B2"),
        ("n", "5"),
    ]
    assert rebase("https://sheets.googleapis.com/v4/spreadsheets/x", "http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/v4/spreadsheets/x"
    )
    assert rebase("https://www.googleapis.com/drive/v3/files", None) == "https://www.googleapis.com/drive/v3/files"
    assert rebase("https://oauth2.googleapis.com/token", "http://x") == "https://oauth2.googleapis.com/token"


def _answer(status: int, body: object) -> HttpResponse:
    return HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())


DRIVE_QUOTA = {
    "error": {
        "code": 403,
        "message": "User Rate Limit Exceeded",
        "errors": [{"domain": "usageLimits", "reason": "userRateLimitExceeded", "message": "User Rate Limit Exceeded"}],
    }
}
SHEETS_DENIED = {
    "error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}
}
SCOPES = {
    "error": {
        "code": 403,
        "message": "Request had insufficient authentication scopes.",
        "status": "PERMISSION_DENIED",
        "details": [{"reason": "ACCESS_TOKEN_SCOPE_INSUFFICIENT"}],
    }
}


def test_google_errors_are_classified_before_the_transport() -> None:
    def sender_for(answer: HttpResponse):  # type: ignore[no-untyped-def]
        return google_sender(lambda method, url, headers, body, timeout_s: answer)

    throttled = sender_for(_answer(403, DRIVE_QUOTA))("GET", "http://x/drive/v3/files", {}, None, 1)
    assert throttled.status == 429  # retried by the transport like any 429
    with pytest.raises(NotShared):
        sender_for(_answer(403, SHEETS_DENIED))("GET", "http://x/v4/spreadsheets/s", {}, None, 1)
    assert sender_for(_answer(403, SCOPES))("GET", "http://x/v4/spreadsheets/s", {}, None, 1).status == 403
    with pytest.raises(TokenRejected):
        sender_for(_answer(401, {"error": {"code": 401, "message": "expired", "status": "UNAUTHENTICATED"}}))(
            "GET", "http://x", {}, None, 1
        )
    assert google_error(json.dumps(SCOPES).encode()).reason == "ACCESS_TOKEN_SCOPE_INSUFFICIENT"
    assert google_error(b"<html>bad gateway</html>").code == 0


def test_credentials_are_one_kind_and_stay_inside_the_data_roots(tmp_path: Path) -> None:
    roots = (tmp_path / "data",)
    roots[0].mkdir()
    where = "tenants/acme/jobs/x.yaml: source.credentials"

    def info(creds: dict[str, str]) -> object:
        return service_account_info(creds, project_dir=tmp_path, data_roots=roots, where=where)

    with pytest.raises(ConfigError, match="no Google credential"):
        info({"service_account_json": ""})
    with pytest.raises(ConfigError, match="give one Google credential"):
        info({"service_account_json": "{}", "refresh_token": "r"})
    with pytest.raises(ConfigError, match="refresh_token"):
        info({"client_id": "c", "client_secret": "s"})
    with pytest.raises(ConfigError, match="not JSON"):
        info({"service_account_json": "{not json"})
    with pytest.raises(ConfigError, match="not a service account key"):
        info({"service_account_json": json.dumps({"type": "authorized_user"})})
    with pytest.raises(ConfigError, match="outside the tenant's data roots"):
        info({"service_account_file": "/etc/hostname"})
    with pytest.raises(ConfigError, match="not a Google credential field"):
        info({"api_key": "x"})
    assert info({"client_id": "c", "client_secret": "s", "refresh_token": "r"}) is None
    key = {
        "type": "service_account",
        "client_email": "sa@p.iam.gserviceaccount.com",
        "private_key": "k" * 40,
        "token_uri": "http://t",
    }
    (roots[0] / "sa.json").write_text(json.dumps(key))
    assert info({"service_account_file": "data/sa.json"}) == key


def test_options_refuse_what_cannot_be_an_id() -> None:
    with pytest.raises(ValueError):
        GDriveCsvOptions.model_validate({"folder_id": "x' or name contains '"})
    with pytest.raises(ValueError):
        GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "worksheet": "a", "gid": 1})
    with pytest.raises(ValueError):
        GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "range": "Sheet1!A1:B2"})
    with pytest.raises(ValueError):
        GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "nope": 1})
    with pytest.raises(ValueError, match="header_row 1 lies outside range"):
        GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "range": "A3:C", "header_row": 1})
    with pytest.raises(ValueError, match="outside range"):
        GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "range": "A3:C9", "header_row": 10})
    assert GoogleSheetsOptions.model_validate({"spreadsheet_id": "abc", "range": "B2:F"}).grid().first_row == 2


def test_an_incomplete_drive_listing_is_page001() -> None:
    from dativo_dagster.errors import PaginationError
    from dativo_dagster.sources.base import SourceStats
    from dativo_dagster.sources.google.drive import Drive

    class Api:
        label = "acme/db/items"

        class transport:  # stands in for the transport's counters
            stats = SourceStats()

        def request(self, *args: object, **kwargs: object) -> HttpResponse:
            return _answer(200, {"files": [], "incompleteSearch": True})

        def json(self, response: HttpResponse, what: str) -> object:
            return json.loads(response.body)

    with pytest.raises(PaginationError, match="incompleteSearch"):
        Drive(Api()).list_files("F1", recursive=False, pattern="*.csv", sheet_pattern=None)  # type: ignore[arg-type]
