"""Target recipes on object storage: the typed storage block, literal credentials refused, schemes
checked, FileIO properties mapped, object-store failures coded."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pyiceberg.io as pyiceberg_io
import pytest

from dativo_dagster.config.loader import ConfigProblems, load_target_recipe
from dativo_dagster.config.secrets import SecretResolver, redact_text, registered_secrets
from dativo_dagster.errors import AuthError, ConfigError, StorageError, StorageStateError
from dativo_dagster.iceberg.catalog import build_catalog, catalog_properties
from dativo_dagster.iceberg.failures import storage_failure

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def recipe(tmp_path: Path, text: str, name: str = "cloud"):  # type: ignore[no-untyped-def]
    (tmp_path / "connectors/targets").mkdir(parents=True, exist_ok=True)
    (tmp_path / "connectors/targets" / f"{name}.yaml").write_text(f"name: {name}\n{text}")
    return load_target_recipe(tmp_path, name)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigProblems) as caught:
        recipe(tmp_path, text)
    assert caught.value.code == "CFG001"
    return "\n".join(caught.value.problems)


SQL = "catalog: {type: sql, uri: 'sqlite:///c.db'}\n"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            SQL + "storage: {s3: {access_key_id: AKIAIOSFODNN7EXAMPLE, secret_access_key: '${AWS_SECRET}'}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.access_key_id",
        ),
        (
            SQL + "storage: {s3: {access_key_id: '${K}', secret_access_key: wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.secret_access_key",
        ),
        (
            SQL + "storage: {s3: {access_key_id: '${K}', secret_access_key: '${S}', session_token: FwoGZXIvYXdzE}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.session_token",
        ),
        (
            SQL + f"storage: {{azure: {{account_name: acct, account_key: '{AZURITE_KEY}'}}}}\nwarehouse: abfs://c/w\n",
            "storage.azure.account_key",
        ),
        (
            SQL + "storage: {azure: {account_name: acct, sas_token: 'sv=2024&sig=abcdef'}}\nwarehouse: abfs://c/w\n",
            "storage.azure.sas_token",
        ),
        (
            SQL + f"storage: {{azure: {{connection_string: 'AccountName=a;AccountKey={AZURITE_KEY};'}}}}\n"
            "warehouse: abfs://c/w\n",
            "storage.azure.connection_string",
        ),
        (
            SQL.replace("}", ", properties: {s3.secret-access-key: wJalrXUtnFEMI}}") + "warehouse: s3://b/w\n",
            "s3.secret-access-key",
        ),
        (
            SQL.replace("}", f", properties: {{adls.connection-string: 'AccountKey={AZURITE_KEY}'}}}}")
            + "warehouse: abfs://c/w\n",
            "adls.connection-string",
        ),
        (
            "catalog: {type: rest, uri: 'https://x', properties: {credential: 'id:secret'}}\nwarehouse: w\n",
            "credential",
        ),
        ("catalog: {type: sql, uri: 'postgresql://iceberg:hunter22@db/iceberg'}\nwarehouse: s3://b/w\n", "catalog.uri"),
    ],
)
def test_a_literal_credential_is_refused_at_load_naming_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    problems = refused(tmp_path, text)
    assert "connectors/targets/cloud.yaml" in problems
    assert field in problems
    assert "literal" in problems
    # The message never repeats the credential.
    for secret in ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI", AZURITE_KEY, "hunter22", "sig=abcdef", "id:secret"):
        assert secret not in problems


def test_references_and_the_default_chain_are_accepted(tmp_path: Path) -> None:
    assert recipe(tmp_path, SQL + "storage: {s3: {region: eu-west-1}}\nwarehouse: s3://b/w\n").storage is not None
    keyed = recipe(
        tmp_path,
        SQL + "storage: {s3: {access_key_id: '${AWS_ACCESS_KEY_ID}', secret_access_key: '${AWS_SECRET_ACCESS_KEY}'}}\n"
        "warehouse: s3://b/w\n",
    )
    assert keyed.storage is not None and keyed.storage.s3 is not None
    azure = recipe(
        tmp_path,
        SQL
        + "storage: {azure: {connection_string: 'AccountName=a;AccountKey=${AZURE_KEY};'}}\nwarehouse: abfs://c/w\n",
    )
    assert azure.storage is not None and azure.storage.kind == "azure"
    uri = recipe(
        tmp_path, "catalog: {type: sql, uri: 'postgresql://iceberg:${PGPASSWORD}@db/x'}\nwarehouse: s3://b/w\n"
    )
    assert uri.catalog.uri is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SQL + "storage: {s3: {region: us-east-1}}\nwarehouse: abfs://container/w\n", "must match the storage block"),
        (SQL + "storage: {azure: {account_name: a}}\nwarehouse: s3://bucket/w\n", "must match the storage block"),
        (SQL + "storage: {s3: {region: us-east-1}}\nwarehouse: .dativo/warehouse\n", "a local path"),
        (SQL + "warehouse: gs://bucket/w\n", "unknown scheme 'gs://'"),
        (SQL + "warehouse: wasbs://c@a.blob.core.windows.net/w\n", "abfs://"),
        (SQL + "warehouse: s3:///w\n", "names no bucket"),
        (SQL + "storage: {s3: {region: x}, azure: {account_name: a}}\nwarehouse: s3://b/w\n", "exactly one"),
        (SQL + "storage: {s3: {endpoint: http://minio:9000, path_stile: true}}\nwarehouse: s3://b/w\n", "path_stile"),
    ],
)
def test_warehouse_scheme_and_storage_block_are_checked_at_load(tmp_path: Path, text: str, expected: str) -> None:
    problems = refused(tmp_path, text)
    assert "connectors/targets/cloud.yaml" in problems
    assert expected in problems


def test_a_warehouse_from_the_environment_is_checked_when_the_run_resolves_it(tmp_path: Path) -> None:
    target = recipe(tmp_path, SQL + "storage: {s3: {region: us-east-1}}\nwarehouse: '${ICEBERG_WAREHOUSE}'\n")
    with pytest.raises(ConfigError) as caught:
        catalog_properties(target, SecretResolver({"ICEBERG_WAREHOUSE": "abfs://c/w"}), tmp_path)
    assert "connectors/targets/cloud.yaml: warehouse" in str(caught.value)
    assert "CFG001" in str(caught.value)


def test_s3_settings_become_pyarrow_fileio_properties(tmp_path: Path) -> None:
    target = recipe(
        tmp_path,
        SQL + "storage:\n  s3:\n    endpoint: http://minio:9000\n    region: eu-central-1\n    path_style: false\n"
        "    access_key_id: ${MINIO_KEY}\n    secret_access_key: ${MINIO_SECRET}\nwarehouse: s3://lake/warehouse\n",
    )
    props = catalog_properties(
        target, SecretResolver({"MINIO_KEY": "minio-key-1", "MINIO_SECRET": "minio-s3cr3t"}), tmp_path
    )
    assert props["warehouse"] == "s3://lake/warehouse"
    assert props["s3.endpoint"] == "http://minio:9000"
    assert props["s3.region"] == "eu-central-1"
    assert props["s3.force-virtual-addressing"] == "true"
    assert props["s3.access-key-id"] == "minio-key-1" and props["s3.secret-access-key"] == "minio-s3cr3t"
    assert "py-io-impl" not in props  # PyArrow's S3 client
    assert redact_text("denied for minio-s3cr3t") == "denied for ***"


def test_s3_without_settings_takes_endpoint_and_region_from_the_environment(tmp_path: Path) -> None:
    target = recipe(tmp_path, SQL + "storage: {s3: {endpoint: '${S3_ENDPOINT:-}'}}\nwarehouse: s3://lake/w\n")
    environ = {"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_DEFAULT_REGION": "us-west-2"}
    props = catalog_properties(target, SecretResolver(environ), tmp_path)
    assert props["s3.endpoint"] == "http://127.0.0.1:5000" and props["s3.region"] == "us-west-2"
    assert not any(key.endswith(("access-key-id", "secret-access-key")) for key in props)  # the default chain
    bare = recipe(tmp_path, SQL + "warehouse: s3://lake/w\n", name="bare")
    assert catalog_properties(bare, SecretResolver({}), tmp_path).get("s3.endpoint") is None


def test_azure_goes_through_adlfs_and_an_emulator_endpoint_becomes_a_connection_string(tmp_path: Path) -> None:
    target = recipe(
        tmp_path,
        SQL + "storage:\n  azure:\n    account_name: devstoreaccount1\n"
        "    endpoint: http://127.0.0.1:10000/devstoreaccount1\n    account_key: ${AZURE_KEY}\n"
        "warehouse: abfs://lake/warehouse\n",
    )
    props = catalog_properties(target, SecretResolver({"AZURE_KEY": AZURITE_KEY}), tmp_path)
    assert props["py-io-impl"] == "pyiceberg.io.fsspec.FsspecFileIO"
    assert props["adls.account-name"] == "devstoreaccount1"
    assert props["adls.connection-string"] == (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    assert AZURITE_KEY not in redact_text(f"failed with {props['adls.connection-string']}")
    managed = recipe(
        tmp_path,
        SQL + "storage: {azure: {account_name: acct}}\nwarehouse: abfss://c@acct.dfs.core.windows.net/w\n",
        name="mi",
    )
    props = catalog_properties(managed, SecretResolver({}), tmp_path)
    assert props["adls.account-name"] == "acct" and not any("key" in k or "connection" in k for k in props)


def test_glue_settings_become_catalog_properties(tmp_path: Path) -> None:
    target = recipe(
        tmp_path,
        "catalog:\n  type: glue\n  glue:\n    region: eu-west-1\n    endpoint: 'http://127.0.0.1:5000'\n"
        "    catalog_id: '123456789012'\n"
        "storage: {s3: {region: eu-west-1}}\nwarehouse: s3://lake/w\n",
    )
    props = catalog_properties(target, SecretResolver({}), tmp_path)
    assert (props["glue.region"], props["glue.endpoint"], props["glue.id"]) == (
        "eu-west-1",
        "http://127.0.0.1:5000",
        "123456789012",
    )
    assert "glue: only for catalog type 'glue'" in refused(
        tmp_path, SQL.replace("}", ", glue: {region: x}}") + "warehouse: w\n"
    )


def test_a_rest_warehouse_may_be_a_name_the_server_knows(tmp_path: Path) -> None:
    target = recipe(
        tmp_path, "catalog: {type: rest, uri: 'https://polaris'}\nstorage: {s3: {region: x}}\nwarehouse: analytics\n"
    )
    props = catalog_properties(target, SecretResolver({}), tmp_path)
    assert props["warehouse"] == "analytics" and props["s3.region"] == "x"
    assert not (tmp_path / "analytics").exists()


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("text", "kind", "transient", "named"),
    [
        (
            "When initiating multiple part upload for key 'w/x' in bucket 'lake-x': AWS Error NO_SUCH_BUCKET during "
            "CreateMultipartUpload operation: The specified bucket does not exist",
            ConfigError,
            False,
            "lake-x",
        ),
        (
            "When uploading part for key 'w/x' in bucket 'lake': AWS Error ACCESS_DENIED during UploadPart operation: "
            "Access Denied",
            AuthError,
            False,
            "Access Denied",
        ),
        (
            "When reading information for key 'w/x' in bucket 'lake': AWS Error UNKNOWN (HTTP status 403) during "
            "HeadObject operation: No response body.",
            AuthError,
            False,
            "403",
        ),
        (
            "When initiating multiple part upload for key 'w/x' in bucket 'lake': AWS Error NETWORK_CONNECTION during "
            "CreateMultipartUpload operation: curlCode: 7, Could not connect to server",
            StorageError,
            True,
            "Could not connect",
        ),
        (
            "AWS Error SLOW_DOWN during PutObject operation: Please reduce your request rate.",
            StorageError,
            True,
            "SLOW",
        ),
    ],
)
def test_pyarrow_s3_errors_are_coded(text: str, kind: type, transient: bool, named: str) -> None:
    mapped = storage_failure(OSError(text), "writing data files of acme.orders")
    assert isinstance(mapped, kind), mapped
    assert mapped.transient is transient
    assert named in str(mapped) and "acme.orders" in str(mapped)


def _wrapped(inner: BaseException) -> RuntimeError:
    """What adlfs raises: a RuntimeError whose cause is the Azure SDK's exception."""
    try:
        try:
            raise inner
        except Exception as exc:
            raise RuntimeError(f"Failed to upload block: {exc}!") from exc
    except RuntimeError as outer:
        return outer


