"""A recipe's credentials go only where the platform meant: a tenant job cannot redirect them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.registry import build_source

POSTGRES_OBJECTS = [
    {"name": "orders", "options": {"table": "public.orders"}, "incremental": {"strategy": "full_refresh"}}
]
JOB_FILE = "tenants/acme/jobs/db.yaml"


def project(
    root: Path,
    recipe: dict[str, Any],
    connection: dict[str, Any],
    credentials: dict[str, str] | None = None,
    objects: list[dict[str, Any]] | None = None,
) -> Path:
    """A project whose one job ``acme/db`` uses ``recipe`` with the tenant's ``connection``/``credentials``."""
    (root / "tenants/acme/jobs").mkdir(parents=True)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "runner.yaml").write_text("version: 1\njobs: [{tenant: acme, job: db}]\n")
    (root / "connectors/sources" / f"{recipe['name']}.yaml").write_text(yaml.safe_dump(recipe))
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
    )
    job = {
        "tenant": "acme",
        "name": "db",
        "source": {"recipe": recipe["name"], "connection": connection, "credentials": credentials or {}},
        "target": {"recipe": "local"},
        "objects": objects if objects is not None else POSTGRES_OBJECTS,
    }
    (root / JOB_FILE).write_text(yaml.safe_dump(job))
    return root


def postgres_recipe(credentials: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"name": "pg", "type": "postgres", "defaults": {"host": "db.internal"}, "credentials": credentials, **extra}


def redirect_problems(root: Path) -> list[str]:
    return [p for plan in load_plan(root).broken for p in plan.problems if "decides where they are sent" in p]


@pytest.mark.parametrize(
    "credential",
    ["${file:/run/secrets/platform/pg}", "${PGPASSWORD}", "${PGPASSWORD:-}", "${aws-sm:platform/pg#password}"],
)
@pytest.mark.parametrize("setting", ["host", "hostaddr", "port"])
def test_a_tenant_cannot_send_a_recipes_password_to_a_host_it_chooses(
    tmp_path: Path, credential: str, setting: str
) -> None:
    value: Any = 6543 if setting == "port" else "attacker.example"
    root = project(tmp_path, postgres_recipe({"password": credential}), {setting: value, "database": "x", "user": "u"})
    (problem,) = redirect_problems(root)
    assert problem.startswith(f"{JOB_FILE}: source.connection.{setting}: recipe 'pg' supplies credentials")
    assert "credentials.password" in problem  # which credential would have gone there
    assert "tenant_settings" in problem and "its own credentials" in problem  # the two ways out
    assert credential not in problem


def test_a_url_password_in_the_recipe_defaults_counts_as_a_credential(tmp_path: Path) -> None:
    recipe = {"name": "pg", "type": "postgres", "defaults": {"host": "db.internal", "password": "${PGPASSWORD}"}}
    root = project(tmp_path, recipe, {"host": "attacker.example", "database": "x", "user": "u"})
    (problem,) = redirect_problems(root)
    assert "source.connection.host" in problem and "connection.password" in problem


def test_a_job_with_its_own_credentials_may_choose_the_host(tmp_path: Path) -> None:
    root = project(
        tmp_path,
        postgres_recipe({"password": "${file:/run/secrets/platform/pg}"}),
        {"host": "acme-db.example", "database": "x", "user": "u"},
        credentials={"password": "${ACME_PGPASSWORD}"},
    )
    assert not load_plan(root).broken


def test_a_recipe_without_credentials_leaves_the_host_to_the_tenant(tmp_path: Path) -> None:
    root = project(tmp_path, postgres_recipe({}), {"host": "acme-db.example", "database": "x", "user": "u"})
    assert not load_plan(root).broken


