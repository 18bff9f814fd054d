"""Raw pages of an API job: kept per run (redacted), listed by ``inspect``, replayed after a mapping fix, pruned.

The Stripe emulator serves customers; the job's contract maps ``email`` from a field Stripe does not
send and requires it, so the run quarantines every row and fails. Its raw pages were kept: once the
mapping is fixed, ``dativo replay --from raw`` commits the rows from them, once.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dativo_dagster.cli import main
from dativo_dagster.engine import enforcer_for
from dativo_dagster.raw_pages import INDEX_FILE, read_index
from dativo_dagster.replay import PROP_REPLAY_ID, PROP_REPLAYED_FROM, replay_raw
from dativo_dagster.sources.registry import build_source
from dativo_dagster.state import PROP_RUN_ID
from tests.fakes.server import FakeClock, FakeServer
from tests.fakes.stripe_api import StripeEmulator
from tests.integration.harness_stripe import NOW, StripeRunner, source_clock, stripe_object, write_stripe_project

pytest.importorskip("stripe")

CANARY = "sk_test_canary_7f3a9c2e51d04b"
"""The job's API key: it must appear in no raw page and no output."""

GOOD = "{name: email, type: string}"
BROKEN = "{name: email, type: string, required: true, source_name: mail}"


@pytest.fixture
def emu() -> Iterator[tuple[StripeEmulator, FakeServer]]:
    emulator = StripeEmulator(clock=FakeClock(NOW, frozen=True))
    emulator.add_account(CANARY, seed=11, customers=0, charges=0, products=0, invoices=0, subscriptions=0)
    for i in range(1, 31):
        # A customer whose description holds the key: the transport redacts it before anything is stored.
        emulator.create_object(
            CANARY,
            "customers",
            created=NOW - 5 * 86_400 + i * 600,
            email=f"c{i}@example.com",
            description=f"note {i} {CANARY if i == 3 else ''}".strip(),
        )
    with emulator.serve() as server, source_clock(emulator):
        yield emulator, server


def project(tmp_path: Path, url: str) -> Path:
    root = write_stripe_project(
        tmp_path / "project",
        url,
        [stripe_object("customers")],
        connection={"rate_limit": {"rps": 1000, "burst": 1000}, "slice_days": 400, "page_size": 10},
    )
    job = root / "tenants/acme/jobs/payments.yaml"
    spec = yaml.safe_load(job.read_text())
    spec["raw_retention_days"] = 2
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    return root


def set_mapping(root: Path, old: str, new: str) -> None:
    contract = root / "connectors/schemas/stripe/customers.v1.yaml"
    text = contract.read_text()
    assert old in text
    contract.write_text(text.replace(old, new))