def test_azure_errors_behind_adlfs_are_coded() -> None:
    from azure.core import exceptions as azure

    missing = azure.ResourceNotFoundError("The specified container does not exist.")
    missing.error_code = "ContainerNotFound"  # type: ignore[attr-defined]
    mapped = storage_failure(_wrapped(missing), "writing data files of acme.orders")
    assert isinstance(mapped, ConfigError) and "container" in str(mapped)

    denied = azure.HttpResponseError("Server failed to authenticate the request.")
    denied.error_code = "AuthorizationFailure"  # type: ignore[attr-defined]
    assert isinstance(storage_failure(_wrapped(denied), "x"), AuthError)
    assert isinstance(storage_failure(_wrapped(azure.ClientAuthenticationError("no token")), "x"), AuthError)

    refused = storage_failure(_wrapped(azure.ServiceRequestError("Cannot connect to host 127.0.0.1:10999")), "x")
    assert isinstance(refused, StorageError) and refused.transient

    gone = azure.ResourceNotFoundError("The specified blob does not exist.")
    gone.error_code = "BlobNotFound"  # type: ignore[attr-defined]
    assert isinstance(storage_failure(_wrapped(gone), "x"), StorageStateError)

    # adlfs refusing to build its client from unusable settings.
    try:
        try:
            raise ValueError("Connection string is either blank or malformed.")
        except ValueError as exc:
            raise ValueError(f"unable to connect to account for {exc}") from exc
    except ValueError as unusable:
        assert isinstance(storage_failure(unusable, "x"), ConfigError)

    # An unrelated RuntimeError is still a bug, not a storage failure.
    assert storage_failure(RuntimeError("boom"), "x") is None


