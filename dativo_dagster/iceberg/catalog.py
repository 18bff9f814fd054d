"""Build a pyiceberg catalog from a target recipe (SQL on SQLite/Postgres, REST, Glue) and its warehouse
(local disk, S3 and S3-compatible stores, Azure Blob / ADLS Gen2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog

from dativo_dagster.config.models import TargetRecipe
from dativo_dagster.config.secrets import SecretResolver, is_sensitive_key, register_secrets, secret_parts
from dativo_dagster.config.storage_rules import storage_mismatch, warehouse_kind
from dativo_dagster.errors import ConfigError
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
        for part in secret_parts(value, sensitive=is_sensitive_key(str(key)))
    )
    if target.catalog.uri:
        uri = resolver.resolve(target.catalog.uri, where=f"{where}: catalog.uri")
        props["uri"] = (
            resolve_local_uri(uri, project_dir, what=f"{where}: catalog.uri") if target.catalog.type == "sql" else uri
        )
    return props


def build_catalog(target: TargetRecipe, resolver: SecretResolver, project_dir: Path) -> Catalog:
    """Connect to the catalog named by ``target``.

    Raises:
        StorageError: STG001 when the catalog cannot be reached (the message carries no secrets).
    """
    props = catalog_properties(target, resolver, project_dir)
    try:
        return load_catalog(target.catalog_name, **props)
    except Exception as exc:
        mapped = storage_failure(exc, f"opening Iceberg catalog '{target.name}' ({target.catalog.type})")
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
