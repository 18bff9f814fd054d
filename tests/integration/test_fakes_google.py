"""The Google emulator over HTTP: OAuth, Drive listing/download/export, Sheets values, quotas, faults.

Requests go through plain ``requests`` so every wire detail is visible; the OAuth tests also use
``google-auth`` (the library dativo's Google connectors sign in with) where it is installed.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from tests.fakes import specs
from tests.fakes.google_api import (
    DRIVE_QUOTA,
    SHEETS_READ_QUOTA,
    SPREADSHEET_MIME,
    Cell,
    GoogleEmulator,
    _private_key,
    parse_query,
    rfc3339_ms,
)
from tests.fakes.server import AdminClient, FakeClock, FakeServer, Limit, ServerProcess

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
SA = "ingest@dativo-test.iam.gserviceaccount.com"
OTHER = "someone-else@dativo-test.iam.gserviceaccount.com"
FOLDER_Q = "mimeType != 'application/vnd.google-apps.folder'"
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(claims: dict[str, Any], key_slot: int = 0) -> str:
    """An RS256 JWT signed with one of the emulator's cached keys."""
    signing_input = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = _private_key(key_slot).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64(signature)


def list_all(session: requests.Session, url: str, token: str, **params: Any) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    while True:
        resp = session.get(f"{url}/drive/v3/files", params=params, headers=bearer(token), timeout=10)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        files += body["files"]
        if "nextPageToken" not in body:
            return files
        params["pageToken"] = body["nextPageToken"]


@pytest.fixture
def served() -> Iterator[tuple[GoogleEmulator, FakeServer]]:
    emu = GoogleEmulator(clock=FakeClock(NOW, frozen=True))
    with emu.serve() as server:
        yield emu, server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


# --------------------------------------------------------------------------------------------
# OAuth


