"""Helpers for the external-engine tests: a shared connector cache, MariaDB databases, Singer projects.

Connector virtualenvs are slow to build (a pip install from the package index), so every test
shares one cache: ``$DATIVO_CONNECTORS_DIR`` when set, else ``.dativo/test-connectors`` in the
repository (git-ignored; a fresh CI checkout builds each environment once per run).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from dativo_dagster.engines.venvs import CONNECTORS_DIR_ENV
from tests.conftest import REPO
from tests.integration.sql_harness import write_project

TAP_MYSQL = "tap-mysql==1.17.7"


@pytest.fixture(scope="session")
def connectors_cache() -> Iterator[Path]:
    """The connector cache every engine test (and the ``dativo`` processes they start) uses."""
    previous = os.environ.get(CONNECTORS_DIR_ENV)
    path = Path(previous) if previous else REPO / ".dativo" / "test-connectors"
    path.mkdir(parents=True, exist_ok=True)
    os.environ[CONNECTORS_DIR_ENV] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(CONNECTORS_DIR_ENV, None)


@pytest.fixture
def maria(mysql_server: dict[str, object], unique_name: str) -> Iterator[tuple[Any, str]]:
    """A connection to the local MariaDB and a fresh database, dropped afterwards."""
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {unique_name}")
    try:
        yield connection, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {unique_name}")
        connection.close()


def sql(connection: Any, *statements: str, many: list[tuple[Any, ...]] | None = None) -> None:
    """Run statements (the last one with ``executemany`` when ``many`` is given)."""
    with connection.cursor() as cursor:
        for index, statement in enumerate(statements):
            if many is not None and index == len(statements) - 1:
                cursor.executemany(statement, many)
            else:
                cursor.execute(statement)


def singer_recipe(root: Path, name: str = "mysql_singer", **extra: Any) -> None:
    """A ``tap-mysql`` recipe under ``root/connectors/sources``."""
    recipe: dict[str, Any] = {
        "name": name,
        "engine": "singer",
        "pip_url": TAP_MYSQL,
        "executable": "tap-mysql",
        "config": {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "${TEST_MYSQL_PASSWORD:-}"},
        # What a tenant's job may set: which database it reads, nothing about where the server is.
        "tenant_settings": ["database", "filter_dbs"],
        **extra,
    }
    path = root / "connectors/sources" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))


def singer_project(
    root: Path,
    database: str,
    objects: list[dict[str, Any]],
    *,
    contracts: dict[str, str] | None = None,
    recipe: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
) -> Path:
    """A project whose job ``acme/db`` reads ``objects`` from MariaDB through ``tap-mysql``."""
    settings = {"database": database, "filter_dbs": database, **(connection or {})}
    write_project(root, "mysql_singer", settings, objects, contracts=contracts)
    singer_recipe(root, **(recipe or {}))
    return root
