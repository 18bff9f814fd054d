"""File and AWS secret references: parsed at load, allowed per tenant, resolved once per run."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from dativo_dagster.config.loader import load_plan
from dativo_dagster.config.models import RunnerConfig, check_references
from dativo_dagster.config.secrets import (
    Reference,
    SecretGrants,
    SecretResolver,
    find_references,
    malformed_reference,
    parse_references,
    redact_text,
    reference_problem,
    required_references,
    store_references,
)
from dativo_dagster.errors import AuthError, ConfigError, ExtractError
from dativo_dagster.sources.registry import build_source
from tests.conftest import copy_demo_project

# --------------------------------------------------------------------------- parsing


def test_each_kind_is_parsed_with_its_parts() -> None:
    text = (
        "${PGUSER} ${HOME_DIR:-/x} ${file:/run/secrets/pg_password} ${aws-sm:acme/pg} "
        "${aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:acme/pg-AbCdEf#password} "
        "${aws-ssm:/acme/pg/user}"
    )
    assert parse_references(text) == [
        Reference("env", "PGUSER"),
        Reference("env", "HOME_DIR", default="/x"),
        Reference("file", "/run/secrets/pg_password"),
        Reference("aws-sm", "acme/pg"),
        Reference("aws-sm", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:acme/pg-AbCdEf", key="password"),
        Reference("aws-ssm", "/acme/pg/user"),
    ]
    assert [ref.text for ref in parse_references(text)] == text.split(" ")


def test_store_references_are_not_environment_variables() -> None:
    value = {
        "a": "${ONE}",
        "b": ["postgresql://u:${aws-sm:acme/pg#password}@h/db", "${TWO:-d}"],
        "c": {"d": "${file:/run/secrets/acme/token}", "e": "${aws-ssm:/acme/user}"},
    }
    assert find_references(value) == {"ONE", "TWO"}
    assert required_references(value) == {"ONE"}
    assert store_references(value) == {
        Reference("aws-sm", "acme/pg", key="password"),
        Reference("file", "/run/secrets/acme/token"),
        Reference("aws-ssm", "/acme/user"),
    }


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("${file:run/secrets/x}", "needs an absolute path"),
        ("${aws-sm:}", "malformed variable reference"),
        ("${aws-sm:acme/pg#}", "malformed variable reference"),
        ("${aws-ssm:/acme/x y}", "malformed variable reference"),
        ("${aws-kms:key}", "malformed variable reference"),
        ("${file:/run/secrets/x:-fallback}", "a default (:-) is only for environment variables"),
        ("${aws-sm:acme/pg:-fallback}", "a default (:-) is only for environment variables"),
        ("${aws-sm:acme/pg#password:-fallback}", "a default (:-) is only for environment variables"),
        ("${aws-ssm:/acme/x:-fallback}", "a default (:-) is only for environment variables"),
    ],
)
def test_malformed_store_references_are_refused(text: str, says: str) -> None:
    assert malformed_reference(text) is not None
    problem = reference_problem(text)
    assert problem is not None and says in problem
    with pytest.raises(ValueError, match=r"\$\{"):
        check_references({"k": [text]})


def test_well_formed_references_pass() -> None:
    for text in ("${OK} ${X:-y}", "${file:/run/secrets/a b.txt}", "${aws-sm:a/b#k}", "${aws-ssm:/a/b.c-d_e}"):
        assert malformed_reference(text) is None, text


# --------------------------------------------------------------------------- grants


def grants(**patterns: Any) -> SecretGrants:
    return SecretGrants(**{k: tuple(v) for k, v in patterns.items()}, setting="runner.yaml: secrets", tenant="acme")


@pytest.mark.parametrize(
    ("reference", "ok"),
    [
        ("${aws-sm:acme/pg}", True),
        ("${aws-sm:acme/a/b#k}", True),  # '*' crosses '/', as in IAM resource patterns
        ("${aws-sm:acmex/pg}", False),
        ("${aws-sm:other/acme/pg}", False),
        ("${aws-ssm:/acme/pg/user}", True),
        ("${aws-ssm:/acme}", False),
        ("${aws-ssm:/acme-x/1}", False),
        ("${aws-ssm:/other/acme/1}", False),
        ("${file:/run/secrets/acme/pg}", True),
        ("${file:/run/secrets/acme/../demo/pg}", False),  # '..' is normalised before matching
        ("${file:/run/secrets/demo/../acme/pg}", True),
        ("${file:/run/secrets/acmex/pg}", False),
        ("${PGPASSWORD}", True),  # environment variables are not governed by the allowlist
    ],
)
def test_patterns_match_whole_names(reference: str, ok: bool) -> None:
    allowed = grants(files=["/run/secrets/acme/*"], aws_sm=["acme/*"], aws_ssm=["/acme/*"])
    (ref,) = parse_references(reference)
    assert allowed.allows(ref) is ok


def test_nothing_is_allowed_by_default_and_patterns_are_literal_but_for_wildcards() -> None:
    (ref,) = parse_references("${aws-sm:acme/pg}")
    assert not SecretGrants().allows(ref)
    assert grants(aws_sm=["acme/p?"]).allows(ref)
    assert not grants(aws_sm=["acme/[p]g"]).allows(ref)  # no character classes: '[' is a character
    assert not grants(aws_ssm=["acme/*"]).allows(ref)  # each kind has its own list


def test_runner_templates_give_each_tenant_its_own_prefix() -> None:
    runner = RunnerConfig.model_validate(
        {"secrets": {"files": ["/run/secrets/{tenant}/*"], "aws_sm": ["{tenant}/*"], "aws_ssm": ["/{tenant}/*"]}}
    )
    acme = runner.secrets.grants("acme", "runner.yaml: secrets")
    assert acme.files == ("/run/secrets/acme/*",) and acme.aws_sm == ("acme/*",) and acme.aws_ssm == ("/acme/*",)


@pytest.mark.parametrize(
    ("secrets", "says"),
    [
        ({"files": ["run/secrets/*"]}, "absolute path"),
        ({"aws_sm": ["*"]}, "would allow every secret"),
        ({"files": ["/*"]}, "would allow every secret"),
        ({"aws_ssm": ["/{team}/*"]}, "only the placeholder {tenant}"),
        ({"aws_kms": ["x"]}, "Extra inputs are not permitted"),
    ],
)
def test_bad_allowlists_are_refused(secrets: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        RunnerConfig.model_validate({"secrets": secrets})


def test_a_link_cannot_lead_a_file_reference_out_of_its_allowlist(tmp_path: Path) -> None:
    allowed_dir = tmp_path / "secrets" / "acme"
    allowed_dir.mkdir(parents=True)
    outside = tmp_path / "secrets" / "demo"
    outside.mkdir()
    (outside / "token").write_text("demo-token-value\n")
    os.symlink(outside / "token", allowed_dir / "token")
    allowed = grants(files=[f"{allowed_dir}/*"])
    (ref,) = parse_references(f"${{file:{allowed_dir}/token}}")
    assert allowed.allows(ref)  # as written (at load) it looks fine ...
    assert not allowed.allows(ref, real_path=os.path.realpath(ref.target))  # ... but it leads outside
    resolver = SecretResolver({})
    with pytest.raises(ConfigError) as info:
        resolver.resolve(ref.text, where="job.yaml: source.credentials.token", grants=allowed)
    message = str(info.value)
    assert "CFG001" in message and "source.credentials.token" in message
    assert f"resolves to {outside / 'token'}" in message and "runner.yaml: secrets.files" in message
    assert "demo-token-value" not in message


def test_a_link_inside_the_allowlist_is_followed(tmp_path: Path) -> None:
    # Kubernetes mounts each key as a link into a timestamped directory of the same volume.
    mount = tmp_path / "secrets" / "acme"
    (mount / "..2024_01_01").mkdir(parents=True)
    (mount / "..2024_01_01" / "password").write_text("k8s-mounted-password\n")
    os.symlink("..2024_01_01", mount / "..data")
    os.symlink("..data/password", mount / "password")
    value = SecretResolver({}).resolve(
        f"${{file:{mount}/password}}", grants=grants(files=[f"{tmp_path}/secrets/acme/*"])
    )
    assert value == "k8s-mounted-password"


def test_a_link_in_a_patterns_directories_is_not_followed(tmp_path: Path) -> None:
    # The pattern's directory is the tenant's own (writable) area: acme plants a link 'secrets'
    # leading to globex's secrets; the file's real path is globex's, which acme's pattern does not name.
    (tmp_path / "globex" / "secrets").mkdir(parents=True)
    (tmp_path / "globex" / "secrets" / "pw").write_text("globex-password\n")
    (tmp_path / "acme").mkdir()
    os.symlink(tmp_path / "globex" / "secrets", tmp_path / "acme" / "secrets")
    acme = grants(files=[f"{tmp_path}/acme/secrets/*"])
    with pytest.raises(ConfigError) as info:
        SecretResolver({}).resolve(f"${{file:{tmp_path}/acme/secrets/pw}}", where="job.yaml: x", grants=acme)
    assert f"resolves to {tmp_path}/globex/secrets/pw" in str(info.value)
    assert "globex-password" not in str(info.value)


def test_a_pattern_names_real_paths(tmp_path: Path) -> None:
    # A platform link (/var/run -> /run, say) is not followed in the pattern: a pattern and a
    # reference through the link are refused; both naming the real directory pass.
    real = tmp_path / "real" / "acme"
    real.mkdir(parents=True)
    (real / "token").write_text("token-in-the-real-directory")
    os.symlink(tmp_path / "real", tmp_path / "mounted")
    with pytest.raises(ConfigError, match="is not allowed"):
        SecretResolver({}).resolve(
            f"${{file:{tmp_path}/mounted/acme/token}}", grants=grants(files=[f"{tmp_path}/mounted/acme/*"])
        )
    value = SecretResolver({}).resolve(f"${{file:{real}/token}}", grants=grants(files=[f"{tmp_path}/real/acme/*"]))
    assert value == "token-in-the-real-directory"


def test_environment_variables_are_ungoverned_unless_env_is_set() -> None:
    (aws_key,) = parse_references("${AWS_SECRET_ACCESS_KEY}")
    assert grants().allows(aws_key)
    acme = RunnerConfig.model_validate({"secrets": {"env": ["{TENANT}__*", "{tenant}_shared"]}}).secrets.grants(
        "acme", "runner.yaml: secrets"
    )
    assert acme.env == ("ACME__*", "acme_shared")
    for text, ok in [
        ("${ACME__PG_PASSWORD}", True),
        ("${ACME__PG:-x}", True),
        ("${acme_shared}", True),
        ("${AWS_SECRET_ACCESS_KEY}", False),
        ("${ACME_CORP__PG_PASSWORD}", False),  # tenant acme_corp's: '__' never occurs in a tenant id
        ("${acme__pg_password}", False),  # case-sensitive
    ]:
        (reference,) = parse_references(text)
        assert acme.allows(reference) is ok, text
    refused = parse_references("${AWS_SECRET_ACCESS_KEY}")[0]
    assert "runner.yaml: secrets.env (allowed now: ACME__*, acme_shared)" in acme.refusal(refused)


def test_env_patterns_take_tenant_placeholders_only() -> None:
    with pytest.raises(ValueError, match=r"only the placeholders \{tenant\} and \{TENANT\} are allowed"):
        RunnerConfig.model_validate({"secrets": {"env": ["{team}_*"]}})
    with pytest.raises(ValueError, match="would allow every secret"):
        RunnerConfig.model_validate({"secrets": {"env": ["*"]}})


def test_env_allowlist_is_checked_at_load_and_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_demo_project(tmp_path / "p")
    job = root / "tenants/demo/jobs/shop.yaml"
    job.write_text(
        job.read_text().replace("base_path: tenants/demo/data", "base_path: '${OTHER_BASE:-tenants/demo/data}'")
    )
    recipe = root / "connectors/sources/csv.yaml"
    recipe.write_text(
        recipe.read_text() + "credentials: {token: '${PLATFORM_TOKEN:-}'}\n"
    )  # the platform's: ungoverned
    runner = root / "runner.yaml"
    original = runner.read_text()
    shop = load_plan(root, strict=True).job("demo/shop")  # no env list: today's behaviour
    runner.write_text(original.replace("jobs:", "secrets: {env: ['{TENANT}__*']}\njobs:"))
    (broken,) = load_plan(root).broken
    assert broken.problems == (
        "tenants/demo/jobs/shop.yaml: source.connection.base_path: ${OTHER_BASE:-tenants/demo/data} is not allowed "
        "for tenant demo: add a pattern matching it to runner.yaml: secrets.env (allowed now: DEMO__*)",
    )
    # a job entry with its own secret patterns but no env list keeps the runner's env list
    runner.write_text(runner.read_text().replace("job: shop", "job: shop\n    secrets: {aws_sm: ['demo/*']}"))
    (broken,) = load_plan(root).broken
    assert "${OTHER_BASE:-tenants/demo/data} is not allowed" in broken.problems[0]
    # a plan loaded before the list was set is refused at run time, before the variable is read
    monkeypatch.setenv("OTHER_BASE", "tenants/demo/data")
    restricted = dataclasses.replace(shop, secrets=dataclasses.replace(shop.secrets, env=("DEMO__*",)))
    with pytest.raises(
        ConfigError, match=r"source.connection.base_path: \$\{OTHER_BASE:-tenants/demo/data\} is not allowed"
    ):
        build_source(restricted, SecretResolver({}))
    job.write_text(job.read_text().replace("OTHER_BASE", "DEMO__BASE"))
    runner.write_text(original.replace("jobs:", "secrets: {env: ['{TENANT}__*']}\njobs:"))
    allowed = load_plan(root, strict=True).job("demo/shop")
    with build_source(allowed, SecretResolver({})) as source:
        assert str(source.connection.base_path) == "tenants/demo/data"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- file secrets


def test_file_secret_is_read_once_per_resolver_and_redacted(tmp_path: Path) -> None:
    secret = tmp_path / "pg_password"
    secret.write_text("first-file-secret\n\n")
    reference = f"${{file:{secret}}}"
    resolver = SecretResolver({})
    assert resolver.resolve({"password": reference}) == {"password": "first-file-secret\n"}  # one newline stripped
    secret.write_text("second-file-secret\n")
    assert resolver.resolve(f"x{reference}x") == "xfirst-file-secret\nx"  # the run's value, not re-read
    assert SecretResolver({}).resolve(reference) == "second-file-secret"  # a new run reads it again
    assert redact_text("failed with first-file-secret") == "failed with ***"


@pytest.mark.parametrize("make", ["missing", "directory", "binary"])
def test_unreadable_secret_file_is_cfg001_naming_the_path_only(tmp_path: Path, make: str) -> None:
    path = tmp_path / "secret"
    if make == "directory":
        path.mkdir()
    elif make == "binary":
        path.write_bytes(b"\xff\xfe-binary-secret-content")
    with pytest.raises(ConfigError) as info:
        SecretResolver({}).resolve(f"${{file:{path}}}", where="job.yaml: source.credentials.password")
    message = str(info.value)
    assert message.startswith("CFG001: job.yaml: source.credentials.password: secret file")
    assert str(path) in message and "binary-secret-content" not in message


def test_resolving_files_and_variables_never_touches_aws(tmp_path: Path) -> None:
    class NoAws:
        def client(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("an AWS client was created")

    (tmp_path / "s").write_text("value-of-the-file")
    resolver = SecretResolver({"A": "env-value"}, aws_session=NoAws())
    assert resolver.resolve(f"${{A}}/${{file:{tmp_path}/s}}") == "env-value/value-of-the-file"


# --------------------------------------------------------------------------- AWS errors (botocore stubs)


def stubbed_resolver(service: str, method: str, **error: Any) -> SecretResolver:
    import boto3
    from botocore.stub import Stubber

    client = boto3.session.Session().client(
        service, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    stubber = Stubber(client)
    stubber.add_client_error(method, **error)
    stubber.activate()

    class Session:
        def client(self, *args: Any, **kwargs: Any) -> Any:
            return client

    return SecretResolver({}, aws_session=Session())


@pytest.mark.parametrize(
    ("code", "status", "expected", "transient"),
    [
        ("ResourceNotFoundException", 400, ConfigError, False),
        ("AccessDeniedException", 400, AuthError, False),
        ("UnrecognizedClientException", 400, AuthError, False),
        ("DecryptionFailure", 400, AuthError, False),
        ("ThrottlingException", 400, ExtractError, True),
        ("InternalServiceError", 500, ExtractError, True),
        ("InvalidRequestException", 400, ConfigError, False),
    ],
)
def test_secrets_manager_errors_are_classified(code: str, status: int, expected: type, transient: bool) -> None:
    resolver = stubbed_resolver("secretsmanager", "get_secret_value", service_error_code=code, http_status_code=status)
    with pytest.raises(expected) as info:
        resolver.resolve("${aws-sm:acme/pg#password}", where="job.yaml: source.credentials.password")
    assert type(info.value) is expected and info.value.transient is transient
    assert "${aws-sm:acme/pg#password}" in str(info.value) and "source.credentials.password" in str(info.value)


def test_parameter_not_found_is_cfg001() -> None:
    resolver = stubbed_resolver("ssm", "get_parameter", service_error_code="ParameterNotFound", http_status_code=400)
    with pytest.raises(ConfigError, match=r"\$\{aws-ssm:/acme/user\}: no such secret in SSM Parameter Store"):
        resolver.resolve("${aws-ssm:/acme/user}")


def test_no_credentials_is_auth001_and_no_region_is_cfg001(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="no AWS region is configured"):
        SecretResolver({}).resolve("${aws-sm:acme/pg}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    session = boto3.session.Session(region_name="us-east-1")
    with pytest.raises(AuthError, match="no usable AWS credentials"):
        SecretResolver({}, aws_session=session).resolve("${aws-ssm:/acme/user}")


@pytest.mark.parametrize(
    "code",
    [
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "RequestExpired",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "TooManyRequestsException",
        "TooManyUpdates",
    ],
)
def test_codes_botocore_counts_as_transient_or_throttling_are_ext001_transient(code: str) -> None:
    # HTTP 400: only the code says these may pass on a retry.
    resolver = stubbed_resolver("secretsmanager", "get_secret_value", service_error_code=code, http_status_code=400)
    with pytest.raises(ExtractError) as info:
        resolver.resolve("${aws-sm:acme/pg}")
    assert info.value.transient and code in str(info.value)


class RaisingSession:
    """A boto3 session stand-in whose client's calls raise ``exc`` (or whose ``client()`` does)."""

    def __init__(self, exc: Exception, *, at_client: bool = False) -> None:
        self.exc = exc
        self.at_client = at_client

    def client(self, *args: Any, **kwargs: Any) -> Any:
        exc = self.exc
        if self.at_client:
            raise exc

        class Client:
            def get_secret_value(self, **kwargs: Any) -> Any:
                raise exc

            def get_parameter(self, **kwargs: Any) -> Any:
                raise exc

        return Client()


