"""Payload logs of debug runs: secrets and PII redacted at any depth, bodies cut after redaction."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dativo_dagster.api.transport import Exchange
from dativo_dagster.config.models import TenantJob
from dativo_dagster.config.secrets import REDACTED, register_secrets
from dativo_dagster.logs import log_context
from dativo_dagster.payloads import (
    TRUNCATED,
    PayloadLog,
    attach_observers,
    log_exchange,
    payload_path,
    pii_names,
    redact_body,
    redact_pairs,
    redact_tree,
    redact_url,
)

PII = pii_names(["email", "Phone", "name"])
CANARY = "canary-secret-7f3a9c"


def exchange(**overrides: Any) -> Exchange:
    fields: dict[str, Any] = {
        "component": "stripe (1a2b3c4d)",
        "method": "GET",
        "url": "https://api.example.com/v1/customers?limit=100&email=jane%40example.com",
        "request_headers": {"Accept": "application/json"},
        "request_body": None,
        "status": 200,
        "response_headers": {"content-type": "application/json", "set-cookie": "session=abc123"},
        "response_body": json.dumps(
            {"data": [{"id": "cus_1", "email": "jane@example.com", "billing": {"Phone": "+49 30 1234"}}]}
        ).encode(),
        "elapsed_s": 0.0123,
    }
    fields.update(overrides)
    return Exchange(**fields)


def test_pii_keys_are_hidden_at_any_depth_and_case() -> None:
    document = {
        "data": [{"customer": {"profile": {"contact": {"EMAIL": "jane@example.com", "city": "Berlin"}}}}],
        "name": "Jane Doe",
        "client_secret": "pi_123_secret_456",
        "count": 1,
    }
    redacted = redact_tree(document, PII)
    assert redacted["data"][0]["customer"]["profile"]["contact"] == {"EMAIL": REDACTED, "city": "Berlin"}
    assert redacted["name"] == REDACTED
    assert redacted["client_secret"] == REDACTED  # secret-named keys too
    assert redacted["count"] == 1


def test_a_list_under_a_pii_key_is_hidden_whole() -> None:
    assert redact_tree({"phone": ["+1 555", "+1 556"]}, PII) == {"phone": REDACTED}


def test_form_fields_and_query_parameters_are_hidden_by_any_part_of_their_key() -> None:
    form = "amount=300&customer%5Bemail%5D=jane%40example.com&metadata[phone]=555&name=Jane+Doe&note=ok"
    text = redact_pairs(form, PII)
    assert "jane" not in text.lower() and "555" not in text
    assert "amount=300" in text and "note=ok" in text
    url = redact_url("https://api.example.com/v1/search?q=x&email=jane@example.com&api_key=sk_live_1", PII)
    assert url == f"https://api.example.com/v1/search?q=x&email={REDACTED}&api_key={REDACTED}"


def test_registered_secrets_are_scrubbed_from_bodies_and_urls() -> None:
    register_secrets([CANARY])
    body = redact_body(json.dumps({"echo": f"key was {CANARY}"}).encode(), PII, 4096)
    assert CANARY not in body["text"] and REDACTED in body["text"]
    assert CANARY not in redact_url(f"https://x.example/?token_hint={CANARY}&a=1", PII)


def test_bodies_are_cut_after_redaction_and_keep_their_size() -> None:
    register_secrets([CANARY])
    items = [{"id": f"cus_{n}", "email": f"user{n}@example.com", "note": "x" * 40} for n in range(200)]
    raw = json.dumps({"data": items, "tail": CANARY}).encode()
    body = redact_body(raw, PII, 512)
    assert body["truncated"] is True and body["bytes"] == len(raw)
    assert body["text"].endswith(TRUNCATED)
    assert len(body["text"].encode()) <= 512 + len(TRUNCATED)
    assert "@example.com" not in body["text"]
    # a secret straddling the cut leaves no prefix behind: the cut comes after redaction
    padding = 500 - len('{"a":"')
    straddling = json.dumps({"a": "y" * padding + CANARY}).encode()
    cut = redact_body(straddling, PII, 510)["text"]
    assert CANARY[:4] not in cut


def test_text_that_is_not_json_still_hides_pii_pairs() -> None:
    cut_off = b'{"data":[{"id":"cus_1","email":"jane@example.com","phone":"+1 555","na'
    text = redact_body(cut_off, PII, 4096)["text"]
    assert "jane@" not in text and "+1 555" not in text and '"id":"cus_1"' in text
    form = redact_body(b"email=jane%40example.com&limit=3", PII, 4096, "application/x-www-form-urlencoded")
    assert form["text"] == f"email={REDACTED}&limit=3"
    assert redact_body(None, PII, 10) == {"text": None, "bytes": 0, "truncated": False}


def test_payload_log_writes_redacted_lines_for_its_job_only(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "r1" / "payloads.jsonl"
    observer = PayloadLog(path, ["email", "phone"], 4096, scope=("acme", "payments"))
    with log_context(tenant="acme", job="payments", object="customers"):
        observer(exchange())
    with log_context(tenant="other", job="payments", object="customers"):
        observer(exchange())  # another job of the same Dagster run: not this log's business
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1
    (line,) = lines
    assert line["object"] == "customers" and line["status"] == 200 and line["method"] == "GET"
    assert "jane" not in json.dumps(line) and "1234" not in json.dumps(line)
    assert json.loads(line["response_body"])["data"][0]["id"] == "cus_1"
    assert line["response_headers"]["set-cookie"] == REDACTED
    assert line["url"].endswith(f"email={REDACTED}")


def _job(tmp_path: Path, include: bool) -> Any:
    settings = SimpleNamespace(include_payloads=include, pii_fields=["email"], payload_max_bytes=1024)
    return SimpleNamespace(job=settings, project_dir=tmp_path, tenant="acme", name="payments")


def test_observers_are_attached_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATIVO_HOME", str(tmp_path / "state"))
    runtime = SimpleNamespace(observers=[])
    assert attach_observers(runtime, _job(tmp_path, False), "run-1") is None
    assert not [o for o in runtime.observers if isinstance(o, PayloadLog)]
    path = attach_observers(runtime, _job(tmp_path, False), "run-1", payloads=True)
    assert path == payload_path(tmp_path, "run-1") == tmp_path / "state" / "runs" / "run-1" / "payloads.jsonl"
    again = attach_observers(runtime, _job(tmp_path, True), "run-1")  # the job asks too: still one log
    assert again == path and len([o for o in runtime.observers if isinstance(o, PayloadLog)]) == 1
    assert payload_path(tmp_path, "../../etc").parent.parent == tmp_path / "state" / "runs"


def test_debug_line_per_exchange_has_no_body(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from dativo_dagster.logs import configure_logging

    configure_logging(logging.DEBUG, display_level=logging.DEBUG, force=True)
    try:
        log_exchange(exchange())
    finally:
        configure_logging(logging.INFO, force=True)
    err = capsys.readouterr().err
    assert "http_exchange" in err and "status=200" in err and "path='/v1/customers'" in err
    assert "jane" not in err


def test_job_settings_parse_and_unknown_keys_are_refused() -> None:
    base = {
        "tenant": "acme",
        "name": "payments",
        "source": {"recipe": "stripe"},
        "target": {"recipe": "local"},
        "objects": [{"name": "customers"}],
    }
    job = TenantJob.model_validate({**base, "include_payloads": True, "pii_fields": ["email"]})
    assert job.include_payloads and job.pii_fields == ["email"] and job.payload_max_bytes == 4096
    with pytest.raises(ValueError, match="payload_max_bytes"):
        TenantJob.model_validate({**base, "payload_max_bytes": 10})
    with pytest.raises(ValueError, match="include_payload"):
        TenantJob.model_validate({**base, "include_payload": True})


def test_a_large_body_is_parsed_from_its_start_only_and_still_redacted() -> None:
    items = [{"id": n, "email": f"user{n}@example.com"} for n in range(20_000)]
    raw = json.dumps(items).encode()
    body = redact_body(raw, PII, 300)
    assert body["truncated"] is True and body["bytes"] == len(raw)
    assert "@example.com" not in body["text"] and '"id": 0' in body["text"]


def test_objects_under_pii_keys_are_hidden_whole_in_a_cut_body() -> None:
    customer = '{"id": "cus_%d", "email": "p%d@example.com", "address": {"city": "Paris", "line1": "0 Secret Street"}}'
    body = ('{"data": [' + ", ".join(customer % (i, i) for i in range(2000)) + "]}").encode()
    assert len(body) > 1 << 16  # larger than what is parsed: redacted pair by pair
    shown = redact_body(body, frozenset({"email", "address"}), 4096)["text"]
    assert "Secret Street" not in shown and "Paris" not in shown and "@example.com" not in shown
    assert '"address": "***"' in shown and "cus_0" in shown