def all_raw_text(root: Path) -> str:
    texts = []
    for path in (root / ".dativo/raw").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            texts.append((gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8", "replace"))
    return "\n".join(texts)


def test_raw_pages_are_kept_inspected_and_replayed_after_a_mapping_fix(
    emu: tuple[StripeEmulator, FakeServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, server = emu
    root = project(tmp_path, server.url)
    monkeypatch.setenv("STRIPE_API_KEY", CANARY)
    raw = root / ".dativo/raw/acme/payments/customers"
    old = raw / "old-run"  # a run from before the retention: removed when the next run starts
    old.mkdir(parents=True)
    (old / INDEX_FILE).write_text("")
    week_ago = time.time() - 7 * 86_400
    os.utime(old / INDEX_FILE, (week_ago, week_ago))

    set_mapping(root, GOOD, BROKEN)
    runner = StripeRunner(root, {"STRIPE_API_KEY": CANARY})
    failed = runner.run("customers")
    assert failed.error is not None and failed.error.code == "QUAL001"
    assert not old.exists()

    entries = list(read_index(raw / "run-1"))
    lists = [e for e in entries if e.path == "/v1/customers" and e.ok]
    assert len(lists) >= 3  # 30 customers, 10 a page
    assert all(len(e.sha256) == 64 and e.bytes > 0 for e in lists)
    stored = all_raw_text(root)
    assert CANARY not in stored and "note 3 ***" in stored

    capsys.readouterr()  # the runs' log lines
    assert main(["--project", str(root), "inspect", "acme/payments", "--object", "customers", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in document["raw_runs"]] == ["run-1"]
    assert document["raw_runs"][0]["pages"] == len(entries)
    first = lists[0].seq
    assert (
        main(["--project", str(root), "inspect", "acme/payments", "--object", "customers", "--show", str(first)]) == 0
    )
    shown = capsys.readouterr().out
    assert "/v1/customers" in shown and "example.com" in shown

    set_mapping(root, BROKEN, GOOD)
    args = ["--project", str(root), "replay", "acme/payments", "--object", "customers", "--from", "raw", "--json"]
    assert main(args) == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["replay_id"] == "raw-run-1" and outcome["rows_committed"] == 30
    rows = runner.rows("customers")
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert {r["email"] for r in rows} == {f"c{i}@example.com" for i in range(1, 31)}
    props = runner.snapshots("customers")[-1].summary.additional_properties
    assert props[PROP_REPLAY_ID] == "raw-run-1" and props[PROP_REPLAYED_FROM] == "raw" and PROP_RUN_ID not in props

    # Replaying the same run again writes nothing.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["already_committed"] is True
    assert len(runner.rows("customers")) == 30

    # The next run (with the fixed contract) merges on the key: still one row per customer.
    runner = StripeRunner(root, {"STRIPE_API_KEY": CANARY})
    runner.runs = 1
    assert runner.run("customers").error is None
    assert len({r["id"] for r in runner.rows("customers")}) == len(runner.rows("customers")) == 30
    assert (raw / "run-2" / INDEX_FILE).exists()

    capsys.readouterr()
    assert main(["--project", str(root), "inspect", "acme/payments", "--object", "customers", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in document["raw_runs"]] == ["run-1", "run-2"]
    assert [s["kind"] for s in document["snapshots"]][-2:] == ["run", "replay from raw"]
    assert main(["--project", str(root), "inspect", "acme/payments", "--object", "customers", "--run", "run-1"]) == 0
    out, err = capsys.readouterr()
    assert "run-1" in out and "GET" in out
    assert CANARY not in out + err + all_raw_text(root)


HUBSPOT_TOKEN = "pat-na1-canary00-2222-3333-4444-555555555555"


def test_hubspot_search_pages_are_replayed_with_a_fixed_contract(tmp_path: Path) -> None:
    from tests.fakes.hubspot_api import HubSpotEmulator
    from tests.fakes.server import Limit
    from tests.integration.sql_harness import Runner, write_project

    lifted = {
        "default": Limit(rps=100_000, kind="rolling", window=10.0, name="TEN_SECONDLY_ROLLING"),
        "search": Limit(rps=100_000, kind="rolling", window=1.0, name="SECONDLY"),
    }
    emulator = HubSpotEmulator(clock=FakeClock(time.time() - 3600, frozen=True), limits=lifted)
    emulator.add_portal(HUBSPOT_TOKEN, seed=3, contacts=5, companies=5, deals=40, tickets=5)
    shipped = (Path(__file__).resolve().parents[2] / "connectors/schemas/hubspot/deals.v1.yaml").read_text()
    exact = "{name: closedate, type: timestamptz}"
    assert exact in shipped
    with emulator.serve() as server:
        root = write_project(
            tmp_path / "hub",
            "hubspot",
            {
                "base_url": server.url,
                "rate_limit": {"rps": 1000, "burst": 1000},
                "search_rate_limit": {"rps": 1000, "burst": 1000},
            },
            [
                {
                    "name": "deals",
                    "contract": {"name": "hubspot/deals", "version": 1},
                    "incremental": {"strategy": "updated", "cursor_field": "hs_lastmodifieddate"},
                }
            ],
            {"access_token": "${HUBSPOT_TOKEN}"},
            job_extra={"raw_retention_days": 1, "quality": {"max_rejected_rate": 1.0}},
            # A contract that requires a close date: open deals are quarantined.
            contracts={
                "hubspot/deals.v1.yaml": shipped.replace(exact, "{name: closedate, type: timestamptz, required: true}")
            },
        )
        env = {"HUBSPOT_TOKEN": HUBSPOT_TOKEN}
        first = Runner(root, env).run("deals")
        assert first.error is None and first.write is not None
        rejected = first.write.rows_rejected
        assert 0 < rejected < 40
        (root / "connectors/schemas/hubspot/deals.v1.yaml").write_text(shipped)
        runner = Runner(root, env)
        job = runner.job
        with build_source(job, runner.resolver, raw_pages=True) as source:
            outcome = replay_raw(
                job.object("deals"),
                runner.writer,
                source,
                enforcer_for(job.object("deals"), source),
                root / ".dativo/raw/acme/db/deals/run-1",
                by="test",
            )
    # The quarantined deals now conform; the others are in the table already, in the same version.
    assert outcome.rows_committed == rejected and outcome.rows_superseded == 40 - rejected
    assert outcome.pages >= 1 and outcome.rows_still_failing == 0
    rows = runner.rows("deals")
    assert len(rows) == len({r["id"] for r in rows}) == 40
    assert HUBSPOT_TOKEN not in all_raw_text(root)


def test_scratch_and_dry_runs_keep_no_raw_pages(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = emu
    root = project(tmp_path, server.url)
    monkeypatch.setenv("STRIPE_API_KEY", CANARY)
    job = ["--project", str(root), "run", "acme/payments", "--object", "customers"]
    assert main([*job, "--scratch", "--from-start"]) == 0
    assert main([*job, "--dry-run"]) == 0
    # Nothing reached the production archive that `dativo replay --from raw` loads from.
    raw = root / ".dativo/raw/acme/payments/customers"
    assert not raw.exists() or not any(raw.iterdir())


def test_turning_retention_off_discards_the_pages_kept(
    emu: tuple[StripeEmulator, FakeServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, server = emu
    root = project(tmp_path, server.url)
    runner = StripeRunner(root, {"STRIPE_API_KEY": CANARY})
    assert runner.run("customers").error is None
    kept = root / ".dativo/raw/acme/payments"
    assert any(kept.rglob(INDEX_FILE))
    job = root / "tenants/acme/jobs/payments.yaml"
    spec = yaml.safe_load(job.read_text())
    spec["raw_retention_days"] = 0
    job.write_text(yaml.safe_dump(spec, sort_keys=False))
    StripeRunner(root, {"STRIPE_API_KEY": CANARY}).run("customers")
    assert not kept.exists()