def _botocore_error(name: str, **kwargs: Any) -> Exception:
    import botocore.exceptions

    return getattr(botocore.exceptions, name)(**kwargs)


@pytest.mark.parametrize(
    ("exc", "expected", "transient"),
    [
        (
            lambda: _botocore_error("CredentialRetrievalError", provider="container-role", error_msg="timeout"),
            AuthError,
            False,
        ),
        (lambda: _botocore_error("TokenRetrievalError", provider="sso", error_msg="expired"), AuthError, False),
        (lambda: _botocore_error("SSOTokenLoadError", error_msg="no token"), AuthError, False),
        (lambda: _botocore_error("UnauthorizedSSOTokenError"), AuthError, False),
        (lambda: _botocore_error("NoCredentialsError"), AuthError, False),
        (lambda: _botocore_error("EndpointConnectionError", endpoint_url="https://x"), ExtractError, True),
        (lambda: _botocore_error("ConnectTimeoutError", endpoint_url="https://x"), ExtractError, True),
        (lambda: _botocore_error("ReadTimeoutError", endpoint_url="https://x"), ExtractError, True),
        (lambda: _botocore_error("SSLError", endpoint_url="https://x", error="bad record"), ExtractError, True),
        (lambda: _botocore_error("ConnectionClosedError", endpoint_url="https://x"), ExtractError, True),
        (lambda: _botocore_error("InvalidRegionError", region_name="bad region"), ConfigError, False),
        (lambda: _botocore_error("UnknownServiceError", service_name="x", known_service_names="y"), ConfigError, False),
    ],
)
@pytest.mark.parametrize("at_client", [False, True])
def test_botocore_errors_are_coded(exc: Any, expected: type, transient: bool, at_client: bool) -> None:
    resolver = SecretResolver({}, aws_session=RaisingSession(exc(), at_client=at_client))
    with pytest.raises(expected) as info:
        resolver.resolve("${aws-ssm:/acme/user}", where="job.yaml: source.credentials.user")
    assert type(info.value) is expected and info.value.transient is transient
    assert "${aws-ssm:/acme/user}" in str(info.value) and "source.credentials.user" in str(info.value)


