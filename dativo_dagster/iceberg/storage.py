"""A target's ``storage`` block as pyiceberg FileIO properties, and the warehouse write probe.

S3 and S3-compatible stores go through pyiceberg's PyArrow FileIO (``s3.*`` properties); Azure
Blob / ADLS Gen2 through adlfs, pyiceberg's fsspec FileIO (``adls.*`` properties and
``py-io-impl``). Settings the recipe leaves out come from the run environment the way the cloud
SDKs read it (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AZURE_STORAGE_*``), and credentials the
recipe leaves out come from the SDK's default chain, never from dativo.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from urllib.parse import urlsplit

from pyiceberg.catalog import Catalog
from pyiceberg.io import (
    ADLS_ACCOUNT_HOST,
    ADLS_ACCOUNT_KEY,
    ADLS_ACCOUNT_NAME,
    ADLS_CONNECTION_STRING,
    ADLS_SAS_TOKEN,
    PY_IO_IMPL,
    S3_ACCESS_KEY_ID,
    S3_ENDPOINT,
    S3_FORCE_VIRTUAL_ADDRESSING,
    S3_REGION,
    S3_SECRET_ACCESS_KEY,
    S3_SESSION_TOKEN,
    load_file_io,
)

from dativo_dagster.config.models import AzureStorage, GlueSettings, S3Storage, TargetRecipe
from dativo_dagster.config.secrets import SecretResolver, register_secrets
from dativo_dagster.config.storage_rules import WarehouseKind, bucket_of, connection_string_parts, url_query_secrets
from dativo_dagster.errors import ConfigError
from dativo_dagster.iceberg.failures import storage_failure

FSSPEC_FILE_IO = "pyiceberg.io.fsspec.FsspecFileIO"
"""Azure goes through adlfs: pyiceberg's fsspec FileIO (its PyArrow FileIO has its own Azure client)."""

GLUE_REGION = "glue.region"
GLUE_ENDPOINT = "glue.endpoint"
GLUE_CATALOG_ID = "glue.id"

PROBE_PREFIX = ".dativo-probe-"


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None


class _Resolved:
    """Resolves one block's fields, an empty result meaning "not set" (``${VAR:-}``)."""

    def __init__(self, resolver: SecretResolver, where: str) -> None:
        self.resolver = resolver
        self.where = where

    def __call__(self, name: str, value: str | None) -> str | None:
        if value is None:
            return None
        resolved = self.resolver.resolve(value, where=f"{self.where}.{name}")
        return str(resolved) or None


