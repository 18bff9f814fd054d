"""Instance storage chosen by environment: embedded SQLite by default, Postgres when configured.

``dagster.yaml`` names :class:`EnvSelectedStorage`; one file then serves a laptop (nothing to
run) and a deployment (``DATIVO_DAGSTER_PG_URL=postgresql://user:pass@host:5432/dagster``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData

PG_URL_ENV = "DATIVO_DAGSTER_PG_URL"


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
        """Build Postgres storage if the URL variable is set, else embedded SQLite."""
        url = os.environ.get(config_value.get("postgres_url_env") or PG_URL_ENV)
        inner: DagsterStorage
        if url:
            from dagster_postgres import DagsterPostgresStorage

            if url.startswith(("postgresql://", "postgres://")):
                # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dativo ships psycopg2.
                url = "postgresql+psycopg2://" + url.split("://", 1)[1]
            inner = DagsterPostgresStorage(postgres_url=url)
        else:
            from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

            base_dir = config_value.get("base_dir")
            if not base_dir:
                home = os.environ.get("DAGSTER_HOME")
                # Without DAGSTER_HOME (the dagster CLI reading ./dagster.yaml) storage is
                # throw-away, as Dagster's own default is then; never the working directory.
                base_dir = os.path.join(home, "storage") if home else tempfile.mkdtemp(prefix="dagster-storage-")
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