def test_every_botocore_error_is_coded() -> None:
    import inspect

    import botocore.exceptions

    from dativo_dagster.errors import DativoError

    classes = [
        cls
        for cls in vars(botocore.exceptions).values()
        if inspect.isclass(cls) and issubclass(cls, botocore.exceptions.BotoCoreError)
    ]
    assert len(classes) > 50
    for cls in classes:
        exc = cls.__new__(cls)  # no message arguments needed: only its class decides
        with pytest.raises(DativoError):
            SecretResolver({}, aws_session=RaisingSession(exc)).resolve("${aws-sm:acme/pg}")


def test_a_missing_aws_profile_is_cfg001_naming_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    with pytest.raises(ConfigError) as info:
        SecretResolver({}).resolve("${aws-sm:acme/pg}", where="job.yaml: source.credentials.password")
    assert "no-such-profile" in str(info.value) and "AWS_PROFILE" in str(info.value)
    assert "source.credentials.password" in str(info.value)


# --------------------------------------------------------------------------- load and run of a tenant job


def job_with(root: Path, credentials: str) -> Path:
    job = root / "tenants/demo/jobs/shop.yaml"
    text = job.read_text()
    assert "source:\n  recipe: csv\n" in text
    job.write_text(
        text.replace("source:\n  recipe: csv\n", f"source:\n  recipe: csv\n  credentials: {{{credentials}}}\n")
    )
    return job


