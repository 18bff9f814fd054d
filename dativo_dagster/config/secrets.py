"""Secret references: found at load time, resolved only at run time, never logged.

Config values keep references instead of secrets:

- ``${PGPASSWORD}`` / ``${DATIVO_HOME:-.dativo}``: an environment variable (with a default);
- ``${file:/run/secrets/pg_password}``: the content of a mounted file (Kubernetes or Docker
  secrets), one trailing newline stripped;
- ``${aws-sm:secret-id}`` / ``${aws-sm:secret-id#json_key}``: an AWS Secrets Manager secret's
  SecretString, or one key of a JSON SecretString;
- ``${aws-ssm:/parameter/name}``: an SSM Parameter Store parameter, decrypted.

Definitions load never resolves them (a code location must load with no secrets and no AWS
access); it only checks that each reference a tenant wrote is one its runner.yaml entry allows
(:class:`SecretGrants`). A run resolves them through a :class:`SecretResolver`, which checks the
grants again (file paths after following links), fetches each secret once per run, and registers
every value for redaction before anything can log it.

Secret-store references take no ``:-default``: a reference to a file or a stored secret names a
secret the deployment must provide, and a fallback would turn a missing, misspelt or denied
secret into a run that quietly uses another value.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from dativo_dagster.errors import AuthError, ConfigError, ExtractError

ReferenceKind = Literal["env", "file", "aws-sm", "aws-ssm"]

# One alternative per kind. An environment variable is a POSIX-ish name; a file is an absolute
# path; a Secrets Manager id is a name or ARN (with an optional '#json_key'); an SSM parameter is a
# name or ARN. Store targets never hold '}' or control characters.
_REFERENCE = re.compile(
    r"\$\{(?:"
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?"
    r"|file:(?P<file>/[^}\x00-\x1f]+)"
    r"|aws-sm:(?P<sm>[A-Za-z0-9/_+=.@:!-]+)(?:#(?P<key>[^}#\x00-\x1f]+))?"
    r"|aws-ssm:(?P<ssm>[A-Za-z0-9/_.:-]+)"
    r")\}"
)
_OPENING = re.compile(r"\$\{")

REDACTED = "***"

REFERENCE_SYNTAX = (
    "${NAME}, ${NAME:-default}, ${file:/absolute/path}, ${aws-sm:secret-id}, ${aws-sm:secret-id#json_key} "
    "or ${aws-ssm:/parameter/name}"
)
"""The accepted reference forms, for error messages."""

MAX_SECRET_FILE_BYTES = 1 << 20
"""A secret file larger than this is refused (a mounted secret is small; this is not one)."""


@dataclass(frozen=True)
class Reference:
    """One ``${...}`` reference.

    Attributes:
        kind: ``env``, ``file``, ``aws-sm`` or ``aws-ssm``.
        target: The variable name, file path, secret id or parameter name.
        key: The JSON key of an ``aws-sm`` reference, if any.
        default: The ``:-default`` of an ``env`` reference, if any.
    """

    kind: ReferenceKind
    target: str
    key: str | None = None
    default: str | None = None

    @property
    def text(self) -> str:
        """The reference as written in a config file."""
        if self.kind == "env":
            return f"${{{self.target}}}" if self.default is None else f"${{{self.target}:-{self.default}}}"
        suffix = f"#{self.key}" if self.key is not None else ""
        return f"${{{self.kind}:{self.target}{suffix}}}"

    @property
    def from_store(self) -> bool:
        """True for a file or AWS reference (checked against the tenant's grants)."""
        return self.kind != "env"


def _reference(match: re.Match[str]) -> Reference:
    if match.group("name") is not None:
        return Reference("env", match.group("name"), default=match.group("default"))
    if match.group("file") is not None:
        return Reference("file", match.group("file"))
    if match.group("sm") is not None:
        return Reference("aws-sm", match.group("sm"), key=match.group("key"))
    return Reference("aws-ssm", match.group("ssm"))


def parse_references(text: str) -> list[Reference]:
    """Every well-formed reference in ``text``, in order."""
    return [_reference(match) for match in _REFERENCE.finditer(text)]


def iter_references(value: Any, where: str = "") -> Iterator[tuple[str, Reference]]:
    """``(field path, reference)`` for every reference inside ``value`` (nested dicts/lists)."""
    if isinstance(value, str):
        for reference in parse_references(value):
            yield where, reference
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_references(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from iter_references(item, f"{where}[{index}]")


def find_references(value: Any) -> set[str]:
    """Return the environment variable names referenced anywhere inside ``value`` (nested dicts/lists).

    File and AWS references are not variables: see :func:`store_references`.
    """
    return {ref.target for _, ref in iter_references(value) if ref.kind == "env"}


def required_references(value: Any) -> set[str]:
    """Environment variable names referenced without a ``:-default`` (they must be set at run time)."""
    return {ref.target for _, ref in iter_references(value) if ref.kind == "env" and ref.default is None}


def store_references(value: Any) -> set[Reference]:
    """The file and AWS references anywhere inside ``value`` (resolved only at run time)."""
    return {ref for _, ref in iter_references(value) if ref.from_store}


def malformed_reference(text: str) -> str | None:
    """Return the offending fragment if ``text`` has a ``${`` that is not a valid reference.

    A file or AWS reference with a ``:-default`` counts as malformed (see the module docstring).
    """
    problem = _malformed(text)
    return problem[0] if problem else None


def reference_problem(text: str) -> str | None:
    """One line explaining what is wrong with the references in ``text`` (None: nothing)."""
    problem = _malformed(text)
    return problem[1] if problem else None


def _malformed(text: str) -> tuple[str, str] | None:
    for opening in _OPENING.finditer(text):
        fragment = text[opening.start() : opening.start() + 24]
        match = _REFERENCE.match(text, opening.start())
        if match is None:
            if fragment.startswith("${file:") and not fragment.startswith("${file:/"):
                return fragment, f"'{fragment}': a file reference needs an absolute path (${{file:/run/secrets/name}})"
            return fragment, f"malformed variable reference near '{fragment}' (use {REFERENCE_SYNTAX})"
        reference = _reference(match)
        if reference.from_store and ":-" in f"{reference.target}#{reference.key or ''}":
            return fragment, (
                f"'{match.group(0)}': a default (:-) is only for environment variables; a file or AWS secret "
                "reference must resolve (a fallback would hide a missing, misspelt or denied secret)"
            )
    return None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


# --------------------------------------------------------------------------- grants


_GRANT_SETTINGS: dict[str, str] = {"env": "env", "file": "files", "aws-sm": "aws_sm", "aws-ssm": "aws_ssm"}


@dataclass(frozen=True)
class SecretGrants:
    """The secret-store references one tenant job may use (from its runner.yaml entry).

    Patterns match the whole file path, secret id or parameter name; ``*`` matches any run of
    characters (``/`` included, as in IAM resource patterns) and ``?`` one character. Nothing is
    allowed unless a pattern matches. File patterns are absolute and name real paths: a file
    reference is matched after normalising ``..`` (at load) and, at run time, with every link
    followed, against the pattern as written (its own links are never followed, so a pattern for a
    linked directory such as ``/var/run`` must name the directory it leads to, ``/run``). Links that
    stay inside an allowed directory, as Kubernetes' ``..data`` links do, still match.

    Attributes:
        files: Patterns of secret file paths.
        aws_sm: Patterns of Secrets Manager secret ids (names or ARNs, as the reference writes them).
        aws_ssm: Patterns of SSM parameter names (or ARNs).
        env: Patterns of the environment variable names the tenant may reference (case-sensitive);
            ``None`` (the default) leaves ``${VAR}`` references ungoverned.
        setting: Where in runner.yaml these come from, for error messages.
        tenant: The tenant they belong to, for error messages.
    """

    files: tuple[str, ...] = ()
    aws_sm: tuple[str, ...] = ()
    aws_ssm: tuple[str, ...] = ()
    env: tuple[str, ...] | None = None
    setting: str = "runner.yaml: secrets"
    tenant: str = ""

    def patterns(self, kind: ReferenceKind) -> tuple[str, ...]:
        """The patterns that govern references of ``kind``."""
        return getattr(self, _GRANT_SETTINGS[kind]) or ()

    def allows(self, reference: Reference, *, real_path: str | None = None) -> bool:
        """Whether ``reference`` is allowed; environment variables are unless ``env`` is set.

        Args:
            reference: The reference.
            real_path: For a file reference at run time: the path with every link followed,
                matched against the patterns as written (normalised only). Without it, the
                path is only normalised (``..`` removed), touching no file.
        """
        if reference.kind == "env":
            return self.env is None or any(_glob(p).fullmatch(reference.target) for p in self.env)
        if reference.kind == "file":
            if real_path is not None:
                # The pattern as written, links not followed: a link anywhere under a pattern's
                # directories (one a tenant can write to, say) must not lead to another's files.
                return any(_glob(os.path.normpath(p)).fullmatch(real_path) for p in self.files)
            path = os.path.normpath(reference.target)
            return any(_glob(os.path.normpath(p)).fullmatch(path) for p in self.files)
        return any(_glob(p).fullmatch(reference.target) for p in self.patterns(reference.kind))

    def refusal(self, reference: Reference, *, real_path: str | None = None) -> str:
        """Why ``reference`` is refused and which runner.yaml setting would allow it (one line)."""
        setting = f"{self.setting}.{_GRANT_SETTINGS[reference.kind]}"
        allowed = ", ".join(self.patterns(reference.kind)) or "nothing"
        resolved = f" (it resolves to {real_path})" if real_path and real_path != reference.target else ""
        return (
            f"{reference.text}{resolved} is not allowed for tenant {self.tenant}: add a pattern matching it to "
            f"{setting} (allowed now: {allowed})"
        )


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


# --------------------------------------------------------------------------- resolution


class SecretResolver:
    """Resolves references for one run and remembers the values.

    Every secret-store value is fetched at most once per resolver (a run has one), cached only in
    this object, and registered for redaction before it is returned (the process's redaction list
    keeps it, so a log line written after the run is still scrubbed). AWS clients are created on
    the first AWS reference, from a session of this resolver's own (the default credential chain
    and region, ``AWS_ENDPOINT_URL`` honoured), never from module-global state.

    Args:
        environ: Mapping to read environment variables from; defaults to ``os.environ`` at call time.
        aws_session: A ``boto3.session.Session`` to create AWS clients from (default: a new one).
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, aws_session: Any = None) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._fetched: dict[tuple[str, str], str] = {}
        self._fetch_locks: dict[tuple[str, str], threading.Lock] = {}
        self._aws_session = aws_session
        self._clients: dict[str, Any] = {}

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment references are resolved against."""
        return self._environ if self._environ is not None else os.environ

    def resolve(self, value: Any, *, where: str = "config", grants: SecretGrants | None = None) -> Any:
        """Return ``value`` with every reference replaced.

        Args:
            value: A string, or dicts/lists holding strings.
            where: File and field path, for error messages.
            grants: The tenant's grants when a tenant wrote ``value``; ``None`` for the platform's own
                config (recipes, targets, runner.yaml), whose references are not restricted.

        Raises:
            ConfigError: CFG001 for a missing variable, file, secret or JSON key, or a reference the
                grants do not allow.
            AuthError: AUTH001 when AWS refuses the credentials or the access.
            ExtractError: EXT001 (transient) when AWS throttles or cannot be reached.
        """
        if isinstance(value, str):
            return self._resolve_text(value, where, grants)
        if isinstance(value, Mapping):
            return {key: self.resolve(item, where=f"{where}.{key}", grants=grants) for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, where=f"{where}[{i}]", grants=grants) for i, item in enumerate(value)]
        return value

    def _resolve_text(self, text: str, where: str, grants: SecretGrants | None) -> str:
        def substitute(match: re.Match[str]) -> str:
            reference = _reference(match)
            if grants is not None and not grants.allows(reference):
                raise ConfigError(f"{where}: {grants.refusal(reference)}", field=where)
            if reference.kind == "env":
                return self._environment(reference, where)
            return self._stored(reference, where, grants)

        return _REFERENCE.sub(substitute, text)

    def _environment(self, reference: Reference, where: str) -> str:
        name, default = reference.target, reference.default
        resolved = self.environ.get(name)
        if resolved is None or (resolved == "" and default is not None):
            if default is None:
                raise ConfigError(
                    f"{where}: environment variable {name} is not set",
                    hint=f"export {name}=... in the run environment",
                    field=where,
                )
            return default
        if resolved:
            with self._lock:
                self._values.add(resolved)
        return resolved

    def _stored(self, reference: Reference, where: str, grants: SecretGrants | None) -> str:
        if reference.kind == "file":
            real = os.path.realpath(reference.target)
            if grants is not None and not grants.allows(reference, real_path=real):
                raise ConfigError(f"{where}: {grants.refusal(reference, real_path=real)}", field=where)
            raw = self._once(("file", real), lambda: _read_secret_file(real, reference, where))
            return self._remember(raw)
        if reference.kind == "aws-sm":
            raw = self._once(("aws-sm", reference.target), lambda: self._secrets_manager(reference, where))
            if reference.key is None:
                return self._remember(raw)
            return self._remember(_json_key(raw, reference, where))
        raw = self._once(("aws-ssm", reference.target), lambda: self._parameter(reference, where))
        return self._remember(raw)

    def _once(self, key: tuple[str, str], fetch: Callable[[], str]) -> str:
        """The cached value of ``key``, fetched by one thread only (the others wait for it)."""
        with self._lock:
            lock = self._fetch_locks.setdefault(key, threading.Lock())
        with lock:
            found = self._fetched.get(key)
            if found is None:
                found = fetch()
                # Registered before it is returned: nothing can log it unredacted.
                register_secrets(_redaction_parts(found))
                self._fetched[key] = found
            return found

    def _remember(self, value: str) -> str:
        register_secrets(_redaction_parts(value))
        with self._lock:
            self._values.update(_redaction_parts(value))
        return value

    def _client(self, service: str, reference: Reference, where: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is not None:
                return client
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20)
            try:
                # The session reads AWS_PROFILE and the config files: a missing profile fails here.
                if self._aws_session is None:
                    self._aws_session = boto3.session.Session()
                client = self._aws_session.client(service, config=config)
            except Exception as exc:  # mapped to a coded error or re-raised as it is
                raise _aws_error(exc, reference, where) from None
            self._clients[service] = client
            return client

    def _secrets_manager(self, reference: Reference, where: str) -> str:
        client = self._client("secretsmanager", reference, where)
        try:
            response = client.get_secret_value(SecretId=reference.target)
        except Exception as exc:  # mapped to a coded error or re-raised as it is
            raise _aws_error(exc, reference, where, _operation_model(client, "GetSecretValue")) from None
        secret = response.get("SecretString")
        if secret is None:
            raise ConfigError(
                f"{where}: {reference.text}: the secret holds binary data, not a SecretString", field=where
            )
        return str(secret)

    def _parameter(self, reference: Reference, where: str) -> str:
        client = self._client("ssm", reference, where)
        try:
            response = client.get_parameter(Name=reference.target, WithDecryption=True)
        except Exception as exc:  # mapped to a coded error or re-raised as it is
            raise _aws_error(exc, reference, where, _operation_model(client, "GetParameter")) from None
        return str(response["Parameter"]["Value"])

    def secret_values(self) -> frozenset[str]:
        """Every non-empty value this resolver produced (used for redaction)."""
        with self._lock:
            return frozenset(self._values)

    def redact(self, text: str) -> str:
        """Replace any resolved value found in ``text`` with ``***``."""
        return redact_text(text, self.secret_values())


def _operation_model(client: Any, name: str) -> Any:
    """The client's model of operation ``name`` (its modeled retryable errors), or None."""
    from botocore.model import OperationNotFoundError

    service_model = getattr(getattr(client, "meta", None), "service_model", None)
    if service_model is None:  # a stand-in client (tests): the error codes still classify
        return None
    try:
        return service_model.operation_model(name)
    except OperationNotFoundError:
        return None


def _read_secret_file(path: str, reference: Reference, where: str) -> str:
    """The content of a secret file (``path`` has its links followed), one trailing newline stripped."""
    shown = reference.target if path == reference.target else f"{reference.target} ({path})"
    try:
        # O_NOFOLLOW: the path was checked with its links followed; a link put there since is refused.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"{where}: secret file {shown} not found", field=where) from None
    except OSError as exc:
        raise ConfigError(f"{where}: secret file {shown} cannot be read ({exc.strerror})", field=where) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(f"{where}: secret file {shown} is not a regular file", field=where)
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{where}: secret file {shown} is larger than {MAX_SECRET_FILE_BYTES} bytes", field=where)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: secret file {shown} is not UTF-8 text", field=where) from None
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def _json_key(secret: str, reference: Reference, where: str) -> str:
    try:
        document = json.loads(secret)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{where}: {reference.text}: the secret is not a JSON object, so it has no key '{reference.key}'",
            field=where,
        )
    if reference.key not in document:
        raise ConfigError(f"{where}: {reference.text}: the secret has no key '{reference.key}'", field=where)
    value = document[reference.key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(
            f"{where}: {reference.text}: key '{reference.key}' holds a {type(value).__name__}, not a string",
            field=where,
        )
    return str(value)


def _redaction_parts(value: str) -> list[str]:
    """What to scrub for one secret: the value, its long lines (a PEM key logged line by line) and,
    for a JSON document, its string values."""
    parts = [value, *(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)]
    if value.lstrip().startswith("{"):
        try:
            document = json.loads(value)
        except ValueError:
            document = None
        parts.extend(_strings(document) if isinstance(document, dict) else [])
    return [part for part in parts if part]


_NOT_FOUND = {"ResourceNotFoundException", "ParameterNotFound", "ParameterVersionNotFound"}
_DENIED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "DecryptionFailure",
    "KMSAccessDeniedException",
    "KMSDisabledException",
}
# Beside botocore's own transient and throttling codes (asked of its standard retry checkers):
# codes that mean "try again", from services that do not use botocore's spellings.
_TRANSIENT_CODES = {
    "TooManyUpdates",
    "RequestExpired",
    "InternalServiceError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
}

