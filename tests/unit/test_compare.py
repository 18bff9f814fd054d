"""``dativo compare``'s checks over canned Arrow tables: each regression caught, a good copy passed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa

from dativo_dagster.compare import (
    CompareLine,
    Thresholds,
    compare_document,
    compare_tables,
    cursor_overlap,
    relative_diff,
    within,
)

UTC = dt.timezone.utc
START = dt.datetime(2026, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("email", pa.string(), nullable=False),
        pa.field("amount", pa.int64()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("day", pa.date32()),
        pa.field("_dativo_loaded_at", pa.timestamp("us", tz="UTC")),
    ]
)


def orders(ids: range | list[int], schema: pa.Schema = SCHEMA, loaded: dt.datetime = START) -> pa.Table:
    """Order ``n`` was updated ``n`` hours after START; dativo's own column differs per load."""
    ids = list(ids)
    stamps = [START + dt.timedelta(hours=n) for n in ids]
    return pa.table(
        {
            "id": ids,
            "email": [f"user{n}@example.com" for n in ids],
            "amount": [n * 10 for n in ids],
            "updated_at": stamps,
            "day": [s.date() for s in stamps],
            "_dativo_loaded_at": [loaded] * len(ids),
        },
        schema=schema,
    )


def check(lines: list[CompareLine], name: str) -> CompareLine:
    (found,) = [line for line in lines if line.check == name]
    return found


def failed(lines: list[CompareLine]) -> set[str]:
    return {line.check for line in lines if not line.ok}


def run(scratch: pa.Table, production: pa.Table, **kwargs: object) -> list[CompareLine]:
    options: dict = {"cursor": "updated_at", "primary_key": ["id"], "required": ["id", "email", "updated_at"]}
    options.update(kwargs)
    return compare_tables(scratch, production, **options)


def test_a_faithful_copy_of_the_overlapping_range_passes() -> None:
    production = orders(range(1, 201))
    scratch = orders(range(1, 121), loaded=START + dt.timedelta(days=30))  # a limited run from the start
    lines = run(scratch, production)
    assert failed(lines) == set()
    assert check(lines, "rows").scratch == check(lines, "rows").production == 120
    assert check(lines, "overlap").detail.startswith("rows with updated_at in [2026-01-01T01:00:00+00:00")
    assert {line.check for line in lines} >= {"min:updated_at", "max:day", "nulls:email", "distinct_keys"}
    assert not any(line.check.endswith("_dativo_loaded_at") for line in lines)


def test_nulls_in_a_required_column_fail() -> None:
    loose = SCHEMA.set(1, pa.field("email", pa.string()))
    scratch = orders(range(1, 101), loose)
    scratch = scratch.set_column(1, "email", pa.array([None if n % 10 == 0 else "x" for n in range(1, 101)]))
    lines = run(scratch, orders(range(1, 101)))
    assert failed(lines) == {"nulls:email"}
    assert check(lines, "nulls:email").scratch == 10 and check(lines, "nulls:email").production == 0
    # a tolerance lets them through
    assert failed(run(scratch, orders(range(1, 101)), thresholds=Thresholds(max_null_increase=0.1))) == set()


def test_rows_missing_in_a_date_range_fail() -> None:
    production = orders(range(1, 201))
    scratch = orders([n for n in range(1, 201) if not 48 <= n < 72])  # a day of orders lost
    lines = run(scratch, production)
    assert {"rows", "distinct_keys"} <= failed(lines)
    assert "24 production key(s) missing from scratch (e.g. 48, 49" in check(lines, "distinct_keys").detail


def test_missing_rows_at_the_edge_move_the_date_bounds() -> None:
    production = orders(range(1, 101))
    scratch = orders(range(1, 90))  # the last orders lost, compared as whole tables (no cursor)
    lines = run(scratch, production, cursor=None)
    assert {"rows", "max:updated_at", "max:day", "distinct_keys"} <= failed(lines)
    assert check(lines, "max:updated_at").detail == "39600s apart"
    assert "max:updated_at" not in failed(
        run(scratch, production, cursor=None, thresholds=Thresholds(max_date_drift_s=39600, max_row_diff=0.2))
    )


