"""Google's HTTP on dativo's transport: hosts, tokens, error answers, and gspread's session.

Every request (Drive, Sheets, the token endpoint) goes through the object read's
:class:`~dativo_dagster.api.transport.ApiTransport`: the credential's buckets (``default`` for
Drive, ``sheets`` for Sheets reads), retries honouring ``Retry-After``, the breaker, counting.
:func:`google_sender` reads Google's error answers before the transport classifies them:

* 403 with reason ``rateLimitExceeded`` / ``userRateLimitExceeded`` (Drive's per-user quota) is a
  throttle, not a refusal: it is retried like a 429;
* 403 ``PERMISSION_DENIED`` "The caller does not have permission" (Sheets, a spreadsheet not
  shared with the credential) is :class:`NotShared`, which the source turns into CFG001 naming
  the file and the address to share it with;
* 401 is :class:`TokenRejected`: the token is refreshed once, then AUTH001.

gspread's ``HTTPClient`` takes a ``requests.Session``; :class:`GoogleSession` is one whose requests
go through the transport (and to the configured base URL), so the client never touches a module
global and two tenants' clients share nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from dativo_dagster.api.transport import ApiTransport, HttpResponse, Sender
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, ExtractError, PermanentExtractError, RetryExhaustedError
from dativo_dagster.sources.google.auth import GoogleCredentials

GOOGLE_HOSTS = ("https://www.googleapis.com", "https://sheets.googleapis.com")
"""The roots dativo calls; ``base_url`` (an emulator, a proxy) replaces both."""

RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
"""Drive's 403 throttles: retried like a 429."""
DAILY_QUOTA_REASONS = frozenset({"dailyLimitExceeded", "downloadQuotaExceeded", "sharingRateLimitExceeded"})
"""Quotas that reset once a day: no retry within a run helps."""
FILE_REFUSED_REASONS = frozenset(
    {"exportSizeLimitExceeded", "fileNotDownloadable", "cannotDownloadAbusiveFile", "fileNotExportable"}
)
"""One file Drive will not serve: permanent for that file, whoever asks."""
FILE_PERMISSION_REASONS = frozenset({"insufficientFilePermissions", "appNotAuthorizedToFile"})
"""The credential may not read this file: it must be shared (CFG001 naming the address)."""


@dataclass(frozen=True)
class GoogleError:
    """What a Google error body says (Drive v3's ``errors[].reason`` or the RPC ``status``)."""

    code: int
    message: str
    reason: str = ""
    status: str = ""


def google_error(body: bytes) -> GoogleError:
    """The parts of a Google error body (empty when it is not one)."""
    try:
        data = json.loads(body)
    except ValueError:
        return GoogleError(0, body[:200].decode("utf-8", "replace").strip())
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return GoogleError(0, "")
    reasons = [e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict) and e.get("reason")]
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("reason"):
            reasons.append(detail["reason"])
    return GoogleError(
        int(error.get("code") or 0),
        str(error.get("message") or "")[:300],
        str(reasons[0]) if reasons else "",
        str(error.get("status") or ""),
    )


class TokenRejected(Exception):
    """Google answered 401: the access token is expired or revoked (refresh once, then AUTH001)."""


class NotShared(Exception):
    """Google answered that the credential may not see this file (Sheets' 403 PERMISSION_DENIED)."""


def google_sender(inner: Sender) -> Sender:
    """``inner`` with Google's 401/403 answers read (see the module docstring)."""

    def send(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout_s: float) -> HttpResponse:
        response = inner(method, url, headers, body, timeout_s)
        if response.status not in (401, 403) or _is_token_call(method, url):
            # The token endpoint's refusals are OAuth bodies for google-auth to read, not API errors.
            return response
        error = google_error(response.body)
        if response.status == 401:
            raise TokenRejected(redact_text(error.message or "HTTP 401"))
        if error.reason in RATE_LIMIT_REASONS:
            # Drive's quota answer: the same thing a 429 means, so the transport waits and retries.
            return dataclasses.replace(response, status=429)
        if error.reason in DAILY_QUOTA_REASONS:
            raise RetryExhaustedError(
                f"{_what(method, url)}: Google's daily quota is spent ({error.reason}: {redact_text(error.message)})",
                hint="the next run after the quota resets (midnight Pacific time) continues from the cursor",
            )
        if error.reason in FILE_REFUSED_REASONS:
            raise PermanentExtractError(
                f"{_what(method, url)}: Drive will not hand out this file ({error.reason}: "
                f"{redact_text(error.message)})",
                hint="a native file over Drive's 10 MB export limit, or one Drive flagged: move it out of the "
                "folder or download it another way",
            )
        if error.reason in FILE_PERMISSION_REASONS or (
            error.status == "PERMISSION_DENIED" and "does not have permission" in error.message
        ):
            raise NotShared(error.message)
        return response

    return send


