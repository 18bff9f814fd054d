"""Private Dagster symbols of the instance wiring (dagster==1.13.27, pinned exactly in pyproject.toml).

Kept apart from :mod:`dativo_dagster.compat.dagster` because they import Dagster's storage layer
(SQLAlchemy, Alembic): a code location loading its definitions never needs them, only processes
that open an instance (``dativo run``, dagster.yaml's ``storage: custom``).
"""

from __future__ import annotations

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData


def coordinator_instance(coordinator: object) -> DagsterInstance:
    """The instance a run coordinator was attached to (Dagster keeps it behind a weak reference)."""
    return coordinator._instance  # type: ignore[attr-defined]


__all__ = [
    "ConfigurableClass",
    "ConfigurableClassData",
    "DagsterSqliteStorage",
    "DagsterStorage",
    "InstanceRef",
    "coordinator_instance",
]
