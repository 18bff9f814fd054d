"""Home of the local HTTP emulators of SaaS APIs (Stripe, HubSpot, Google).

The file and database sources shipped so far are tested against real files and real servers;
each SaaS connector adds its emulator here, implementing the vendor's pagination, filtering,
rate-limit and error semantics as the vendor specifications describe them.

* ``server`` — the shared core: threaded HTTP server (in-process or as a subprocess), fake
  clock, per-credential rate limits, latency, fault injection, counters, ``/__fake__/`` admin API.
* ``stripe_api`` — Stripe's v1 list endpoints (customers, charges, ... events).
* ``hubspot_api`` — HubSpot's CRM v3 objects, search, owners, properties and OAuth.
* ``google_api`` — Google Drive v3 (files list/get/download/export), Sheets v4 (spreadsheets
  and values reads) and Google's OAuth token endpoint (service-account JWTs, refresh tokens)
  on one host, with Google's error bodies and per-user quotas.
* ``specs`` — validates requests and responses against the vendors' OpenAPI specs and
  Google's discovery documents.
"""
