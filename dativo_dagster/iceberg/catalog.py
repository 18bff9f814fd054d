"""Build a pyiceberg catalog from a target recipe (SQL on SQLite/Postgres, REST, Glue) and its warehouse
(local disk, S3 and S3-compatible stores, Azure Blob / ADLS Gen2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.io import ADLS_ACCOUNT_NAME

from dativo_dagster.config.models import TargetRecipe
from dativo_dagster.config.secrets import SecretResolver, register_secrets, secret_parts
from dativo_dagster.config.storage_rules import (
    azure_account_mismatch,
    catalog_mismatch,
    connection_string_parts,
    is_credential_property,
    storage_mismatch,
    url_query_secrets,
    warehouse_kind,
)
from dativo_dagster.errors import ConfigError, DativoError, StorageStateError
from dativo_dagster.iceberg.failures import storage_failure
from dativo_dagster.iceberg.storage import glue_properties, storage_properties

_SQLITE_PREFIX = "sqlite:///"


def _make_directory(path: Path, what: str, shown: str) -> None:
    """Create a local directory the target needs; CFG001 naming it when that is impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{what} '{shown}' cannot be created ({type(exc).__name__}: {exc.strerror or exc})",
            hint="point the target recipe at a directory the run's user can write",
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{what} '{shown}' is not writable by the run's user",
            hint="point the target recipe at a directory the run's user can write",
        )


def resolve_local_uri(uri: str, project_dir: Path, what: str = "catalog.uri") -> str:
    """Anchor a relative ``sqlite:///`` path at the project directory and create its folder.

    A bare ``postgresql://`` URI is pinned to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3,
    which dativo does not ship).
    """
    if uri.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + uri.split("://", 1)[1]
    if not uri.startswith(_SQLITE_PREFIX):
        return uri
    raw = uri[len(_SQLITE_PREFIX) :]
    path = (Path(raw) if raw.startswith("/") else project_dir / raw).resolve()
    _make_directory(path.parent, f"{what}: the catalog directory", raw.rsplit("/", 1)[0] or ".")
    return f"{_SQLITE_PREFIX}{path}"


def resolve_warehouse(warehouse: str, project_dir: Path, what: str = "warehouse") -> str:
    """Return a warehouse URI; local paths become absolute ``file://`` URIs (created if missing).

    Raises:
        ConfigError: CFG001 naming the path when the directory cannot be created or written.
    """
    if "://" in warehouse and not warehouse.startswith("file://"):
        return warehouse
    raw = warehouse.removeprefix("file://")
    path = Path(raw) if Path(raw).is_absolute() else (project_dir / raw)
    _make_directory(path.resolve(), what, raw)
    return f"file://{path.resolve()}"


def catalog_properties(target: TargetRecipe, resolver: SecretResolver, project_dir: Path) -> dict[str, Any]:
    """Resolved pyiceberg properties for ``target`` (contains secrets: never log it).

    The ``storage`` block wins over the same FileIO keys in ``catalog.properties``.

    Raises:
        ConfigError: CFG001 naming the field when a reference is unset, the warehouse resolves to
            nothing, to a scheme dativo does not write through, or to one its storage block does
            not fit.
    """
    where = f"connectors/targets/{target.name}.yaml"
    props: dict[str, Any] = {
        "type": target.catalog.type,
        **resolver.resolve(dict(target.catalog.properties), where=f"{where}: catalog.properties"),
    }
    warehouse = resolver.resolve(target.warehouse, where=f"{where}: warehouse")
    if not warehouse:
        raise ConfigError(f"{where}: warehouse: resolves to an empty string", field=f"{where}: warehouse")
    try:
        kind = warehouse_kind(warehouse, catalog_type=target.catalog.type)
        problem = storage_mismatch(kind, target.storage.kind if target.storage is not None else None)
        problem = problem or catalog_mismatch(kind, target.catalog.type)
    except ValueError as exc:
        problem = str(exc)
    if problem:
        raise ConfigError(f"{where}: warehouse: {problem}", field=f"{where}: warehouse")
    props["warehouse"] = (
        resolve_warehouse(warehouse, project_dir, what=f"{where}: warehouse") if kind == "local" else warehouse
    )
    props.update(storage_properties(target, kind, resolver, where))
    props.update(glue_properties(target.catalog.glue, resolver, f"{where}: catalog.glue"))
    # Catalog credentials (REST tokens, account keys, a password in the URI) are secrets like a
    # source's: scrubbed from every log line and message from now on.
    register_secrets(
        part
        for key, value in {**props, "uri": resolver.resolve(target.catalog.uri or "", where=where)}.items()
        for part in _credential_parts(str(key), value)
    )
    if kind == "azure":
        mismatch = azure_account_mismatch(warehouse, props.get(ADLS_ACCOUNT_NAME), None)
        if mismatch:
            raise ConfigError(f"{where}: warehouse: {mismatch}", field=f"{where}: warehouse")
    if target.catalog.uri:
        uri = resolver.resolve(target.catalog.uri, where=f"{where}: catalog.uri")
        props["uri"] = (
            resolve_local_uri(uri, project_dir, what=f"{where}: catalog.uri") if target.catalog.type == "sql" else uri
        )
    return props


