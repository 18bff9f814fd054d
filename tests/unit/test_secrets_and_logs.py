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


@pytest.mark.parametrize(
    "key",
    ["token", "api_key", "apiKey", "access_token", "client_secret", "s3.secret-access-key", "private_key", "auth"],
)
def test_values_under_secret_named_connection_keys_are_redacted(key: str) -> None:
    from dativo_dagster.config.secrets import is_sensitive_key, secret_parts

    assert is_sensitive_key(key)
    assert secret_parts({key: "v4lue-under-" + key}, sensitive=False) == ["v4lue-under-" + key]


def test_a_password_inside_a_url_is_a_secret() -> None:
    from dativo_dagster.config.secrets import secret_parts

    parts = secret_parts("postgresql://user:p%40ss-word-9@db:5432/x", sensitive=False)
    assert set(parts) == {"p%40ss-word-9", "p@ss-word-9"}


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("postgresql://user@db:5432/x?sslmode=require&password=qu3ry-pw%21&x=1", "qu3ry-pw!"),
        ("mysql://db/x?sslpassword=ssl-pw-value", "ssl-pw-value"),
        ("host=db port=5432 password='sp ace\\'pw' dbname=x", "sp ace'pw"),
        ("Server=db;Database=x;User Id=u;Password=ado-pw-value;", "ado-pw-value"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=azure-key-value==;", "azure-key-value=="),
    ],
)
def test_a_secret_setting_inside_a_string_is_a_secret(text: str, secret: str) -> None:
    from dativo_dagster.config.secrets import secret_parts

    assert secret in secret_parts(text, sensitive=False)
    assert not any(part in ("require", "db", "x", "5432") for part in secret_parts(text, sensitive=False))


def test_build_source_registers_token_and_api_key_values(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from dativo_dagster.config import secrets
    from dativo_dagster.sources.base import ConnectionConfig, Source

    class Conn(ConnectionConfig):
        token: str
        api_key: str
        endpoint: str

    class Fake(Source):
        type = "fake"
        connection_model = Conn
        options_model = ConnectionConfig  # type: ignore[assignment]
        supported_strategies = frozenset()

        def check_connection(self) -> None: ...
        def list_objects(self) -> list[str]:
            return []

        def discover_schema(self, obj: object) -> object: ...  # type: ignore[override]
        def read(self, request: object) -> object: ...  # type: ignore[override]

    from pathlib import Path

    from dativo_dagster.sources import registry

    monkeypatch.setattr(registry, "source_class", lambda _type: Fake)

    class Job:
        source = type("S", (), {"type": "fake"})()
        job_file = Path("/p/tenants/t/jobs/j.yaml")
        project_dir = Path("/p")
        credentials: dict[str, str] = {}
        connection = {"token": "${T}", "api_key": "${K}", "endpoint": "https://user:urlpass-123@api.example"}
        data_roots = ()

    registry.build_source(Job(), SecretResolver({"T": "token-value-123", "K": "apikey-value-456"}))  # type: ignore[arg-type]
    registered = secrets.registered_secrets()
    assert {"token-value-123", "apikey-value-456", "urlpass-123"} <= registered


def test_nested_log_fields_are_redacted() -> None:
    register_secrets(["nested-secret-77"])
    event = redact_event(
        None,
        "info",
        {"event": "e", "request": {"headers": {"Authorization": "Bearer x"}, "body": ["nested-secret-77"]}},
    )
    assert event["request"] == {"headers": {"Authorization": "***"}, "body": ["***"]}