def test_service_account_jwt_grant(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    info = emu.add_service_account(SA)
    assert info["token_uri"] == f"{server.url}/token" and info["private_key"].startswith("-----BEGIN PRIVATE KEY")
    assert {"type", "project_id", "private_key_id", "client_email", "client_id", "auth_uri"} <= set(info)
    now = int(time.time())
    claims = {"iss": SA, "scope": "https://www.googleapis.com/auth/drive.readonly", "aud": info["token_uri"]}
    good = session.post(
        info["token_uri"],
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt({**claims, "iat": now, "exp": now + 3600}),
        },
        timeout=10,
    )
    assert good.status_code == 200, good.text
    body = good.json()
    assert body["expires_in"] == 3600 and body["token_type"] == "Bearer" and body["access_token"]
    assert session.get(f"{server.url}/drive/v3/files", headers=bearer(body["access_token"]), timeout=10).ok

    def grant(assertion: str) -> requests.Response:
        return session.post(
            info["token_uri"],
            data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
            timeout=10,
        )

    wrong_key = grant(jwt({**claims, "iat": now, "exp": now + 3600}, key_slot=1))
    assert wrong_key.status_code == 400
    assert wrong_key.json() == {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    unknown = grant(jwt({**claims, "iss": "nobody@x.iam.gserviceaccount.com", "iat": now, "exp": now + 3600}))
    assert unknown.json()["error_description"] == "Invalid JWT Signature."
    expired = grant(jwt({**claims, "iat": now - 7200, "exp": now - 3600}))
    assert expired.status_code == 400 and "iat and exp" in expired.json()["error_description"]
    tampered = jwt({**claims, "iat": now, "exp": now + 3600}).split(".")
    tampered[1] = b64(json.dumps({**claims, "iss": SA, "iat": now, "exp": now + 3600, "scope": "x"}).encode())
    assert grant(".".join(tampered)).json()["error"] == "invalid_grant"


def test_google_auth_libraries_sign_in(served: tuple[GoogleEmulator, FakeServer]) -> None:
    service_account = pytest.importorskip("google.oauth2.service_account")
    user_credentials = pytest.importorskip("google.oauth2.credentials")
    transport = pytest.importorskip("google.auth.transport.requests")
    exceptions = pytest.importorskip("google.auth.exceptions")
    emu, _ = served
    sa = service_account.Credentials.from_service_account_info(
        emu.add_service_account(SA), scopes=["https://www.googleapis.com/auth/spreadsheets.readonly"]
    )
    sa.refresh(transport.Request())
    assert emu.principal_of(sa.token) == SA
    user = emu.add_user("analyst@example.com")
    # from_authorized_user_info always points at Google's token endpoint; clients set token_uri.
    creds = user_credentials.Credentials.from_authorized_user_info(user).with_token_uri(user["token_uri"])
    creds.refresh(transport.Request())
    assert emu.principal_of(creds.token) == "analyst@example.com"
    emu.revoke(user["refresh_token"])
    with pytest.raises(exceptions.RefreshError, match="invalid_grant"):
        creds.refresh(transport.Request())


def test_refresh_token_grant_and_revocation(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    emu, server = served
    user = emu.add_user("analyst@example.com")
    assert user["type"] == "authorized_user" and user["token_uri"] == f"{server.url}/token"
    form = {k: user[k] for k in ("client_id", "client_secret", "refresh_token")} | {"grant_type": "refresh_token"}
    ok = session.post(user["token_uri"], data=form, timeout=10)
    assert ok.status_code == 200 and ok.json()["expires_in"] == 3600
    wrong_secret = session.post(user["token_uri"], data={**form, "client_secret": "nope"}, timeout=10)
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    emu.revoke(user["refresh_token"])
    revoked = session.post(user["token_uri"], data=form, timeout=10)
    assert revoked.status_code == 400
    assert revoked.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    unknown = session.post(user["token_uri"], data={**form, "refresh_token": "1//0nope"}, timeout=10)
    assert unknown.json()["error_description"] == "Token has been expired or revoked."
    bad_grant = session.post(user["token_uri"], data={"grant_type": "password"}, timeout=10)
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "unsupported_grant_type"


def test_access_tokens_expire_on_the_fake_clock(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    emu, server = served
    user = emu.add_user("analyst@example.com")
    form = {k: user[k] for k in ("client_id", "client_secret", "refresh_token")} | {"grant_type": "refresh_token"}
    token = session.post(user["token_uri"], data=form, timeout=10).json()["access_token"]
    sid = emu.add_spreadsheet("Book", {"S": [["a"]]}, shared_with=["analyst@example.com"])
    assert session.get(f"{server.url}/v4/spreadsheets/{sid}", headers=bearer(token), timeout=10).status_code == 200
    emu.advance_clock(3599)
    assert session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10).status_code == 200
    emu.advance_clock(1)
    drive = session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10)
    assert drive.status_code == 401 and "invalid_token" in drive.headers["WWW-Authenticate"]
    error = drive.json()["error"]
    assert error["code"] == 401 and error["message"].startswith("Request had invalid authentication credentials.")
    assert error["errors"] == [
        {
            "message": "Invalid Credentials",
            "domain": "global",
            "reason": "authError",
            "locationType": "header",
            "location": "Authorization",
        }
    ]
    sheets = session.get(f"{server.url}/v4/spreadsheets/{sid}", headers=bearer(token), timeout=10)
    assert sheets.status_code == 401
    assert sheets.json()["error"]["status"] == "UNAUTHENTICATED" and "errors" not in sheets.json()["error"]
    fresh = session.post(user["token_uri"], data=form, timeout=10).json()["access_token"]
    assert session.get(f"{server.url}/v4/spreadsheets/{sid}", headers=bearer(fresh), timeout=10).status_code == 200
    assert session.get(f"{server.url}/drive/v3/files", timeout=10).status_code == 401
    short = GoogleEmulator(clock=FakeClock(NOW, frozen=True), token_lifetime=60)
    token = short.issue_token(SA)
    short.advance_clock(60)
    assert short.tokens[token].expires_at <= short.clock.now()


# --------------------------------------------------------------------------------------------
# Drive


def test_listing_pages_defaults_and_partial_response(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    folder = emu.add_folder("landing", shared_with=[SA])
    ids = emu.add_csv_files(folder, 250, 3)
    first = session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10).json()
    assert first["kind"] == "drive#fileList" and first["incompleteSearch"] is False
    assert len(first["files"]) == 100 and set(first["files"][0]) == {"kind", "id", "name", "mimeType"}
    assert first["files"][0]["kind"] == "drive#file"
    files = list_all(session, server.url, token, q=f"'{folder}' in parents", pageSize=100)
    assert sorted(f["id"] for f in files) == sorted(ids) and [f["id"] for f in files] == sorted(ids)
    fields = "nextPageToken,files(id,name,mimeType,modifiedTime,size,version,md5Checksum,parents,driveId)"
    page = session.get(
        f"{server.url}/drive/v3/files",
        params={"q": f"'{folder}' in parents", "pageSize": "7", "fields": fields},
        headers=bearer(token),
        timeout=10,
    ).json()
    assert set(page) == {"nextPageToken", "files"} and len(page["files"]) == 7
    one = page["files"][0]
    assert set(one) == {"id", "name", "mimeType", "modifiedTime", "size", "version", "md5Checksum", "parents"}
    assert isinstance(one["size"], str) and one["size"].isdigit() and isinstance(one["version"], str)
    assert RFC3339_MS.match(one["modifiedTime"]) and one["parents"] == [folder]
    default = session.get(f"{server.url}/drive/v3/files/{one['id']}", headers=bearer(token), timeout=10).json()
    assert default == {"kind": "drive#file", "id": one["id"], "name": one["name"], "mimeType": "text/csv"}
    everything = session.get(
        f"{server.url}/drive/v3/files/{one['id']}", params={"fields": "*"}, headers=bearer(token), timeout=10
    ).json()
    assert {"createdTime", "trashed", "kind", "md5Checksum"} <= set(everything)
    content = session.get(
        f"{server.url}/drive/v3/files/{one['id']}", params={"alt": "media"}, headers=bearer(token), timeout=10
    )
    assert content.content.startswith(b"id,label,amount,created_at\n") and len(content.content) == int(one["size"])
    for bad in ({"pageSize": 0}, {"pageSize": 1001}, {"fields": "files(colour)"}, {"orderBy": "colour"}):
        resp = session.get(f"{server.url}/drive/v3/files", params=bad, headers=bearer(token), timeout=10)
        assert resp.status_code == 400 and resp.json()["error"]["errors"][0]["reason"] in (
            "invalid",
            "invalidParameter",
        )


def test_order_by_and_page_tokens_under_modification(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    folder = emu.add_folder("landing", shared_with=[SA])
    ids = [emu.add_file(f"f{i:02d}.csv", f"n\n{i}\n", folder, modified_time=NOW - 1000 + i * 10) for i in range(20)]
    emu.set_modified(ids[5], NOW - 1000 + 40)  # a tie with ids[4]
    params: dict[str, Any] = {"q": f"'{folder}' in parents", "orderBy": "modifiedTime", "pageSize": 6}
    params["fields"] = "nextPageToken,files(id,modifiedTime)"
    page1 = session.get(f"{server.url}/drive/v3/files", params=params, headers=bearer(token), timeout=10).json()
    seen = [f["id"] for f in page1["files"]]
    assert seen[:4] == ids[:4] and set(seen[4:6]) == {ids[4], ids[5]}
    # Between pages: one already-listed file changes, one new file arrives, one unseen one is deleted.
    emu.advance_clock(5)
    emu.update_file(ids[0], "n\n0 again\n")
    late = emu.add_file("late.csv", "n\n", folder)
    emu.delete(ids[10])
    rest = list_all(session, server.url, token, **params, pageToken=page1["nextPageToken"])
    rest_ids = [f["id"] for f in rest]
    assert rest_ids == [*ids[6:10], *ids[11:20], ids[0], late]
    times = [f["modifiedTime"] for f in rest]
    assert times == sorted(times)
    desc = list_all(session, server.url, token, q=f"'{folder}' in parents", orderBy="modifiedTime desc,name")
    assert desc[0]["id"] in (ids[0], late) and desc[-1]["id"] == ids[1]
    by_name = list_all(session, server.url, token, q=f"'{folder}' in parents and name contains 'f1'", orderBy="name")
    assert [f["name"] for f in by_name] == [f"f{i}.csv" for i in range(10, 20) if i != 10]
    other = session.get(
        f"{server.url}/drive/v3/files",
        params={"q": "trashed = false", "pageToken": page1["nextPageToken"]},
        headers=bearer(token),
        timeout=10,
    )
    assert other.status_code == 400 and other.json()["error"]["errors"][0]["location"] == "pageToken"


def test_query_grammar(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    root = emu.add_folder("root", shared_with=[SA])
    sub = emu.add_folder("sub", parent=root)
    a = emu.add_file("orders 2024.csv", "x", root, modified_time="2024-05-01T10:00:00.123Z")
    b = emu.add_file("Bob's file.csv", "x", root, modified_time="2024-06-01T00:00:00Z")
    c = emu.add_file("back\\slash.json", "{}", sub, mime_type="application/json", modified_time="2024-07-01T00:00:00Z")
    d = emu.add_spreadsheet("Budget", {"S": [["a"]]}, parent=root, modified_time="2024-08-01T00:00:00Z")
    emu.trash(b)

    def q(query: str) -> set[str]:
        return {f["id"] for f in list_all(session, server.url, token, q=query)}

    assert q(f"'{root}' in parents and trashed = false") == {sub, a, d}
    assert q(f"'{root}' in parents and trashed = true") == {b}
    assert q("name = 'Bob\\'s file.csv'") == {b}
    assert q("name = 'back\\\\slash.json'") == {c}
    assert q("mimeType = 'application/json' or mimeType = '" + SPREADSHEET_MIME + "'") == {c, d}
    assert q(f"not mimeType = 'application/vnd.google-apps.folder' and not ('{root}' in parents)") == {c}
    assert q("modifiedTime > '2024-05-01T10:00:00.123Z' and modifiedTime <= '2024-07-01T00:00:00Z'") == {b, c}
    assert q("modifiedTime >= '2024-05-01T10:00:00.123Z' and modifiedTime < '2024-06-01T00:00:00Z'") == {a}
    assert q("modifiedTime = '2024-05-01T10:00:00.123Z'") == {a}
    assert (
        q("name contains 'orders'") == {a} and q("name contains '2024'") == {a} and q("name contains 'rders'") == set()
    )
    assert q(f"({FOLDER_Q}) and trashed = false and (name contains 'bud' or name contains 'BACK')") == {c, d}
    for bad in ("name = 'x", "name = x", "'x' in owners", "trashed = maybe", "(name = 'x'", "size > '3'", "and"):
        resp = session.get(f"{server.url}/drive/v3/files", params={"q": bad}, headers=bearer(token), timeout=10)
        assert resp.status_code == 400, bad
        assert resp.json()["error"] == {
            "code": 400,
            "message": "Invalid Value",
            "errors": [
                {
                    "message": "Invalid Value",
                    "domain": "global",
                    "reason": "invalid",
                    "locationType": "parameter",
                    "location": "q",
                }
            ],
        }
    with pytest.raises(ValueError):
        parse_query("name = 'a' or")


def test_visibility_and_shared_drives(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    mine = emu.add_folder("mine", shared_with=[SA])
    nested = emu.add_folder("nested", parent=mine)
    deep = emu.add_file("deep.csv", "x", nested)
    private = emu.add_file("private.csv", "x", emu.add_folder("theirs", shared_with=[OTHER]))
    direct = emu.add_file("direct.csv", "x", shared_with=[SA])
    drive = emu.add_shared_drive("Finance", members=[SA])
    in_drive = emu.add_file("ledger.csv", "x", emu.add_folder("2024", drive_id=drive))
    plain = {f["id"] for f in list_all(session, server.url, token)}
    assert {deep, direct, mine, nested} <= plain and private not in plain and in_drive not in plain
    flags = {"supportsAllDrives": "true", "includeItemsFromAllDrives": "true"}
    all_drives = {f["id"] for f in list_all(session, server.url, token, corpora="allDrives", **flags)}
    assert in_drive in all_drives and deep in all_drives
    one_drive = list_all(
        session, server.url, token, corpora="drive", driveId=drive, fields="files(id,driveId)", **flags
    )
    assert {f["id"] for f in one_drive} >= {in_drive} and all(f["driveId"] == drive for f in one_drive)
    for params in ({"corpora": "drive"}, {"driveId": drive, **flags}):
        resp = session.get(f"{server.url}/drive/v3/files", params=params, headers=bearer(token), timeout=10)
        assert resp.status_code == 400, params
    missing_flags = session.get(
        f"{server.url}/drive/v3/files", params={"corpora": "drive", "driveId": drive}, headers=bearer(token), timeout=10
    )
    assert missing_flags.status_code == 403
    for file_id, params in ((private, {}), (in_drive, {}), ("nope", {})):
        resp = session.get(f"{server.url}/drive/v3/files/{file_id}", params=params, headers=bearer(token), timeout=10)
        assert resp.status_code == 404
        assert resp.json()["error"] == {
            "code": 404,
            "message": f"File not found: {file_id}.",
            "errors": [
                {
                    "message": f"File not found: {file_id}.",
                    "domain": "global",
                    "reason": "notFound",
                    "locationType": "parameter",
                    "location": "fileId",
                }
            ],
        }
    got = session.get(
        f"{server.url}/drive/v3/files/{in_drive}",
        params={"supportsAllDrives": "true", "fields": "id,driveId"},
        headers=bearer(token),
        timeout=10,
    )
    assert got.json() == {"id": in_drive, "driveId": drive}


def test_media_ranges_and_native_files(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    data = bytes(range(256)) * 4
    fid = emu.add_file("blob.bin", data, mime_type="application/octet-stream", shared_with=[SA])
    url = f"{server.url}/drive/v3/files/{fid}"

    def get(range_header: str | None = None) -> requests.Response:
        headers = bearer(token) | ({"Range": range_header} if range_header else {})
        return session.get(url, params={"alt": "media"}, headers=headers, timeout=10)

    full = get()
    assert full.status_code == 200 and full.content == data
    assert full.headers["Content-Type"] == "application/octet-stream"
    part = get("bytes=10-19")
    assert part.status_code == 206 and part.content == data[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = get("bytes=1000-")
    assert tail.status_code == 206 and tail.content == data[1000:] and tail.headers["Content-Range"].endswith("/1024")
    suffix = get("bytes=-24")
    assert suffix.content == data[-24:]
    beyond = get("bytes=1024-2000")
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == "bytes */1024"
    sid = emu.add_spreadsheet("Book", {"S": [["a"]]}, shared_with=[SA])
    native = session.get(
        f"{server.url}/drive/v3/files/{sid}", params={"alt": "media"}, headers=bearer(token), timeout=10
    )
    assert native.status_code == 403
    error = native.json()["error"]["errors"][0]
    assert error["reason"] == "fileNotDownloadable"
    assert error["message"] == "Only files with binary content can be downloaded. Use Export with Docs Editors files."
    meta = session.get(
        f"{server.url}/drive/v3/files/{sid}",
        params={"fields": "size,mimeType,version"},
        headers=bearer(token),
        timeout=10,
    ).json()
    assert "size" not in meta and meta["mimeType"] == SPREADSHEET_MIME


def test_export_and_changes(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    sid = emu.add_spreadsheet(
        "Book",
        {
            "First": [["id", "amount", "share"], [1, Cell.currency(1234.5), Cell.percent(0.25)], [2, "a,b"]],
            "Second": [["x"]],
        },
        shared_with=[SA],
    )
    export = f"{server.url}/drive/v3/files/{sid}/export"
    csv_ = session.get(export, params={"mimeType": "text/csv"}, headers=bearer(token), timeout=10)
    assert csv_.status_code == 200 and csv_.headers["Content-Type"].startswith("text/csv")
    assert csv_.text == 'id,amount,share\r\n1,"$1,234.50",25.00%\r\n2,"a,b",\r\n'
    pdf = session.get(export, params={"mimeType": "application/x-nope"}, headers=bearer(token), timeout=10)
    assert pdf.status_code == 400 and pdf.json()["error"]["message"] == "The requested conversion is not supported."
    blob = emu.add_file("a.csv", "a\n", shared_with=[SA])
    not_native = session.get(
        f"{server.url}/drive/v3/files/{blob}/export", params={"mimeType": "text/csv"}, headers=bearer(token), timeout=10
    )
    assert not_native.status_code == 403 and not_native.json()["error"]["errors"][0]["reason"] == "fileNotExportable"
    before = session.get(
        f"{server.url}/drive/v3/files/{sid}",
        params={"fields": "modifiedTime,version"},
        headers=bearer(token),
        timeout=10,
    ).json()
    emu.advance_clock(30)
    emu.set_cells(sid, "First", [["id"], [3]])
    after = session.get(
        f"{server.url}/drive/v3/files/{sid}",
        params={"fields": "modifiedTime,version"},
        headers=bearer(token),
        timeout=10,
    ).json()
    assert int(after["version"]) == int(before["version"]) + 1 and after["modifiedTime"] == rfc3339_ms(
        (NOW + 30) * 1000
    )
    assert session.get(export, params={"mimeType": "text/csv"}, headers=bearer(token), timeout=10).text == "id\r\n3\r\n"
    emu.set_cells(sid, "First", [["x" * 10_000] for _ in range(1100)])
    big = session.get(export, params={"mimeType": "text/csv"}, headers=bearer(token), timeout=10)
    assert big.status_code == 403 and big.json()["error"]["errors"][0]["reason"] == "exportSizeLimitExceeded"
    blob_before = emu.items[blob].to_json()
    emu.update_file(blob, "a\nb\n")
    blob_after = emu.items[blob].to_json()
    assert blob_after["md5Checksum"] != blob_before["md5Checksum"] and blob_after["size"] == "4"
    assert int(blob_after["version"]) == int(blob_before["version"]) + 1


# --------------------------------------------------------------------------------------------
# Sheets


def test_values_rendering_and_ranges(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    rows: list[list[Any]] = [
        ["name", "n", "ratio", "price", "day", "at", "ok", "calc"],
        [
            "alpha",
            3,
            Cell.percent(0.25),
            Cell.currency(1234.5),
            Cell.date("2024-01-31"),
            Cell.datetime("2024-01-31T12:00:00"),
            True,
            Cell.formula("=B2*2", 6),
        ],
        [],
        ["gamma", 2.5, None, None, None, None, False, Cell.formula("=1/0", Cell.error("#DIV/0!")), None],
    ]
    sid = emu.add_spreadsheet("Book", {"It's data": rows, "Other": [["o1", "o2"], ["o3"]]}, shared_with=[SA])
    base = f"{server.url}/v4/spreadsheets/{sid}"

    def values(rng: str, **params: str) -> requests.Response:
        return session.get(
            f"{base}/values/{requests.utils.quote(rng, safe='')}", params=params, headers=bearer(token), timeout=10
        )

    formatted = values("'It''s data'!A1:H").json()
    assert formatted["range"] == "'It''s data'!A1:H1000" and formatted["majorDimension"] == "ROWS"
    assert formatted["values"] == [
        rows[0],
        ["alpha", "3", "25.00%", "$1,234.50", "2024-01-31", "2024-01-31 12:00:00", "TRUE", "6"],
        [],
        ["gamma", "2.5", "", "", "", "", "FALSE", "#DIV/0!"],
    ]
    raw = values("'It''s data'!A2:H4", valueRenderOption="UNFORMATTED_VALUE").json()["values"]
    assert raw[0] == ["alpha", 3, 0.25, 1234.5, 45322, 45322.5, True, 6] and raw[2][-1] == "#DIV/0!"
    strings = values(
        "'It''s data'!E2:F2", valueRenderOption="UNFORMATTED_VALUE", dateTimeRenderOption="FORMATTED_STRING"
    )
    assert strings.json()["values"] == [["2024-01-31", "2024-01-31 12:00:00"]]
    formulas = values("'It''s data'!H2:H4", valueRenderOption="FORMULA").json()["values"]
    assert formulas == [["=B2*2"], [], ["=1/0"]]
    columns = values("'It''s data'!A1:B4", majorDimension="COLUMNS").json()
    assert columns["majorDimension"] == "COLUMNS" and columns["values"] == [
        ["name", "alpha", "", "gamma"],
        ["n", "3", "", "2.5"],
    ]
    assert values("Other").json() == {
        "range": "Other!A1:Z1000",
        "majorDimension": "ROWS",
        "values": [["o1", "o2"], ["o3"]],
    }
    assert values("A1:B1").json()["values"] == [["name", "n"]]  # no sheet: the first one
    assert values("Other!B1:C").json() == {"range": "Other!B1:C1000", "majorDimension": "ROWS", "values": [["o2"]]}
    assert values("Other!A2").json() == {"range": "Other!A2", "majorDimension": "ROWS", "values": [["o3"]]}
    assert values("Other!C5:D9").json() == {"range": "Other!C5:D9", "majorDimension": "ROWS"}
    missing = values("Nope!A1:B2")
    assert missing.status_code == 400
    assert missing.json() == {
        "error": {"code": 400, "message": "Unable to parse range: Nope!A1:B2", "status": "INVALID_ARGUMENT"}
    }
    assert values("Other!A1:ZZ3").status_code == 400
    batch = session.get(
        f"{base}/values:batchGet",
        params=[("ranges", "Other!A1"), ("ranges", "'It''s data'!B2")],
        headers=bearer(token),
        timeout=10,
    ).json()
    assert batch["spreadsheetId"] == sid and [v["values"] for v in batch["valueRanges"]] == [[["o1"]], [["3"]]]
    meta = session.get(base, params={"includeGridData": "false"}, headers=bearer(token), timeout=10).json()
    assert meta["spreadsheetId"] == sid and meta["properties"]["title"] == "Book"
    first = meta["sheets"][0]["properties"]
    assert first == {
        "sheetId": 0,
        "title": "It's data",
        "index": 0,
        "sheetType": "GRID",
        "gridProperties": {"rowCount": 1000, "columnCount": 26},
    }
    assert [s["properties"]["title"] for s in meta["sheets"]] == ["It's data", "Other"]
    titles = session.get(base, params={"fields": "sheets.properties.title"}, headers=bearer(token), timeout=10).json()
    assert titles == {"sheets": [{"properties": {"title": "It's data"}}, {"properties": {"title": "Other"}}]}
    only = session.get(base, params={"ranges": "Other!A1"}, headers=bearer(token), timeout=10).json()
    assert [s["properties"]["title"] for s in only["sheets"]] == ["Other"]
    assert session.get(f"{server.url}/v4/spreadsheets/nope", headers=bearer(token), timeout=10).json() == {
        "error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}
    }
    hidden = emu.add_spreadsheet("Hidden", {"S": [["a"]]}, shared_with=[OTHER])
    denied = session.get(f"{server.url}/v4/spreadsheets/{hidden}/values/S", headers=bearer(token), timeout=10)
    assert denied.status_code == 403
    assert denied.json() == {
        "error": {"code": 403, "message": "The caller does not have permission", "status": "PERMISSION_DENIED"}
    }


def test_large_sheet_serves_fast(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    rows: list[list[Any]] = [["id", "label", "amount", "when", "share", "flag"]]
    rows += [
        [i, f"row {i}", i * 1.5, Cell.date("2024-01-01"), Cell.percent(i / 100_000), i % 2 == 0] for i in range(25_000)
    ]
    sid = emu.add_spreadsheet("Big", {"Data": rows}, shared_with=[SA])
    started = time.monotonic()
    resp = session.get(
        f"{server.url}/v4/spreadsheets/{sid}/values/Data",
        params={"valueRenderOption": "UNFORMATTED_VALUE"},
        headers=bearer(token),
        timeout=30,
    )
    elapsed = time.monotonic() - started
    body = resp.json()
    assert len(body["values"]) == 25_001 and body["range"] == "Data!A1:Z25001" and body["values"][-1][0] == 24_999
    assert elapsed < 3.0, f"25,000 rows took {elapsed:.2f}s"


# --------------------------------------------------------------------------------------------
# quotas, faults, request log


def test_sheets_read_quota_per_principal(session: requests.Session) -> None:
    emu = GoogleEmulator(
        clock=FakeClock(NOW, frozen=True),
        limits={SHEETS_READ_QUOTA: Limit(rps=3, kind="rolling", window=60.0, name="ReadRequestsPerMinutePerUser")},
        sheets_retry_after=True,
    )
    token, other = emu.issue_token(SA), emu.issue_token(OTHER)
    sid = emu.add_spreadsheet("Book", {"S": [["a"]]}, shared_with=[SA, OTHER])
    with emu.serve() as server:
        url = f"{server.url}/v4/spreadsheets/{sid}/values/S"
        codes = [session.get(url, headers=bearer(token), timeout=10).status_code for _ in range(3)]
        limited = session.get(url, headers=bearer(token), timeout=10)
        assert codes == [200, 200, 200] and limited.status_code == 429
        error = limited.json()["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED" and error["code"] == 429
        assert error["message"].startswith(
            "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' of "
            "service 'sheets.googleapis.com' for consumer 'project_number:"
        )
        info = error["details"][0]
        assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "RATE_LIMIT_EXCEEDED"
        assert (
            info["metadata"]["quota_limit"] == "ReadRequestsPerMinutePerUser"
            and info["metadata"]["service"] == "sheets.googleapis.com"
        )
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert session.get(url, headers=bearer(other), timeout=10).status_code == 200
        assert emu.stats.throttled(key=SA)[0]["policy"] == "ReadRequestsPerMinutePerUser"
        # Drive calls are a separate quota.
        assert session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10).status_code == 200


@pytest.mark.parametrize(("reason", "status"), [("userRateLimitExceeded", 403), ("rateLimitExceeded", 429)])
def test_drive_query_quota(reason: str, status: int, session: requests.Session) -> None:
    emu = GoogleEmulator(
        clock=FakeClock(NOW, frozen=True),
        limits={DRIVE_QUOTA: Limit(rps=2, kind="rolling", window=100.0, name="QueriesPer100SecondsPerUser")},
        drive_rate_error=reason,
    )
    token = emu.issue_token(SA)
    with emu.serve() as server:
        codes = [session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10) for _ in range(3)]
        assert [c.status_code for c in codes] == [200, 200, status]
        error = codes[-1].json()["error"]
        message = "User Rate Limit Exceeded" if status == 403 else "Rate Limit Exceeded"
        assert error["code"] == status and error["message"] == message
        assert error["errors"] == [{"message": message, "domain": "usageLimits", "reason": reason}]


def test_faults_answer_google_shaped_errors(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    sid = emu.add_spreadsheet("Book", {"S": [["a"]]}, shared_with=[SA])
    drive_url, sheets_url = f"{server.url}/drive/v3/files", f"{server.url}/v4/spreadsheets/{sid}/values/S"
    emu.inject("status", status=503, path="/drive/")
    unavailable = session.get(drive_url, headers=bearer(token), timeout=10)
    assert unavailable.status_code == 503 and unavailable.json()["error"]["errors"][0]["reason"] == "backendError"
    emu.inject("status", status=403, path="/drive/", reason="insufficientPermissions")
    forbidden = session.get(drive_url, headers=bearer(token), timeout=10).json()["error"]
    assert forbidden["code"] == 403 and forbidden["errors"][0]["reason"] == "insufficientPermissions"
    emu.inject("status", status=403, path="/drive/")
    assert (
        session.get(drive_url, headers=bearer(token), timeout=10).json()["error"]["errors"][0]["reason"]
        == "userRateLimitExceeded"
    )
    emu.inject("status", status=429, path="/v4/")
    assert session.get(sheets_url, headers=bearer(token), timeout=10).json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    emu.inject("status", status=403, path="/v4/")
    assert session.get(sheets_url, headers=bearer(token), timeout=10).json()["error"]["status"] == "PERMISSION_DENIED"
    emu.inject("status", status=500, path="/v4/")
    assert session.get(sheets_url, headers=bearer(token), timeout=10).json()["error"]["status"] == "INTERNAL"
    emu.inject("status", status=502)
    gateway = session.get(sheets_url, headers=bearer(token), timeout=10)
    assert gateway.status_code == 502 and gateway.headers["Content-Type"].startswith("text/html")
    assert session.get(sheets_url, headers=bearer(token), timeout=10).status_code == 200


def test_request_log_counts_reads(served: tuple[GoogleEmulator, FakeServer], session: requests.Session) -> None:
    emu, server = served
    token = emu.issue_token(SA)
    sid = emu.add_spreadsheet("Book", {"S": [["a"]]}, shared_with=[SA])
    list_all(session, server.url, token, q="trashed = false")
    session.get(f"{server.url}/drive/v3/files/{sid}", headers=bearer(token), timeout=10)

    def value_reads() -> int:
        return sum(1 for r in emu.request_log if "/values" in r.path)

    assert value_reads() == 0 and all(r.key == SA for r in emu.request_log)
    session.get(f"{server.url}/v4/spreadsheets/{sid}/values/S", headers=bearer(token), timeout=10)
    assert value_reads() == 1 and emu.stats.count(key=SA, path="/v4/spreadsheets/") == 1


# --------------------------------------------------------------------------------------------
# discovery documents


def test_emulator_traffic_matches_the_discovery_documents(
    served: tuple[GoogleEmulator, FakeServer], session: requests.Session
) -> None:
    specs.require_vendor_specs("drive")
    specs.require_vendor_specs("sheets")
    emu, server = served
    token = emu.issue_token(SA)
    folder = emu.add_folder("in", shared_with=[SA])
    emu.add_csv_files(folder, 5, 2)
    drive = emu.add_shared_drive("Team", [SA])
    emu.add_file("shared.csv", "a\n", emu.add_folder("x", drive_id=drive))
    sid = emu.add_spreadsheet(
        "Book", {"S": [["a", Cell.date("2024-01-01"), Cell.formula("=1", 1)], [Cell.error("#N/A")]]}, parent=folder
    )
    fid = emu.items[folder].id
    fields = "nextPageToken,files(id,name,mimeType,modifiedTime,size,version,md5Checksum,parents,driveId)"
    targets: list[tuple[str, dict[str, Any]]] = [
        ("/drive/v3/files", {"q": f"'{fid}' in parents and trashed = false", "pageSize": "2", "fields": fields}),
        ("/drive/v3/files", {"orderBy": "modifiedTime desc,name", "prettyPrint": "false", "$.xgafv": "2"}),
        (
            "/drive/v3/files",
            {
                "corpora": "drive",
                "driveId": drive,
                "supportsAllDrives": "true",
                "includeItemsFromAllDrives": "true",
                "fields": "*",
            },
        ),
        (f"/drive/v3/files/{sid}", {"fields": "*", "supportsAllDrives": "true"}),
        (f"/drive/v3/files/{sid}", {"alt": "media"}),
        (f"/drive/v3/files/{sid}/export", {"mimeType": "text/csv"}),
        (f"/drive/v3/files/{sid}/export", {"mimeType": "image/png"}),
        ("/drive/v3/files/nope", {}),
        ("/drive/v3/files", {"q": "name = 'x"}),
        (f"/v4/spreadsheets/{sid}", {"includeGridData": "false"}),
        (f"/v4/spreadsheets/{sid}", {"includeGridData": "true", "ranges": "S!A1:C2"}),
        (
            f"/v4/spreadsheets/{sid}/values/S!A1:C",
            {"valueRenderOption": "UNFORMATTED_VALUE", "majorDimension": "COLUMNS"},
        ),
        (
            f"/v4/spreadsheets/{sid}/values:batchGet",
            {"ranges": ["S!A1", "S!B1:C2"], "dateTimeRenderOption": "FORMATTED_STRING"},
        ),
        (f"/v4/spreadsheets/{sid}/values/Nope!A1", {}),
        ("/v4/spreadsheets/nope", {}),
    ]
    problems: list[str] = []
    for path, params in targets:
        resp = session.get(server.url + path, params=params, headers=bearer(token), timeout=10)
        api = "drive" if path.startswith("/drive/") else "sheets"
        recorded = emu.request_log[-1]
        problems += specs.validate_request(api, "GET", recorded.path, recorded.query)
        problems += specs.validate_response(
            api, "GET", recorded.path, resp.status_code, resp.content, query=recorded.query
        )
    emu.advance_clock(7200)
    expired = session.get(f"{server.url}/drive/v3/files", headers=bearer(token), timeout=10)
    problems += specs.validate_response("drive", "GET", "/drive/v3/files", 401, expired.content)
    assert problems == []


def test_discovery_checker_catches_problems() -> None:
    specs.require_vendor_specs("drive")
    specs.require_vendor_specs("sheets")
    assert (
        specs.validate_request("drive", "GET", "/drive/v3/files", {"pageSize": "100", "fields": "*", "key": "k"}) == []
    )
    assert specs.validate_request("drive", "GET", "/drive/v3/files", {"pageSize": "0"})
    assert specs.validate_request("drive", "GET", "/drive/v3/files", {"pageSize": "ten"})
    assert specs.validate_request("drive", "GET", "/drive/v3/files", {"colour": "red"})
    assert specs.validate_request("drive", "GET", "/drive/v3/files", {"supportsAllDrives": "yes"})
    assert specs.validate_request("drive", "GET", "/drive/v3/files/abc/export", {})  # mimeType is required
    assert specs.validate_request("drive", "GET", "/drive/v3/nothing", {})
    assert specs.validate_request("sheets", "GET", "/v4/spreadsheets/x/values/A1", {"valueRenderOption": "PRETTY"})
    assert (
        specs.validate_request(
            "sheets", "GET", "/v4/spreadsheets/x/values:batchGet", [("ranges", "A1"), ("ranges", "B1")]
        )
        == []
    )
    assert specs.validate_request("sheets", "GET", "/v4/spreadsheets/x", {"$.xgafv": "3"})
    good_file = {"kind": "drive#file", "id": "1", "size": "12", "modifiedTime": "2024-05-01T10:00:00.123Z"}
    assert specs.validate_response("drive", "GET", "/drive/v3/files/1", 200, good_file) == []
    assert specs.validate_response("drive", "GET", "/drive/v3/files/1", 200, {**good_file, "size": 12})
    assert specs.validate_response("drive", "GET", "/drive/v3/files/1", 200, {**good_file, "modifiedTime": "yesterday"})
    assert specs.validate_response("drive", "GET", "/drive/v3/files/1", 200, {**good_file, "modifiedtime": "x"})
    assert specs.validate_response("drive", "GET", "/drive/v3/files", 200, {"files": [{"parents": "p"}]})
    assert specs.validate_response("drive", "GET", "/drive/v3/files/1", 200, b"abc", query={"alt": "media"}) == []
    assert specs.validate_response("sheets", "GET", "/v4/spreadsheets/x/values/A1", 200, {"majorDimension": "DIAGONAL"})
    assert (
        specs.validate_response(
            "sheets", "GET", "/v4/spreadsheets/x", 404, {"error": {"code": 404, "message": "m", "status": "NOT_FOUND"}}
        )
        == []
    )
    assert specs.validate_response("sheets", "GET", "/v4/spreadsheets/x", 404, {"error": {"code": 400, "message": "m"}})
    assert specs.validate_response(
        "sheets", "GET", "/v4/spreadsheets/x", 404, {"error": {"code": 404, "status": "GONE"}}
    )
    assert specs.validate_response("drive", "GET", "/drive/v3/files", 403, {"error": "denied"})


@pytest.mark.slow
def test_cli_process_for_benchmarks() -> None:
    with ServerProcess(
        "tests.fakes.google_api", ["--port", "0", "--latency-ms", "5", "--sheets-reads-per-minute", "2"]
    ) as proc:
        admin = AdminClient(proc.url)
        assert admin.health()["api"] == "google"
        info = admin.call("add_service_account", email=SA)
        assert info["token_uri"] == f"{proc.url}/token"
        folder = admin.call("add_folder", name="bench", shared_with=[SA])
        ids = admin.call("add_csv_files", folder_id=folder, count=30, rows_per_file=100)
        sid = admin.call("add_spreadsheet", title="Book", sheets={"S": [["a", {"percent": 0.5}]]}, shared_with=[SA])
        token = admin.call("issue_token", principal=SA)
        with requests.Session() as s:
            files = list_all(s, proc.url, token, q=f"'{folder}' in parents", pageSize=7)
            assert sorted(f["id"] for f in files) == sorted(ids)
            got = s.get(f"{proc.url}/v4/spreadsheets/{sid}/values/S", headers=bearer(token), timeout=10)
            assert got.json()["values"] == [["a", "50.00%"]]
            s.get(f"{proc.url}/v4/spreadsheets/{sid}/values/S", headers=bearer(token), timeout=10)
            assert (
                s.get(f"{proc.url}/v4/spreadsheets/{sid}/values/S", headers=bearer(token), timeout=10).status_code
                == 429
            )
        assert admin.stats()["throttled"][0]["policy"] == "ReadRequestsPerMinutePerUser"