def _credential_parts(key: str, value: Any) -> list[str]:
    """What of one resolved property is a secret: all of it under a credential name (and each
    key of a connection string on its own), and the password of any URL, in its user part or
    its query string."""
    parts = secret_parts(value, sensitive=is_credential_property(key))
    if isinstance(value, str):
        parts.extend(url_query_secrets(value))
    if isinstance(value, str) and is_credential_property(key):
        parts.extend(v for k, v in connection_string_parts(value).items() if k in _CONNECTION_SECRETS and v)
    return parts


_CONNECTION_SECRETS = ("accountkey", "sharedaccesssignature")


def _botocore_failure(exc: BaseException, target: TargetRecipe) -> DativoError | None:
    """What botocore raises while a Glue catalog opens (before any call): the session's settings."""
    if not type(exc).__module__.startswith("botocore"):
        return None
    where = f"connectors/targets/{target.name}.yaml"
    name = type(exc).__name__
    if name == "NoRegionError":
        return ConfigError(
            f"{where}: catalog.glue.region: no region is set and the run environment has no AWS_REGION",
            field=f"{where}: catalog.glue.region",
            hint="set catalog.glue.region in the recipe, or AWS_REGION / AWS_DEFAULT_REGION for the run",
        )
    if name in ("ProfileNotFound", "InvalidRegionError", "InvalidEndpointConfigurationError", "ParamValidationError"):
        return ConfigError(
            f"{where}: catalog.glue: {name}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
            field=f"{where}: catalog.glue",
            hint="check catalog.glue (region, endpoint) and the AWS profile of the run environment",
        )
    # Any other botocore error at this point is a client that cannot be built from the settings
    # and environment as they are: nothing a retry changes.
    return StorageStateError(f"opening Iceberg catalog '{target.name}' (glue) failed: {name}: {exc}")


def build_catalog(target: TargetRecipe, resolver: SecretResolver, project_dir: Path) -> Catalog:
    """Connect to the catalog named by ``target``.

    Raises:
        ConfigError: CFG001 naming the field when the settings cannot open a catalog (a Glue
            catalog without a region, an unknown profile).
        StorageError: STG001 when the catalog cannot be reached (the message carries no secrets).
    """
    props = catalog_properties(target, resolver, project_dir)
    try:
        return load_catalog(target.catalog_name, **props)
    except Exception as exc:
        mapped = storage_failure(exc, f"opening Iceberg catalog '{target.name}' ({target.catalog.type})")
        mapped = mapped or _botocore_failure(exc, target)
        if mapped is None:
            if isinstance(exc, (ValueError, ImportError)):
                # pyiceberg's own "unknown catalog type / missing extra / bad property" complaints.
                raise ConfigError(
                    f"connectors/targets/{target.name}.yaml: catalog: {resolver.redact(str(exc).splitlines()[0])}"
                ) from None
            raise
        mapped.message = resolver.redact(mapped.message)
        raise mapped from None


def check_catalog(catalog: Catalog, target: TargetRecipe) -> None:
    """Prove the catalog answers a metadata call (used by ``dativo validate``)."""
    try:
        catalog.list_namespaces()
    except Exception as exc:
        mapped = storage_failure(exc, f"Iceberg catalog '{target.name}' is not reachable")
        if mapped is None:
            raise
        raise mapped from None
