"""${VAR} resolution happens at run time only, and secrets never reach a log line."""

from __future__ import annotations

import logging

import pytest
import structlog

from dativo_dagster.config.secrets import (
    SecretResolver,
    find_references,
    malformed_reference,
    redact_text,
    register_secrets,
    required_references,
)
from dativo_dagster.errors import ConfigError
from dativo_dagster.logs import configure_logging, redact_event


def test_references_are_found_without_resolving() -> None:
    value = {"a": "${ONE}", "b": ["x${TWO:-d}y", 3], "c": "plain"}
    assert find_references(value) == {"ONE", "TWO"}
    assert required_references(value) == {"ONE"}


def test_resolution_with_defaults_and_missing_vars() -> None:
    resolver = SecretResolver({"PGPASSWORD": "s3cr3t-value", "EMPTY": ""})
    assert resolver.resolve("pw=${PGPASSWORD}") == "pw=s3cr3t-value"
    assert resolver.resolve("${EMPTY:-fallback}") == "fallback"
    assert resolver.resolve("${NOPE:-d}") == "d"
    with pytest.raises(ConfigError) as info:
        resolver.resolve({"password": "${NOT_SET}"}, where="tenants/x/jobs/y.yaml: source.credentials")
    assert "NOT_SET" in str(info.value)
    assert "source.credentials.password" in str(info.value)
    assert resolver.redact("login with s3cr3t-value") == "login with ***"


def test_malformed_reference_detected() -> None:
    assert malformed_reference("${OK} and ${bad") is not None
    assert malformed_reference("${OK} ${X:-y}") is None


def test_redaction_of_registered_values_and_secret_named_fields() -> None:
    register_secrets(["tok_live_abcdef123"])
    assert redact_text("auth failed for tok_live_abcdef123!") == "auth failed for ***!"
    event = redact_event(None, "info", {"event": "x tok_live_abcdef123", "password": "whatever", "n": 1})
    assert event == {"event": "x ***", "password": "***", "n": 1}


def test_structlog_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    register_secrets(["super-secret-password-9"])
    configure_logging(logging.INFO, force=True)
    structlog.get_logger("t").info("connecting", dsn="postgresql://u:super-secret-password-9@h/db", tenant="demo")
    err = capsys.readouterr().err
    assert "super-secret-password-9" not in err
    assert "***" in err and "tenant='demo'" in err