def test_a_reference_outside_the_allowlist_is_refused_at_load_naming_file_field_and_setting(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    job_with(root, "token: '${aws-sm:demo/api#token}', other: '${file:/run/secrets/demo/x}'")
    (broken,) = load_plan(root).broken
    assert broken.problems == (
        "tenants/demo/jobs/shop.yaml: source.credentials.token: ${aws-sm:demo/api#token} is not allowed for tenant "
        "demo: add a pattern matching it to runner.yaml: secrets.aws_sm (allowed now: nothing)",
        "tenants/demo/jobs/shop.yaml: source.credentials.other: ${file:/run/secrets/demo/x} is not allowed for "
        "tenant demo: add a pattern matching it to runner.yaml: secrets.files (allowed now: nothing)",
    )
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace(
            "jobs:", "secrets: {files: ['/run/secrets/{tenant}/*'], aws_sm: ['{tenant}/*']}\njobs:"
        )
    )
    plan = load_plan(root)  # loads with no secret file and no AWS access: nothing is resolved
    assert not plan.broken
    assert plan.job("demo/shop").secrets.aws_sm == ("demo/*",)
    # a job entry's own list replaces the runner's
    runner.write_text(runner.read_text().replace("job: shop", "job: shop\n    secrets: {aws_sm: ['demo/api']}"))
    (broken,) = load_plan(root).broken
    assert broken.problems == (
        "tenants/demo/jobs/shop.yaml: source.credentials.other: ${file:/run/secrets/demo/x} is not allowed for "
        "tenant demo: add a pattern matching it to runner.yaml: jobs[0].secrets.files (allowed now: nothing)",
    )