# ----------------------------------------------------------------------------- every credential spelling

# The property names pyiceberg's FileIOs and catalogs read a credential from; the legacy ``adlfs.``
# prefix of the Azure ones; the REST catalog's ``token`` and ``credential``.
CREDENTIAL_PROPERTIES = sorted(
    {
        value
        for name, value in vars(pyiceberg_io).items()
        if name.isupper()
        and isinstance(value, str)
        and re.search(
            r"(ACCESS_KEY_ID|SECRET|SESSION_TOKEN|ACCOUNT_KEY|SAS_TOKEN|CONNECTION_STRING|CREDENTIAL"
            r"|_TOKEN$|KERB_TICKET)",
            name,
        )
    }
    | {"adlfs.account-key", "adlfs.connection-string", "adlfs.sas-token", "adlfs.client-secret", "token", "credential"}
)


def test_the_credential_property_list_covers_pyiceberg(tmp_path: Path) -> None:
    # A guard on the list itself: it has each kind of store, so a renamed constant shows here.
    for expected in ("s3.secret-access-key", "adls.account-key", "adls.sas-token", "gcs.oauth2.token", "hf.token"):
        assert expected in CREDENTIAL_PROPERTIES
    # Where a credential comes from is not one.
    rest = recipe(
        tmp_path,
        "catalog: {type: rest, uri: 'https://polaris', properties: {credential: '${C}', "
        "oauth2-server-uri: 'https://idp/oauth/tokens', gcs.oauth2.token-expires-at: '1700000000000'}}\n"
        "warehouse: analytics\n",
    )
    assert rest.catalog.properties["oauth2-server-uri"] == "https://idp/oauth/tokens"


