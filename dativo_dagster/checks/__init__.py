"""Asset checks generated per object: which apply (``specs``), how each is judged (``evaluate``),
and what they read at run time (``facts``, ``runtime``).

This package's ``__init__`` imports nothing: :mod:`.specs` runs at definitions load, where only
Dagster and pydantic may be imported; the other modules read Iceberg tables and run in a run worker.
"""
