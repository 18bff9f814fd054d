"""Local emulator of Stripe's v1 list API (customers, charges, invoices, ... events).

It speaks Stripe's wire format so the official ``stripe`` client works against it unchanged
(``stripe.StripeClient(key, base_addresses={"api": url})``): bearer (or basic) authentication
with ``sk_``/``rk_`` keys, one isolated account per key set, list envelopes, cursor paging
(``starting_after`` / ``ending_before``), ``created`` filters, ``expand[]``, Stripe's error
bodies, per-account rate limits answering 429, and ``/v1/events`` with 30-day retention.

Objects are stored compactly (the fields that vary) and rendered to the shapes of Stripe's
OpenAPI schemas (API version 2023-08-16) when served, so a 50,000-charge account is generated
in a few seconds. Data is deterministic for a seed and a clock start.

Python use::

    emu = StripeEmulator(limits={"default": Limit(rps=25, burst=25)})
    emu.add_account("sk_test_a", customers=200, charges=1000)
    with emu.serve() as server:
        client = stripe.StripeClient("sk_test_a", base_addresses={"api": server.url})

Benchmark use: ``python -m tests.fakes.stripe_api --port 0 --charges 50000 --customers 20000``
prints the base URL, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import hashlib
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import Emulator, FakeClock, Limit, Request, Response, common_arguments, run_cli

API_VERSION = "2023-08-16"
EVENT_RETENTION_SECONDS = 30 * 86400
MAX_EXPAND_DEPTH = 4
_BASE62 = string.digits + string.ascii_letters


@dataclass(frozen=True)
class ResourceDef:
    """A Stripe list resource.

    Attributes:
        name: URL segment (``customers``).
        object: The ``object`` value (``customer``).
        prefix: Id prefix (``cus``).
        event_prefix: Event type prefix (``customer``; subscriptions use ``customer.subscription``).
        filters: Resource-specific list parameters Stripe accepts.
        expandable: The object's ``x-expandableFields`` in Stripe's spec.
        links: Field → resource whose id it holds (what expansion can fill in).
        noun: Noun used in "No such ..." messages.
    """

    name: str
    object: str
    prefix: str
    event_prefix: str
    filters: frozenset[str]
    expandable: frozenset[str]
    links: Mapping[str, str] = field(default_factory=dict)
    noun: str = ""


RESOURCES: dict[str, ResourceDef] = {
    r.name: r
    for r in [
        ResourceDef(
            "customers",
            "customer",
            "cus",
            "customer",
            frozenset({"email", "test_clock"}),
            frozenset(
                {"address", "cash_balance", "default_source", "discount", "invoice_settings", "shipping", "sources"}
                | {"subscriptions", "tax", "tax_ids", "test_clock"}
            ),
            {"subscriptions": "subscriptions"},
            "customer",
        ),
        ResourceDef(
            "charges",
            "charge",
            "ch",
            "charge",
            frozenset({"customer", "payment_intent", "transfer_group"}),
            frozenset(
                {"application", "application_fee", "balance_transaction", "billing_details", "customer"}
                | {"failure_balance_transaction", "fraud_details", "invoice", "on_behalf_of", "outcome"}
                | {"payment_intent", "payment_method_details", "radar_options", "refunds", "review", "shipping"}
                | {"source_transfer", "transfer", "transfer_data"}
            ),
            {
                "customer": "customers",
                "invoice": "invoices",
                "payment_intent": "payment_intents",
                "balance_transaction": "balance_transactions",
                "refunds": "refunds",
            },
            "charge",
        ),
        ResourceDef(
            "invoices",
            "invoice",
            "in",
            "invoice",
            frozenset({"customer", "status", "subscription", "collection_method", "due_date"}),
            frozenset(
                {"account_tax_ids", "application", "automatic_tax", "charge", "custom_fields", "customer"}
                | {"customer_address", "customer_shipping", "customer_tax_ids", "default_payment_method"}
                | {"default_source", "default_tax_rates", "discount", "discounts", "from_invoice"}
                | {"last_finalization_error", "latest_revision", "lines", "on_behalf_of", "payment_intent"}
                | {"payment_settings", "quote", "rendering_options", "shipping_cost", "shipping_details"}
                | {"status_transitions", "subscription", "subscription_details", "test_clock", "threshold_reason"}
                | {"total_discount_amounts", "total_tax_amounts", "transfer_data"}
            ),
            {
                "customer": "customers",
                "subscription": "subscriptions",
                "charge": "charges",
                "payment_intent": "payment_intents",
            },
            "invoice",
        ),
        ResourceDef(
            "subscriptions",
            "subscription",
            "sub",
            "customer.subscription",
            frozenset(
                {"customer", "status", "price", "collection_method", "current_period_end", "current_period_start"}
                | {"test_clock", "automatic_tax"}
            ),
            frozenset(
                {"application", "automatic_tax", "billing_thresholds", "cancellation_details", "customer"}
                | {"default_payment_method", "default_source", "default_tax_rates", "discount", "items"}
                | {"latest_invoice", "on_behalf_of", "pause_collection", "payment_settings"}
                | {"pending_invoice_item_interval", "pending_setup_intent", "pending_update", "schedule"}
                | {"test_clock", "transfer_data", "trial_settings"}
            ),
            {"customer": "customers", "latest_invoice": "invoices"},
            "subscription",
        ),
        ResourceDef(
            "payment_intents",
            "payment_intent",
            "pi",
            "payment_intent",
            frozenset({"customer"}),
            frozenset(
                {"amount_details", "application", "automatic_payment_methods", "customer", "invoice"}
                | {"last_payment_error", "latest_charge", "next_action", "on_behalf_of", "payment_method"}
                | {"payment_method_options", "processing", "review", "shipping", "transfer_data"}
            ),
            {"customer": "customers", "invoice": "invoices", "latest_charge": "charges"},
            "payment_intent",
        ),
        ResourceDef(
            "products",
            "product",
            "prod",
            "product",
            frozenset({"active", "ids", "shippable", "url"}),
            frozenset({"default_price", "features", "package_dimensions", "tax_code"}),
            {"default_price": "prices"},
            "product",
        ),
        ResourceDef(
            "prices",
            "price",
            "price",
            "price",
            frozenset({"active", "currency", "product", "type", "lookup_keys", "recurring"}),
            frozenset(
                {"currency_options", "custom_unit_amount", "product", "recurring", "tiers", "transform_quantity"}
            ),
            {"product": "products"},
            "price",
        ),
        ResourceDef(
            "balance_transactions",
            "balance_transaction",
            "txn",
            "balance_transaction",
            frozenset({"currency", "payout", "source", "type"}),
            frozenset({"fee_details", "source"}),
            {"source": "*"},
            "balance transaction",
        ),
        ResourceDef(
            "refunds",
            "refund",
            "re",
            "refund",
            frozenset({"charge", "payment_intent"}),
            frozenset(
                {"balance_transaction", "charge", "failure_balance_transaction", "next_action", "payment_intent"}
                | {"source_transfer_reversal", "transfer_reversal"}
            ),
            {"balance_transaction": "balance_transactions", "charge": "charges", "payment_intent": "payment_intents"},
            "refund",
        ),
        ResourceDef(
            "events",
            "event",
            "evt",
            "event",
            frozenset({"type", "types", "delivery_success"}),
            frozenset({"data", "request"}),
            {},
            "event",
        ),
    ]
}
_BY_PREFIX = {r.prefix: r.name for r in RESOURCES.values()}
_COMMON_LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "expand", "created", "include"})
_SUBSCRIPTION_STATUSES = ("active", "canceled", "incomplete", "incomplete_expired", "past_due", "paused", "trialing")
_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Linus", "Radia", "Tim"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Perlman"]
_PRODUCTS = [
    "Starter",
    "Team",
    "Business",
    "Enterprise",
    "Add-on seats",
    "Storage",
    "Support",
    "Training",
    "API",
    "Audit",
]


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_BASE62[rem])
    return "".join(reversed(out))


class StripeError(Exception):
    """A Stripe API error (becomes ``{"error": {...}}`` with ``status``)."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", **extra: Any) -> None:
        """Create an error.

        Args:
            status: HTTP status.
            message: The error message.
            type_: Stripe's error ``type``.
            **extra: ``code``, ``param``, ``doc_url`` ...
        """
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {
            "message": message,
            "type": type_,
            **{k: v for k, v in extra.items() if v is not None},
        }


