"""Google credentials from a job's ``credentials``: a service account or OAuth user credentials.

A service account comes as its key file's JSON, either the text itself (``service_account_json``,
usually ``${VAR}``) or a file inside the tenant's data roots (``service_account_file``). OAuth user
credentials are ``client_id``, ``client_secret`` and ``refresh_token`` (and optionally
``token_uri``). Access tokens are obtained and refreshed by google-auth, its HTTP going through the
run's transport (:class:`TokenRequest`), so a token call is limited, retried and counted like any
other request.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dativo_dagster.api.transport import ApiTransport
from dativo_dagster.config.secrets import register_secrets
from dativo_dagster.errors import AuthError, ConfigError
from dativo_dagster.paths import confine

READ_SCOPES = (
    "https://www.googleapis.com/auth/spreadsheets.readonly",
    "https://www.googleapis.com/auth/drive.readonly",
)
"""What dativo asks for: read-only Sheets and Drive (Drive for file lists, downloads and versions)."""

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"

SERVICE_ACCOUNT_KEYS = frozenset({"service_account_json", "service_account_file"})
OAUTH_KEYS = frozenset({"client_id", "client_secret", "refresh_token", "token_uri"})


@dataclass(frozen=True)
class GoogleIdentity:
    """Who the credentials act as, for messages: the address a file must be shared with."""

    email: str | None
    kind: str  # "service account" | "OAuth user"
    principal: str = ""
    """What Google counts quotas against: the account's address, or the OAuth client and user (a digest)."""

    def share_hint(self) -> str:
        """What to do when a file is not visible to these credentials."""
        if self.email:
            return f"share it with {self.email} (Viewer is enough)"
        return "share it with the Google account that authorized the refresh token"


def _label(where: str, key: str) -> str:
    return f"{where}.{key}"


def service_account_info(
    credentials: Mapping[str, str], *, project_dir: Path, data_roots: tuple[Path, ...], where: str
) -> dict[str, Any] | None:
    """The service account key of ``credentials`` as a dict (None for OAuth user credentials).

    Raises:
        ConfigError: CFG001 naming the field when both or neither kind is given, when the file lies
            outside the tenant's data roots or cannot be read, or when the JSON is not a
            service-account key.
    """
    given = {key for key, value in credentials.items() if value}
    unknown = sorted(set(credentials) - SERVICE_ACCOUNT_KEYS - OAUTH_KEYS)
    if unknown:
        raise ConfigError(
            f"{_label(where, unknown[0])}: not a Google credential field "
            f"(use service_account_json, service_account_file, or client_id/client_secret/refresh_token)"
        )
    account = given & SERVICE_ACCOUNT_KEYS
    oauth = given & OAUTH_KEYS
    if len(account) > 1 or (account and oauth):
        raise ConfigError(f"{where}: give one Google credential (a service account key or OAuth user credentials)")
    if not account and not oauth:
        raise ConfigError(
            f"{where}: no Google credential (service_account_json, service_account_file, or "
            "client_id/client_secret/refresh_token); is the ${{VAR}} set?"
        )
    if not account:
        missing = sorted({"client_id", "client_secret", "refresh_token"} - oauth)
        if missing:
            raise ConfigError(
                f"{_label(where, missing[0])}: OAuth user credentials need client_id, client_secret and refresh_token"
            )
        return None
    if "service_account_file" in account:
        field = _label(where, "service_account_file")
        path = confine(credentials["service_account_file"], data_roots, base=project_dir, what=field)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{field}: cannot read the key file ({type(exc).__name__})") from None
    else:
        field = _label(where, "service_account_json")
        text = credentials["service_account_json"]
    try:
        info = json.loads(text)
    except ValueError:
        raise ConfigError(f"{field}: not JSON (expected a service account key file's content)") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ConfigError(f'{field}: not a service account key (its "type" must be "service_account")')
    for key in ("client_email", "private_key", "token_uri"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise ConfigError(f"{field}: the key has no {key}")
    register_secrets([info["private_key"], *(line for line in info["private_key"].splitlines() if len(line) > 20)])
    return info


class TokenRequest:
    """google-auth's ``transport.Request`` over dativo's transport (token calls are limited and counted).

    Only the token endpoint is called through it; answers other than 2xx go back to google-auth,
    which raises ``RefreshError`` for them (mapped to AUTH001 by :class:`GoogleCredentials`).
    """

    def __init__(self, transport: ApiTransport) -> None:
        self.transport = transport

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: Any = None,
        **_: Any,
    ) -> Any:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            answer = self.transport.request(
                method, url, headers=dict(headers or {}), body=data, what="token", private=True
            )
        except AuthError as exc:
            # 401/403 from the token endpoint (a bad OAuth client): hand it to google-auth as the
            # refusal it is; it raises RefreshError, which becomes AUTH001 with Google's reason.
            problem = self.transport.last_problem
            if problem is None:
                return _TokenResponse(401, {}, str(exc).encode())
            return _TokenResponse(problem.status or 401, dict(problem.response_headers), problem.response_body)
        return _TokenResponse(answer.status, dict(answer.headers), answer.body)


