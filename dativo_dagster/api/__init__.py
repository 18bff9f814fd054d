"""The toolkit every API source stands on.

One :class:`~dativo_dagster.api.transport.ApiTransport` per credential per run sends each HTTP
request through the credential's token bucket (in-process, or in Redis across processes), its
circuit breaker and a retry policy that honours ``Retry-After``; it classifies every failure into
dativo's error codes and counts what happened (calls, retries, 429s, seconds throttled, breaker
openings) for the run's processing summary. Paginators are pure functions over response bodies.
A vendor's official client plugs its own HTTP layer into the transport (see the Stripe and
HubSpot sources), so the client keeps its models while dativo keeps control of the wire.
"""