def test_a_dropped_column_and_a_changed_type_fail_an_added_column_passes() -> None:
    production = orders(range(1, 51))
    dropped = orders(range(1, 51)).drop_columns(["amount"])
    assert failed(run(dropped, production)) == {"columns_missing"}
    assert "amount" in check(run(dropped, production), "columns_missing").detail
    retyped = production.set_column(2, "amount", pa.array([str(n) for n in range(1, 51)]))
    lines = run(retyped, production)
    assert failed(lines) == {"column_types"} and check(lines, "column_types").detail == "amount: int64 -> string"
    added = production.append_column("coupon", pa.array(["x"] * 50))
    assert failed(run(added, production)) == set()
    assert failed(run(added, production, thresholds=Thresholds(fail_on_added_columns=True))) == {"columns_added"}


def test_duplicate_keys_in_scratch_fail() -> None:
    production = orders(range(1, 51))
    scratch = pa.concat_tables([orders(range(1, 51)), orders([7])])
    lines = run(scratch, production, thresholds=Thresholds(max_row_diff=0.05))
    assert failed(lines) == {"distinct_keys"} and "1 duplicate(s)" in check(lines, "distinct_keys").detail


def test_row_differences_within_the_threshold_pass() -> None:
    production = orders(range(1, 201))
    scratch = orders([n for n in range(1, 201) if n != 100])
    assert failed(run(scratch, production)) == set()  # 0.5% < 1%
    assert {"rows", "distinct_keys"} == failed(run(scratch, production, thresholds=Thresholds(max_row_diff=0.001)))


def test_a_limited_run_leaves_its_last_cursor_value_out() -> None:
    production = orders(range(1, 101))
    # two orders share the last cursor value the limited run reached; it stopped between them
    production = production.set_column(
        3,
        "updated_at",
        pa.array([START + dt.timedelta(hours=min(n, 50)) for n in range(1, 101)], pa.timestamp("us", tz="UTC")),
    )
    scratch = production.slice(0, 50)
    assert "rows" in failed(run(scratch, production))
    lines = run(scratch, production, high_inclusive=False)
    assert failed(lines) == set() and check(lines, "rows").production == 49
    assert check(lines, "overlap").detail.endswith(")")


def test_no_shared_cursor_range_fails_with_a_hint() -> None:
    lines = run(orders(range(300, 310)), orders(range(1, 101)))
    assert check(lines, "overlap").ok is False and "--from-start" in check(lines, "overlap").detail
    empty = run(orders([]), orders(range(1, 5)))
    assert check(empty, "overlap").detail == "the scratch table is empty"


def test_a_retyped_cursor_column_fails_the_overlap() -> None:
    production = orders(range(1, 5))
    scratch = production.set_column(3, "updated_at", pa.array(["x"] * 4))
    lines = run(scratch, production)
    assert check(lines, "overlap").ok is False and "changed type" in check(lines, "overlap").detail


def test_pieces() -> None:
    table = orders(range(1, 11))
    overlap, mine, theirs = cursor_overlap(orders(range(5, 20)), table, "updated_at")
    assert overlap == (START + dt.timedelta(hours=5), START + dt.timedelta(hours=10))
    assert mine[1] == START + dt.timedelta(hours=19) and theirs[0] == START + dt.timedelta(hours=1)
    assert within(table, "id", 3, 6).num_rows == 4 and within(table, "id", 3, 6, high_inclusive=False).num_rows == 3
    assert relative_diff(0, 0) == 0 and relative_diff(1, 0) == float("inf") and relative_diff(99, 100) == 0.01


def test_the_document_is_json_with_ok_checked_at_and_lines() -> None:
    lines = run(orders(range(1, 10)), orders(range(1, 11)), cursor=None)
    moment = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)
    document = json.loads(json.dumps(compare_document(lines, label="acme/db/orders", checked_at=moment)))
    assert document["passed"] is False and document["created_at"] == "2026-02-01T12:00:00+00:00"
    assert document["object"] == "acme/db/orders"
    assert set(document["checks"][0]) == {"name", "scratch", "production", "threshold", "passed", "detail"}
    bound = next(check for check in document["checks"] if check["name"] == "max:updated_at")
    assert bound["scratch"] == "2026-01-01T09:00:00+00:00" and bound["passed"] is False
    assert compare_document(run(orders(range(1, 5)), orders(range(1, 5))), label="x")["passed"] is True


def test_the_document_keeps_the_contract_the_report_reads(tmp_path: Path) -> None:
    from dativo_dagster.diagnose import read_compare

    document = compare_document(run(orders([1, 3, 4]), orders(range(1, 5))), label="acme/db/orders")
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(document))
    read, why = read_compare(path)
    assert why is None and read is not None and read["passed"] is False
