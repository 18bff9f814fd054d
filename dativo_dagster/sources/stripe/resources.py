"""The Stripe list endpoints the source reads, and the parameters of their requests.

:data:`RESOURCES` describes each endpoint (what it may expand, which events announce its
changes, whether it is read for updates); :func:`expand_params` and :func:`list_params` build a
list request's parameters from an object's options and a ``created`` window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_EXPAND_DEPTH = 4
"""Stripe expands at most four levels below the list's ``data``."""


@dataclass(frozen=True)
class StripeResource:
    """A Stripe list endpoint dativo reads.

    Attributes:
        name: URL segment and the client's service name (``payment_intents``).
        object: The ``object`` value of its items (``payment_intent``).
        expandable: The object's ``x-expandableFields`` in Stripe's OpenAPI spec.
        event_prefix: Event type prefix of its changes (``customer.subscription``); None if none.
        mutable: Updates are caught through events unless ``options.track_updates`` says otherwise.
        list_defaults: Parameters every list request sends (subscriptions: ``status=all``, as the
            list otherwise hides canceled subscriptions).
        deletable: Deleted objects vanish from the list; a ``*.deleted`` event marks the row
            ``deleted = true``.
    """

    name: str
    object: str
    expandable: frozenset[str]
    event_prefix: str | None = None
    mutable: bool = False
    list_defaults: Mapping[str, str] = field(default_factory=dict)
    deletable: bool = False


def _fields(*names: str) -> frozenset[str]:
    return frozenset(names)


RESOURCES: dict[str, StripeResource] = {
    r.name: r
    for r in (
        StripeResource(
            "customers",
            "customer",
            _fields(
                "address", "cash_balance", "default_source", "discount", "invoice_settings", "shipping", "sources",
                "subscriptions", "tax", "tax_ids", "test_clock",
            ),
            "customer",
            mutable=True,
            deletable=True,
        ),
        StripeResource(
            "charges",
            "charge",
            _fields(
                "application", "application_fee", "balance_transaction", "billing_details", "customer",
                "failure_balance_transaction", "fraud_details", "invoice", "on_behalf_of", "outcome",
                "payment_intent", "payment_method_details", "radar_options", "refunds", "review", "shipping",
                "source_transfer", "transfer", "transfer_data",
            ),
            "charge",
        ),
        StripeResource(
            "invoices",
            "invoice",
            _fields(
                "account_tax_ids", "application", "automatic_tax", "charge", "custom_fields", "customer",
                "customer_address", "customer_shipping", "customer_tax_ids", "default_payment_method",
                "default_source", "default_tax_rates", "discount", "discounts", "from_invoice",
                "last_finalization_error", "latest_revision", "lines", "on_behalf_of", "payment_intent",
                "payment_settings", "quote", "rendering_options", "shipping_cost", "shipping_details",
                "status_transitions", "subscription", "subscription_details", "test_clock", "threshold_reason",
                "total_discount_amounts", "total_tax_amounts", "transfer_data",
            ),
            "invoice",
            mutable=True,
        ),
        StripeResource(
            "subscriptions",
            "subscription",
            _fields(
                "application", "automatic_tax", "billing_thresholds", "cancellation_details", "customer",
                "default_payment_method", "default_source", "default_tax_rates", "discount", "items",
                "latest_invoice", "on_behalf_of", "pause_collection", "payment_settings",
                "pending_invoice_item_interval", "pending_setup_intent", "pending_update", "schedule",
                "test_clock", "transfer_data", "trial_settings",
            ),
            "customer.subscription",
            mutable=True,
            list_defaults={"status": "all"},
        ),
        StripeResource(
            "payment_intents",
            "payment_intent",
            _fields(
                "amount_details", "application", "automatic_payment_methods", "customer", "invoice",
                "last_payment_error", "latest_charge", "next_action", "on_behalf_of", "payment_method",
                "payment_method_options", "processing", "review", "shipping", "transfer_data",
            ),
            "payment_intent",
        ),
        StripeResource(
            "products",
            "product",
            _fields("default_price", "features", "package_dimensions", "tax_code"),
            "product",
            mutable=True,
            deletable=True,
        ),
        StripeResource(
            "prices",
            "price",
            _fields("currency_options", "custom_unit_amount", "product", "recurring", "tiers", "transform_quantity"),
            "price",
            mutable=True,
        ),
        StripeResource("balance_transactions", "balance_transaction", _fields("fee_details", "source")),
        StripeResource(
            "refunds",
            "refund",
            _fields(
                "balance_transaction", "charge", "failure_balance_transaction", "next_action", "payment_intent",
                "source_transfer_reversal", "transfer_reversal",
            ),
        ),
        StripeResource("events", "event", _fields("data", "request")),
    )
}  # fmt: skip

ResourceName = Literal[
    "customers",
    "charges",
    "invoices",
    "subscriptions",
    "payment_intents",
    "products",
    "prices",
    "balance_transactions",
    "refunds",
    "events",
]


def expand_params(resource: StripeResource, expand: Sequence[str]) -> list[str]:
    """``expand[]`` values for a list request: ``customer`` → ``data.customer``.

    Only the first level is checked here (against the resource's expandable fields); deeper
    levels name fields of other objects, and Stripe answers 400 (CFG001) for a wrong one.

    Raises:
        ValueError: a field the list endpoint cannot expand, or deeper than Stripe allows.
    """
    out: list[str] = []
    for raw in expand:
        path = raw.strip()
        parts = path.split(".")
        if parts and parts[0] == "data":
            parts = parts[1:]
        if not parts or any(not p for p in parts):
            raise ValueError(f"expand: {raw!r} is not a field path (e.g. 'customer' or 'invoice.subscription')")
        if parts[0] not in resource.expandable:
            allowed = ", ".join(sorted(resource.expandable))
            raise ValueError(f"expand: {resource.name} cannot expand '{parts[0]}' (expandable: {allowed})")
        if len(parts) > MAX_EXPAND_DEPTH:
            raise ValueError(f"expand: {raw!r} is deeper than the {MAX_EXPAND_DEPTH} levels Stripe expands")
        value = "data." + ".".join(parts)
        if value not in out:
            out.append(value)
    return out


def list_params(
    resource: StripeResource,
    *,
    lo: int | None,
    hi: int | None,
    page_size: int,
    expand: Sequence[str] = (),
    after: str | None = None,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Parameters of one list request: ``created[gte]=lo&created[lt]=hi``, newest first.

    Args:
        resource: The endpoint.
        lo: Inclusive lower bound of ``created`` (None: none).
        hi: Exclusive upper bound of ``created`` (None: none).
        page_size: ``limit``.
        expand: ``expand[]`` values (already ``data.``-prefixed).
        after: ``starting_after``: the id of the last object of the previous page.
        event_type: ``type`` of ``/v1/events`` (a prefix with a ``*`` wildcard).
    """
    params: dict[str, Any] = {"limit": page_size, **resource.list_defaults}
    created = {k: v for k, v in (("gte", lo), ("lt", hi)) if v is not None}
    if created:
        params["created"] = created
    if expand:
        params["expand"] = list(expand)
    if event_type is not None:
        params["type"] = event_type
    if after is not None:
        params["starting_after"] = after
    return params
