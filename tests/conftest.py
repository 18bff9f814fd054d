"""Shared fixtures: a throw-away copy of the demo project, and real-server availability.

Tests that need PostgreSQL or MariaDB skip with a reason when the server is absent (a laptop);
with ``DATIVO_REQUIRE_SERVERS=1`` (set by .ci/run) a missing server fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_SERVERS = os.environ.get("DATIVO_REQUIRE_SERVERS") == "1"


def server_up(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    """Skip (or fail, in CI) when a server is not reachable."""
    if server_up(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (DATIVO_REQUIRE_SERVERS=1: CI must run this test)")
    pytest.skip(message)


@pytest.fixture
def postgres_server() -> dict[str, object]:
    """Connection settings of the local PostgreSQL server (trust auth)."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    return {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


@pytest.fixture
def mysql_server() -> dict[str, object]:
    """Connection settings of the local MariaDB server."""
    require_server("MariaDB", "127.0.0.1", 3306)
    return {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}


@pytest.fixture
def redis_url() -> str:
    """URL of the local Redis server (shared rate limits across processes)."""
    require_server("Redis", "127.0.0.1", 6379)
    return "redis://127.0.0.1:6379/0"


def copy_demo_project(dest: Path) -> Path:
    """Copy runner.yaml, tenants/ and connectors/ of the repository into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "runner.yaml", dest / "runner.yaml")
    shutil.copytree(REPO / "tenants", dest / "tenants")
    shutil.copytree(REPO / "connectors", dest / "connectors")
    return dest


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the demo project with its own warehouse; cwd and env point at it."""
    root = copy_demo_project(tmp_path / "project")
    monkeypatch.setenv("DATIVO_PROJECT_DIR", str(root))
    monkeypatch.setenv("DATIVO_HOME", str(root / ".dativo"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(root)
    yield root


@pytest.fixture
def unique_name() -> str:
    """A short unique identifier for databases, schemas and tables."""
    return "t" + uuid.uuid4().hex[:10]


# Object-store and AWS emulators (moto server, Azurite): fixtures live beside the other servers'.
from tests.servers import (  # noqa: E402, F401
    aws,
    azure_container,
    azurite_server,
    moto_server,
    s3_bucket,
)
