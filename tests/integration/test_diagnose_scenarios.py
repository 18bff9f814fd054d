"""The scenario suite: a real failing run per failure kind, then ``dativo diagnose`` and ``dativo status``.

Each scenario runs a job through ``dativo run`` (in-process, against the project's own Dagster
instance) so the failure is recorded exactly as a scheduled run records it; ``diagnose`` then reads
it back from the instance, names the code and the kind, and writes the markdown report. Every
output and report is searched for the canary secret (the Stripe key the runs use).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_dagster.cli import main
from tests.fakes.server import FakeClock, FakeServer
from tests.fakes.stripe_api import StripeEmulator
from tests.integration.harness_stripe import NOW, source_clock, stripe_object, write_stripe_project

pytest.importorskip("stripe")

CANARY = "sk_test_CANARY_diagnose_8a7f6e5d4c3b"
RESTRICTED = "rk_test_CANARY_restricted_1b2c3d4e"
FAST = {"rate_limit": {"rps": 1000, "burst": 1000}, "slice_days": 400, "retry": {"attempts": 2, "initial_s": 0.0}}


class Cli:
    """Runs ``dativo`` commands and keeps everything they printed, for the canary search."""

    def __init__(self, capsys: pytest.CaptureFixture[str], root: Path) -> None:
        self.capsys = capsys
        self.root = root
        self.printed: list[str] = []

    def __call__(self, *argv: str) -> tuple[int, str]:
        code = main(list(argv))
        out = self.capsys.readouterr()
        text = out.out + out.err
        self.printed.append(text)
        return code, text

    def diagnose(self, target: str, *extra: str) -> tuple[dict[str, Any], str]:
        """``diagnose --json`` and ``--report``: the diagnosis and the report's text."""
        report = self.root / "report.md"
        code, text = self("diagnose", target, "--json", "--report", str(report), *extra)
        assert code == 0, text
        rendered = report.read_text()
        self.printed.append(rendered)
        return json.loads(text), rendered

    def assert_no_secret(self) -> None:
        everything = "\n".join(self.printed)
        assert CANARY not in everything and RESTRICTED not in everything
        # Nothing written under the project's state (the instance, the warehouse) holds it either.
        for path in (self.root / ".dativo").rglob("*"):
            if path.is_file() and path.stat().st_size < 50_000_000:
                assert CANARY.encode() not in path.read_bytes(), path


def no_retries(root: Path) -> None:
    runner = yaml.safe_load((root / "runner.yaml").read_text())
    runner["defaults"] = {"retry": {"max_retries": 0, "delay_s": 0}}
    (root / "runner.yaml").write_text(yaml.safe_dump(runner))


@pytest.fixture
def emulator() -> Iterator[tuple[StripeEmulator, FakeServer]]:
    emu = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emu.add_account(CANARY, seed=3, customers=30, charges=0, products=0, invoices=0, subscriptions=0)
    with emu.serve() as server, source_clock(emu):
        yield emu, server


def stripe_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, key: str = CANARY) -> Path:
    """A Stripe project reading customers, without retries, its instance and warehouse in the project."""
    root = write_stripe_project(
        tmp_path / "project", url, [stripe_object("customers", options={"track_updates": False})], connection=FAST
    )
    no_retries(root)
    monkeypatch.setenv("STRIPE_API_KEY", key)
    monkeypatch.setenv("DATIVO_PROJECT_DIR", str(root))
    monkeypatch.setenv("DATIVO_HOME", str(root / ".dativo"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def stripe_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], emulator: Any
) -> Iterator[tuple[StripeEmulator, Cli]]:
    emu, server = emulator
    root = stripe_project(tmp_path, monkeypatch, server.url)
    cli = Cli(capsys, root)
    yield emu, cli
    cli.assert_no_secret()


def failing_run(cli: Cli, label: str = "acme/payments") -> str:
    code, text = cli("run", label)
    assert code == 2, text
    return text


def check_report(report: str, code: str, title: str) -> None:
    for heading in ("## Summary", "## Root-cause analysis", "## Fix applied", "## Validation", "## Next steps"):
        assert heading in report
    assert f"**Error:** {code}" in report and f"**Kind:** {title}" in report


# --------------------------------------------------------------------------------------------- API failures


