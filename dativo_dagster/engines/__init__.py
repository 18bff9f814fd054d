"""External connector engines (Singer, Airbyte, Meltano) behind dativo's Source interface."""
