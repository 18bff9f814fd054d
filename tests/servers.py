"""Object-store and AWS emulators for the tests: moto's server mode and Azurite, on localhost.

``.ci/run`` starts both before the suite; on a laptop the fixtures start them on first use (moto
from the project's virtualenv, Azurite from ``node_modules`` after ``npm install``) and stop what
they started at the end of the session. When one cannot be started the test skips with the
reason, or fails under ``DATIVO_REQUIRE_SERVERS=1`` (CI must run every test).

Each test gets its own bucket or container, so tests never see each other's files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, REQUIRE_SERVERS, server_up

MOTO_PORT = int(os.environ.get("DATIVO_TEST_MOTO_PORT", "5000"))
AZURITE_PORT = int(os.environ.get("DATIVO_TEST_AZURITE_PORT", "10000"))
AWS_REGION = "us-east-1"

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

STARTUP_SECONDS = 60.0


def _unavailable(message: str) -> None:
    if REQUIRE_SERVERS:
        pytest.fail(f"{message} (DATIVO_REQUIRE_SERVERS=1: CI must run this test)")
    pytest.skip(message)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server_up("127.0.0.1", port):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    _unavailable(f"{name} did not start on 127.0.0.1:{port}: {tail.strip() or 'no output'}")


@contextlib.contextmanager
def _serving(command: list[str], port: int, workdir: Path, name: str) -> Iterator[None]:
    """Run ``command`` (a server listening on ``port``) until the block ends; its output goes to
    ``workdir``, which is removed afterwards."""
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log, name)
        yield
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class Moto:
    """A moto server speaking S3, Glue, Secrets Manager and SSM."""

    endpoint: str
    region: str = AWS_REGION

    def environ(self) -> dict[str, str]:
        """Environment a dativo run (or boto3) needs to reach this server with dummy credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, service: str):  # type: ignore[no-untyped-def]
        """A boto3 client for ``service`` on this server."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def new_bucket(self) -> str:
        """Create an empty bucket with a unique name and return the name."""
        name = "dativo-" + uuid.uuid4().hex[:12]
        self.client("s3").create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Moto]:
    """moto's server mode on 127.0.0.1 (started here unless already running)."""
    endpoint = f"http://127.0.0.1:{MOTO_PORT}"
    if server_up("127.0.0.1", MOTO_PORT):
        yield Moto(endpoint)
        return
    try:
        import moto.server  # noqa: F401
    except ImportError:
        _unavailable("moto[server] is not installed (pip install -e '.[dev]')")
    workdir = Path(tempfile.mkdtemp(prefix="moto-"))
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(MOTO_PORT)]
    with _serving(command, MOTO_PORT, workdir, "moto server"):
        yield Moto(endpoint)


@pytest.fixture
def aws(moto_server: Moto, monkeypatch: pytest.MonkeyPatch) -> Moto:
    """The moto server, with this test's environment pointing every AWS client at it."""
    for key, value in moto_server.environ().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    return moto_server


@pytest.fixture
def s3_bucket(aws: Moto) -> str:
    """A fresh, empty bucket on the moto server."""
    return aws.new_bucket()


@dataclass(frozen=True)
class Azurite:
    """Azurite's blob service with its well-known development account."""

    blob_endpoint: str
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    @property
    def connection_string(self) -> str:
        """The account's connection string (what adlfs and the Azure SDK take)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def new_container(self) -> str:
        """Create an empty container with a unique name and return the name."""
        from azure.storage.blob import BlobServiceClient

        name = "dativo-" + uuid.uuid4().hex[:12]
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Azurite]:
    """Azurite's blob service on 127.0.0.1 (started here from node_modules unless already running)."""
    endpoint = f"http://127.0.0.1:{AZURITE_PORT}/{AZURITE_ACCOUNT}"
    if server_up("127.0.0.1", AZURITE_PORT):
        yield Azurite(endpoint)
        return
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        _unavailable("Azurite is not installed: run `npm install` in the repository (package.json pins it)")
    workdir = Path(tempfile.mkdtemp(prefix="azurite-"))
    command = [
        str(binary),
        *("--blobHost", "127.0.0.1", "--blobPort", str(AZURITE_PORT), "--location", str(workdir / "data")),
        *("--skipApiVersionCheck", "--loose"),
    ]
    with _serving(command, AZURITE_PORT, workdir, "Azurite"):
        yield Azurite(endpoint)


@pytest.fixture
def azure_container(azurite_server: Azurite) -> str:
    """A fresh, empty container on Azurite."""
    return azurite_server.new_container()
