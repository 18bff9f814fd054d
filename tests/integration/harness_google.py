"""The Google sources in the connector contract suite, on the Google emulator.

``gdrive_csv``: a shared folder whose CSV files hold the rows (each ``add_rows`` uploads a new
file), read incrementally by ``modifiedTime``. ``google_sheets``: one worksheet, a full refresh
that is re-read when the spreadsheet's version changes (so a re-run of an unchanged sheet loads
nothing, and its "cursor" is the spreadsheet's version).
"""

from __future__ import annotations

import json
from typing import ClassVar

from tests.fakes.google_api import Cell, GoogleEmulator
from tests.fakes.server import FakeServer
from tests.integration.contract_base import Harness

SA_EMAIL = "contract@acme-data.iam.gserviceaccount.com"
FAST = "rate_limit: {rps: 1000, burst: 1000}, rate_limits: {sheets: {rps: 1000, burst: 1000}}"


class _GoogleHarness(Harness):
    def start(self) -> None:
        self.emulator = GoogleEmulator()
        self.server: FakeServer = self.emulator.serve().start()
        self.sa_key = self.emulator.add_service_account(SA_EMAIL)

    def env(self) -> dict[str, str]:
        return {"GOOGLE_SA": json.dumps(self.sa_key)}

    def job(self, options: str, incremental: str) -> str:
        return (
            "tenant: acme\nname: contract\nsource:\n"
            f"  recipe: {self.name}\n  connection: {{base_url: '{self.server.url}', {FAST}}}\n"
            "  credentials: {service_account_json: '${GOOGLE_SA}'}\n"
            "target: {recipe: local}\nobjects:\n  - name: items\n    contract: {name: contract/items, version: 1}\n"
            f"    options: {options}\n    incremental: {incremental}\n"
        )

    def teardown(self) -> None:
        self.server.stop()


class GDriveCsvHarness(_GoogleHarness):
    """A Drive folder of CSV files."""

    name = "gdrive_csv"
    expected_schema: ClassVar[list[tuple[str, str]]] = [
        *Harness.expected_schema,
        ("_dativo_file", "string"),
        ("_dativo_file_name", "string"),
        ("_dativo_file_modified", "timestamptz"),
    ]

    def setup(self) -> None:
        self.start()
        self.folder = self.emulator.add_folder("contract", shared_with=[SA_EMAIL])
        self.files = 0
        self.add_rows(1, 10)
        self.write_project(
            f"name: {self.name}\ntype: {self.name}\n",
            self.job(f"{{folder_id: {self.folder}}}", "{strategy: file_mtime}"),
        )

    def add_rows(self, first_id: int, count: int) -> None:
        body = "id,label,price\n" + "".join(f"{i},item {i},{i}.50\n" for i in range(first_id, first_id + count))
        self.files += 1
        # A second apart, so the newer file is later than the cursor whatever the clock's resolution.
        self.emulator.add_file(
            f"items-{self.files}.csv", body, parent=self.folder, modified_time=f"2024-05-01T10:00:{self.files:02d}Z"
        )

    def check_row(self, rows: list[dict[str, object]]) -> None:
        row = dict(rows[2])
        assert (
            row.pop("_dativo_file_name") == "items-1.csv"
            and row.pop("_dativo_file")
            and row.pop("_dativo_file_modified")
        )
        super().check_row([{}, {}, row])


class GoogleSheetsHarness(_GoogleHarness):
    """One worksheet, typed by the contract."""

    name = "google_sheets"
    full_refresh = True
    expected_schema: ClassVar[list[tuple[str, str]]] = [*Harness.expected_schema, ("_dativo_sheet_row", "int64")]

    def setup(self) -> None:
        self.start()
        self.rows: list[list[object]] = [["id", "label", "price"]]
        self.book = self.emulator.add_spreadsheet("Contract", {"Items": self.rows}, shared_with=[SA_EMAIL])
        self.add_rows(1, 10)
        self.write_project(
            f"name: {self.name}\ntype: {self.name}\n",
            self.job(f"{{spreadsheet_id: {self.book}, worksheet: Items}}", "{strategy: full_refresh}"),
        )

    def add_rows(self, first_id: int, count: int) -> None:
        self.rows += [[i, f"item {i}", Cell.currency(i + 0.5)] for i in range(first_id, first_id + count)]
        self.emulator.set_cells(self.book, "Items", self.rows)

    def check_row(self, rows: list[dict[str, object]]) -> None:
        row = dict(rows[2])
        assert row.pop("_dativo_sheet_row") == 4
        super().check_row([{}, {}, row])