def query_pairs(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Query parameters as Google reads them: booleans lower-case, a list repeated, None left out."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return pairs


def _what(method: str, url: str) -> str:
    return f"{method} {urlsplit(url).path}"


def _is_token_call(method: str, url: str) -> bool:
    """A POST to an OAuth token endpoint (``oauth2.googleapis.com/token`` or a configured ``token_uri``)."""
    return method.upper() == "POST" and urlsplit(url).path.rstrip("/").endswith("/token")


def rebase(url: str, base_url: str | None) -> str:
    """``url`` on ``base_url`` instead of Google's host (unchanged without one)."""
    if not base_url:
        return url
    for host in GOOGLE_HOSTS:
        if url.startswith(host + "/"):
            return base_url.rstrip("/") + url[len(host) :]
    return url


class GoogleApi:
    """Authorized requests of one object read: tokens, hosts, coded errors.

    Args:
        transport: The read's transport (its sender wrapped by :func:`google_sender`).
        credentials: The source's credential (shared by its reads).
        base_url: Replaces Google's hosts (an emulator), or None.
        label: The object's label, for messages.
    """

    def __init__(
        self, transport: ApiTransport, credentials: GoogleCredentials, *, base_url: str | None, label: str
    ) -> None:
        self.transport = transport
        self.credentials = credentials
        self.base_url = base_url
        self.label = label

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        bucket: str = "default",
        what: str = "",
        file_id: str | None = None,
    ) -> HttpResponse:
        """One authorized request; 4xx other than 401/403/429 come back to the caller.

        Raises:
            AuthError: AUTH001 when the credential is refused or lacks a permission.
            ConfigError: CFG001 when ``file_id`` is not shared with the credential.
            RetryExhaustedError: RETRY001 when retries are spent.
        """
        full = rebase(url, self.base_url)
        if params:
            full += ("&" if "?" in full else "?") + urlencode(query_pairs(params))
        label = what or f"{method} {urlsplit(url).path}"
        for attempt in (1, 2):
            sent = dict(headers or {})
            sent["Authorization"] = "Bearer " + self.credentials.token(self.transport, force=attempt == 2)
            try:
                return self.transport.request(method, full, headers=sent, body=body, bucket=bucket, what=label)
            except TokenRejected as exc:
                if attempt == 2:
                    raise AuthError(
                        f"{self.label}: {label}: Google refused the access token it just issued ({exc})",
                        hint="check the credential's scopes and that the account is enabled",
                    ) from None
            except NotShared:
                raise self.not_shared(file_id or "?", label) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def not_shared(self, file_id: str, what: str) -> ConfigError:
        """CFG001 for a file the credential cannot see (missing, or not shared with it)."""
        return ConfigError(
            f"{self.label}: Google file {file_id!r} does not exist or is not shared with "
            f"{self.credentials.identity.email or 'the authorizing account'} ({what})",
            hint=f"check the id, then {self.credentials.identity.share_hint()}",
        )

    def json(self, response: HttpResponse, what: str) -> Any:
        """The JSON body of a 2xx answer.

        Raises:
            ExtractError: EXT001 when the body is not JSON (a proxy's page, a cut answer).
        """
        try:
            return json.loads(response.body)
        except ValueError:
            raise ExtractError(f"{self.label}: {what}: the answer is not JSON") from None

    def refused(self, response: HttpResponse, what: str, *, file_id: str | None = None) -> Exception:
        """The coded error for a 4xx answer the caller did not expect."""
        error = google_error(response.body)
        detail = redact_text(error.message or f"HTTP {response.status}")
        if response.status == 404 and file_id is not None:
            return self.not_shared(file_id, what)
        if response.status == 403:
            return AuthError(
                f"{self.label}: {what}: HTTP 403 {error.reason or error.status}: {detail}",
                hint="the credential lacks a permission or scope (drive.readonly and spreadsheets.readonly)",
            )
        return ConfigError(f"{self.label}: {what}: Google refused the request (HTTP {response.status}: {detail})")


class GoogleSession(requests.Session):
    """A ``requests.Session`` for gspread whose requests go through :class:`GoogleApi`."""

    def __init__(self, api: GoogleApi, *, bucket: str = "sheets", file_id: str | None = None) -> None:
        super().__init__()
        self.api = api
        self.bucket = bucket
        self.file_id = file_id

    def request(  # type: ignore[override]
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        json: Any = None,
        **_: Any,
    ) -> requests.Response:
        """Send through the transport; the answer comes back as a ``requests.Response``."""
        import json as json_module

        method_text = method.decode() if isinstance(method, bytes) else str(method)
        url_text = url.decode() if isinstance(url, bytes) else str(url)
        body: bytes | None = None
        sent = {k: v for k, v in dict(headers or {}).items() if k.lower() != "authorization"}
        if json is not None:
            body = json_module.dumps(json).encode()
            sent["Content-Type"] = "application/json"
        elif isinstance(data, (bytes, str)):
            body = data.encode() if isinstance(data, str) else data
        answer = self.api.request(
            method_text.upper(),
            url_text,
            params=dict(params or {}),
            headers=sent,
            body=body,
            bucket=self.bucket,
            file_id=self.file_id,
        )
        response = requests.Response()
        response.status_code = answer.status
        response._content = answer.body
        response.headers.update(answer.headers)
        response.url = url_text
        response.encoding = "utf-8"
        return response
