"""Resets and the quarantine view: the pure parts (parsing --to, the audit record, reconciliation)."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from dativo_dagster.assets import IngestConfig, ingest_config
from dativo_dagster.config.models import ObjectConfig, Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.config.secrets import register_secrets
from dativo_dagster.errors import ConfigError, StateError
from dativo_dagster.quarantine_view import json_line, preview_markdown, quarantine_records
from dativo_dagster.resets import (
    ResetRequest,
    check_reset_allowed,
    parse_reset_cursor,
    readable_cursor,
    reset_by_run,
    reset_properties,
    root_run_id,
    run_user,
)
from dativo_dagster.sources.csv.file_mtime import FileCursorCodec, files_after
from dativo_dagster.sources.cursors import DEFAULT_CODEC, CursorCodec, EpochSecondsCodec
from dativo_dagster.sources.hubspot.cursor import HubSpotCursorCodec
from dativo_dagster.sources.stripe.cursor import CODEC as STRIPE
from dativo_dagster.state import (
    PROP_CURSOR,
    PROP_RESET_AT,
    PROP_RESET_BY,
    PROP_RESET_FROM,
    PROP_RESET_KIND,
    PROP_RESET_ROOT_RUN,
    PROP_RESET_TO,
    PROP_RUN_ID,
    CursorState,
    ResetKind,
    ResetRecord,
    TableCursor,
    check_forward,
    reconcile_cursor,
)
from dativo_dagster.types import (
    CURSOR_FROM_COLUMN,
    KEY_COLUMN,
    REASON_COLUMN,
    REJECTED_AT_COLUMN,
    RUN_ID_COLUMN,
)


def _obj(strategy: str = "updated", cursor_field: str | None = "updated_at", **config: object) -> ObjectPlan:
    incremental: dict[str, object] = {"strategy": strategy}
    if cursor_field is not None:
        incremental["cursor_field"] = cursor_field
    return ObjectPlan(
        tenant="acme",
        job="shop",
        source_name="csv",
        config=ObjectConfig.model_validate({"name": "orders", "incremental": incremental, **config}),
        contract=None,
        options={},
        primary_key=("id",),
        namespace="acme",
        table="orders",
        max_rejected_rate=0.05,
    )


# --------------------------------------------------------------------------- the request


def test_a_reset_is_exactly_one_of_a_value_or_a_full_refresh() -> None:
    assert ResetRequest.of(to="5").kind is ResetKind.CURSOR
    assert ResetRequest.of(full_refresh=True).kind is ResetKind.FULL_REFRESH
    for bad in ({}, {"to": "5", "full_refresh": True}):
        with pytest.raises(ConfigError, match="exactly one"):
            ResetRequest.of(**bad)  # type: ignore[arg-type]


def test_run_config_reset_is_validated_and_refused_without_retry() -> None:
    config = ingest_config({"reset": {"to": "2024-01-01", "full_refresh": False}})
    assert config == IngestConfig(reset=ResetRequest(to="2024-01-01"))
    with pytest.raises(Exception) as info:
        ingest_config({"reset": {"to": None, "full_refresh": False}})
    assert "CFG001" in str(info.value) and "exactly one" in str(info.value)
    assert info.value.allow_retries is False  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="row limit with a full refresh"):
        ingest_config({"limit": 10, "reset": {"full_refresh": True}})


def test_reset_by_is_the_launching_user_or_dagster() -> None:
    assert run_user({"dagster/user": "ana@example.com"}) == "ana@example.com"
    assert run_user({}) == "dagster"


# --------------------------------------------------------------------------- parsing --to


@pytest.mark.parametrize(
    ("text", "value_type", "expected"),
    [
        ("2024-03-01", pa.timestamp("us", tz="UTC"), "2024-03-01T00:00:00.000000+00:00"),
        ("2024-03-01T12:00:00Z", pa.timestamp("us", tz="UTC"), "2024-03-01T12:00:00.000000+00:00"),
        ("2024-03-01T14:00:00+02:00", pa.timestamp("us", tz="UTC"), "2024-03-01T12:00:00.000000+00:00"),
        ("2024-03-01 12:00:00", pa.timestamp("us"), "2024-03-01T12:00:00.000000"),
        ("2024-03-01", pa.date32(), "2024-03-01"),
        (" 42 ", pa.int64(), 42),
        ("-7", pa.int32(), -7),
        ("4.50", pa.decimal128(10, 2), "4.50"),
        ("42", pa.decimal128(10, 0), 42),
        ("1.5", pa.float64(), 1.5),
        ("abc 01", pa.string(), "abc 01"),
    ],
)
def test_a_typed_value_is_stored_the_way_a_read_would_store_it(
    text: str, value_type: pa.DataType, expected: object
) -> None:
    assert DEFAULT_CODEC.from_text(text, value_type) == expected


@pytest.mark.parametrize(
    ("text", "value_type"),
    [
        ("yesterday", pa.timestamp("us", tz="UTC")),
        ("2024-13-01", pa.date32()),
        ("1.5", pa.int64()),
        ("0x10", pa.int64()),
        ("1_000", pa.int64()),
        ("nan", pa.float64()),
        ("1e400x", pa.float64()),
        ("", pa.string()),
    ],
)
def test_a_value_the_column_cannot_hold_is_cfg001(text: str, value_type: pa.DataType) -> None:
    with pytest.raises(ConfigError) as info:
        DEFAULT_CODEC.from_text(text, value_type)
    assert info.value.code == "CFG001"


def test_values_of_an_unknown_column_type_are_guessed() -> None:
    assert DEFAULT_CODEC.from_text("17") == 17
    assert DEFAULT_CODEC.from_text("2024-01-02") == "2024-01-02"
    assert DEFAULT_CODEC.from_text("2024-01-02T03:04:05+00:00") == "2024-01-02T03:04:05.000000+00:00"
    assert DEFAULT_CODEC.from_text("abc") == "abc"


def test_numeric_epoch_cursors_accept_times_in_their_unit() -> None:
    codec = CursorCodec(unit="milliseconds")
    assert codec.from_text("2024-01-01T00:00:00Z", pa.int64()) == 1_704_067_200_000
    assert codec.from_text("1704067200000", pa.int64()) == 1_704_067_200_000
    assert EpochSecondsCodec().from_text("2024-01-01") == 1_704_067_200
    assert EpochSecondsCodec().from_text("1704067200") == 1_704_067_200
    with pytest.raises(ConfigError):
        EpochSecondsCodec().from_text("soon")


def test_source_codecs_parse_their_own_cursors() -> None:
    assert STRIPE.from_text("2024-01-01T00:00:00Z") == 1_704_067_200
    assert HubSpotCursorCodec().from_text("2024-01-01T00:00:00.250Z") == 1_704_067_200_250
    with pytest.raises(ConfigError, match="epoch milliseconds"):
        HubSpotCursorCodec().from_text("last tuesday")
    files = FileCursorCodec()
    cursor = files.from_text("2024-01-01T00:00:00Z")
    assert cursor == {"mtime_ns": 1_704_067_200 * 10**9, "paths": []}
    # files modified at or after the instant are read again; older ones are not
    at = 1_704_067_200 * 10**9
    assert files_after([(at - 1, "old.csv"), (at, "same.csv"), (at + 1, "new.csv")], cursor) == [
        (at, "same.csv"),
        (at + 1, "new.csv"),
    ]
    with pytest.raises(ConfigError):
        files.from_text("nope")


def test_parse_reset_cursor_names_the_object_and_refuses_full_refresh_objects() -> None:
    obj = _obj()
    cursor = parse_reset_cursor(obj, DEFAULT_CODEC, "2024-03-01", pa.timestamp("us", tz="UTC"))
    assert cursor == CursorState(Strategy.UPDATED, "updated_at", "2024-03-01T00:00:00.000000+00:00")
    with pytest.raises(ConfigError) as info:
        parse_reset_cursor(obj, DEFAULT_CODEC, "soon", pa.timestamp("us", tz="UTC"))
    assert "acme/shop/orders: --to" in str(info.value) and "updated_at" in str(info.value)
    with pytest.raises(ConfigError, match="keeps no cursor"):
        parse_reset_cursor(_obj("full_refresh", None), DEFAULT_CODEC, "1")


def test_only_an_append_only_object_is_refused_a_move_back() -> None:
    appended = _obj("append", "id")
    earlier, later = CursorState(Strategy.APPEND, "id", 10), CursorState(Strategy.APPEND, "id", 50)
    with pytest.raises(ConfigError, match="second time") as info:
        check_reset_allowed(appended, DEFAULT_CODEC, later, earlier)
    assert "dativo reset acme/shop --object orders --full-refresh" in str(info.value)
    check_reset_allowed(appended, DEFAULT_CODEC, earlier, later)  # forward: skipping rows on purpose
    check_reset_allowed(appended, DEFAULT_CODEC, None, earlier)  # nothing (readable) to compare with
    merged = _obj()
    old, new = (CursorState(Strategy.UPDATED, "updated_at", v) for v in ("2024-01-01", "2024-06-01"))
    check_reset_allowed(merged, DEFAULT_CODEC, new, old)  # merge: re-read rows replace themselves


# --------------------------------------------------------------------------- the audit record


def test_reset_properties_carry_the_new_cursor_and_who_when_from_what() -> None:
    obj = _obj()
    previous = CursorState(Strategy.UPDATED, "updated_at", "2024-06-01T00:00:00.000000+00:00")
    new = CursorState(Strategy.UPDATED, "updated_at", "2024-03-01T00:00:00.000000+00:00")
    props = reset_properties(
        obj,
        kind=ResetKind.CURSOR,
        by="ana",
        at="2025-01-01T00:00:00+00:00",
        previous_raw=previous.to_json(),
        new=new,
        run_id="reset-1",
    )
    assert props[PROP_CURSOR] == props[PROP_RESET_TO] == new.to_json()
    assert props[PROP_RESET_FROM] == previous.to_json()
    assert (props[PROP_RESET_BY], props[PROP_RESET_AT], props[PROP_RESET_KIND]) == (
        "ana",
        "2025-01-01T00:00:00+00:00",
        "cursor",
    )
    assert all(isinstance(v, str) for v in props.values())  # Iceberg summary values are strings
    record = ResetRecord.from_summary(props, 7)
    assert record == ResetRecord(
        ResetKind.CURSOR, "ana", "2025-01-01T00:00:00+00:00", previous.to_json(), new.to_json(), "reset-1", 7
    )
    full = reset_properties(
        obj, kind=ResetKind.FULL_REFRESH, by="ana", at="t", previous_raw="{broken", new=None, run_id="r"
    )
    assert full[PROP_CURSOR] == full[PROP_RESET_TO] == "null"
    assert full[PROP_RESET_FROM] == "{broken"  # an unreadable cursor is kept as it was, for the audit
    assert readable_cursor("{broken") is None


def test_a_snapshot_without_reset_properties_is_no_reset_and_a_bad_kind_is_state001() -> None:
    assert ResetRecord.from_summary({PROP_RUN_ID: "r", PROP_CURSOR: "null"}) is None
    with pytest.raises(StateError):
        ResetRecord.from_summary({PROP_RESET_KIND: "rewind"})


def test_a_retried_step_finds_the_reset_its_run_recorded() -> None:
    props = {PROP_RUN_ID: "run-1", PROP_RESET_KIND: "full_refresh", PROP_RESET_BY: "dagster"}
    history = [{PROP_RUN_ID: "run-1", PROP_CURSOR: "null"}, props, {PROP_RUN_ID: "run-0"}]
    found = reset_by_run(history, "run-1")
    assert found is not None and found.kind is ResetKind.FULL_REFRESH
    assert reset_by_run(history, "run-2") is None


def test_a_reexecution_finds_the_reset_of_its_chain() -> None:
    # the chain's second run recorded the reset (its first failed before): the third finds it by the root
    props = reset_properties(
        _obj(),
        kind=ResetKind.FULL_REFRESH,
        by="ana",
        at="t",
        previous_raw="null",
        new=None,
        run_id="run-2",
        root_run_id="run-1",
    )
    assert props[PROP_RUN_ID] == "run-2" and props[PROP_RESET_ROOT_RUN] == "run-1"
    assert reset_by_run([props], "run-1") is not None
    assert reset_by_run([props], "run-2") is None  # a new chain that happens to share nothing


def test_the_root_of_a_run_chain() -> None:
    class Run:
        def __init__(self, run_id: str, root: str | None = None, tags: dict[str, str] | None = None) -> None:
            self.run_id, self.root_run_id, self.tags = run_id, root, tags or {}

    assert root_run_id(Run("a")) == "a"
    assert root_run_id(Run("b", root="a")) == "a"
    assert root_run_id(Run("b", tags={"dagster/root_run_id": "a"})) == "a"


# --------------------------------------------------------------------------- reconciliation


def _reset(kind: ResetKind) -> ResetRecord:
    return ResetRecord(kind, "ana", "2025-01-01T00:00:00+00:00", '{"old":1}', "null", "reset-1", 9)


def test_the_table_reset_wins_over_dagsters_newer_looking_copy() -> None:
    reset_to = CursorState(Strategy.UPDATED, "updated_at", "2024-01-01")
    dagster = CursorState(Strategy.UPDATED, "updated_at", "2024-09-01")
    result = reconcile_cursor(
        dagster_cursor=dagster,
        dagster_snapshot_id=5,
        table=TableCursor(reset_to, 9, "reset-1", frozenset({5, 9}), reset=_reset(ResetKind.CURSOR)),
        table_exists=True,
        initial=None,
    )
    assert result.cursor == reset_to and result.origin == "reset"
    assert "reset by ana" in result.note and not result.full_refresh
    # and the read from there may not be refused as a cursor moving backwards
    check_forward(result.cursor, CursorState(Strategy.UPDATED, "updated_at", "2024-02-01"), label="a/b/c")


def test_a_full_refresh_reset_starts_from_the_initial_value_and_replaces_the_table() -> None:
    initial = CursorState(Strategy.UPDATED, "updated_at", "2020-01-01")
    result = reconcile_cursor(
        dagster_cursor=CursorState(Strategy.UPDATED, "updated_at", "2024-09-01"),
        dagster_snapshot_id=5,
        table=TableCursor(None, 9, "reset-1", frozenset({5, 9}), reset=_reset(ResetKind.FULL_REFRESH)),
        table_exists=True,
        initial=initial,
    )
    assert result.cursor == initial and result.full_refresh
    assert "replacing the table" in result.note


def test_the_state001_hint_names_the_reset_command() -> None:
    with pytest.raises(StateError) as info:
        check_forward(
            CursorState(Strategy.UPDATED, "t", "2024-02-01"),
            CursorState(Strategy.UPDATED, "t", "2024-01-01"),
            label="acme/shop/orders",
        )
    assert "dativo reset acme/shop --object orders --to VALUE" in str(info.value)


# --------------------------------------------------------------------------- quarantine view


def _quarantine_batch(reasons: list[str], amounts: list[str | None]) -> pa.RecordBatch:
    count = len(reasons)
    when = pa.array([dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)] * count, pa.timestamp("us", tz="UTC"))
    return pa.RecordBatch.from_pydict(
        {
            "order_id": [str(i) for i in range(count)],
            "amount": amounts,
            REASON_COLUMN: reasons,
            RUN_ID_COLUMN: ["run-1"] * count,
            REJECTED_AT_COLUMN: when,
            KEY_COLUMN: [str(i) for i in range(count)],
            CURSOR_FROM_COLUMN: [""] * count,
        }
    )


def test_quarantine_records_keep_values_apart_from_bookkeeping_and_stop_at_the_limit() -> None:
    batches = [_quarantine_batch(["bad amount"] * 3, ["x", None, "y"]), _quarantine_batch(["late"], ["z"])]
    records = quarantine_records(batches, 2)
    assert len(records) == 2
    assert records[0] == {
        "rejected_at": "2025-01-01T00:00:00+00:00",
        "run_id": "run-1",
        "reason": "bad amount",
        "key": "0",
        "values": {"order_id": "0", "amount": "x"},
    }
    assert len(quarantine_records(batches)) == 4


def test_the_preview_is_markdown_safe_redacted_and_shortened() -> None:
    register_secrets(["s3cr3t-value"])
    amount = "a|b\nc\x1b[31m <script> s3cr3t-value " + "z" * 100
    records = quarantine_records([_quarantine_batch(["amount: cannot convert | here"], [amount])])
    text = preview_markdown(records, rejected=12, table="acme.orders__quarantine", command="dativo quarantine x")
    assert "12 row(s) quarantined by this run** (first 1 shown)" in text
    row = text.splitlines()[-1]
    assert row.count(" | ") == 1  # the pipes of the values are escaped: still two cells
    assert "\x1b" not in text and "\\x1b" in text
    assert "<script>" not in text and "s3cr3t-value" not in text
    assert "…" in row and "z" * 100 not in row


def test_json_lines_parse_and_escape_control_characters() -> None:
    register_secrets(["s3cr3t-value"])
    records = quarantine_records([_quarantine_batch(["r"], ["\x1b]0;title\x07 s3cr3t-value"])])
    line = json_line(records[0])
    assert "\x1b" not in line and "\n" not in line
    parsed = json.loads(line)
    assert parsed["reason"] == "r" and parsed["values"]["amount"].startswith("\x1b]0;title")
    assert "s3cr3t-value" not in parsed["values"]["amount"]
