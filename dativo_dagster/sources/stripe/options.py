"""What a Stripe recipe's connection and an object's ``options`` may say, and an object resolved
against them.

:class:`StripeConnection` holds the account-wide settings (windows, page size, API version);
:class:`StripeOptions` one object's endpoint, expansions and update tracking. :func:`resolve_target`
checks an object's options against its endpoint and its strategy (CFG001 naming what is wrong)
and gives the :class:`Target` a read works from.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from dativo_dagster.api.source import ApiConnection
from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.base import SourceOptions
from dativo_dagster.sources.stripe.flatten import ColumnSpec, column_specs
from dativo_dagster.sources.stripe.resources import RESOURCES, ResourceName, StripeResource, expand_params


class StripeConnection(ApiConnection):
    """How to read a Stripe account; the key comes from ``credentials.api_key``."""

    settle_lag_s: int = Field(
        default=60,
        ge=0,
        le=86_400,
        description="the newest window ends this many seconds before now (objects still settling are read next run)",
    )
    slice_days: float = Field(
        default=30, gt=0, le=3650, description="window per commit when the object sets no incremental.slice_days"
    )
    page_size: int = Field(default=100, ge=1, le=100, description="objects per list request (Stripe allows 100)")
    page_streams: int = Field(
        default=3,
        ge=1,
        le=8,
        description="parallel page chains per window of creation times (one chain is one request per round trip)",
    )
    api_version: str | None = Field(
        default=None,
        pattern=r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$",
        description="Stripe-Version header (default: the client library's pinned version)",
    )


class StripeOptions(SourceOptions):
    """Per-object settings (recipe ``objects:`` defaults merged with the job's ``options``)."""

    resource: ResourceName | None = Field(default=None, description="list endpoint (default: the object name)")
    expand: list[str] = Field(
        default_factory=list, max_length=20, description="fields to expand, e.g. customer or invoice.subscription"
    )
    track_updates: bool | None = Field(
        default=None,
        description="replay /v1/events so updated objects are reloaded (default: on for mutable resources)",
    )

    @model_validator(mode="after")
    def _check_against_resource(self) -> StripeOptions:
        if self.resource is not None:
            resource = RESOURCES[self.resource]
            expand_params(resource, self.expand)
            if self.track_updates and resource.event_prefix is None:
                raise ValueError(f"track_updates: Stripe sends no update events for {resource.name}")
        return self


@dataclass(frozen=True)
class Target:
    """One object resolved against its options."""

    resource: StripeResource
    expand: tuple[str, ...]
    tracking: bool
    specs: tuple[ColumnSpec, ...]


def resolve_target(obj: ObjectPlan) -> Target:
    """``obj`` resolved against its options: its endpoint, expansions, update tracking and columns.

    Raises:
        ConfigError: CFG001 for invalid options, an endpoint the source does not read, an
            expansion the endpoint refuses, update tracking Stripe cannot give, or a cursor
            column other than ``created``.
    """
    try:
        options = StripeOptions.model_validate(obj.options)
    except ValueError as exc:
        raise ConfigError(f"{obj.label}: options: {exc}") from None
    name = options.resource or obj.name
    resource = RESOURCES.get(name)
    if resource is None:
        raise ConfigError(
            f"{obj.label}: '{name}' is not a Stripe resource this source reads ({', '.join(RESOURCES)})",
            hint="name the object after one, or set options.resource",
        )
    try:
        expand = expand_params(resource, options.expand)
    except ValueError as exc:
        raise ConfigError(f"{obj.label}: options.{exc}") from None
    if options.track_updates and resource.event_prefix is None:
        raise ConfigError(f"{obj.label}: options.track_updates: Stripe sends no update events for {name}")
    if obj.strategy is Strategy.CREATED and obj.cursor_field != "created":
        raise ConfigError(
            f"{obj.label}: incremental.cursor_field: Stripe lists filter on 'created' only, not '{obj.cursor_field}'",
            hint="set cursor_field: created (updates are caught through events)",
        )
    tracking = obj.strategy is Strategy.CREATED and (
        options.track_updates if options.track_updates is not None else resource.mutable
    )
    return Target(resource, tuple(expand), tracking, tuple(column_specs(obj)))
