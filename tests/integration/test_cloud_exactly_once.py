"""Kill the process around the Iceberg commit on an object-store warehouse, re-run: no duplicate, no gap.

The shipped ``s3`` and ``azure`` recipes, configured from the environment as a deployment does
(catalog URI, warehouse, credentials), against moto's S3 and Azurite. Runs go through the
``dativo`` CLI in a subprocess (killed with SIGKILL by ``DATIVO_FAULT_INJECT``), and the table is
read back through the same recipe and catalog.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.cloud_targets import STORES, CloudTarget, shipped_recipe_target
from tests.integration.test_exactly_once import (  # noqa: F401 - dagster_home is a fixture
    append_orders,
    dagster_home,
    dativo,
    latest_metadata,
)

pytestmark = pytest.mark.slow


def order_ids(target: CloudTarget, project: Path) -> list[int]:
    table = target.writer(project).load_table("demo", "orders")
    assert table is not None
    assert table.metadata_location.startswith(target.warehouse), table.metadata_location
    return table.scan(selected_fields=("order_id",)).to_arrow().column("order_id").to_pylist()


@pytest.mark.parametrize("store", STORES)
def test_killed_around_the_commit_on_object_storage(
    store: str,
    project: Path,
    dagster_home: Path,  # noqa: F811 - the fixture imported above
    request: pytest.FixtureRequest,
) -> None:
    target = shipped_recipe_target(store, request, project)
    target.use_in(project / "tenants/demo/jobs/shop.yaml")

    # Killed after the first commit: the store has the rows and the cursor, Dagster has no record.
    killed = dativo(project, "run", "demo/shop", "--object", "orders", fault="after_commit")
    assert killed.returncode == 137, killed.stderr
    assert len(order_ids(target, project)) == 3000

    # Killed before the next commit: its data files may be in the store, but no snapshot has them.
    append_orders(project, 3001, 10)
    killed = dativo(project, "run", "demo/shop", "--object", "orders", fault="before_commit")
    assert killed.returncode == 137, killed.stderr
    assert len(order_ids(target, project)) == 3000

    # The re-run starts from the table's cursor: the first 3,000 once (no duplicate), the 10 new (no gap).
    rerun = dativo(project, "run", "demo/shop", "--object", "orders")
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(order_ids(target, project)) == list(range(1, 3011))
    metadata = latest_metadata(dagster_home)
    assert '"value":3010' in str(metadata["dativo/cursor"])
    assert "cursor taken from the table" in str(metadata["dativo/cursor_origin"])
    assert not (project / ".dativo/warehouse").exists()
