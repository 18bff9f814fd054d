"""The HubSpot source in the connector contract suite: contacts on the HubSpot emulator.

The object is read incrementally by ``lastmodifieddate`` through the search endpoint, with the
shipped contract ``hubspot/contacts`` v1, HubSpot's default rate limits and dativo's default
buckets. HubSpot assigns record ids itself, so the 10 seeded contacts get the emulator's next
ids rather than 1..10; every contact is stamped a day in the past, a second apart, so the newest
ones are settled (older than the source's settle lag) and ``add_rows`` adds newer ones.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from pathlib import Path
from typing import Any, ClassVar

import yaml

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.types import arrow_type, type_label
from tests.fakes.hubspot_api import HubSpotEmulator
from tests.fakes.server import FakeServer
from tests.integration.contract_base import Harness

REPO = Path(__file__).resolve().parents[2]
CONTRACT_FILE = REPO / "connectors/schemas/hubspot/contacts.v1.yaml"
CONTRACT = SchemaContract.model_validate(yaml.safe_load(CONTRACT_FILE.read_text()))
TOKEN = "pat-na1-c0ffee00-0000-4000-8000-contract0001"


class HubSpotHarness(Harness):
    """Contacts on a HubSpot emulator, through the shipped contract."""

    name = "hubspot"
    key: ClassVar[str] = "id"
    expected_schema: ClassVar[list[tuple[str, str]]] = [(c.name, type_label(arrow_type(c))) for c in CONTRACT.columns]
    discovered_columns: ClassVar[set[str]] = {"id", "email", "firstname", "lastname", "lastmodifieddate"}

    def setup(self) -> None:
        self.emulator = HubSpotEmulator()
        self.emulator.add_portal(TOKEN, contacts=0, companies=0, deals=0, tickets=0, owners=3)
        self.server: FakeServer = self.emulator.serve().start()
        self.owner = self.emulator.portal_for(TOKEN).owners[0]["id"]
        self.base_ms = int((time.time() - 86_400) * 1000)
        self.created: dict[int, int] = {}  # position (1-based) -> HubSpot id
        self.add_rows(1, 10)
        (self.root / "connectors/schemas/hubspot").mkdir(parents=True)
        shutil.copy(CONTRACT_FILE, self.root / "connectors/schemas/hubspot/contacts.v1.yaml")
        self.write_project(
            "name: hubspot\ntype: hubspot\n",
            "tenant: acme\nname: contract\nsource:\n  recipe: hubspot\n"
            f"  connection: {{base_url: '{self.server.url}'}}\n"
            "  credentials: {access_token: '${HUBSPOT_TOKEN}'}\n"
            "target: {recipe: local}\nobjects:\n  - name: contacts\n"
            "    contract: {name: hubspot/contacts, version: 1}\n"
            "    incremental: {strategy: updated, cursor_field: lastmodifieddate}\n",
        )

    def add_rows(self, first_id: int, count: int) -> None:
        for position in range(first_id, first_id + count):
            record = self.emulator.create_record(
                TOKEN,
                "contacts",
                {
                    "email": f"item{position}@example.com",
                    "firstname": f"item {position}",
                    "lastname": "Harness",
                    "lifecyclestage": "lead",
                    "hubspot_owner_id": self.owner,
                },
                created_ms=self.base_ms + position * 1000,
            )
            self.created[position] = int(record["id"])

    def check_row(self, rows: list[dict[str, Any]]) -> None:
        stamp = dt.datetime.fromtimestamp((self.base_ms + 3000) / 1000, tz=dt.timezone.utc)
        row = dict(rows[2])
        assert row.pop("createdate") == stamp and row.pop("lastmodifieddate") == stamp
        assert row == {
            "id": self.created[3],
            "email": "item3@example.com",
            "firstname": "item 3",
            "lastname": "Harness",
            "phone": None,
            "company": None,
            "lifecyclestage": "lead",
            "hubspot_owner_id": self.owner,
        }

    def env(self) -> dict[str, str]:
        return {"HUBSPOT_TOKEN": TOKEN}

    def teardown(self) -> None:
        self.server.stop()