def test_a_recipe_may_use_references_a_tenant_may_not(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    recipe = root / "connectors/sources/csv.yaml"
    recipe.write_text(recipe.read_text() + "credentials: {token: '${aws-sm:platform/csv#token}'}\n")
    assert not load_plan(root).broken  # the platform's recipe: no allowlist
    job_with(root, "token: '${aws-sm:platform/csv#token}'")  # the tenant overriding it with the same: checked
    (broken,) = load_plan(root).broken
    assert "source.credentials.token: ${aws-sm:platform/csv#token} is not allowed for tenant demo" in broken.problems[0]


def test_the_allowlist_is_checked_again_at_run_time(tmp_path: Path) -> None:
    root = copy_demo_project(tmp_path / "p")
    secret_dir = tmp_path / "mounted" / "demo"
    secret_dir.mkdir(parents=True)
    (secret_dir / "base_path").write_text("tenants/demo/data\n")
    job = root / "tenants/demo/jobs/shop.yaml"
    job.write_text(
        job.read_text().replace("base_path: tenants/demo/data", f"base_path: '${{file:{secret_dir}/base_path}}'")
    )
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace("jobs:", f"secrets: {{files: ['{tmp_path}/mounted/{{tenant}}/*']}}\njobs:")
    )
    plan = load_plan(root, strict=True)
    shop = plan.job("demo/shop")
    with build_source(shop, SecretResolver({})) as source:  # the file's content reached the connection
        assert str(source.connection.base_path) == "tenants/demo/data"  # type: ignore[attr-defined]
    # a plan whose grants no longer allow it (changed runner.yaml, tampered plan) is refused at run time
    revoked = dataclasses.replace(shop, secrets=dataclasses.replace(shop.secrets, files=()))
    with pytest.raises(ConfigError) as info:
        build_source(revoked, SecretResolver({}))
    assert "tenants/demo/jobs/shop.yaml: source.connection.base_path: ${file:" in str(info.value)
    assert "is not allowed for tenant demo" in str(info.value)