@pytest.mark.parametrize("key", CREDENTIAL_PROPERTIES)
def test_every_credential_property_is_refused_as_a_literal_and_redacted_as_a_reference(
    tmp_path: Path, key: str
) -> None:
    literal = "Lit3ralCredentialValue0123"
    for written in (literal, f"AccountName=a;AccountKey={literal};") if "connection" in key else (literal,):
        problems = refused(tmp_path, SQL.replace("}", f", properties: {{{key}: '{written}'}}}}") + "warehouse: w\n")
        assert key in problems and "literal" in problems and literal not in problems

    value = f"RefCredential-{uuid.uuid4().hex}"
    target = recipe(tmp_path, SQL.replace("}", f", properties: {{{key}: '${{CRED}}'}}}}") + "warehouse: w\n")
    props = catalog_properties(target, SecretResolver({"CRED": value}), tmp_path)
    assert props[key] == value
    assert value in registered_secrets() and value not in redact_text(f"failed with {value}")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "catalog: {type: sql, uri: 'postgresql+psycopg2://iceberg@db:5432/ice?password=hunter2literal'}\n"
            "warehouse: w\n",
            "catalog.uri",
        ),
        (
            SQL + "storage: {s3: {endpoint: 'http://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENG@minio:9000'}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.endpoint",
        ),
        (
            SQL
            + "storage: {azure: {account_name: acct, endpoint: 'https://acct.blob.core.windows.net/?sv=2024&sig=S1G'}}"
            "\nwarehouse: abfs://c/w\n",
            "storage.azure.endpoint",
        ),
        (
            "catalog: {type: glue, glue: {endpoint: 'https://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENG@glue'}}\n"
            "warehouse: s3://b/w\n",
            "catalog.glue.endpoint",
        ),
        (
            SQL
            + "storage: {s3: {region: us-east-1}}\nwarehouse: 's3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENG@b/w'\n",
            "warehouse",
        ),
        (
            SQL + "storage: {s3: {access_key_id: 'AKIAIOSFODNN7EXAMPLE${NOPE:-}', secret_access_key: '${S}'}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.access_key_id",
        ),
        (
            SQL + "storage: {s3: {access_key_id: '${K}', secret_access_key: '${S:-wJalrXUtnFEMIK7MDENG}'}}\n"
            "warehouse: s3://b/w\n",
            "storage.s3.secret_access_key",
        ),
        (
            SQL + "storage: {azure: {connection_string: 'AccountName=a;AccountKey=Eby8vdM02x${K:-};'}}\n"
            "warehouse: abfs://c/w\n",
            "storage.azure.connection_string",
        ),
    ],
    ids=[
        "uri-query",
        "s3-endpoint-userinfo",
        "azure-endpoint-sas",
        "glue-endpoint",
        "warehouse-userinfo",
        "literal-then-reference",
        "reference-defaulting-to-literal",
        "connection-string-part",
    ],
)
def test_a_credential_hidden_in_a_url_or_beside_a_reference_is_refused(tmp_path: Path, text: str, field: str) -> None:
    problems = refused(tmp_path, text)
    assert field in problems and "literal" in problems
    for secret in ("hunter2literal", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMIK7MDENG", "S1G", "Eby8vdM02x"):
        assert secret not in problems


def test_table_properties_take_no_credential_and_no_reference(tmp_path: Path) -> None:
    for key, value in (("adls.account-key", AZURITE_KEY), ("adls.account-key", "${AZ_KEY}"), ("custom.token", "${T}")):
        problems = refused(tmp_path, SQL + f"table_properties: {{{key}: '{value}'}}\nwarehouse: w\n")
        assert f"'{key}' names a credential" in problems and AZURITE_KEY not in problems
    problems = refused(tmp_path, SQL + "table_properties: {comment: '${TABLE_COMMENT}'}\nwarehouse: w\n")
    assert "'comment' holds a reference" in problems
    plain = recipe(tmp_path, SQL + "table_properties: {write.parquet.compression-codec: zstd}\nwarehouse: w\n")
    assert plain.table_properties == {"write.parquet.compression-codec": "zstd"}


# ----------------------------------------------------------------------------- warehouse against settings


def test_an_azure_warehouse_in_another_account_than_the_settings_is_refused(tmp_path: Path) -> None:
    problems = refused(
        tmp_path,
        SQL + "storage: {azure: {account_name: devstoreaccount1}}\n"
        "warehouse: abfs://c@otheraccount.dfs.core.windows.net/wh\n",
    )
    assert "otheraccount" in problems and "storage.azure.account_name" in problems
    problems = refused(
        tmp_path,
        SQL + "storage: {azure: {connection_string: 'AccountName=devstoreaccount1;AccountKey=${K};'}}\n"
        "warehouse: abfs://c@otheraccount.dfs.core.windows.net/wh\n",
    )
    assert "otheraccount" in problems and "connection_string" in problems
    same = SQL + "storage: {azure: {account_name: acct}}\nwarehouse: abfss://c@acct.dfs.core.windows.net/wh\n"
    assert recipe(tmp_path, same).storage is not None

    # Decided by references: compared when the run resolves them.
    late = recipe(
        tmp_path,
        SQL + "storage: {azure: {connection_string: '${AZ_CONN}'}}\nwarehouse: '${ICEBERG_WAREHOUSE}'\n",
        name="late",
    )
    environ = {
        "AZ_CONN": f"AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};",
        "ICEBERG_WAREHOUSE": "abfs://c@otheraccount.dfs.core.windows.net/wh",
    }
    with pytest.raises(ConfigError) as caught:
        catalog_properties(late, SecretResolver(environ), tmp_path)
    assert "connectors/targets/late.yaml: warehouse" in str(caught.value) and "otheraccount" in str(caught.value)
    assert AZURITE_KEY not in str(caught.value)


def test_a_glue_catalog_needs_an_object_store_warehouse(tmp_path: Path) -> None:
    for warehouse in (".dativo/warehouse", "file:///var/lake"):
        assert "must live on object storage" in refused(tmp_path, f"catalog: {{type: glue}}\nwarehouse: {warehouse}\n")
    late = recipe(tmp_path, "catalog: {type: glue}\nwarehouse: '${ICEBERG_WAREHOUSE}'\n")
    with pytest.raises(ConfigError) as caught:
        catalog_properties(late, SecretResolver({"ICEBERG_WAREHOUSE": "/var/lake"}), tmp_path)
    assert "object storage" in str(caught.value)


def test_a_glue_catalog_without_a_region_is_cfg001_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    target = recipe(tmp_path, "catalog: {type: glue}\nwarehouse: s3://b/w\n")
    with pytest.raises(ConfigError) as caught:
        build_catalog(target, SecretResolver(), tmp_path)
    assert "catalog.glue.region" in str(caught.value) and "connectors/targets/cloud.yaml" in str(caught.value)


# ----------------------------------------------------------------------------- S3 status codes


@pytest.mark.parametrize(
    ("status", "kind", "transient"),
    [
        ("301", ConfigError, False),
        ("400", StorageStateError, False),
        ("404", StorageStateError, False),
        ("409", StorageStateError, False),
        ("408", StorageError, True),
        ("429", StorageError, True),
        ("500", StorageError, True),
        ("503", StorageError, True),
    ],
)
def test_pyarrow_s3_http_statuses_are_transient_only_for_5xx_timeouts_and_throttling(
    status: str, kind: type, transient: bool
) -> None:
    text = (
        f"When creating key 'w/x' in bucket 'lake': AWS Error UNKNOWN (HTTP status {status}) during PutObject "
        "operation: No response body."
    )
    mapped = storage_failure(OSError(text), "writing data files of acme.orders")
    assert type(mapped) is kind, mapped
    assert mapped.transient is transient
    if status == "301":
        assert "storage.s3.region" in str(mapped)


def test_a_referenced_password_in_a_url_query_is_registered_for_redaction(tmp_path: Path) -> None:
    target = recipe(
        tmp_path,
        "catalog: {type: sql, uri: 'postgresql+psycopg2://iceberg@db:5432/ice?password=${PGPASS}&sslmode=require'}\n"
        "storage: {azure: {account_name: acct, endpoint: 'https://acct.blob.core.windows.net/?sv=2024&sig=${SIG}'}}\n"
        "warehouse: abfs://c/w\n",
    )
    password, signature = f"pw-{uuid.uuid4().hex}", f"sig-{uuid.uuid4().hex}"
    props = catalog_properties(target, SecretResolver({"PGPASS": password, "SIG": signature}), tmp_path)
    assert props["uri"].endswith(f"password={password}&sslmode=require")
    assert {password, signature} <= registered_secrets()
    assert "require" not in registered_secrets()
