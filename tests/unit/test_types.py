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


# ----------------------------------------------------------------------------- exact or quarantined


import pytest  # noqa: E402

from dativo_dagster.errors import ConfigError  # noqa: E402
from dativo_dagster.types import SOURCE_REASON_COLUMN, cast_column, check_table_schema  # noqa: E402


@pytest.mark.parametrize(
    ("values", "source_type", "target", "good", "rejected"),
    [
        ([0, 1, 2], pa.int64(), pa.bool_(), [False, True, None], [2]),  # Arrow maps 2 to true
        ([0.0, 1.0, 0.5], pa.float64(), pa.bool_(), [False, True, None], [2]),
        ([1.5, 2.0], pa.float64(), pa.decimal128(10, 0), [None, decimal.Decimal("2")], [0]),  # Arrow rounds to 2
        ([0.1, 1.005], pa.float64(), pa.decimal128(10, 2), [decimal.Decimal("0.10"), None], [1]),
        (["0x10", "12"], pa.string(), pa.int64(), [None, 12], [0]),  # Arrow reads hex
        (["1e400", "inf", "1.5"], pa.string(), pa.float64(), [None, float("inf"), 1.5], [0]),  # overflow
        ([1e300, 1.0], pa.float64(), pa.float32(), [None, 1.0], [0]),
        (["3.4028236e38"], pa.string(), pa.float32(), [None], [0]),
        ([decimal.Decimal("1.5")], pa.decimal128(5, 1), pa.int64(), [None], [0]),
    ],
)
def test_casts_are_exact_or_report_the_row(
    values: list[object], source_type: pa.DataType, target: pa.DataType, good: list[object], rejected: list[int]
) -> None:
    array, errors = cast_column(pa.array(values, source_type), target)
    assert array.to_pylist() == good
    assert errors is not None
    assert [i for i, e in enumerate(errors) if e] == rejected


def test_one_odd_array_rejects_only_its_row() -> None:
    enforcer = ContractEnforcer(
        pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("days", pa.list_(pa.date32()))])
    )
    batch = pa.RecordBatch.from_pydict(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "days": pa.array(['["2024-01-01"]', '["2024-01-02","infinity"]', '[["2024-01-01"]]', None]),
        }
    )
    out = enforcer.enforce(batch, "r")
    assert out.good.column("id").to_pylist() == [1, 4]
    reasons = out.rejected.column(REASON_COLUMN).to_pylist()  # type: ignore[union-attr]
    assert "element 2 ('infinity')" in reasons[0]
    assert "multi-dimensional" in reasons[1]


def test_rows_the_source_could_not_read_are_rejected_with_its_reason() -> None:
    enforcer = ContractEnforcer(pa.schema([pa.field("id", pa.int64())]), primary_key=("id",))
    batch = pa.RecordBatch.from_pydict(
        {"id": pa.array(["1", "2"]), SOURCE_REASON_COLUMN: pa.array([None, "line 3: expected 2 fields, found 3"])}
    )
    out = enforcer.enforce(batch, "r")
    assert out.good.column("id").to_pylist() == [1]
    assert out.rejected.column(REASON_COLUMN).to_pylist() == ["line 3: expected 2 fields, found 3"]  # type: ignore[union-attr]
    assert out.rejected.column("_dativo_key").to_pylist() == ["2"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (pa.field("_dativo_reason", pa.string()), "reserved prefix"),
        (pa.field("_DATIVO_x", pa.string()), "reserved prefix"),
        (pa.field("amount", pa.decimal256(65, 30)), "exceeds Iceberg's 38 digits"),
        (pa.field("amount", pa.decimal128(5, -2)), "negative scale"),
        (pa.field("n", pa.uint64()), "unsigned 64-bit"),
        (pa.field("d", pa.dictionary(pa.int32(), pa.string())), "no Iceberg equivalent"),
        (pa.field("tags", pa.list_(pa.decimal256(50, 2))), "exceeds Iceberg's 38 digits"),
    ],
)
def test_schemas_iceberg_cannot_hold_are_cfg001_naming_the_column(field: pa.Field, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        check_table_schema(pa.schema([pa.field("id", pa.int64()), field]), "acme/j/o")
    assert f"column '{field.name}'" in str(raised.value)


def test_columns_differing_only_by_case_are_refused() -> None:
    with pytest.raises(ConfigError, match="differ only by case"):
        check_table_schema(pa.schema([pa.field("Id", pa.int64()), pa.field("id", pa.int64())]), "t")
