"""External engines: Singer taps, Airbyte sources and Meltano extractors as dativo sources.

A recipe with ``engine: singer | airbyte | meltano`` runs an external connector as a subprocess in
its own virtualenv; the Dagster side does not know which engine ran. Modules:

* :mod:`.venvs`: one cached virtualenv per connector package (``connector_venv``, ``executable``);
* :mod:`.process`: ``ConnectorProcess``, a connector subprocess with private input files, a
  message stream with backpressure, stderr redacted into the run log and coded failures;
* :mod:`.base`: ``EngineProtocol`` (the adapter each engine implements) and ``EngineSource`` (the
  Source shared by every engine: stream selection, schemas, batches, checkpoints, state);
* :mod:`.jsonschema`: JSON Schema to Arrow, and records to bounded Arrow batches;
* :mod:`.singer`, :mod:`.meltano`, :mod:`.airbyte`: the engines (source types ``singer``,
  ``meltano``, ``airbyte``, found by the source registry under this package).
"""
