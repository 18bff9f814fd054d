"""Contract enforcement: vectorised casts, per-value fallback, quarantine reasons."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.types import REASON_COLUMN, ContractEnforcer, contract_arrow_schema, type_label

CONTRACT = SchemaContract.model_validate(
    {
        "name": "t/orders",
        "version": 1,
        "primary_key": ["id"],
        "columns": [
            {"name": "id", "type": "int64", "required": True},
            {"name": "amount", "type": "decimal", "precision": 12, "scale": 2},
            {"name": "paid", "type": "boolean"},
            {"name": "at", "type": "timestamptz", "required": True},
            {"name": "day", "type": "date"},
            {"name": "tags", "type": "list", "item_type": "string"},
        ],
    }
)


def _batch(**columns: list[object]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({k: pa.array(v, pa.string()) for k, v in columns.items()})


def test_contract_schema_types_and_required() -> None:
    schema = contract_arrow_schema(CONTRACT)
    assert [type_label(f.type) for f in schema] == [
        "int64",
        "decimal(12,2)",
        "boolean",
        "timestamptz",
        "date",
        "list<string>",
    ]
    assert not schema.field("id").nullable and schema.field("amount").nullable


def test_clean_text_casts_without_rejections() -> None:
    enforcer = ContractEnforcer.for_contract(CONTRACT)
    out = enforcer.enforce(
        _batch(
            id=["1", "2"],
            amount=["1.50", None],
            paid=["true", "false"],
            at=["2024-01-01T00:00:00Z", "2024-01-02 10:00:00+02:00"],
            day=["2024-01-01", None],
        ),
        "run-1",
    )
    assert out.rejected is None
    row = out.good.to_pylist()[1]
    assert row["at"] == dt.datetime(2024, 1, 2, 8, 0, tzinfo=dt.timezone.utc)
    assert out.good.to_pylist()[0]["amount"] == decimal.Decimal("1.50")
    assert row["tags"] is None  # absent nullable column becomes null


def test_bad_rows_are_split_off_with_reasons() -> None:
    enforcer = ContractEnforcer.for_contract(CONTRACT)
    out = enforcer.enforce(
        _batch(
            id=["1", "x", "3", None],
            amount=["1.234", "2.00", "3.00", "4.00"],
            paid=["yes", "no", "maybe", "t"],
            at=[
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
                "2024-01-01 00:00:00",
                "2024-01-01T00:00:00Z",
            ],
        ),
        "run-7",
    )
    assert out.rejected is not None
    reasons = out.rejected.column(REASON_COLUMN).to_pylist()
    # row 0: too many decimals; row 1: non-integer id; row 2: 'maybe'; row 3: missing id
    assert out.good.num_rows == 0
    assert "amount" in reasons[0] and "decimal places" in reasons[0]
    assert "id: cannot convert 'x'" in reasons[1]
    assert "paid" in reasons[2]
    assert "id: required value is missing" in reasons[3]
    assert set(out.rejected.column("_dativo_run_id").to_pylist()) == {"run-7"}
    # the offending values are kept verbatim for the operator
    assert out.rejected.column("id").to_pylist()[1] == "x"


def test_naive_timestamp_text_for_timestamptz_is_read_as_utc() -> None:
    enforcer = ContractEnforcer.for_contract(CONTRACT)
    out = enforcer.enforce(_batch(id=["1"], at=["2024-05-05 12:00:00"]), "r")
    assert out.rejected is None
    assert out.good.column("at").to_pylist()[0] == dt.datetime(2024, 5, 5, 12, tzinfo=dt.timezone.utc)