def test_tenant_settings_lists_what_a_tenant_may_set_on_a_native_recipe(tmp_path: Path) -> None:
    recipe = postgres_recipe({"password": "${PGPASSWORD}"}, tenant_settings=["host", "database", "user"])
    root = project(tmp_path, recipe, {"host": "acme-db.example", "database": "x", "user": "u"})
    assert not load_plan(root).broken  # the platform chose to let tenants pick the host
    (tmp_path / JOB_FILE).write_text((tmp_path / JOB_FILE).read_text().replace("user: u", "user: u\n    port: 1"))
    (broken,) = load_plan(root).broken
    assert any(
        p.startswith(f"{JOB_FILE}: source.connection.port: recipe 'pg' does not let a tenant set")
        for p in broken.problems
    )


@pytest.mark.parametrize(
    ("recipe", "connection", "credentials", "field"),
    [
        # Stripe / HubSpot: the API key goes to base_url.
        (
            {"name": "st", "type": "stripe", "credentials": {"api_key": "${STRIPE_API_KEY}"}},
            {"base_url": "https://attacker.example"},
            {},
            "connection.base_url",
        ),
        (
            {"name": "hs", "type": "hubspot", "credentials": {"access_token": "${HUBSPOT_TOKEN:-}"}},
            {"base_url": "https://attacker.example"},
            {},
            "connection.base_url",
        ),
        # Google: a service account key (a file of the platform's) or OAuth client secret; the
        # token goes to base_url, the refresh to token_uri.
        (
            {"name": "gd", "type": "gdrive_csv", "credentials": {"service_account_file": "keys/platform.json"}},
            {"base_url": "https://attacker.example"},
            {},
            "connection.base_url",
        ),
        (
            {
                "name": "gd",
                "type": "gdrive_csv",
                "credentials": {"client_id": "${GID}", "client_secret": "${GSECRET}", "refresh_token": "${GREFRESH}"},
            },
            {},
            {"token_uri": "${ACME_TOKEN_URI}"},
            "credentials.token_uri",
        ),
    ],
)
def test_api_recipes_keep_their_credentials_on_their_endpoints(
    tmp_path: Path, recipe: dict[str, Any], connection: dict[str, Any], credentials: dict[str, str], field: str
) -> None:
    root = project(tmp_path, recipe, connection, credentials, objects=[{"name": "x"}])
    problems = redirect_problems(root)
    assert problems and problems[0].startswith(f"{JOB_FILE}: source.{field}: recipe '{recipe['name']}'")


def test_an_engine_recipe_holding_credentials_keeps_its_host(tmp_path: Path) -> None:
    recipe = {
        "name": "tap",
        "engine": "singer",
        "pip_url": "tap-postgres==1.0",
        "config": {"host": "db.internal", "password": "${file:/run/secrets/platform/pg}", "dbname": "x"},
    }
    root = project(tmp_path, recipe, {"host": "attacker.example"}, objects=[{"name": "orders"}])
    problems = redirect_problems(root)
    assert problems and problems[0].startswith(f"{JOB_FILE}: source.connection.host: recipe 'tap'")
    # nested: a setting whose value holds a destination key is one too
    (tmp_path / JOB_FILE).write_text(
        (tmp_path / JOB_FILE).read_text().replace("host: attacker.example", "dbname: {host: attacker.example}")
    )
    assert redirect_problems(root)


def test_the_run_refuses_a_plan_that_redirects_a_recipes_credentials(tmp_path: Path) -> None:
    # The plan loaded from a recipe without credentials; the recipe changed under it (a tampered or
    # stale plan): the run checks again before resolving anything.
    root = project(tmp_path, postgres_recipe({}), {"host": "attacker.example", "database": "x", "user": "u"})
    job = load_plan(root, strict=True).job("acme/db")
    (tmp_path / "platform").mkdir()
    secret = tmp_path / "platform" / "pg"
    secret.write_text("platform-pg-password\n")
    job = dataclasses.replace(
        job, source=job.source.model_copy(update={"credentials": {"password": f"${{file:{secret}}}"}})
    )
    with pytest.raises(ConfigError) as info:
        build_source(job, SecretResolver({}))
    assert f"{JOB_FILE}: source.connection.host: recipe 'pg' supplies credentials" in str(info.value)
    assert "platform-pg-password" not in str(info.value)