@dataclass
class _TokenResponse:
    status: int
    headers: dict[str, str]
    data: bytes


class GoogleCredentials:
    """The access token of one credential, refreshed when it expires; shared by a source's reads."""

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        project_dir: Path,
        data_roots: tuple[Path, ...],
        where: str = "source.credentials",
        scopes: tuple[str, ...] = READ_SCOPES,
    ) -> None:
        self.where = where
        info = service_account_info(credentials, project_dir=project_dir, data_roots=data_roots, where=where)
        self._lock = threading.Lock()
        if info is not None:
            from google.oauth2 import service_account

            try:
                self._creds: Any = service_account.Credentials.from_service_account_info(info, scopes=list(scopes))
            except (ValueError, TypeError) as exc:
                raise ConfigError(
                    f"{where}: the service account key is unusable ({type(exc).__name__}: check private_key)"
                ) from None
            email = str(info["client_email"])
            self.identity = GoogleIdentity(email, "service account", email)
        else:
            from google.oauth2.credentials import Credentials

            self._creds = Credentials(
                token=None,
                refresh_token=credentials["refresh_token"],
                client_id=credentials["client_id"],
                client_secret=credentials["client_secret"],
                token_uri=credentials.get("token_uri") or DEFAULT_TOKEN_URI,
                scopes=list(scopes),
            )
            user = hashlib.sha256(f"{credentials['client_id']}\0{credentials['refresh_token']}".encode()).hexdigest()
            self.identity = GoogleIdentity(None, "OAuth user", f"oauth:{user[:32]}")

    def token(self, transport: ApiTransport, *, force: bool = False) -> str:
        """A valid access token (refreshed through ``transport`` when expired, or when ``force``).

        Raises:
            AuthError: AUTH001 when Google refuses the credential (revoked, wrong key, bad client).
        """
        from google.auth.exceptions import GoogleAuthError

        with self._lock:
            if force or not self._creds.valid:
                try:
                    self._creds.refresh(TokenRequest(transport))
                except GoogleAuthError as exc:  # RefreshError, a malformed token answer, a bad key
                    reason = _refresh_reason(exc)
                    raise AuthError(
                        f"{self.where}: Google refused the {self.identity.kind} credential ({reason})",
                        hint="check the key, the OAuth client id and secret, or the refresh token; a revoked "
                        "token needs a new authorization",
                    ) from None
            token = self._creds.token
            if not isinstance(token, str) or not token:
                raise AuthError(f"{self.where}: Google's token endpoint answered without an access token")
            register_secrets([token])  # a bearer token is as good as the key while it lives
            return token


def _refresh_reason(exc: Exception) -> str:
    """The ``error`` / ``error_description`` of a refused token call (never the credential)."""
    from dativo_dagster.config.secrets import redact_text

    args = getattr(exc, "args", ())
    for arg in args[1:]:
        if isinstance(arg, dict):
            parts = [str(arg.get(k)) for k in ("error", "error_description") if arg.get(k)]
            if parts:
                return redact_text(": ".join(parts))[:200]
    return redact_text(str(args[0]) if args else type(exc).__name__)[:200]