def test_a_revoked_key_is_expired_or_revoked_credentials(stripe_cli: tuple[StripeEmulator, Cli]) -> None:
    emu, cli = stripe_cli
    assert cli("run", "acme/payments")[0] == 0  # a success first: the report compares with it
    code, text = cli("status", "acme/payments", "--json")
    (customers,) = json.loads(text)["objects"]
    assert code == 0 and customers["healthy"] and customers["rows_last"] == 30
    assert customers["cursor_source"] == "table" and customers["cursor_lag_basis"] == "epoch seconds"
    assert customers["cursor_lag_s"] > 0
    del emu.keys[CANARY]  # revoked at Stripe
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "credentials" and diagnosis["failure"]["code"] == "AUTH001"
    request = diagnosis["failure"]["record"]["request"]
    assert request["method"] == "GET" and request["path"] == "/v1/customers" and request["status"] == 401
    assert "Invalid API Key" in request["response_excerpt"]
    assert diagnosis["last_success"]["rows_written"] == 30
    check_report(report, "AUTH001", "expired or revoked credentials")
    assert "GET /v1/customers → HTTP 401" in report and "30 row(s) written" in report
    code, text = cli("diagnose", "acme/payments")  # the human form names the same
    assert code == 0 and "kind: expired or revoked credentials" in text and "failing request:" in text


def test_a_credential_variable_not_set_is_config_for_every_object(
    stripe_cli: tuple[StripeEmulator, Cli], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, cli = stripe_cli
    monkeypatch.delenv("STRIPE_API_KEY")  # the run fails before reading any object
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments")
    assert diagnosis["object"] == "acme/payments/customers" and diagnosis["kind"] == "config"
    assert "STRIPE_API_KEY" in diagnosis["failure"]["message"]
    check_report(report, "CFG001", "configuration")


def test_a_key_without_the_permission_is_a_missing_scope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], emulator: Any
) -> None:
    emu, server = emulator
    emu.add_restricted_key(RESTRICTED, CANARY, readable=["charges"])
    root = stripe_project(tmp_path, monkeypatch, server.url, key=RESTRICTED)
    cli = Cli(capsys, root)
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "missing_scope" and diagnosis["failure"]["record"]["request"]["status"] == 403
    check_report(report, "AUTH001", "missing scope or permission")
    cli.assert_no_secret()


def test_throttling_until_the_retries_are_spent_is_rate_limited(stripe_cli: tuple[StripeEmulator, Cli]) -> None:
    emu, cli = stripe_cli
    emu.inject("status", status=429, count=10, path="/v1/customers")
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "rate_limited" and diagnosis["failure"]["code"] == "RETRY001"
    assert diagnosis["failure"]["record"]["request"]["status"] == 429
    check_report(report, "RETRY001", "rate limited or quota exhausted")


def test_a_404_is_an_endpoint_gone(stripe_cli: tuple[StripeEmulator, Cli]) -> None:
    emu, cli = stripe_cli
    emu.inject("status", status=404, count=1, path="/v1/customers")
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "endpoint_gone" and diagnosis["failure"]["code"] == "CFG001"
    assert diagnosis["failure"]["record"]["request"]["status"] == 404
    check_report(report, "CFG001", "endpoint gone or API version changed")
    assert "Unrecognized request URL" in report


def test_invalid_json_is_a_response_shape_change(stripe_cli: tuple[StripeEmulator, Cli]) -> None:
    emu, cli = stripe_cli
    emu.inject("malformed_json", count=1, path="/v1/customers")
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "response_shape" and diagnosis["failure"]["code"] == "PAGE001"
    check_report(report, "PAGE001", "response shape changed")


def test_a_refused_connection_is_connectivity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = stripe_project(tmp_path, monkeypatch, f"http://127.0.0.1:{port}")
    cli = Cli(capsys, root)
    failing_run(cli)
    diagnosis, report = cli.diagnose("acme/payments/customers")
    assert diagnosis["kind"] == "connectivity" and diagnosis["failure"]["code"] == "RETRY001"
    request = diagnosis["failure"]["record"]["request"]
    assert request["status"] is None and "refused" in request["failure"].lower()
    check_report(report, "RETRY001", "connectivity")
    cli.assert_no_secret()


# --------------------------------------------------------------------------------------------- CSV failures