@dataclass
class KeyInfo:
    """An API key: which account it opens and, for restricted keys, what it may read."""

    account: StripeAccount
    readable: frozenset[str] | None = None


class Table:
    """One resource's rows, kept sorted by ``(created, id)`` for list paging."""

    def __init__(self) -> None:
        """Create an empty table."""
        self.keys: list[tuple[int, str]] = []
        self.rows: dict[str, dict[str, Any]] = {}

    def load(self, recs: Iterable[dict[str, Any]]) -> None:
        """Bulk insert (one sort) — used by the seed."""
        for rec in recs:
            self.rows[rec["id"]] = rec
        self.keys = sorted((r["created"], r["id"]) for r in self.rows.values() if not r.get("_deleted"))

    def add(self, rec: dict[str, Any]) -> None:
        """Insert one row."""
        self.rows[rec["id"]] = rec
        bisect.insort(self.keys, (rec["created"], rec["id"]))

    def hide(self, rec: dict[str, Any]) -> None:
        """Remove a row from lists (deleted objects stay retrievable)."""
        key = (rec["created"], rec["id"])
        i = bisect.bisect_left(self.keys, key)
        if i < len(self.keys) and self.keys[i] == key:
            del self.keys[i]


class StripeAccount:
    """One Stripe account: its tables, id generator and events."""

    def __init__(self, account_id: str, livemode: bool, seed: str) -> None:
        """Create an empty account.

        Args:
            account_id: ``acct_...``.
            livemode: Whether its objects are live-mode ones.
            seed: Seed of its id generator.
        """
        import random

        self.id = account_id
        self.livemode = livemode
        self.rng = random.Random(seed)
        self.tables: dict[str, Table] = {name: Table() for name in RESOURCES}
        self._ids: set[str] = set()

    def new_id(self, prefix: str) -> str:
        """A fresh unique id such as ``cus_4fG7...`` (24 base-62 characters after the prefix)."""
        while True:
            candidate = f"{prefix}_{_b62(self.rng.getrandbits(128), 24)}"
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def find(self, obj_id: str) -> tuple[str, dict[str, Any]] | None:
        """Look an id up in the table its prefix names."""
        resource = _BY_PREFIX.get(obj_id.split("_", 1)[0])
        if resource is None:
            return None
        rec = self.tables[resource].rows.get(obj_id)
        return None if rec is None else (resource, rec)


# --------------------------------------------------------------------------------------------
# rendering: compact records → objects shaped like Stripe's schemas