# BotoCoreError subclasses by what they mean for a run, by name (some exist only in newer
# botocore). Every other BotoCoreError is a client-side configuration problem: CFG001.
_TRANSIENT_BOTOCORE = (
    "ConnectionError",  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, SSLError, ...
    "HTTPClientError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ChecksumError",
    "FlexibleChecksumError",
    "MetadataRetrievalError",
    "CapacityNotAvailableError",
)
_CREDENTIALS_BOTOCORE = (
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "TokenRetrievalError",
    "SSOError",
    "SSOTokenLoadError",
    "UnauthorizedSSOTokenError",
    "NoAuthTokenError",
    "RefreshWithMFAUnsupportedError",
    "LoginError",
)


def _botocore_classes(names: Iterable[str]) -> tuple[type[Exception], ...]:
    import botocore.exceptions

    found = (getattr(botocore.exceptions, name, None) for name in names)
    return tuple(cls for cls in found if isinstance(cls, type))


def _botocore_transient(exc: Exception, operation_model: Any = None) -> bool:
    """Whether botocore's standard retry mode counts ``exc`` as transient or throttling (public checkers)."""
    from botocore.retries.standard import (
        ModeledRetryableChecker,
        RetryContext,
        ThrottledRetryableChecker,
        TransientRetryableChecker,
    )

    context = RetryContext(
        attempt_number=1,
        operation_model=operation_model,
        parsed_response=getattr(exc, "response", None),
        caught_exception=exc,
    )
    checkers = (TransientRetryableChecker(), ThrottledRetryableChecker(), ModeledRetryableChecker())
    return any(checker.is_retryable(context) for checker in checkers)


