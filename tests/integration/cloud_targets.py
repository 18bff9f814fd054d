"""Point a test project's jobs at a warehouse on S3 (moto's server) or Azure Blob (Azurite).

Each test gets a fresh bucket or container from the fixtures in tests/servers.py; the SQL catalog
stays in the project (SQLite), so nothing is shared between tests but the emulators.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dativo_dagster.config.loader import load_target_recipe
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter

STORES = ("s3", "azure")

TYPED_S3_KEY_ID = "typed-recipe-key-id"
"""The access key id the typed S3 recipe passes (moto takes any key): seen in the table's FileIO."""


@dataclass(frozen=True)
class CloudTarget:
    """A target recipe of a project and the warehouse it writes to."""

    recipe: str
    warehouse: str

    def use_in(self, job_file: Path) -> None:
        """Switch a job file from the local target to this one."""
        text = job_file.read_text()
        assert "recipe: local" in text, job_file
        job_file.write_text(text.replace("recipe: local", f"recipe: {self.recipe}"))

    def writer(self, project: Path) -> IcebergWriter:
        """The project's catalog through this recipe, as a run resolves it (from the environment)."""
        recipe = load_target_recipe(project, self.recipe)
        return IcebergWriter(build_catalog(recipe, SecretResolver(), project))


def typed_settings_target(store: str, request: pytest.FixtureRequest, project: Path) -> CloudTarget:
    """A recipe spelling out the storage block's settings: S3 endpoint, region and path style; Azure
    account, blob endpoint and key. Keys are references, set in this test's environment."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    catalog = "catalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\n"
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        moto = request.getfixturevalue("moto_server")
        # The run must reach moto through the recipe alone: the environment the aws fixture set up
        # (endpoint, region, keys), the shared AWS files and the instance metadata service are all
        # out of its reach, so a run that ignored the storage block would go to AWS and fail.
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                     "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):  # fmt: skip
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(project / "no-aws-credentials"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(project / "no-aws-config"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("DATIVO_TEST_S3_ENDPOINT", moto.endpoint)
        monkeypatch.setenv("DATIVO_TEST_S3_KEY_ID", TYPED_S3_KEY_ID)
        monkeypatch.setenv("DATIVO_TEST_S3_SECRET", "testing")
        storage = (
            f"storage:\n  s3:\n    endpoint: ${{DATIVO_TEST_S3_ENDPOINT}}\n    region: {moto.region}\n"
            "    path_style: true\n"
            "    access_key_id: ${DATIVO_TEST_S3_KEY_ID}\n    secret_access_key: ${DATIVO_TEST_S3_SECRET}\n"
        )
        warehouse = f"s3://{bucket}/warehouse"
    else:
        azurite = request.getfixturevalue("azurite_server")
        container = request.getfixturevalue("azure_container")
        monkeypatch.setenv("DATIVO_TEST_AZURE_KEY", azurite.key)
        storage = (
            f"storage:\n  azure:\n    account_name: {azurite.account}\n    endpoint: {azurite.blob_endpoint}\n"
            "    account_key: ${DATIVO_TEST_AZURE_KEY}\n"
        )
        warehouse = f"abfs://{container}/warehouse"
    (project / "connectors/targets" / f"{store}_typed.yaml").write_text(
        f"name: {store}_typed\n{catalog}{storage}warehouse: {warehouse}\n"
    )
    return CloudTarget(f"{store}_typed", warehouse)


def shipped_recipe_target(store: str, request: pytest.FixtureRequest, project: Path) -> CloudTarget:
    """The repository's own ``s3`` / ``azure`` recipe, configured the way a deployment does it:
    the catalog URI, the warehouse and the credentials from the environment."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("DATIVO_CATALOG_URI", f"sqlite:///{project}/.dativo/catalog.db")
    if store == "s3":
        warehouse = f"s3://{request.getfixturevalue('s3_bucket')}/warehouse"
        monkeypatch.delenv("DATIVO_S3_ENDPOINT", raising=False)  # AWS_ENDPOINT_URL (the aws fixture) instead
    else:
        azurite = request.getfixturevalue("azurite_server")
        warehouse = f"abfs://{request.getfixturevalue('azure_container')}/warehouse"
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("ICEBERG_WAREHOUSE", warehouse)
    assert (project / "connectors/targets" / f"{store}.yaml").exists()
    return CloudTarget(store, warehouse)