def _public(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def _address(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "city": rec.get("_city"),
        "country": rec.get("_country"),
        "line1": rec.get("_line1"),
        "line2": None,
        "postal_code": rec.get("_postal"),
        "state": None,
    }


class Renderer:
    """Turns compact records into full Stripe objects for one account."""

    def __init__(self, account: StripeAccount) -> None:
        """Bind to an account."""
        self.acct = account

    def render(self, resource: str, rec: Mapping[str, Any]) -> dict[str, Any]:
        """The full object for ``rec`` of ``resource``."""
        if rec.get("_deleted"):
            return {"id": rec["id"], "object": RESOURCES[resource].object, "deleted": True}
        base: dict[str, Any] = getattr(self, f"_{resource}")(rec)
        base.update(_public(rec))
        base["livemode"] = self.acct.livemode
        return base

    def _customers(self, r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": r["id"],
            "object": "customer",
            "address": _address(r) if r.get("_city") else None,
            "balance": 0,
            "created": r["created"],
            "currency": "usd",
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": r["id"][4:12].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def _charges(self, r: Mapping[str, Any]) -> dict[str, Any]:
        status = r.get("status", "succeeded")
        amount = r["amount"]
        refunded_amount = r.get("amount_refunded", 0)
        digits = int(r["id"][-6:], 36) if r["id"][-6:].isalnum() else 0
        failed = status == "failed"
        return {
            "id": r["id"],
            "object": "charge",
            "amount": amount,
            "amount_captured": 0 if failed else amount,
            "amount_refunded": refunded_amount,
            "application": None,
            "application_fee": None,
            "application_fee_amount": None,
            "balance_transaction": None,
            "billing_details": {"address": _address({}), "email": None, "name": None, "phone": None},
            "calculated_statement_descriptor": "DATIVO FAKE",
            "captured": not failed,
            "created": r["created"],
            "currency": "usd",
            "customer": None,
            "description": None,
            "disputed": False,
            "failure_balance_transaction": None,
            "failure_code": "card_declined" if failed else None,
            "failure_message": "Your card was declined." if failed else None,
            "fraud_details": {},
            "invoice": None,
            "metadata": {},
            "on_behalf_of": None,
            "outcome": {
                "network_status": "declined_by_network" if failed else "approved_by_network",
                "reason": "generic_decline" if failed else None,
                "risk_level": "normal",
                "risk_score": digits % 100,
                "seller_message": "The bank did not return any further details with this decline."
                if failed
                else "Payment complete.",
                "type": "issuer_declined" if failed else "authorized",
            },
            "paid": status == "succeeded",
            "payment_intent": None,
            "payment_method": "pm_" + r["id"][3:],
            "payment_method_details": {
                "card": {
                    "brand": ("visa", "mastercard", "amex")[digits % 3],
                    "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
                    "country": "US",
                    "exp_month": digits % 12 + 1,
                    "exp_year": 2030 + digits % 5,
                    "fingerprint": r["id"][3:19],
                    "funding": "credit",
                    "installments": None,
                    "last4": f"{digits % 10000:04d}",
                    "mandate": None,
                    "network": ("visa", "mastercard", "amex")[digits % 3],
                    "network_token": {"used": False},
                    "three_d_secure": None,
                    "wallet": None,
                },
                "type": "card",
            },
            "radar_options": {},
            "receipt_email": None,
            "receipt_number": None,
            "receipt_url": f"https://pay.stripe.com/receipts/{r['id']}",
            "refunded": refunded_amount >= amount and amount > 0,
            "review": None,
            "shipping": None,
            "source_transfer": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": status,
            "transfer_data": None,
            "transfer_group": None,
        }

    def _price_object(self, price_id: str | None) -> dict[str, Any] | None:
        rec = self.acct.tables["prices"].rows.get(price_id or "")
        return None if rec is None else self.render("prices", rec)

    def _invoices(self, r: Mapping[str, Any]) -> dict[str, Any]:
        total = r["total"]
        status = r.get("status", "paid")
        paid = status == "paid"
        line_id = "il_" + r["id"][3:]
        sub = r.get("subscription")
        sub_rec = self.acct.tables["subscriptions"].rows.get(sub or "")
        line: dict[str, Any] = {
            "id": line_id,
            "object": "line_item",
            "amount": total,
            "amount_excluding_tax": total,
            "currency": "usd",
            "description": "1 x Subscription" if sub else "One-off item",
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "livemode": self.acct.livemode,
            "metadata": {},
            "period": {"end": r["period_end"], "start": r["period_start"]},
            "price": self._price_object(sub_rec.get("_price") if sub_rec else None),
            "proration": False,
            "proration_details": {"credited_items": None},
            "quantity": 1,
            "subscription": sub,
            "tax_amounts": [],
            "tax_rates": [],
            "type": "subscription" if sub else "invoiceitem",
            "unit_amount_excluding_tax": str(total),
        }
        if sub:
            line["subscription_item"] = "si_" + sub[4:]
        else:
            line["invoice_item"] = "ii_" + r["id"][3:]
        return {
            "id": r["id"],
            "object": "invoice",
            "account_country": "US",
            "account_name": "Dativo Fake",
            "account_tax_ids": None,
            "amount_due": total,
            "amount_paid": total if paid else 0,
            "amount_remaining": 0 if paid else total,
            "amount_shipping": 0,
            "application": None,
            "application_fee_amount": None,
            "attempt_count": 1 if status in ("paid", "open") else 0,
            "attempted": status in ("paid", "open"),
            "auto_advance": status == "draft",
            "automatic_tax": {"enabled": False, "status": None},
            "billing_reason": "subscription_cycle" if sub else "manual",
            "charge": None,
            "collection_method": "charge_automatically",
            "created": r["created"],
            "currency": "usd",
            "custom_fields": None,
            "customer": None,
            "customer_address": None,
            "customer_email": None,
            "customer_name": None,
            "customer_phone": None,
            "customer_shipping": None,
            "customer_tax_exempt": "none",
            "customer_tax_ids": [],
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discount": None,
            "discounts": [],
            "due_date": None,
            "effective_at": None if status == "draft" else r["created"],
            "ending_balance": None if status == "draft" else 0,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None if status == "draft" else f"https://invoice.stripe.com/i/{r['id']}",
            "invoice_pdf": None if status == "draft" else f"https://pay.stripe.com/invoice/{r['id']}/pdf",
            "last_finalization_error": None,
            "latest_revision": None,
            "lines": {
                "object": "list",
                "data": [line],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/invoices/{r['id']}/lines",
            },
            "metadata": {},
            "next_payment_attempt": None,
            "number": None if status == "draft" else f"{r['id'][3:11].upper()}-0001",
            "on_behalf_of": None,
            "paid": paid,
            "paid_out_of_band": False,
            "payment_intent": None,
            "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
            "period_end": r["period_end"],
            "period_start": r["period_start"],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "quote": None,
            "receipt_number": None,
            "rendering_options": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": status,
            "status_transitions": {
                "finalized_at": None if status == "draft" else r["created"],
                "marked_uncollectible_at": r["created"] + 86400 if status == "uncollectible" else None,
                "paid_at": r["created"] + 60 if paid else None,
                "voided_at": r["created"] + 86400 if status == "void" else None,
            },
            "subscription": sub,
            "subscription_details": {"metadata": {}} if sub else None,
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "tax": None,
            "test_clock": None,
            "total": total,
            "total_discount_amounts": [],
            "total_excluding_tax": total,
            "total_tax_amounts": [],
            "transfer_data": None,
            "webhooks_delivered_at": r["created"],
        }

    def _subscriptions(self, r: Mapping[str, Any]) -> dict[str, Any]:
        price = self._price_object(r.get("_price"))
        canceled = r.get("status") == "canceled"
        return {
            "id": r["id"],
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"enabled": False},
            "billing_cycle_anchor": r["created"],
            "billing_thresholds": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": r.get("_canceled_at") if canceled else None,
            "cancellation_details": {
                "comment": None,
                "feedback": None,
                "reason": "cancellation_requested" if canceled else None,
            },
            "collection_method": "charge_automatically",
            "created": r["created"],
            "currency": "usd",
            "current_period_end": r["current_period_end"],
            "current_period_start": r["current_period_start"],
            "customer": None,
            "days_until_due": None,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discount": None,
            "ended_at": r.get("_canceled_at") if canceled else None,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": "si_" + r["id"][4:],
                        "object": "subscription_item",
                        "billing_thresholds": None,
                        "created": r["created"],
                        "metadata": {},
                        "price": price,
                        "quantity": r.get("_quantity", 1),
                        "subscription": r["id"],
                        "tax_rates": [],
                    }
                ]
                if price
                else [],
                "has_more": False,
                "total_count": 1 if price else 0,
                "url": f"/v1/subscription_items?subscription={r['id']}",
            },
            "latest_invoice": None,
            "metadata": {},
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": {
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": r["created"],
            "status": "active",
            "test_clock": None,
            "transfer_data": None,
            "trial_end": None,
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": None,
        }

    def _payment_intents(self, r: Mapping[str, Any]) -> dict[str, Any]:
        status = r.get("status", "succeeded")
        return {
            "id": r["id"],
            "object": "payment_intent",
            "amount": r["amount"],
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": r["amount"] if status == "succeeded" else 0,
            "application": None,
            "application_fee_amount": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic",
            "client_secret": f"{r['id']}_secret_{r['id'][3:15]}",
            "confirmation_method": "automatic",
            "created": r["created"],
            "currency": "usd",
            "customer": None,
            "description": None,
            "invoice": None,
            "last_payment_error": None,
            "latest_charge": None,
            "metadata": {},
            "next_action": None,
            "on_behalf_of": None,
            "payment_method": "pm_" + r["id"][3:],
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "processing": None,
            "receipt_email": None,
            "review": None,
            "setup_future_usage": None,
            "shipping": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": status,
            "transfer_data": None,
            "transfer_group": None,
        }

    def _products(self, r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": r["id"],
            "object": "product",
            "active": True,
            "created": r["created"],
            "default_price": None,
            "description": None,
            "features": [],
            "images": [],
            "metadata": {},
            "name": "Product",
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": None,
            "updated": r.get("updated", r["created"]),
            "url": None,
        }

    def _prices(self, r: Mapping[str, Any]) -> dict[str, Any]:
        interval = r.get("_interval")
        return {
            "id": r["id"],
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": r["created"],
            "currency": "usd",
            "custom_unit_amount": None,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": r["product"],
            "recurring": None
            if interval is None
            else {
                "aggregate_usage": None,
                "interval": interval,
                "interval_count": 1,
                "trial_period_days": None,
                "usage_type": "licensed",
            },
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if interval is None else "recurring",
            "unit_amount": r["unit_amount"],
            "unit_amount_decimal": str(r["unit_amount"]),
        }

    def _balance_transactions(self, r: Mapping[str, Any]) -> dict[str, Any]:
        fee = r.get("fee", 0)
        return {
            "id": r["id"],
            "object": "balance_transaction",
            "amount": r["amount"],
            "available_on": r["created"] + 2 * 86400,
            "created": r["created"],
            "currency": "usd",
            "description": None,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": [
                {
                    "amount": fee,
                    "application": None,
                    "currency": "usd",
                    "description": "Stripe processing fees",
                    "type": "stripe_fee",
                }
            ]
            if fee
            else [],
            "net": r["amount"] - fee,
            "reporting_category": r.get("type", "charge"),
            "source": None,
            "status": "available",
            "type": "charge",
        }

    def _refunds(self, r: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "id": r["id"],
            "object": "refund",
            "amount": r["amount"],
            "balance_transaction": None,
            "charge": None,
            "created": r["created"],
            "currency": "usd",
            "metadata": {},
            "payment_intent": None,
            "reason": None,
            "receipt_number": None,
            "source_transfer_reversal": None,
            "status": "succeeded",
            "transfer_reversal": None,
        }

    def _events(self, r: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {"object": self.render(r["_resource"], r["_snapshot"])}
        if r.get("_previous") is not None:
            data["previous_attributes"] = r["_previous"]
        return {
            "id": r["id"],
            "object": "event",
            "api_version": API_VERSION,
            "created": r["created"],
            "data": data,
            "pending_webhooks": 0,
            "request": {"id": r.get("_request"), "idempotency_key": None},
            "type": r["type"],
        }


# --------------------------------------------------------------------------------------------
# the emulator


def _mask(key: str) -> str:
    """Mask a key as Stripe's messages do: prefix, stars, last four characters."""
    head = "_".join(key.split("_")[:2]) + "_" if key.count("_") >= 2 else ""
    tail = key[len(head) :]
    visible = tail[-4:] if len(tail) > 4 else ""
    return head + "*" * (len(tail) - len(visible)) + visible


def _parse_query(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Decode Stripe's bracket notation: ``created[gte]=1``, ``expand[]=x``, ``expand[0]=x``."""
    out: dict[str, Any] = {}
    for raw_key, value in pairs:
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", raw_key)
        if m is None:
            out[raw_key] = value
            continue
        name, brackets = m.group(1), re.findall(r"\[([^\[\]]*)\]", m.group(2))
        if not brackets:
            out[name] = value
        elif brackets[0] == "" or brackets[0].isdigit():
            current = out.setdefault(name, [])
            if isinstance(current, list):
                current.append(value)
        else:
            current = out.setdefault(name, {})
            if isinstance(current, dict):
                current[brackets[0]] = value
    return out


def _matches(name: str, regex: re.Pattern[str]) -> Callable[[Mapping[str, Any]], bool]:
    return lambda rec: regex.match(str(rec.get(name))) is not None


def _equals(name: str, wanted: Any, default: Any = None) -> Callable[[Mapping[str, Any]], bool]:
    return lambda rec: rec.get(name, default) == wanted


def _int_param(value: Any, param: str) -> int:
    try:
        return int(str(value))
    except ValueError:
        raise StripeError(400, f"Invalid integer: {value}", param=param, code="parameter_invalid_integer") from None


class StripeEmulator(Emulator):
    """Emulates Stripe's list endpoints for any number of accounts (one per key set)."""

    name = "stripe"
    list_key = "data"
    admin_methods = frozenset(
        {
            "add_account",
            "add_restricted_key",
            "create_object",
            "update_object",
            "delete_object",
            "refund_charge",
            "advance_clock",
            "counts",
        }
    )

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        limits: Mapping[str, Limit | Sequence[Limit] | None] | None = None,
    ) -> None:
        """Create an emulator without accounts (add them with :meth:`add_account`).

        Args:
            clock: Fake clock (default: running, starting now).
            latency_ms: Latency added to each API request.
            jitter_ms: Random extra latency.
            limits: Rate limits per endpoint class (``read`` for GET, ``write`` otherwise,
                ``default`` for both); kept per account, as Stripe does. Default: unlimited.
        """
        super().__init__(clock=clock, latency_ms=latency_ms, jitter_ms=jitter_ms, limits=limits)
        self.keys: dict[str, KeyInfo] = {}
        self.accounts: dict[str, StripeAccount] = {}

    # -- accounts and keys --

    def add_account(
        self,
        key: str,
        *,
        seed: int = 1,
        customers: int = 50,
        charges: int = 200,
        invoices: int | None = None,
        subscriptions: int | None = None,
        products: int = 10,
        refund_rate: float = 0.03,
        history_days: int = 365,
        event_days: int = 40,
        same_second_rate: float = 0.1,
    ) -> dict[str, int]:
        """Create an account opened by secret key ``key`` and seed it.

        Args:
            key: ``sk_test_...`` (test mode) or ``sk_live_...`` (live mode).
            seed: Data seed; together with ``key`` and the clock start it fixes the data.
            customers: Number of customers.
            charges: Number of charges (each with a payment intent, and a balance transaction
                when it succeeded).
            invoices: Number of invoices (default: customers // 2).
            subscriptions: Number of subscriptions (default: customers // 3).
            products: Number of products (each has a monthly and a one-time price).
            refund_rate: Share of succeeded charges that get a refund.
            history_days: Objects are created over this many days before the clock's now.
            event_days: Creation events exist for objects of the last N days (some beyond the
                30-day retention, so that retention is visible).
            same_second_rate: Share of objects created in the same second as the previous one
                (ties that paging must break by id).

        Returns:
            Object counts per resource.
        """
        if not key.startswith(("sk_test_", "sk_live_")):
            raise ValueError("an account's key must be a secret key (sk_test_... or sk_live_...)")
        with self.lock:
            digest = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:12], "big")
            acct = StripeAccount(f"acct_{_b62(digest, 16)}", key.startswith("sk_live_"), f"{seed}:{key}")
            self.accounts[key] = acct
            self.keys[key] = KeyInfo(acct)
            _Seeder(acct, int(self.clock.now()), seed).run(
                customers=customers,
                charges=charges,
                invoices=customers // 2 if invoices is None else invoices,
                subscriptions=customers // 3 if subscriptions is None else subscriptions,
                products=products,
                refund_rate=refund_rate,
                history_days=history_days,
                event_days=event_days,
                same_second_rate=same_second_rate,
            )
            return self.counts(key)

    def add_restricted_key(self, key: str, account_key: str, readable: Sequence[str] = ()) -> None:
        """Add a restricted key (``rk_...``) on an account that may read only ``readable`` resources."""
        with self.lock:
            self.keys[key] = KeyInfo(self.keys[account_key].account, frozenset(readable))

    def counts(self, key: str) -> dict[str, int]:
        """Listed objects per resource in the account of ``key`` (events: all stored ones)."""
        acct = self.keys[key].account
        with self.lock:
            return {name: len(table.keys) for name, table in acct.tables.items()}

    def account(self, key: str) -> StripeAccount:
        """The account a key opens."""
        return self.keys[key].account

    # -- mutations, as a live account changes --

    def create_object(self, key: str, resource: str, created: int | None = None, **fields: Any) -> dict[str, Any]:
        """Create an object (``created`` defaults to the clock) and emit its creation event.

        Fields not given get plausible defaults; returns the object as the API renders it.
        """
        acct = self.keys[key].account
        with self.lock:
            ts = int(self.clock.now()) if created is None else int(created)
            rec = _default_record(acct, resource, ts)
            rec.update(fields)
            acct.tables[resource].add(rec)
            event_type = "charge.succeeded" if resource == "charges" else f"{RESOURCES[resource].event_prefix}.created"
            self._emit(acct, resource, rec, event_type, ts)
            return Renderer(acct).render(resource, rec)

    def update_object(self, key: str, resource: str, obj_id: str, **fields: Any) -> dict[str, Any]:
        """Change top-level fields (``metadata`` merges, as Stripe does) and emit ``*.updated``."""
        acct = self.keys[key].account
        with self.lock:
            rec = acct.tables[resource].rows[obj_id]
            before = Renderer(acct).render(resource, rec)
            previous: dict[str, Any] = {}
            for name, value in fields.items():
                previous[name] = copy.deepcopy(before.get(name))
                if name == "metadata":
                    merged = dict(before.get("metadata") or {})
                    merged.update(value)
                    value = {k: v for k, v in merged.items() if v not in ("", None)}
                rec[name] = value
            now = int(self.clock.now())
            if resource in ("products",):
                rec["updated"] = now
            self._emit(acct, resource, rec, f"{RESOURCES[resource].event_prefix}.updated", now, previous)
            return Renderer(acct).render(resource, rec)

    def delete_object(self, key: str, resource: str, obj_id: str) -> dict[str, Any]:
        """Delete a customer or product (or cancel a subscription) and emit ``*.deleted``."""
        acct = self.keys[key].account
        with self.lock:
            rec = acct.tables[resource].rows[obj_id]
            now = int(self.clock.now())
            if resource == "subscriptions":
                previous = {"status": rec.get("status", "active")}
                rec["status"], rec["_canceled_at"] = "canceled", now
                self._emit(acct, resource, rec, "customer.subscription.deleted", now, previous)
                return Renderer(acct).render(resource, rec)
            if resource not in ("customers", "products"):
                raise ValueError(f"{resource} cannot be deleted")
            snapshot = dict(rec)
            rec["_deleted"] = True
            acct.tables[resource].hide(rec)
            self._emit(acct, resource, snapshot, f"{RESOURCES[resource].event_prefix}.deleted", now)
            return Renderer(acct).render(resource, rec)

    def refund_charge(self, key: str, charge_id: str, amount: int | None = None) -> dict[str, Any]:
        """Refund a charge (fully by default): a refund, its balance transaction, ``charge.refunded``."""
        acct = self.keys[key].account
        with self.lock:
            charge = acct.tables["charges"].rows[charge_id]
            now = int(self.clock.now())
            amount = charge["amount"] - charge.get("amount_refunded", 0) if amount is None else amount
            previous = {"amount_refunded": charge.get("amount_refunded", 0), "refunded": False}
            refund = {
                "id": acct.new_id("re"),
                "created": now,
                "amount": amount,
                "charge": charge_id,
                "payment_intent": charge.get("payment_intent"),
            }
            txn = {
                "id": acct.new_id("txn"),
                "created": now,
                "amount": -amount,
                "source": refund["id"],
                "type": "refund",
            }
            refund["balance_transaction"] = txn["id"]
            acct.tables["refunds"].add(refund)
            acct.tables["balance_transactions"].add(txn)
            charge["amount_refunded"] = charge.get("amount_refunded", 0) + amount
            self._emit(acct, "charges", charge, "charge.refunded", now, previous)
            return Renderer(acct).render("refunds", refund)

    def advance_clock(self, seconds: float) -> float:
        """Move the fake clock forward; returns the new epoch time."""
        return self.clock.advance(seconds)

    def _emit(
        self,
        acct: StripeAccount,
        resource: str,
        rec: Mapping[str, Any],
        event_type: str,
        created: int,
        previous: Mapping[str, Any] | None = None,
    ) -> None:
        event = {
            "id": acct.new_id("evt"),
            "created": created,
            "type": event_type,
            "_resource": resource,
            "_snapshot": copy.deepcopy(dict(rec)),
            "_previous": None if previous is None else dict(previous),
            "_request": "req_" + _b62(acct.rng.getrandbits(80), 14),
        }
        acct.tables["events"].add(event)

    # -- HTTP --

    def credential(self, req: Request) -> str | None:
        """The API key of a request (bearer, or basic auth's user name as ``curl -u`` sends it)."""
        token = req.bearer()
        if token:
            return token
        value = req.header("authorization") or ""
        if value.lower().startswith("basic "):
            import base64

            try:
                return base64.b64decode(value[6:]).decode().split(":", 1)[0] or None
            except ValueError:
                return None
        return None

    def _headers(self, req: Request) -> dict[str, str]:
        return {
            "Request-Id": "req_" + _b62(self._rng.getrandbits(80), 14),
            "Stripe-Version": req.header("stripe-version") or API_VERSION,
            "Cache-Control": "no-cache, no-store",
        }

    def _error(self, req: Request, err: StripeError, extra_headers: Mapping[str, str] | None = None) -> Response:
        headers = self._headers(req)
        headers.update(extra_headers or {})
        return Response(err.status, {"error": err.body}, headers=headers)

    def error_response(self, status: int, req: Request) -> Response:
        """Stripe's answer for an injected error status."""
        if status in (502, 503, 504):
            # Gateways in front of Stripe answer with HTML, not Stripe's JSON.
            html = f"<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1></body></html>"
            return Response(status, raw=html.encode(), content_type="text/html")
        key = self.credential(req) or ""
        messages = {
            400: ("Invalid request.", "invalid_request_error"),
            401: (f"Invalid API Key provided: {_mask(key) if key else ''}", "invalid_request_error"),
            403: (
                "The provided key does not have the required permissions for this endpoint.",
                "invalid_request_error",
            ),
            404: ("Unrecognized request URL.", "invalid_request_error"),
            409: ("Keys for idempotent requests can only be used with the same parameters.", "idempotency_error"),
            429: ("Request rate limit exceeded.", "invalid_request_error"),
        }
        message, type_ = messages.get(status, ("An unknown error occurred", "api_error"))
        return self._error(req, StripeError(status, message, type_=type_))

    def handle(self, req: Request) -> Response:
        """Authenticate, rate-limit and answer one API request."""
        try:
            return self._handle(req)
        except StripeError as err:
            return self._error(req, err)

    def _handle(self, req: Request) -> Response:
        key = self.credential(req)
        if not key:
            raise StripeError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
                "See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
            )
        info = self.keys.get(key)
        if info is None:
            raise StripeError(401, f"Invalid API Key provided: {_mask(key)}")
        acct = info.account
        decisions = self.limiter.check(acct.id, "read" if req.method == "GET" else "write")
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is not None:
            retry = max(1, int(refused.retry_after + 0.999))
            return self._error(
                req,
                StripeError(
                    429,
                    "Request rate limit exceeded. You can learn more about rate limits here https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                    doc_url="https://stripe.com/docs/error-codes/rate-limit",
                ),
                {"Retry-After": str(retry), "X-Fake-Policy": refused.policy},
            )
        parts = [p for p in req.path.split("/") if p]
        resource = parts[1] if len(parts) >= 2 and parts[0] == "v1" else None
        if resource not in RESOURCES or len(parts) > 3 or req.method != "GET":
            raise StripeError(
                404,
                f"Unrecognized request URL ({req.method}: {req.path}). "
                "Please see https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        assert resource is not None
        rdef = RESOURCES[resource]
        if info.readable is not None and resource not in info.readable:
            raise StripeError(
                403,
                f"The provided key '{_mask(key)}' does not have the required permissions for this endpoint on account "
                f"'{acct.id}'. Having the 'rak_{rdef.object}_read' permission would allow this request to continue.",
            )
        params = _parse_query(req.query)
        with self.lock:
            body = self._retrieve(acct, rdef, parts[2], params) if len(parts) == 3 else self._list(acct, rdef, params)
        return Response(200, body, headers=self._headers(req))

    # -- GET /v1/<resource>/<id> --

    def _retrieve(self, acct: StripeAccount, rdef: ResourceDef, obj_id: str, params: dict[str, Any]) -> dict[str, Any]:
        unknown = set(params) - {"expand"}
        if unknown:
            name = sorted(unknown)[0]
            raise StripeError(400, f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
        rec = acct.tables[rdef.name].rows.get(obj_id)
        if rec is None or (rdef.name == "events" and rec["created"] < self.clock.now() - EVENT_RETENTION_SECONDS):
            raise StripeError(404, f"No such {rdef.noun}: '{obj_id}'", param="id", code="resource_missing")
        obj = Renderer(acct).render(rdef.name, rec)
        expand = params.get("expand") or []
        if isinstance(expand, str):
            expand = [expand]
        for path in expand:
            self._expand(acct, rdef.name, obj, path.split("."), path)
        return obj

    # -- GET /v1/<resource> --

    def _list(self, acct: StripeAccount, rdef: ResourceDef, params: dict[str, Any]) -> dict[str, Any]:
        allowed = _COMMON_LIST_PARAMS | rdef.filters
        for name in params:
            if name not in allowed:
                raise StripeError(400, f"Received unknown parameter: {name}", param=name, code="parameter_unknown")
        limit = _int_param(params.get("limit", 10), "limit")
        if limit < 1:
            raise StripeError(
                400, "This value must be greater than or equal to 1.", param="limit", code="parameter_invalid_integer"
            )
        if limit > 100:
            raise StripeError(
                400, "This value must be less than or equal to 100.", param="limit", code="parameter_invalid_integer"
            )
        if params.get("starting_after") and params.get("ending_before"):
            raise StripeError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
            )
        expand = params.get("expand") or []
        if isinstance(expand, str):
            expand = [expand]
        for path in expand:
            if not path.startswith("data."):
                raise StripeError(400, f"This property cannot be expanded ({path}).", param="expand")
        table = acct.tables[rdef.name]
        keys = table.keys
        lo, hi = 0, len(keys)
        created = params.get("created")
        if created is not None:
            lo, hi = self._created_bounds(keys, created)
        if rdef.name == "events":
            oldest = int(self.clock.now()) - EVENT_RETENTION_SECONDS
            lo = max(lo, bisect.bisect_left(keys, (oldest, "")))
        backwards = False
        for param in ("starting_after", "ending_before"):
            cursor = params.get(param)
            if not cursor:
                continue
            rec = table.rows.get(str(cursor))
            if rec is None or rec.get("_deleted"):
                raise StripeError(400, f"No such {rdef.noun}: '{cursor}'", param=param, code="resource_missing")
            pos = (rec["created"], rec["id"])
            if param == "starting_after":
                hi = min(hi, bisect.bisect_left(keys, pos))
            else:
                lo = max(lo, bisect.bisect_right(keys, pos))
                backwards = True
        pred = self._predicate(acct, rdef, params)
        picked: list[tuple[int, str]] = []
        if pred is None:
            has_more = hi - lo > limit
            if backwards:
                picked = list(reversed(keys[lo : min(lo + limit, hi)]))
            else:
                picked = list(reversed(keys[max(lo, hi - limit) : hi]))
        else:
            indices = range(lo, hi) if backwards else range(hi - 1, lo - 1, -1)
            for i in indices:
                if pred(table.rows[keys[i][1]]):
                    picked.append(keys[i])
                    if len(picked) > limit:
                        break
            has_more = len(picked) > limit
            picked = picked[:limit]
            if backwards:
                picked.reverse()
        renderer = Renderer(acct)
        data = [renderer.render(rdef.name, table.rows[obj_id]) for _, obj_id in picked]
        for path in expand:
            for obj in data:
                self._expand(acct, rdef.name, obj, path.split(".")[1:], path)
        body: dict[str, Any] = {"object": "list", "data": data, "has_more": has_more, "url": f"/v1/{rdef.name}"}
        include = params.get("include") or []
        if "total_count" in (include if isinstance(include, list) else [include]):
            body["total_count"] = (
                (hi - lo) if pred is None else sum(1 for i in range(lo, hi) if pred(table.rows[keys[i][1]]))
            )
        return body

    @staticmethod
    def _created_bounds(keys: list[tuple[int, str]], created: Any) -> tuple[int, int]:
        if isinstance(created, dict):
            unknown = set(created) - {"gt", "gte", "lt", "lte"}
            if unknown:
                name = sorted(unknown)[0]
                raise StripeError(400, f"Received unknown parameter: created[{name}]", param=f"created[{name}]")
            low, high = -(2**62), 2**62
            if "gt" in created:
                low = max(low, _int_param(created["gt"], "created[gt]") + 1)
            if "gte" in created:
                low = max(low, _int_param(created["gte"], "created[gte]"))
            if "lt" in created:
                high = min(high, _int_param(created["lt"], "created[lt]") - 1)
            if "lte" in created:
                high = min(high, _int_param(created["lte"], "created[lte]"))
        else:
            low = high = _int_param(created, "created")
        return bisect.bisect_left(keys, (low, "")), bisect.bisect_left(keys, (high + 1, ""))

    def _predicate(
        self, acct: StripeAccount, rdef: ResourceDef, params: Mapping[str, Any]
    ) -> Callable[[Mapping[str, Any]], bool] | None:
        checks: list[Callable[[Mapping[str, Any]], bool]] = []
        renderer = Renderer(acct)
        for name in sorted(rdef.filters & set(params)):
            value = params[name]
            if rdef.name == "events" and name in ("type", "types"):
                if "type" in params and "types" in params:
                    raise StripeError(400, "You may only specify one of these parameters: type, types.", param="types")
                patterns = value if isinstance(value, list) else [value]
                regex = re.compile("|".join(re.escape(p).replace(r"\*", ".*") for p in patterns) + r"\Z")
                checks.append(_matches("type", regex))
            elif rdef.name == "subscriptions" and name == "status":
                if value == "all":
                    continue
                if value == "ended":
                    checks.append(lambda r: r.get("status") in ("canceled", "incomplete_expired"))
                else:
                    if value not in _SUBSCRIPTION_STATUSES:
                        raise StripeError(
                            400,
                            f"Invalid status: must be one of {', '.join(_SUBSCRIPTION_STATUSES)}, all, or ended",
                            param="status",
                        )
                    checks.append(_equals("status", value, "active"))
            elif rdef.name == "subscriptions" and name == "price":
                checks.append(_equals("_price", value))
            elif isinstance(value, (dict, list)):
                continue  # range/array filters on fields the seed does not vary
            else:

                def check(r: Mapping[str, Any], field_: str = name, wanted: str = str(value)) -> bool:
                    got = r[field_] if field_ in r else renderer.render(rdef.name, r).get(field_)
                    if isinstance(got, bool):
                        return str(got).lower() == wanted.lower()
                    if isinstance(got, dict):
                        got = got.get("id")
                    return str(got) == wanted

                checks.append(check)
        if rdef.name == "subscriptions" and "status" not in params:
            # Stripe lists only subscriptions that are not canceled unless a status is asked for.
            checks.append(lambda r: r.get("status", "active") != "canceled")
        if not checks:
            return None
        return lambda r: all(c(r) for c in checks)

    def _expand(
        self, acct: StripeAccount, resource: str, obj: dict[str, Any], path: list[str], full: str, depth: int = 0
    ) -> None:
        if not path:
            return
        if depth >= MAX_EXPAND_DEPTH:
            raise StripeError(
                400,
                f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property. Property: {full}",
                param="expand",
            )
        rdef = RESOURCES.get(resource)
        head, rest = path[0], path[1:]
        if rdef is None or head not in rdef.expandable:
            raise StripeError(400, f"This property cannot be expanded ({full}).", param="expand")
        target = rdef.links.get(head)
        value = obj.get(head)
        if resource == "customers" and head == "subscriptions":
            subs = [
                Renderer(acct).render("subscriptions", r)
                for r in acct.tables["subscriptions"].rows.values()
                if r.get("customer") == obj["id"] and r.get("status") != "canceled"
            ]
            obj["subscriptions"] = {
                "object": "list",
                "data": sorted(subs, key=lambda s: (s["created"], s["id"]), reverse=True)[:10],
                "has_more": len(subs) > 10,
                "total_count": len(subs),
                "url": f"/v1/customers/{obj['id']}/subscriptions",
            }
            return
        if target is None or not isinstance(value, str):
            return
        found = acct.find(value)
        if found is None:
            return
        linked_resource, rec = found
        expanded = Renderer(acct).render(linked_resource, rec)
        obj[head] = expanded
        if rest:
            self._expand(acct, linked_resource, expanded, rest, full, depth + 1)


# --------------------------------------------------------------------------------------------
# seed


def _default_record(acct: StripeAccount, resource: str, created: int) -> dict[str, Any]:
    rdef = RESOURCES[resource]
    rec: dict[str, Any] = {"id": acct.new_id(rdef.prefix), "created": created}
    if resource == "customers":
        rec.update(email=f"new-{rec['id'][4:10].lower()}@example.com", name="New Customer")
    elif resource in ("charges", "payment_intents"):
        rec.update(amount=1000)
    elif resource == "invoices":
        rec.update(total=1000, period_start=created, period_end=created)
    elif resource == "subscriptions":
        rec.update(current_period_start=created, current_period_end=created + 30 * 86400)
    elif resource == "products":
        rec.update(name="New product", updated=created)
    elif resource == "prices":
        rec.update(unit_amount=1000, product=None)
    elif resource in ("balance_transactions", "refunds"):
        rec.update(amount=1000)
    return rec


class _Seeder:
    """Generates one account's deterministic data."""

    def __init__(self, acct: StripeAccount, now: int, seed: int) -> None:
        import random

        self.acct = acct
        self.now = now
        self.rng = random.Random(f"data:{seed}:{acct.id}")

    def _times(self, n: int, start: int, end: int, same_second_rate: float) -> list[int]:
        rng = self.rng
        times = sorted(rng.randint(start, end) for _ in range(n))
        for i in range(1, n):
            if rng.random() < same_second_rate:
                times[i] = times[i - 1]
        return times

    def run(
        self,
        *,
        customers: int,
        charges: int,
        invoices: int,
        subscriptions: int,
        products: int,
        refund_rate: float,
        history_days: int,
        event_days: int,
        same_second_rate: float,
    ) -> None:
        acct, rng, now = self.acct, self.rng, self.now
        start = now - history_days * 86400
        new_id = acct.new_id
        tables = acct.tables
        # products and prices: early in the account's life
        prod_recs: list[dict[str, Any]] = []
        price_recs: list[dict[str, Any]] = []
        monthly_prices: list[dict[str, Any]] = []
        for i, ts in enumerate(self._times(products, start, start + history_days * 8640, 0.0)):
            prod = {
                "id": new_id("prod"),
                "created": ts,
                "updated": ts,
                "name": _PRODUCTS[i % len(_PRODUCTS)] + (f" {i // 10}" if i >= 10 else ""),
            }
            monthly = {
                "id": new_id("price"),
                "created": ts,
                "product": prod["id"],
                "unit_amount": 500 * (i + 1),
                "_interval": "month",
            }
            once = {"id": new_id("price"), "created": ts + 1, "product": prod["id"], "unit_amount": 5000 * (i + 1)}
            prod["default_price"] = monthly["id"]
            prod_recs.append(prod)
            price_recs += [monthly, once]
            monthly_prices.append(monthly)
        tables["products"].load(prod_recs)
        tables["prices"].load(price_recs)
        # customers
        cust_times = self._times(customers, start, now, same_second_rate)
        cust_recs: list[dict[str, Any]] = []
        for ts in cust_times:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            cid = new_id("cus")
            rec = {
                "id": cid,
                "created": ts,
                "email": f"{first.lower()}.{last.lower()}.{cid[4:9].lower()}@example.com",
                "name": f"{first} {last}",
            }
            if rng.random() < 0.3:
                rec.update(_city="Berlin", _country="DE", _line1="Hauptstr. 1", _postal="10115")
            if rng.random() < 0.2:
                rec["metadata"] = {"tier": rng.choice(["gold", "silver", "bronze"])}
            cust_recs.append(rec)
        tables["customers"].load(cust_recs)

        def customer_before(ts: int) -> dict[str, Any] | None:
            n = bisect.bisect_right(cust_times, ts)
            return cust_recs[rng.randrange(n)] if n else None

        # subscriptions
        sub_recs: list[dict[str, Any]] = []
        for ts in self._times(subscriptions, start, now, same_second_rate):
            cust = customer_before(ts)
            if cust is None or not monthly_prices:
                continue
            periods = max((now - ts) // (30 * 86400), 0)
            roll = rng.random()
            status = "active" if roll < 0.8 else "canceled" if roll < 0.9 else "past_due" if roll < 0.95 else "trialing"
            rec = {
                "id": new_id("sub"),
                "created": ts,
                "customer": cust["id"],
                "current_period_start": ts + periods * 30 * 86400,
                "current_period_end": ts + (periods + 1) * 30 * 86400,
                "_price": rng.choice(monthly_prices)["id"],
            }
            if status != "active":
                rec["status"] = status
            if status == "canceled":
                rec["_canceled_at"] = min(now, ts + rng.randint(1, 200) * 86400)
            sub_recs.append(rec)
        tables["subscriptions"].load(sub_recs)
        # invoices
        inv_recs: list[dict[str, Any]] = []
        for ts in self._times(invoices, start, now, same_second_rate):
            sub = rng.choice(sub_recs) if sub_recs and rng.random() < 0.6 else None
            if sub is not None and sub["created"] > ts:
                sub = None
            cust = {"id": sub["customer"]} if sub else customer_before(ts)
            if cust is None:
                continue
            roll = rng.random()
            status = "paid" if roll < 0.8 else "open" if roll < 0.9 else "void" if roll < 0.95 else "draft"
            rec = {
                "id": new_id("in"),
                "created": ts,
                "customer": cust["id"],
                "total": rng.randint(5, 500) * 100,
                "period_start": ts - 30 * 86400,
                "period_end": ts,
            }
            if status != "paid":
                rec["status"] = status
            if sub is not None:
                rec["subscription"] = sub["id"]
            inv_recs.append(rec)
        tables["invoices"].load(inv_recs)
        # charges, their payment intents and balance transactions; refunds
        ch_recs: list[dict[str, Any]] = []
        pi_recs: list[dict[str, Any]] = []
        txn_recs: list[dict[str, Any]] = []
        re_recs: list[dict[str, Any]] = []
        for ts in self._times(charges, start, now, same_second_rate):
            cust = customer_before(ts)
            amount = rng.randint(1, 2000) * 50
            roll = rng.random()
            status = "succeeded" if roll < 0.9 else "failed" if roll < 0.98 else "pending"
            ch_id, pi_id = new_id("ch"), new_id("pi")
            ch = {"id": ch_id, "created": ts, "amount": amount, "payment_intent": pi_id}
            pi = {"id": pi_id, "created": ts, "amount": amount, "latest_charge": ch_id}
            if cust is not None:
                ch["customer"] = pi["customer"] = cust["id"]
            if status != "succeeded":
                ch["status"] = status
                pi["status"] = "requires_payment_method" if status == "failed" else "processing"
            else:
                fee = amount * 29 // 1000 + 30
                txn = {"id": new_id("txn"), "created": ts, "amount": amount, "fee": fee, "source": ch_id}
                ch["balance_transaction"] = txn["id"]
                txn_recs.append(txn)
                if rng.random() < refund_rate:
                    rts = min(now, ts + rng.randint(3600, 10 * 86400))
                    refund_amount = amount if rng.random() < 0.7 else amount // 2
                    re_id = new_id("re")
                    rtxn = {
                        "id": new_id("txn"),
                        "created": rts,
                        "amount": -refund_amount,
                        "source": re_id,
                        "type": "refund",
                    }
                    re_recs.append(
                        {
                            "id": re_id,
                            "created": rts,
                            "amount": refund_amount,
                            "charge": ch_id,
                            "payment_intent": pi_id,
                            "balance_transaction": rtxn["id"],
                            "reason": "requested_by_customer",
                        }
                    )
                    txn_recs.append(rtxn)
                    ch["amount_refunded"] = refund_amount
            ch_recs.append(ch)
            pi_recs.append(pi)
        tables["charges"].load(ch_recs)
        tables["payment_intents"].load(pi_recs)
        tables["balance_transactions"].load(txn_recs)
        tables["refunds"].load(re_recs)
        self._events(event_days)

    def _events(self, event_days: int) -> None:
        """Creation (and some update) events for the recent part of the account's history."""
        acct, rng, now = self.acct, self.rng, self.now
        since = now - event_days * 86400
        kinds = {
            "customers": "customer.created",
            "charges": "charge.succeeded",
            "invoices": "invoice.created",
            "subscriptions": "customer.subscription.created",
            "payment_intents": "payment_intent.succeeded",
            "products": "product.created",
            "prices": "price.created",
        }
        events: list[dict[str, Any]] = []

        def add(
            resource: str, rec: dict[str, Any], type_: str, ts: int, previous: dict[str, Any] | None = None
        ) -> None:
            events.append(
                {
                    "id": acct.new_id("evt"),
                    "created": ts,
                    "type": type_,
                    "_resource": resource,
                    "_snapshot": dict(rec),
                    "_previous": previous,
                    "_request": None,
                }
            )

        for resource, type_ in kinds.items():
            table = acct.tables[resource]
            start = bisect.bisect_left(table.keys, (since, ""))
            for created, obj_id in table.keys[start:]:
                rec = table.rows[obj_id]
                if resource == "charges" and rec.get("status") == "failed":
                    add(resource, rec, "charge.failed", created)
                    continue
                add(resource, rec, type_, created)
                if resource == "invoices" and rec.get("status") is None:
                    add(resource, rec, "invoice.paid", created + 60)
        refunds = acct.tables["refunds"]
        for created, obj_id in refunds.keys[bisect.bisect_left(refunds.keys, (since, "")) :]:
            charge = acct.tables["charges"].rows[refunds.rows[obj_id]["charge"]]
            add("charges", charge, "charge.refunded", created, {"amount_refunded": 0, "refunded": False})
        # some older customers changed their e-mail address recently
        customers = acct.tables["customers"]
        older = customers.keys[: bisect.bisect_left(customers.keys, (since, ""))]
        for _, obj_id in rng.sample(older, min(len(older), max(1, len(older) // 50))) if older else []:
            rec = customers.rows[obj_id]
            add("customers", rec, "customer.updated", rng.randint(since, now), {"email": "old-" + rec["email"]})
        acct.tables["events"].load(events)


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator as a process (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Local Stripe API emulator")
    common_arguments(parser)
    parser.add_argument("--keys", default="sk_test_dativo_fake_1", help="comma-separated secret keys, one account each")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--charges", type=int, default=1000)
    parser.add_argument("--invoices", type=int, default=None)
    parser.add_argument("--subscriptions", type=int, default=None)
    parser.add_argument("--products", type=int, default=10)
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--rps", type=float, default=None, help="requests per second per account (default: unlimited)")
    parser.add_argument("--burst", type=int, default=None, help="token-bucket size (default: rps)")
    args = parser.parse_args(argv)
    limits = {"default": Limit(rps=args.rps, burst=args.burst)} if args.rps else None
    clock = FakeClock(args.now) if args.now is not None else None
    emu = StripeEmulator(clock=clock, latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, limits=limits)
    for i, key in enumerate(k for k in args.keys.split(",") if k):
        emu.add_account(
            key,
            seed=args.seed + i,
            customers=args.customers,
            charges=args.charges,
            invoices=args.invoices,
            subscriptions=args.subscriptions,
            products=args.products,
            history_days=args.history_days,
        )
    run_cli(emu, args.host, args.port)


if __name__ == "__main__":
    main()