@pytest.fixture
def csv_cli(project: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    no_retries(project)
    return Cli(capsys, project)


def spoil_amounts(project: Path) -> None:
    """Every other order's amount is no longer a number."""
    path = project / "tenants/demo/data/orders.csv"
    lines = path.read_text().splitlines()
    rows = [line.replace(",", ",x", 3).replace(",x", ",", 2) if i % 2 else line for i, line in enumerate(lines[1:])]
    path.write_text("\n".join([lines[0], *rows]) + "\n")


def test_rejected_rows_are_data_quality_and_three_failures_make_status_fail(csv_cli: Cli, project: Path) -> None:
    spoil_amounts(project)
    for _ in range(3):
        assert csv_cli("run", "demo/shop", "--object", "orders")[0] == 2
    code, text = csv_cli("status", "demo/shop")
    assert code == 1 and "demo/shop/orders: unhealthy: failed 3 run(s) in a row" in text
    code, text = csv_cli("status", "demo", "--json")
    document = json.loads(text)
    orders = next(o for o in document["objects"] if o["object"] == "demo/shop/orders")
    assert code == 1 and document["healthy"] is False and orders["failure_streak"] == 3
    assert orders["last_failure"]["code"] == "QUAL001" and orders["success_rate"] == 0.0
    assert csv_cli("status", "demo/shop", "--streak", "4")[0] == 0

    diagnosis, report = csv_cli.diagnose("demo/shop/orders")
    assert diagnosis["kind"] == "data_quality" and diagnosis["failure"]["code"] == "QUAL001"
    top = diagnosis["failure"]["record"]["rejections"][0]
    assert top["reason"] == "amount: cannot convert '…' to decimal(12,2) (is not a number)"
    check_report(report, "QUAL001", "data quality")
    assert "Top rejection reasons" in report and "None detected" in report

    # the fix: the object accepts this share of bad rows; the next run validates it
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text() + "quality: {max_rejected_rate: 0.6}\n")
    assert csv_cli("run", "demo/shop", "--object", "orders")[0] == 1  # partial: rows quarantined
    diagnosis, report = csv_cli.diagnose("demo/shop/orders")
    assert diagnosis["status"] == "recovered" and diagnosis["after"]["rows_written"] == 1500
    assert "+quality: {max_rejected_rate: 0.6}" in report and "1,500 row(s) quarantined" in report
    assert csv_cli("status", "demo/shop")[0] == 0


def test_a_missing_file_is_config(csv_cli: Cli, project: Path) -> None:
    (project / "tenants/demo/data/orders.csv").unlink()
    assert csv_cli("run", "demo/shop", "--object", "orders")[0] == 2
    diagnosis, report = csv_cli.diagnose("demo/shop/orders")
    assert diagnosis["failure"]["code"] == "CFG001" and diagnosis["kind"] == "config"
    check_report(report, "CFG001", "configuration")


def test_a_table_whose_files_are_gone_is_storage(csv_cli: Cli, project: Path) -> None:
    assert csv_cli("run", "demo/shop", "--object", "customers")[0] == 0
    # the warehouse changed outside Iceberg: the table's metadata files are gone
    for metadata in (project / ".dativo/warehouse/demo/customers/metadata").glob("*.metadata.json"):
        metadata.unlink()
    assert csv_cli("run", "demo/shop", "--object", "customers")[0] == 2
    diagnosis, report = csv_cli.diagnose("demo/shop/customers")
    assert diagnosis["failure"]["code"] == "STG001" and diagnosis["kind"] == "storage"
    check_report(report, "STG001", "catalog or storage")


def test_an_exception_no_code_covers_is_a_bug(csv_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from dativo_dagster.sources.csv import CsvSource

    def read(self: CsvSource, request: Any) -> Any:
        raise TypeError("a connector bug")

    monkeypatch.setattr(CsvSource, "read", read)
    assert csv_cli("run", "demo/shop", "--object", "orders")[0] == 2
    diagnosis, report = csv_cli.diagnose("demo/shop/orders")
    assert diagnosis["failure"]["code"] == "BUG" and diagnosis["kind"] == "bug"
    assert "TypeError: a connector bug" in diagnosis["failure"]["record"]["traceback_tail"]
    check_report(report, "BUG", "bug")


def test_diagnose_without_a_failure_and_of_a_given_run(csv_cli: Cli) -> None:
    assert csv_cli("run", "demo/shop", "--object", "orders")[0] == 0
    code, text = csv_cli("diagnose", "demo/shop/orders")
    assert code == 0 and "no failure recorded" in text
    assert csv_cli("diagnose", "demo/shop/nope")[0] == 2