def test_definitions_load_with_secret_references_and_no_secret_access(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from dativo_dagster.build import build_definitions

    def no_aws(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("definitions load created an AWS client")

    monkeypatch.setattr(boto3.session.Session, "client", no_aws)
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    root = copy_demo_project(tmp_path / "p")
    job_with(root, "token: '${aws-sm:demo/api#token}', key: '${aws-ssm:/demo/key}', pem: '${file:/run/secrets/demo/x}'")
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace(
            "jobs:",
            "secrets: {files: ['/run/secrets/{tenant}/*'], aws_sm: ['{tenant}/*'], aws_ssm: ['/{tenant}/*']}\njobs:",
        )
    )
    defs = build_definitions(load_plan(root, strict=True))
    assert defs.assets


def test_an_engine_connector_gets_a_file_secret_and_redacts_it_from_its_output(tmp_path: Path) -> None:
    from tests.integration.engine_harness import singer_project

    secrets = tmp_path / "mounted" / "acme"
    secrets.mkdir(parents=True)
    (secrets / "mysql_password").write_text("engine-file-secret-77\n")
    objects = [{"name": "items", "options": {"stream": "items"}, "primary_key": ["id"]}]
    root = singer_project(
        tmp_path / "p",
        "shop",
        objects,
        recipe={"tenant_settings": ["database", "filter_dbs", "password"]},
        connection={"password": f"${{file:{secrets}/mysql_password}}"},
    )
    (broken,) = load_plan(root).broken
    assert "source.connection.password: ${file:" in broken.problems[0]
    runner = root / "runner.yaml"
    runner.write_text(
        runner.read_text().replace("jobs:", f"secrets: {{files: ['{tmp_path}/mounted/{{tenant}}/*']}}\njobs:")
    )
    job = load_plan(root, strict=True).jobs[0]
    source: Any = build_source(job, SecretResolver({}))
    assert source.config["password"] == "engine-file-secret-77"  # what the connector's config file will hold
    assert "engine-file-secret-77" in source.secrets  # what its stderr and errors are scrubbed of
