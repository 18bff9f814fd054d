"""HubSpot CRM: contacts, companies, deals, tickets (and custom objects) and owners.

The official ``hubspot-api-client`` builds every request (paths, query strings, bodies); its HTTP
layer is replaced per object read by an adapter over the read's
:class:`~dativo_dagster.api.transport.ApiTransport` (see :mod:`dativo_dagster.compat.hubspot`),
so dativo's toolkit does the rate limiting (one token bucket per credential for general calls and
one for the search endpoints, which HubSpot limits to 5 requests per second per token), retries
honouring ``Retry-After`` and HubSpot's rate-limit headers, the breaker, the classification and
the counting. The client's own urllib3 retries are off: they would sleep through a ``Retry-After``
out of sight of the limiter and the counters.

Incremental reads go through the search endpoint, filtered on last-modified time
(``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` otherwise):

* The cursor is an epoch-millisecond instant meaning *every record modified before it is
  loaded*. A read covers ``[cursor - lookback, now - settle_lag)``: search results lag writes, so
  the newest instants are left for the next run. The new cursor is one millisecond past the
  newest modification loaded (never past the read's end), so a re-run with nothing new reads
  nothing and commits nothing: the cursor does not move only because time passed.
* Long reads commit in slices of ``incremental.slice_days`` (default 30): a killed backfill
  resumes at the last committed slice.
* HubSpot answers at most 10,000 results per query (paging past them is HTTP 400). A window whose
  ``total`` exceeds that is split by time at its 10,000th record (one request sorted by time,
  ``after=9999``, ``limit=1``): the part before holds fewer than 10,000 records, the rest is
  examined again. A single millisecond holding more (a bulk import stamps one time on every
  record) is paged by ``hs_object_id`` instead (filter ``GT`` the last id, sorted by id), which
  never pages by offset at all. Within a window results are sorted by id; if the window's total
  changes between pages (a record was modified and left it, shifting the offsets) the window
  continues by id from the last record read, so no record is skipped or read twice.

``full_refresh`` reads the list endpoint with ``after`` paging; owners are always read in full.
Associations (``options.associations``) are stored as one list of ids per associated object
type: the list endpoint returns them inline, search results are completed through the
associations v4 batch-read endpoint.

Modules, in the order a read goes through them:

* :mod:`.source`: :class:`HubSpotSource`, which checks objects, plans a read and streams it;
* :mod:`.options`: the connection and per-object options, validated at config load;
* :mod:`.tokens`: the credential's access tokens, an OAuth token's refresh;
* :mod:`.client`: the client's HTTP on dativo's transport (the pool adapter, ``api_factory``);
* :mod:`.errors`: what HubSpot's error answers mean, and the coded error for each;
* :mod:`.properties`: property discovery, type mapping and the plan of an object read;
* :mod:`.search`: search bodies and the splitting of a window into complete queries;
* :mod:`.reads`: the requests reading CRM records (search, list, associations);
* :mod:`.rows`: records into Arrow batches, as the contract enforcer reads them;
* :mod:`.owners`: the owners table and its read;
* :mod:`.cursor`: HubSpot times and the last-modified cursor.

Importing this package defines (and so registers) :class:`HubSpotSource`; the ``hubspot``
library itself is imported only when a client is built.
"""

from __future__ import annotations

from dativo_dagster.sources.hubspot.client import TransportPool, api_factory, hubspot_client
from dativo_dagster.sources.hubspot.cursor import HubSpotCursorCodec, iso_ms, parse_time_ms
from dativo_dagster.sources.hubspot.errors import (
    MissingScopesError,
    TokenExpired,
    classify_api_error,
    error_info,
    hubspot_sender,
)
from dativo_dagster.sources.hubspot.options import HubSpotConnection, HubSpotOptions
from dativo_dagster.sources.hubspot.properties import (
    NUMBER_TYPE,
    association_column,
    modified_property,
    property_arrow_type,
)
from dativo_dagster.sources.hubspot.search import (
    Searcher,
    SearchPage,
    oldest_body,
    search_body,
    slice_windows,
    split_at,
    window_pages,
)
from dativo_dagster.sources.hubspot.source import HubSpotSource
from dativo_dagster.sources.hubspot.tokens import AccessTokens

# The names these helpers had when the source was one module; tests import them.
_TokenExpired = TokenExpired
_Tokens = AccessTokens

__all__ = [
    "NUMBER_TYPE",
    "AccessTokens",
    "HubSpotConnection",
    "HubSpotCursorCodec",
    "HubSpotOptions",
    "HubSpotSource",
    "MissingScopesError",
    "SearchPage",
    "Searcher",
    "TokenExpired",
    "TransportPool",
    "api_factory",
    "association_column",
    "classify_api_error",
    "error_info",
    "hubspot_client",
    "hubspot_sender",
    "iso_ms",
    "modified_property",
    "oldest_body",
    "parse_time_ms",
    "property_arrow_type",
    "search_body",
    "slice_windows",
    "split_at",
    "window_pages",
]
