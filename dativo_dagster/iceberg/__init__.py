"""Iceberg side of dativo: catalogs, schema evolution, the streaming exactly-once writer."""
