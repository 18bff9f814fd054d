"""The one place dativo touches private APIs of its dependencies.

pyiceberg (0.12) has no public API for position-delete files, streaming data-file writes or
per-column Parquet options, and Dagster keeps a few things dativo needs (the implicit asset
job's name, the SQLite storage class, cron validation) in private modules. Every such symbol is
imported here, and only here, from exactly pinned versions (pyproject.toml), and
``tests/unit/test_compat.py`` checks each one's presence and shape: an upgrade that moves or
changes one fails there, in one place, with the symbol's name.
"""
