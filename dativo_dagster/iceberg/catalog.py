"""Build a pyiceberg catalog from a target recipe (SQL on SQLite/Postgres, REST, Glue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog

from dativo_dagster.config.models import TargetRecipe
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import ConfigError, StorageError

_SQLITE_PREFIX = "sqlite:///"


def resolve_local_uri(uri: str, project_dir: Path) -> str:
    """Anchor a relative ``sqlite:///`` path at the project directory and create its folder.

    A bare ``postgresql://`` URI is pinned to psycopg2 (SQLAlchemy 2.1 would pick psycopg 3,
    which dativo does not ship).
    """
    if uri.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + uri.split("://", 1)[1]
    if not uri.startswith(_SQLITE_PREFIX) or uri.startswith(_SQLITE_PREFIX + "/"):
        if uri.startswith(_SQLITE_PREFIX + "/"):
            Path(uri[len(_SQLITE_PREFIX) :]).parent.mkdir(parents=True, exist_ok=True)
        return uri
    path = (project_dir / uri[len(_SQLITE_PREFIX) :]).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{_SQLITE_PREFIX}{path}"


def resolve_warehouse(warehouse: str, project_dir: Path) -> str:
    """Return a warehouse URI; local paths become absolute ``file://`` URIs (created if missing)."""
    if "://" in warehouse and not warehouse.startswith("file://"):
        return warehouse
    raw = warehouse.removeprefix("file://")
    path = Path(raw) if Path(raw).is_absolute() else (project_dir / raw)
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"file://{path}"


def catalog_properties(target: TargetRecipe, resolver: SecretResolver, project_dir: Path) -> dict[str, Any]:
    """Resolved pyiceberg properties for ``target`` (contains secrets: never log it)."""
    where = f"connectors/targets/{target.name}.yaml"
    props: dict[str, Any] = {
        "type": target.catalog.type,
        **resolver.resolve(dict(target.catalog.properties), where=f"{where}: catalog.properties"),
    }
    warehouse = resolver.resolve(target.warehouse, where=f"{where}: warehouse")
    if not warehouse:
        raise ConfigError(f"{where}: warehouse: resolves to an empty string")
    props["warehouse"] = resolve_warehouse(warehouse, project_dir)
    if target.catalog.uri:
        uri = resolver.resolve(target.catalog.uri, where=f"{where}: catalog.uri")
        props["uri"] = resolve_local_uri(uri, project_dir) if target.catalog.type == "sql" else uri
    return props


def build_catalog(target: TargetRecipe, resolver: SecretResolver, project_dir: Path) -> Catalog:
    """Connect to the catalog named by ``target``.

    Raises:
        StorageError: STG001 when the catalog cannot be reached (the message carries no secrets).
    """
    props = catalog_properties(target, resolver, project_dir)
    try:
        return load_catalog(target.catalog_name, **props)
    except ConfigError:
        raise
    except Exception as exc:
        raise StorageError(
            f"cannot open Iceberg catalog '{target.name}' ({target.catalog.type}): "
            f"{resolver.redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}"
        ) from None


def check_catalog(catalog: Catalog, target: TargetRecipe) -> None:
    """Prove the catalog answers a metadata call (used by ``dativo validate``)."""
    try:
        catalog.list_namespaces()
    except Exception as exc:
        raise StorageError(f"Iceberg catalog '{target.name}' is not reachable: {type(exc).__name__}") from None
