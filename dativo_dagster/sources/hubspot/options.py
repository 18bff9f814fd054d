"""What a HubSpot recipe's connection and an object's ``options`` may say, checked when config loads.

:class:`HubSpotConnection` holds the account-wide settings (how far behind now a read stops, the
search endpoints' rate limit); :class:`HubSpotOptions` one object's type, properties and
associations.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from dativo_dagster.api.limits import RateLimitSettings
from dativo_dagster.api.source import ApiConnection
from dativo_dagster.sources.base import SourceOptions


class HubSpotConnection(ApiConnection):
    """How to reach HubSpot; the credential comes from ``credentials``.

    ``credentials: {access_token: "${HUBSPOT_TOKEN}"}`` for a private app, or
    ``{client_id, client_secret, refresh_token}`` for an OAuth app.
    """

    settle_lag_s: float = Field(
        default=300, ge=0, le=86_400, description="leave the newest seconds to the next run: search results lag writes"
    )
    search_rate_limit: RateLimitSettings | None = Field(
        default=None, description="requests per second for the search endpoints (default 4.7/s: HubSpot allows 5)"
    )


class HubSpotOptions(SourceOptions):
    """Per-object options."""

    object_type: str | None = Field(
        default=None, description="HubSpot object type (default: the object's name): contacts, 2-1234567, ..."
    )
    properties: list[str] | None = Field(
        default=None, description="properties to read (default: the contract's columns, else every property)"
    )
    associations: list[str] = Field(default_factory=list, description="associated object types to store as id lists")

    @field_validator("properties", "associations")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not name or not name.replace("_", "a").replace("-", "a").isalnum():
                raise ValueError(f"{name!r} is not a HubSpot property or object type name")
        if len(set(value)) != len(value):
            raise ValueError("names are listed twice")
        return value
