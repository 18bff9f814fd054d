"""Secrets from AWS Secrets Manager and SSM Parameter Store (moto server) reaching a PostgreSQL job.

The PostgreSQL server trusts local connections, so a password proves nothing: the secrets here
also carry the login role, a role created for the test under a random name. A run that resolved
the reference wrongly connects as a role that does not exist and fails.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.registry import build_source
from tests.integration.sql_harness import write_project
from tests.servers import Moto

pytestmark = pytest.mark.postgres

RUNNER = """version: 1
secrets:
  aws_sm: ['{tenant}/*']
  aws_ssm: ['/{tenant}/*']
jobs: [{tenant: acme, job: db}]
"""


@pytest.fixture
def pg_role(postgres_server: dict[str, object], unique_name: str) -> Iterator[tuple[str, str]]:
    """A schema with two small tables and a login role (random name) that may read them."""
    role = "dativo_" + uuid.uuid4().hex[:12]
    connection = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {unique_name}")
        for table in ("orders", "refunds"):
            cursor.execute(f"CREATE TABLE {unique_name}.{table} (id bigint PRIMARY KEY, note text)")
            cursor.execute(f"INSERT INTO {unique_name}.{table} SELECT i, 'n' || i FROM generate_series(1, 25) i")
        cursor.execute(f"CREATE ROLE {role} LOGIN")
        cursor.execute(f"GRANT USAGE ON SCHEMA {unique_name} TO {role}")
        cursor.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {unique_name} TO {role}")
    try:
        yield role, unique_name
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP SCHEMA IF EXISTS {unique_name} CASCADE")
            cursor.execute(f"DROP ROLE IF EXISTS {role}")
        connection.close()


@pytest.fixture
def aws_calls(aws: Moto, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The AWS operations every boto3 client made while the test ran (seen by botocore's events)."""
    import boto3

    calls: list[str] = []
    original = boto3.session.Session.client

    def counting_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
        return client

    monkeypatch.setattr(boto3.session.Session, "client", counting_client)
    return calls


def project(tmp_path: Path, schema: str, connection: dict[str, Any], credentials: dict[str, str]) -> Path:
    objects = [
        {"name": table, "options": {"table": f"{schema}.{table}"}, "incremental": {"strategy": "full_refresh"}}
        for table in ("orders", "refunds")
    ]
    base = {"host": "127.0.0.1", "port": 5432, "database": "test"}
    root = write_project(tmp_path / "p", "postgres", {**base, **connection}, objects, credentials=credentials)
    (root / "runner.yaml").write_text(RUNNER)
    return root


def materialize(root: Path) -> tuple[dg.ExecuteInProcessResult, str]:
    """One run of the job (both objects); returns the result and every log message of the run."""
    instance = dg.DagsterInstance.ephemeral()
    defs = build_definitions(load_plan(root, strict=True))
    result = dg.materialize(
        assets=list(defs.assets or []), resources=defs.resources, instance=instance, raise_on_error=False
    )
    messages = [record.user_message or "" for record in instance.all_logs(result.run_id)]
    for record in instance.all_logs(result.run_id):
        if record.dagster_event is not None:
            messages.append(repr(record.dagster_event.event_specific_data))
    return result, "\n".join(messages)


