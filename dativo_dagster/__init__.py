"""dativo: multi-tenant data ingestion into Apache Iceberg as a Dagster code location."""

__version__ = "0.1.0"
