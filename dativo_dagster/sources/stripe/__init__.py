"""Stripe: list endpoints read by ``created`` windows, updates caught through ``/v1/events``.

The official ``stripe`` client builds the requests and parses the answers (its typed errors
included); its HTTP layer is replaced by :class:`~dativo_dagster.api.transport.ApiTransport`, so
dativo's token bucket per credential, retries honouring ``Retry-After``, circuit breaker and error
classification apply to every call, and every call is counted into the object's stats.

How an object is read:

* **Windows of ``created`` times.** Stripe lists newest first and filters on ``created``; a window
  ``created[gte]=lo&created[lt]=hi`` is paged with ``starting_after`` until ``has_more`` is false.
  The newest window ends ``settle_lag_s`` before now, so an object created while the run reads is
  not skipped for ever. A long extraction is planned as several windows (``slice_days``), each one
  Iceberg commit with its own cursor: a killed backfill resumes at the last committed window.
* **The cursor** is the ``created`` second every object before which is loaded (the newest object
  read plus one second: a re-run with nothing new leaves it, and the table, as they are).
* **Updates.** Customers, subscriptions, invoices, products and prices change after they are
  created. For them the cursor also holds an events position: each run first replays
  ``/v1/events`` of the resource's types since that position (the latest version of each object
  wins), then lists the new windows, whose listed versions are newer still. Stripe keeps events
  for 30 days; when the saved position is older, the run says so and re-reads the whole object
  into a fresh copy of the table instead of silently missing updates.

Rows are flattened per the object's schema contract: a column takes a top-level field, or a
nested one through ``source_name: billing_details.address.country``; a ``json`` column keeps an
object as JSON text; a string column holding an expanded object keeps its id.

Modules, in the order a read goes through them:

* :mod:`.source`: :class:`StripeSource`, which checks objects, plans a read and streams it;
* :mod:`.options`: the connection and per-object options, and an object resolved against them;
* :mod:`.resources`: the list endpoints read and the parameters of their requests;
* :mod:`.windows`: ``created`` windows, the slices a read commits, the history bisection;
* :mod:`.events`: the ``/v1/events`` replay, the retention fallback and their counters;
* :mod:`.client`: the ``stripe`` client on dativo's transport, and the requests made through it;
* :mod:`.errors`: the dativo error for each exception the client raises;
* :mod:`.flatten`: the batch columns and the objects flattened into them;
* :mod:`.cursor`: the cursor's positions and their codec.

Importing this package defines (and so registers) :class:`StripeSource`; the ``stripe`` library
itself is imported only when a request is made.
"""

from __future__ import annotations

from dativo_dagster.sources.stripe.client import StripeApi, transport_http_client
from dativo_dagster.sources.stripe.cursor import StripeCursorCodec, cursor_positions, cursor_value
from dativo_dagster.sources.stripe.errors import classify_stripe_error
from dativo_dagster.sources.stripe.events import StripeStats, retention_lost
from dativo_dagster.sources.stripe.flatten import ColumnSpec, cell, column_specs, to_batch, value_at
from dativo_dagster.sources.stripe.options import StripeConnection, StripeOptions
from dativo_dagster.sources.stripe.resources import RESOURCES, StripeResource, expand_params, list_params
from dativo_dagster.sources.stripe.source import StripeSource
from dativo_dagster.sources.stripe.windows import StripeSlice, created_windows, oldest_window_start

__all__ = [
    "RESOURCES",
    "ColumnSpec",
    "StripeApi",
    "StripeConnection",
    "StripeCursorCodec",
    "StripeOptions",
    "StripeResource",
    "StripeSlice",
    "StripeSource",
    "StripeStats",
    "cell",
    "classify_stripe_error",
    "column_specs",
    "created_windows",
    "cursor_positions",
    "cursor_value",
    "expand_params",
    "list_params",
    "oldest_window_start",
    "retention_lost",
    "to_batch",
    "transport_http_client",
    "value_at",
]
