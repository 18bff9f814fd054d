"""Instance storage chosen by environment: embedded SQLite by default, Postgres when configured.

``dagster.yaml`` names :class:`EnvSelectedStorage`; one file then serves a laptop (nothing to
run) and a deployment (``DATIVO_DAGSTER_PG_URL=postgresql://user:pass@host:5432/dagster``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg

from dativo_dagster.compat.dagster_instance import (
    ConfigurableClass,
    ConfigurableClassData,
    DagsterSqliteStorage,
    DagsterStorage,
    InstanceRef,
)

PG_URL_ENV = "DATIVO_DAGSTER_PG_URL"


def state_dir(project_dir: Path) -> Path:
    """The project's local state directory: ``$DATIVO_HOME``, else ``<project>/.dativo``."""
    home = os.environ.get("DATIVO_HOME")
    return Path(home).resolve() if home else project_dir / ".dativo"


def project_instance_dir(project_dir: Path) -> Path:
    """Where a project's own Dagster instance keeps runs and logs when ``DAGSTER_HOME`` is not set.

    ``dativo run`` and ``dagster dev`` started in the project both use it, so runs made from the
    command line appear in the UI.
    """
    return state_dir(project_dir) / "dagster"


def instance_for_project(project_dir: Path) -> dg.DagsterInstance:
    """``DAGSTER_HOME``'s instance when it is set, else the project's own (its dagster.yaml, if any)."""
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    home = project_instance_dir(project_dir)
    home.mkdir(parents=True, exist_ok=True)
    config_dir = project_dir if (project_dir / "dagster.yaml").exists() else home
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(config_dir)))


class EnvSelectedStorage(DagsterStorage, ConfigurableClass):
    """Run, event-log and schedule storage picked from the environment at instance start.

    Config:
        base_dir: SQLite directory (default ``$DAGSTER_HOME/storage``).
        postgres_url_env: Name of the variable holding a Postgres URL (default
            ``DATIVO_DAGSTER_PG_URL``); when it is set and non-empty, dagster-postgres is used.
    """

    def __init__(self, inner: DagsterStorage, inst_data: ConfigurableClassData | None = None) -> None:
        self._inner = inner
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        """Serialised config, so run workers rebuild the same storage."""
        return self._inst_data

    @property
    def backend(self) -> str:
        """``postgres`` or ``sqlite``."""
        return "postgres" if type(self._inner).__name__.startswith("DagsterPostgres") else "sqlite"

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        """Config schema of the ``storage: custom:`` block."""
        return {
            "base_dir": dg.Field(dg.StringSource, is_required=False),
            "postgres_url_env": dg.Field(str, is_required=False, default_value=PG_URL_ENV),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> EnvSelectedStorage:
        """Build Postgres storage if the URL variable is set, else embedded SQLite.

        SQLite lives in ``base_dir`` if configured, else ``$DAGSTER_HOME/storage``, else the
        project's own instance directory (:func:`project_instance_dir`): ``dagster dev`` without
        ``DAGSTER_HOME`` then records runs where ``dativo run`` does, instead of a temporary folder.
        The chosen directory is written into the serialised config, so every process of the
        instance (webserver, daemon, run workers) opens the same storage.
        """
        url = os.environ.get(config_value.get("postgres_url_env") or PG_URL_ENV)
        inner: DagsterStorage
        if url:
            from dagster_postgres import DagsterPostgresStorage

            if url.startswith(("postgresql://", "postgres://")):
                # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dativo ships psycopg2.
                url = "postgresql+psycopg2://" + url.split("://", 1)[1]
            inner = DagsterPostgresStorage(postgres_url=url)
        else:
            base_dir = config_value.get("base_dir")
            if not base_dir:
                home = os.environ.get("DAGSTER_HOME")
                if home:
                    base_dir = os.path.join(home, "storage")
                else:
                    from dativo_dagster.config.loader import default_project_dir

                    base_dir = str(project_instance_dir(default_project_dir()) / "storage")
                import yaml

                inst_data = ConfigurableClassData(
                    inst_data.module_name if inst_data else __name__,
                    inst_data.class_name if inst_data else cls.__name__,
                    yaml.safe_dump({**dict(config_value), "base_dir": base_dir}),
                )
            inner = DagsterSqliteStorage.from_local(base_dir)
        return cls(inner, inst_data)

    @property
    def event_log_storage(self) -> Any:
        """Delegated."""
        return self._inner.event_log_storage

    @property
    def run_storage(self) -> Any:
        """Delegated."""
        return self._inner.run_storage

    @property
    def schedule_storage(self) -> Any:
        """Delegated."""
        return self._inner.schedule_storage

    def register_instance(self, instance: Any) -> None:
        """Delegated."""
        self._inner.register_instance(instance)