def s3_properties(
    settings: S3Storage | None, resolver: SecretResolver, where: str, secrets: list[str]
) -> dict[str, str]:
    """FileIO properties of an S3 warehouse; appends the credentials it resolved to ``secrets``."""
    environ = resolver.environ
    field = _Resolved(resolver, where)
    props: dict[str, str] = {}
    endpoint = region = None
    if settings is not None:
        endpoint = field("endpoint", settings.endpoint)
        secrets.extend(url_query_secrets(endpoint or ""))
        region = field("region", settings.region)
        if settings.path_style is not None:
            props[S3_FORCE_VIRTUAL_ADDRESSING] = "false" if settings.path_style else "true"
        for name, prop in (
            ("access_key_id", S3_ACCESS_KEY_ID),
            ("secret_access_key", S3_SECRET_ACCESS_KEY),
            ("session_token", S3_SESSION_TOKEN),
        ):
            value = field(name, getattr(settings, name))
            if value:
                props[prop] = value
                secrets.append(value)
    # What boto3 would use: the same environment, read here so that every FileIO (PyArrow's
    # C++ client does not read all of these) talks to the same endpoint and region. Without a
    # region PyArrow asks AWS where the bucket is, which an S3-compatible store cannot answer.
    endpoint = endpoint or _first(environ, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    region = region or _first(environ, "AWS_REGION", "AWS_DEFAULT_REGION")
    if endpoint:
        props[S3_ENDPOINT] = endpoint
    if region:
        props[S3_REGION] = region
    return props


def azure_properties(
    settings: AzureStorage | None, resolver: SecretResolver, where: str, secrets: list[str]
) -> dict[str, str]:
    """FileIO properties of an Azure warehouse; appends the credentials it resolved to ``secrets``."""
    props: dict[str, str] = {PY_IO_IMPL: FSSPEC_FILE_IO}
    if settings is None:
        return props  # adlfs reads AZURE_STORAGE_* or falls back to DefaultAzureCredential
    field = _Resolved(resolver, where)
    connection_string = field("connection_string", settings.connection_string)
    account = field("account_name", settings.account_name)
    endpoint = field("endpoint", settings.endpoint)
    # A referenced SAS in the endpoint's query is a credential like the others (the endpoint may
    # be passed on without its scheme, where no URL rule would find it).
    secrets.extend(url_query_secrets(endpoint or ""))
    key = field("account_key", settings.account_key)
    sas = field("sas_token", settings.sas_token)
    if endpoint and (key or sas):
        # adlfs reaches a custom endpoint (http for an emulator) only through a connection string.
        scheme = urlsplit(endpoint).scheme or "https"
        credential = f"AccountKey={key}" if key else f"SharedAccessSignature={(sas or '').lstrip('?')}"
        connection_string = (
            f"DefaultEndpointsProtocol={scheme};AccountName={account};{credential};BlobEndpoint={endpoint.rstrip('/')};"
        )
        key = sas = None
    elif endpoint:
        if not endpoint.startswith("https://"):
            raise ConfigError(
                f"{where}.endpoint: an http:// endpoint (an emulator) needs account_key or sas_token", field=where
            )
        props[ADLS_ACCOUNT_HOST] = endpoint.removeprefix("https://").rstrip("/")
    if connection_string:
        secrets.append(connection_string)
        parts = connection_string_parts(connection_string)
        secrets.extend(v for k, v in parts.items() if k in ("accountkey", "sharedaccesssignature") and v)
        props[ADLS_CONNECTION_STRING] = connection_string
        # pyiceberg would otherwise take the account name from the URI's host, which for
        # abfs://<container>/<path> is the container.
        account = account or parts.get("accountname")
    if account:
        props[ADLS_ACCOUNT_NAME] = account
    if key:
        props[ADLS_ACCOUNT_KEY] = key
        secrets.append(key)
    if sas:
        props[ADLS_SAS_TOKEN] = sas
        secrets.append(sas)
    return props


def glue_properties(settings: GlueSettings | None, resolver: SecretResolver, where: str) -> dict[str, str]:
    """Glue catalog properties (boto3 reads AWS_ENDPOINT_URL and AWS_REGION itself when unset)."""
    if settings is None:
        return {}
    field = _Resolved(resolver, where)
    props: dict[str, str] = {}
    for name, prop in (("region", GLUE_REGION), ("endpoint", GLUE_ENDPOINT), ("catalog_id", GLUE_CATALOG_ID)):
        value = field(name, getattr(settings, name))
        if value:
            props[prop] = value
    return props


def storage_properties(
    target: TargetRecipe, kind: WarehouseKind, resolver: SecretResolver, where: str
) -> dict[str, str]:
    """FileIO properties for ``target``'s warehouse of ``kind`` (they hold secrets: never log them).

    Every credential resolved here is registered for redaction before it is returned.
    """
    secrets: list[str] = []
    storage = target.storage
    if kind == "s3" or (kind == "name" and storage is not None and storage.s3 is not None):
        props = s3_properties(storage.s3 if storage else None, resolver, f"{where}: storage.s3", secrets)
    elif kind == "azure" or (kind == "name" and storage is not None and storage.azure is not None):
        props = azure_properties(storage.azure if storage else None, resolver, f"{where}: storage.azure", secrets)
    else:
        props = {}
    register_secrets(secrets)
    return props


def check_warehouse(catalog: Catalog, target: TargetRecipe) -> str | None:
    """Prove the warehouse is writable: write and delete a small probe object under it.

    Returns:
        The warehouse probed, or None when the warehouse is a REST server's warehouse name (the
        server decides the locations; there is nothing to probe from here).

    Raises:
        ConfigError: CFG001 naming the bucket or container when it does not exist, or when the
            warehouse is not writable.
        AuthError: AUTH001 when the credentials are refused.
        StorageError: STG001 when the store cannot be reached.
    """
    warehouse = str(catalog.properties.get("warehouse") or "")
    if "://" not in warehouse:
        return None
    probe = f"{warehouse.rstrip('/')}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    io = load_file_io(dict(catalog.properties), warehouse)
    try:
        with io.new_output(probe).create(overwrite=True) as out:
            out.write(b"dativo validate: this object proves the warehouse is writable and is deleted at once\n")
        io.delete(probe)
    except Exception as exc:
        mapped = storage_failure(exc, f"writing a probe object under the warehouse {warehouse}")
        if mapped is None:
            raise
        if isinstance(mapped, ConfigError):
            bucket = bucket_of(warehouse)
            named = f" ('{bucket}')" if bucket and bucket not in mapped.message else ""
            mapped.message = f"connectors/targets/{target.name}.yaml: warehouse{named}: {mapped.message}"
        raise mapped from None
    return warehouse
