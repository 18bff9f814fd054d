"""Cloud catalogs and warehouses end to end: AWS Glue on moto, and ``dativo validate``'s warehouse probe
on S3 (moto) and Azure Blob (Azurite), with a missing bucket or container reported as CFG001."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dativo_dagster.cli import main
from dativo_dagster.iceberg.storage import PROBE_PREFIX
from tests.integration.cloud_targets import shipped_recipe_target
from tests.servers import Moto


@pytest.fixture
def glue_namespace(project: Path, aws: Moto) -> Iterator[str]:
    """A namespace of the demo tenant no other test uses (Glue databases are account-wide);
    dropped from the shared moto server afterwards."""
    namespace = f"demo__g{uuid.uuid4().hex[:10]}"
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: local", f"recipe: glue\n  namespace: {namespace}"))
    yield namespace
    glue = aws.client("glue")
    for table in glue.get_tables(DatabaseName=namespace).get("TableList", []) if _exists(glue, namespace) else []:
        glue.delete_table(DatabaseName=namespace, Name=table["Name"])
    if _exists(glue, namespace):
        glue.delete_database(Name=namespace)


def _exists(glue, namespace: str) -> bool:  # type: ignore[no-untyped-def]
    return bool([db for db in glue.get_databases()["DatabaseList"] if db["Name"] == namespace])


def test_glue_catalog_round_trip_on_moto(
    project: Path,
    aws: Moto,
    s3_bucket: str,
    glue_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ICEBERG_WAREHOUSE", f"s3://{s3_bucket}/warehouse")

    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "catalog 'glue' reachable" in out and f"s3://{s3_bucket}/warehouse" in out

    assert main(["run", "demo/shop"]) == 0
    assert "3,000 row(s) written" in capsys.readouterr().out
    glue = aws.client("glue")
    table = glue.get_table(DatabaseName=glue_namespace, Name="orders")["Table"]
    assert table["Parameters"]["table_type"].upper() == "ICEBERG"
    metadata = table["Parameters"]["metadata_location"]
    assert metadata.startswith(f"s3://{s3_bucket}/warehouse/")

    # The incremental re-run finds nothing new: no commit, the Glue pointer does not move.
    assert main(["run", "demo/shop"]) == 0
    assert "orders → " in (out := capsys.readouterr().out) and "up to date, 0 row(s) written" in out
    assert glue.get_table(DatabaseName=glue_namespace, Name="orders")["Table"]["Parameters"]["metadata_location"] == (
        metadata
    )

    # Loading twice left every order once, read back through a separate Glue catalog client.
    from pyiceberg.catalog import load_catalog

    catalog = load_catalog("check", type="glue", **{"glue.region": aws.region, "s3.region": aws.region,
                                                    "s3.endpoint": aws.endpoint})  # fmt: skip
    ids = catalog.load_table((glue_namespace, "orders")).scan().to_arrow().column("order_id").to_pylist()
    assert sorted(ids) == list(range(1, 3001))
    assert not (project / ".dativo/warehouse").exists()


@pytest.mark.parametrize("store", ["s3", "azure"])
def test_validate_writes_and_deletes_a_probe_under_the_warehouse(
    store: str, project: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    target = shipped_recipe_target(store, request, project)
    target.use_in(project / "tenants/demo/jobs/shop.yaml")
    assert main(["validate"]) == 0
    assert f"warehouse of '{store}' writable ({target.warehouse})" in capsys.readouterr().out
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        listing = request.getfixturevalue("moto_server").client("s3").list_objects_v2(Bucket=bucket)
        keys = [item["Key"] for item in listing.get("Contents", [])]
    else:
        from azure.storage.blob import BlobServiceClient

        azurite = request.getfixturevalue("azurite_server")
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
            request.getfixturevalue("azure_container")
        )
        keys = [blob.name for blob in container.list_blobs()]
    # Nothing but (on S3) the empty directory marker PyArrow leaves when it deletes a folder's last file.
    assert not [key for key in keys if PROBE_PREFIX in key], keys
    assert set(keys) <= {"warehouse/"}, keys


@pytest.mark.parametrize("store", ["s3", "azure"])
def test_a_missing_bucket_or_container_is_cfg001_naming_it(
    store: str,
    project: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = shipped_recipe_target(store, request, project)
    target.use_in(project / "tenants/demo/jobs/shop.yaml")
    missing = f"dativo-missing-{uuid.uuid4().hex[:8]}"
    scheme = "s3" if store == "s3" else "abfs"
    monkeypatch.setenv("ICEBERG_WAREHOUSE", f"{scheme}://{missing}/warehouse")

    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "CFG001" in err and missing in err and f"connectors/targets/{store}.yaml: warehouse" in err

    # A run fails the same way, once: a permanent error is not retried.
    assert main(["run", "demo/shop", "--object", "orders"]) == 2
    err = capsys.readouterr().err
    assert "CFG001" in err and missing in err and "Traceback" not in err


def test_an_unreachable_s3_endpoint_is_stg001(
    project: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = shipped_recipe_target("s3", request, project)
    target.use_in(project / "tenants/demo/jobs/shop.yaml")
    monkeypatch.setenv("DATIVO_S3_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "STG001" in err and "Traceback" not in err


def test_an_azure_warehouse_in_another_account_than_the_storage_block_is_cfg001(
    project: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The emulator's account would take the data files while the table metadata pointed at another
    # account: refused before anything is written.
    azurite = request.getfixturevalue("azurite_server")
    container = request.getfixturevalue("azure_container")
    monkeypatch.setenv("DATIVO_TEST_AZURE_KEY", azurite.key)
    monkeypatch.setenv("ICEBERG_WAREHOUSE", f"abfs://{container}@someotheraccount.dfs.core.windows.net/wh")
    (project / "connectors/targets/az_other.yaml").write_text(
        "name: az_other\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\n"
        f"storage: {{azure: {{account_name: {azurite.account}, endpoint: '{azurite.blob_endpoint}', "
        "account_key: '${DATIVO_TEST_AZURE_KEY}'}}\nwarehouse: '${ICEBERG_WAREHOUSE}'\n"
    )
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: local", "recipe: az_other"))

    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "CFG001" in err and "connectors/targets/az_other.yaml: warehouse" in err and "someotheraccount" in err
    assert azurite.key not in err and "Traceback" not in err
    from azure.storage.blob import BlobServiceClient

    blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(container)
    assert not list(blobs.list_blobs())