def test_secrets_manager_json_keys_log_in_once_per_run_and_never_show(
    pg_role: tuple[str, str],
    aws: Moto,
    aws_calls: list[str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    role, schema = pg_role
    password = "sm-password-" + uuid.uuid4().hex
    secret_id = f"acme/{schema}/pg"
    aws.client("secretsmanager").create_secret(
        Name=secret_id, SecretString=json.dumps({"user": role, "password": password})
    )
    aws_calls.clear()
    root = project(
        tmp_path,
        schema,
        {"user": f"${{aws-sm:{secret_id}#user}}"},
        {"password": f"${{aws-sm:{secret_id}#password}}"},
    )
    result, logs = materialize(root)
    assert result.success
    rows = {
        event.event_specific_data.materialization.asset_key.path[-1]: (
            event.event_specific_data.materialization.metadata["dagster/row_count"].value
        )
        for event in result.get_asset_materialization_events()
    }
    assert rows == {"orders": 25, "refunds": 25}
    # two objects, two keys, one secret: one fetch in the run
    assert aws_calls == ["GetSecretValue"]
    output = capfd.readouterr()
    for text in (logs, output.out, output.err):
        assert password not in text and role not in text


def test_ssm_secure_string_reaches_the_connection_and_its_value_is_redacted_from_errors(
    pg_role: tuple[str, str], aws: Moto, aws_calls: list[str], tmp_path: Path
) -> None:
    role, schema = pg_role
    name = f"/acme/{schema}/pg/user"
    wrong_role = "dativo_missing_" + uuid.uuid4().hex[:8]
    ssm = aws.client("ssm")
    ssm.put_parameter(Name=name, Value=wrong_role, Type="SecureString")
    aws_calls.clear()
    root = project(tmp_path, schema, {"user": f"${{aws-ssm:{name}}}"}, {})
    failed, logs = materialize(root)
    assert not failed.success
    assert "AUTH001" in logs  # PostgreSQL refused the role the parameter named ...
    assert wrong_role not in logs  # ... and its message, which quotes the role, is redacted
    assert aws_calls == ["GetParameter"]
    ssm.put_parameter(Name=name, Value=role, Type="SecureString", Overwrite=True)
    aws_calls.clear()
    result, logs = materialize(root)  # a new run fetches again: the cache lives for one run only
    assert result.success, logs[-2000:]
    assert len(result.get_asset_materialization_events()) == 2
    assert aws_calls == ["GetParameter"]
    assert role not in logs


def test_a_reference_outside_the_allowlist_fails_at_load_and_at_run(
    pg_role: tuple[str, str], aws: Moto, aws_calls: list[str], tmp_path: Path
) -> None:
    role, schema = pg_role
    secret_id = f"acme/{schema}/pg"
    aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps({"user": role}))
    root = project(tmp_path, schema, {"user": f"${{aws-sm:other/{schema}#user}}"}, {})
    (broken,) = load_plan(root).broken
    assert broken.problems == (
        f"tenants/acme/jobs/db.yaml: source.connection.user: ${{aws-sm:other/{schema}#user}} is not allowed for "
        "tenant acme: add a pattern matching it to runner.yaml: secrets.aws_sm (allowed now: acme/*)",
    )
    root = project(tmp_path, schema, {"user": f"${{aws-sm:{secret_id}#user}}"}, {})
    job = load_plan(root, strict=True).jobs[0]
    revoked = dataclasses.replace(job, secrets=dataclasses.replace(job.secrets, aws_sm=("acme/elsewhere/*",)))
    aws_calls.clear()
    with pytest.raises(ConfigError, match=r"source.connection.user: \$\{aws-sm:acme/.*/pg#user\} is not allowed"):
        build_source(revoked, SecretResolver())
    assert aws_calls == []  # refused before anything is fetched


def test_missing_secret_and_missing_json_key_are_cfg001(aws: Moto, unique_name: str) -> None:
    secret_id = f"acme/{unique_name}/api"
    aws.client("secretsmanager").create_secret(Name=secret_id, SecretString=json.dumps({"token": "tok-abcdef-123"}))
    resolver = SecretResolver()
    with pytest.raises(ConfigError, match=rf"\$\{{aws-sm:{secret_id}#password\}}: the secret has no key 'password'"):
        resolver.resolve(f"${{aws-sm:{secret_id}#password}}", where="job.yaml: source.credentials.password")
    with pytest.raises(ConfigError, match=r"aws-sm:acme/none/api\}: no such secret in Secrets Manager"):
        resolver.resolve("${aws-sm:acme/none/api}")
    with pytest.raises(ConfigError, match=r"aws-ssm:/acme/none\}: no such secret in SSM Parameter Store"):
        resolver.resolve("${aws-ssm:/acme/none}")
    assert resolver.resolve(f"${{aws-sm:{secret_id}#token}}") == "tok-abcdef-123"
