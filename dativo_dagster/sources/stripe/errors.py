"""The dativo error for each exception the ``stripe`` client raises.

Kept apart so the mapping reads as one table: authentication, rate limits and lost connections
(normally raised by the transport before the client sees them), endpoints that do not exist,
refused parameters, broken page chains and unreadable bodies; anything else is a bug.
"""

from __future__ import annotations

from dativo_dagster.api.paging import parse_json_object
from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, PaginationError, unexpected


def classify_stripe_error(exc: Exception, *, where: str, path: str, api_version: str | None) -> DativoError:
    """The dativo error for an exception the ``stripe`` client raised.

    * 401/403 → AUTH001 (normally raised by the transport before the client sees the answer);
    * 404 on a list endpoint → CFG001 naming the path, hinting at an API-version change;
    * 400 → CFG001 with Stripe's message (a bad ``expand``), except a page chain broken by a
      vanished ``starting_after`` object (PAGE001) and Stripe's old 400 ``rate_limit`` (EXT001);
    * a 2xx body the client cannot parse (malformed JSON, truncated) → PAGE001;
    * anything else is a bug (``BUG``, never retried), not a guess.
    """
    import stripe

    status = getattr(exc, "http_status", None)
    message = redact_text(str(getattr(exc, "user_message", None) or exc))[:300]
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None)
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)) or status in (401, 403):
        return AuthError(f"{where}: HTTP {status}: {message}", hint="check the API key and what it may read")
    if isinstance(exc, stripe.RateLimitError):
        return ExtractError(f"{where}: rate limited ({message})")
    if isinstance(exc, stripe.APIConnectionError):
        return ExtractError(f"{where}: no answer ({message})")
    if status == 404:
        version = api_version or "the client's default"
        return ConfigError(
            f"{where}: HTTP 404 ({message})",
            hint=f"{path} does not exist for this account or API version ({version}); check options.resource "
            "and whether a Stripe API version change moved or renamed it",
        )
    if status == 400 and isinstance(exc, stripe.InvalidRequestError):
        if param in ("starting_after", "ending_before") and code == "resource_missing":
            return PaginationError(
                f"{where}: the object the next page starts after is gone ({message}); the page chain broke",
                hint="the next run reads the window again",
            )
        shown = f" (parameter {param})" if param else ""
        hint = "check the object's options.expand" if param == "expand" else "check the object's options"
        return ConfigError(f"{where}: Stripe refused the request: {message}{shown}", hint=hint)
    if isinstance(exc, stripe.APIError) and isinstance(status, int) and 200 <= status < 300:
        raw = getattr(exc, "http_body", None) or ""
        try:
            parse_json_object(raw.encode() if isinstance(raw, str) else bytes(raw), where=where)
        except PaginationError as malformed:
            return malformed
        return PaginationError(f"{where}: the response could not be read as a Stripe list ({message})")
    return unexpected(exc)
