"""JSON Schema of connector streams to Arrow, and records to batches (exact, or quarantined with a reason)."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pyarrow as pa
import pytest

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.engines.jsonschema import RecordBatcher, is_json_field, stream_arrow_schema, unmapped_fields
from dativo_dagster.types import SOURCE_REASON_COLUMN, ContractEnforcer, type_label

UTC = dt.timezone.utc

# What tap-mysql discovers for a table with an int key, a decimal(10,2), a datetime, a date, a
# time, a tinyint(1) and a JSON column.
TAP_MYSQL_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["integer"], "inclusion": "automatic", "minimum": -2147483648, "maximum": 2147483647},
        "amount": {"type": ["null", "number"], "inclusion": "available", "multipleOf": 0.01},
        "whole": {"type": ["null", "number"], "multipleOf": 1},
        "ratio": {"type": ["null", "number"]},
        "name": {"type": ["null", "string"], "maxLength": 255},
        "updated_at": {"type": ["null", "string"], "format": "date-time"},
        "day": {"type": ["null", "string"], "format": "date"},
        "at_time": {"type": ["null", "string"], "format": "time"},
        "active": {"type": ["null", "boolean"]},
        "doc": {"type": ["null", "object"]},
    },
}

# airbyte-source-faker's purchases and users streams (abridged), as its discover prints them.
FAKER_PURCHASES = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "user_id": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time", "airbyte_type": "timestamp_with_timezone"},
        "purchased_at": {"type": ["null", "string"], "format": "date-time", "airbyte_type": "timestamp_with_timezone"},
    },
}
FAKER_USERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "height": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _labels(schema: pa.Schema) -> dict[str, str]:
    return {f.name: type_label(f.type) for f in schema}


def test_singer_tap_mysql_types() -> None:
    schema = stream_arrow_schema(TAP_MYSQL_SCHEMA, key_properties=["id"])
    assert _labels(schema) == {
        "id": "int64",
        "amount": "decimal(38,2)",
        "whole": "decimal(38,0)",
        "ratio": "double",
        "name": "string",
        "updated_at": "timestamptz",
        "day": "date",
        "at_time": "time",
        "active": "boolean",
        "doc": "string",
    }
    assert not schema.field("id").nullable
    assert schema.field("amount").nullable
    assert is_json_field(schema.field("doc")) and not is_json_field(schema.field("name"))


def test_airbyte_types_and_nullability() -> None:
    schema = stream_arrow_schema(
        {
            "type": "object",
            "required": ["must", "maybe"],
            "properties": {
                "must": {"type": "string"},
                "maybe": {"type": ["null", "string"]},
                "loose": {"type": "string"},
                "big": {"type": "number", "airbyte_type": "big_integer"},
                "huge": {"type": "number", "airbyte_type": "big_number"},
                "as_int": {"type": "number", "airbyte_type": "integer"},
                "naive": {"type": "string", "format": "date-time", "airbyte_type": "timestamp_without_timezone"},
                "zoned_time": {"type": "string", "airbyte_type": "time_with_timezone"},
                "plain_time": {"type": "string", "airbyte_type": "time_without_timezone"},
                "either": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
                "mixed": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                "any": {},
                "list": {"type": "array", "items": {"type": "string"}},
                "num_or_int": {"type": ["integer", "number"]},
                "singer_decimal": {
                    "type": ["null", "string"],
                    "format": "singer.decimal",
                    "additionalProperties": {"scale_precision": "(12,3)"},
                },
            },
        }
    )
    assert _labels(schema) == {
        "must": "string",
        "maybe": "string",
        "loose": "string",
        "big": "decimal(38,0)",
        "huge": "string",
        "as_int": "int64",
        "naive": "timestamp",
        "zoned_time": "string",
        "plain_time": "time",
        "either": "int64",
        "mixed": "string",
        "any": "string",
        "list": "string",
        "num_or_int": "double",
        "singer_decimal": "decimal(12,3)",
    }
    # required and not nullable by type → not null; required but null-able, or optional → nullable
    assert [f.name for f in schema if not f.nullable] == ["must"]
    assert schema.field("naive").type == pa.timestamp("us") and schema.field("either").nullable
    assert {f.name for f in schema if is_json_field(f)} == {"mixed", "any", "list"}


def test_faker_records_load_exactly() -> None:
    schema = stream_arrow_schema(FAKER_PURCHASES, key_properties=["id"])
    batcher = RecordBatcher(schema, max_rows=10)
    assert (
        batcher.add(
            {
                "id": 1,
                "user_id": 7,
                "created_at": "2010-03-13T20:03:04.861168",  # faker sends some without an offset: UTC
                "purchased_at": "2014-08-29T20:03:04+00:00",
                "not_in_schema": 5,
            }
        )
        is None
    )
    batcher.add({"id": 2, "user_id": 8, "created_at": "2001-01-05T21:37:30.796635"})
    batch = batcher.flush()
    assert batch is not None and batcher.flush() is None
    assert batch.schema.names == ["id", "user_id", "created_at", "purchased_at"]
    rows = batch.to_pylist()
    assert rows[0]["created_at"] == dt.datetime(2010, 3, 13, 20, 3, 4, 861168, tzinfo=UTC)
    assert rows[0]["purchased_at"] == dt.datetime(2014, 8, 29, 20, 3, 4, tzinfo=UTC)
    assert rows[1]["purchased_at"] is None


def test_json_columns_hold_json_documents() -> None:
    schema = stream_arrow_schema(FAKER_USERS)
    batcher = RecordBatcher(schema)
    batcher.add({"id": 1, "height": "1.78", "address": {"city": "Zürich", "n": 1.5}})
    batcher.add({"id": 2, "height": 1.5, "address": "just text"})
    batch = batcher.flush()
    assert batch is not None and SOURCE_REASON_COLUMN not in batch.schema.names
    rows = batch.to_pylist()
    assert json.loads(rows[0]["address"]) == {"city": "Zürich", "n": 1.5}
    assert json.loads(rows[1]["address"]) == "just text"
    assert rows[1]["height"] == "1.5"  # a number in a string column is kept as its text


def test_values_that_do_not_convert_exactly_get_a_reason() -> None:
    schema = stream_arrow_schema(TAP_MYSQL_SCHEMA, key_properties=["id"])
    batcher = RecordBatcher(schema)
    good = {"id": 1, "amount": 12.34, "updated_at": "2024-01-02T03:04:05.000000Z", "day": "2024-01-02"}
    batcher.add(good)
    batcher.add({"id": 2.5, "amount": 1.005, "updated_at": "yesterday"})
    batcher.add({"id": 2**63, "day": "2024-02-30", "active": 2})
    batcher.add({"id": 4, "active": 1, "updated_at": 1700000000, "at_time": "10:11:12", "doc": {"a": [1, 2]}})
    batch = batcher.flush()
    assert batch is not None
    rows = batch.to_pylist()
    assert rows[0]["amount"] == decimal.Decimal("12.34") and rows[0][SOURCE_REASON_COLUMN] is None
    assert rows[0]["updated_at"] == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    second = rows[1][SOURCE_REASON_COLUMN]
    assert "id: cannot convert '2.5' to int64" in second
    assert "amount: cannot convert '1.005' to decimal(38,2)" in second
    assert "updated_at: cannot convert 'yesterday' to timestamptz" in second
    assert rows[1]["id"] is None and rows[1]["amount"] is None
    third = rows[2][SOURCE_REASON_COLUMN]
    assert "id: cannot convert '9223372036854775808' to int64" in third
    assert "day: cannot convert '2024-02-30' to date" in third
    assert "active: cannot convert '2' to boolean" in third
    # an epoch number is not a date-time (Arrow alone would read it as microseconds)
    assert "updated_at: cannot convert '1700000000' to timestamptz" in rows[3][SOURCE_REASON_COLUMN]
    assert rows[3]["at_time"] == dt.time(10, 11, 12) and rows[3]["active"] is True  # 0 and 1 are booleans
    # the enforcer rejects exactly the flagged rows, with the source's reason
    enforced = ContractEnforcer(schema, primary_key=("id",)).enforce(batch, "run-1")
    assert enforced.good.num_rows == 1 and enforced.rejected_rows == 3


def test_batches_are_bounded_by_rows_and_bytes() -> None:
    schema = stream_arrow_schema(FAKER_USERS)
    by_rows = RecordBatcher(schema, max_rows=3)
    out = [by_rows.add({"id": i, "height": "x"}) for i in range(7)]
    assert [b.num_rows for b in out if b is not None] == [3, 3] and by_rows.pending_rows == 1
    by_bytes = RecordBatcher(schema, max_bytes=1000)
    sizes = [b.num_rows for i in range(100) if (b := by_bytes.add({"id": i, "height": "h" * 200})) is not None]
    assert sizes and all(n <= 5 for n in sizes)
    by_given = RecordBatcher(schema, max_bytes=1000)
    given = [b for i in range(10) if (b := by_given.add({"id": i}, size=300)) is not None]
    assert [b.num_rows for b in given] == [4, 4]
    with pytest.raises(ValueError):
        RecordBatcher(schema, max_rows=0)


def test_contract_wins_and_unknown_fields_are_listed() -> None:
    contract = SchemaContract.model_validate(
        {
            "name": "faker/purchases",
            "version": 1,
            "primary_key": ["purchase_id"],
            "columns": [
                {"name": "purchase_id", "type": "int64", "required": True, "source_name": "id"},
                {"name": "created_at", "type": "timestamptz", "required": True},
                {"name": "user_id", "type": "string"},
            ],
        }
    )
    schema = stream_arrow_schema(FAKER_PURCHASES, contract=contract)
    assert _labels(schema) == {"id": "int64", "created_at": "timestamptz", "user_id": "string"}
    assert unmapped_fields(FAKER_PURCHASES, contract) == ["purchased_at"]
    batcher = RecordBatcher(schema)
    batcher.add({"id": 1, "created_at": "2024-01-01T00:00:00Z", "user_id": 7})
    batcher.add({"id": 2, "user_id": "8"})  # required created_at missing: the enforcer says so
    batch = batcher.flush()
    assert batch is not None
    enforced = ContractEnforcer.for_contract(contract, ("purchase_id",)).enforce(batch, "run-1")
    assert enforced.good.to_pylist() == [
        {"purchase_id": 1, "created_at": dt.datetime(2024, 1, 1, tzinfo=UTC), "user_id": "7"}
    ]
    assert enforced.rejected is not None
    assert "created_at: required value is missing" in enforced.rejected.to_pylist()[0]["_dativo_reason"]


def test_floats_and_booleans_are_exact_or_quarantined() -> None:
    import decimal

    from dativo_dagster.engines.jsonschema import build_batch

    schema = pa.schema([pa.field("f", pa.float64()), pa.field("b", pa.bool_())])
    batch = build_batch(
        [
            {"f": decimal.Decimal("12345678901234567.89"), "b": True},
            {"f": decimal.Decimal("0.1"), "b": "no"},
            {"f": 9007199254740993, "b": False},
            {"f": 2**53, "b": None},
        ],
        schema,
    ).to_pylist()
    assert [row["f"] for row in batch] == [None, 0.1, None, 9007199254740992.0]
    assert [row["b"] for row in batch] == [True, None, False, None]
    reasons = [row["_dativo_source_reason"] for row in batch]
    assert "more digits than a floating-point number holds" in reasons[0]
    assert "is not a JSON boolean" in reasons[1] and "more digits" in reasons[2] and reasons[3] is None