def _aws_error(exc: Exception, reference: Reference, where: str, operation_model: Any = None) -> Exception:
    """The coded error for a failed AWS call or client setup (the exception itself if it is not AWS's).

    Every botocore error is mapped: transient (throttling, timeouts, 5xx, network) is EXT001
    transient; credentials missing or refused is AUTH001; anything else (no such secret, bad
    profile, region or endpoint settings, an invalid name) is CFG001.
    """
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        NoRegionError,
        ParamValidationError,
        ProfileNotFound,
    )

    service = "Secrets Manager" if reference.kind == "aws-sm" else "SSM Parameter Store"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _NOT_FOUND:
            return ConfigError(f"{where}: {reference.text}: no such secret in {service}", field=where)
        if code in _TRANSIENT_CODES or status == 429 or status >= 500 or _botocore_transient(exc, operation_model):
            return ExtractError(f"{where}: {reference.text}: {service} failed ({code or status}); retrying may pass")
        if code in _DENIED or status in (401, 403):
            return AuthError(
                f"{where}: {reference.text}: {service} refused the access ({code})",
                hint="check the run's AWS credentials and that their policy allows reading this secret",
                field=where,
            )
        return ConfigError(f"{where}: {reference.text}: {service} refused the request ({code})", field=where)
    if not isinstance(exc, BotoCoreError):
        return exc  # not AWS's to classify: raised as it is
    kind = type(exc).__name__
    if isinstance(exc, _botocore_classes(_TRANSIENT_BOTOCORE)):
        return ExtractError(f"{where}: {reference.text}: {service} unreachable ({kind}: {exc}); retrying may pass")
    if isinstance(exc, _botocore_classes(_CREDENTIALS_BOTOCORE)):
        return AuthError(
            f"{where}: {reference.text}: no usable AWS credentials ({kind}: {exc})",
            hint="give the run AWS credentials (environment, profile, SSO login, or an instance/task role)",
            field=where,
        )
    if isinstance(exc, ProfileNotFound):
        return ConfigError(
            f"{where}: {reference.text}: {exc}",
            hint="set AWS_PROFILE to a profile of the run's AWS config file, or unset it",
            field=where,
        )
    if isinstance(exc, NoRegionError):
        return ConfigError(
            f"{where}: {reference.text}: no AWS region is configured",
            hint="set AWS_REGION (or AWS_DEFAULT_REGION) in the run environment",
            field=where,
        )
    if isinstance(exc, ParamValidationError):
        return ConfigError(f"{where}: {reference.text}: not a valid {service} name", field=where)
    return ConfigError(
        f"{where}: {reference.text}: the AWS client cannot be used ({kind}: {exc})",
        hint="check the run's AWS settings (AWS_PROFILE, AWS_CONFIG_FILE, AWS_ENDPOINT_URL, region)",
        field=where,
    )


