"""The connector contract suite on object-store warehouses: S3 (moto's server) and Azure Blob (Azurite).

The same harnesses and checks as test_connector_contract.py (discover → extract → schema conforms
→ cursor advances → re-run loads nothing), with the project's target switched to a recipe whose
warehouse is a fresh bucket or container. The file-based CSV source and the PostgreSQL source
stand for the two kinds of connector.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.cloud_targets import STORES, TYPED_S3_KEY_ID, typed_settings_target
from tests.integration.contract_base import Harness
from tests.integration.test_connector_contract import CsvHarness, PostgresHarness, assert_contract

HARNESSES: list[type[Harness]] = [CsvHarness, PostgresHarness]


@pytest.fixture(params=HARNESSES, ids=[h.name for h in HARNESSES])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    instance: Harness = request.param(tmp_path)
    instance.setup()
    try:
        yield instance
    finally:
        instance.teardown()


@pytest.mark.parametrize("store", STORES)
def test_connector_contract_on_object_storage(store: str, harness: Harness, request: pytest.FixtureRequest) -> None:
    target = typed_settings_target(store, request, harness.root)
    target.use_in(harness.root / "tenants/acme/jobs/contract.yaml")

    assert_contract(harness)

    # The files really are in the bucket/container, not on the local disk.
    (table,) = [target.writer(harness.root).load_table("acme", "items")]
    assert table is not None and table.metadata_location.startswith(target.warehouse.split("/warehouse")[0])
    assert not (harness.root / ".dativo/warehouse").exists()
    if store == "s3":
        # The keys the table's files are written with are the recipe's (moto accepts any key, so
        # this is where ignoring them would show).
        assert table.io.properties.get("s3.access-key-id") == TYPED_S3_KEY_ID