# Process-wide set of values to scrub from logs. Only values, never names; populated by
# resolvers that resolve *credentials* so logging anywhere in the process can redact them.
_GLOBAL_SECRETS: set[str] = set()
_GLOBAL_LOCK = threading.Lock()

# Values shorter than this are too likely to collide with ordinary words ("1", "on").
_MIN_SECRET_LEN = 4


def register_secrets(values: Iterable[str]) -> None:
    """Add values that the log redactor must scrub everywhere in this process."""
    with _GLOBAL_LOCK:
        _GLOBAL_SECRETS.update(v for v in values if v and len(v) >= _MIN_SECRET_LEN)


def registered_secrets() -> frozenset[str]:
    """Values currently scrubbed by :func:`redact_text` callers that use the registry."""
    with _GLOBAL_LOCK:
        return frozenset(_GLOBAL_SECRETS)


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Scrub secret values (longest first, so overlapping values are fully hidden)."""
    values = registered_secrets() if secrets is None else frozenset(secrets) | registered_secrets()
    for value in sorted(values, key=len, reverse=True):
        if value and len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, REDACTED)
    return text


_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|private[_.-]?key|credential"
    r"|auth|bearer|signature|sas|cookie|account[_.-]?key)",
    re.I,
)


def is_sensitive_key(key: str) -> bool:
    """True for config keys whose values are secrets by name (password, token, api_key, ...)."""
    return bool(_SENSITIVE_KEY.search(str(key)))


# scheme://user:password@host... : the password runs to the LAST '@' of the authority, since a
# password may itself hold '@' (unencoded, as people paste them) or '/'.
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>[^\s]+)@[^@\s]*$", re.I)


# key=value settings inside a string: a URL's query (?sslpassword=...&x=1), a libpq keyword DSN
# (host=db password=...), an ODBC/ADO or Azure connection string (Password=...;AccountKey=...).
_KEYWORD_SETTING = re.compile(
    r"(?:^|[?&;\s])(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|[^&;\s]*)"
)


def secret_parts(value: Any, *, sensitive: bool) -> list[str]:
    """The secret pieces of a resolved config value: all of it under a secret-named key, the
    password part of any ``scheme://user:password@host`` URL, and the value of any secret-named
    ``key=value`` setting inside a string (a URL query, a keyword DSN, a connection string),
    wherever it appears."""
    parts: list[str] = []
    for text in _strings(value):
        if sensitive:
            parts.append(text)
        for setting in _KEYWORD_SETTING.finditer(text):
            if is_sensitive_key(setting.group("key")):
                found = setting.group("value")
                if len(found) >= 2 and found[0] == found[-1] == "'":
                    found = found[1:-1].replace("\\'", "'").replace("\\\\", "\\")
                parts.extend(p for p in sorted({found, unquote(found)}) if p)
        match = _URL_PASSWORD.match(text.split("?", 1)[0])
        if match:
            password = match.group("password")
            # Also each piece between '@'s: a driver that misparses such a URL quotes the pieces.
            pieces = {password, unquote(password), *(p for p in password.split("@") if len(p) >= 4)}
            parts.extend(sorted(pieces))
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not sensitive and is_sensitive_key(key):
                parts.extend(_strings(item))
    return parts
