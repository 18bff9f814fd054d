"""Asset checks: which are generated per object, their config, and every rule with canned numbers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

from dativo_dagster.build import build_definitions
from dativo_dagster.checks import evaluate as ev
from dativo_dagster.checks.specs import (
    CHECK_CONTRACT,
    CHECK_FRESHNESS,
    CHECK_NOT_NULL,
    CHECK_PRIMARY_KEY,
    CHECK_QUARANTINE,
    CHECK_SCHEMA,
    CHECK_VOLUME,
)
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.models import ChecksConfig, CheckSeverity

WARN = CheckSeverity.WARN
ERROR = CheckSeverity.ERROR


# ----------------------------------------------------------------------------- contract


def test_contract_passes_only_without_rejected_rows() -> None:
    outcome = ev.contract_outcome(100, 0, 0.05, Counter())
    assert outcome.passed
    assert outcome.metadata["rows_read"] == 100 and outcome.metadata["rejected_rate"] == 0


def test_contract_rejections_under_the_threshold_are_a_warning() -> None:
    reasons = Counter({"amount: cannot convert '…' to decimal(12,2)": 3, "status: required value is missing": 1})
    outcome = ev.contract_outcome(100, 4, 0.05, reasons)
    assert not outcome.passed and outcome.severity is WARN
    assert outcome.metadata["rows_rejected"] == 4 and outcome.metadata["threshold"] == 0.05
    preview = outcome.metadata["reasons"].value
    assert preview.index("| 3 | amount") < preview.index("| 1 | status")
    result = outcome.result(dg.AssetKey(["t", "s", "o"]), CHECK_CONTRACT)
    assert result.severity == dg.AssetCheckSeverity.WARN and result.passed is False


def test_contract_above_the_threshold_takes_the_configured_severity() -> None:
    assert ev.contract_outcome(100, 6, 0.05, Counter()).severity is ERROR
    assert ev.contract_outcome(100, 6, 0.05, Counter(), WARN).severity is WARN
    result = ev.contract_outcome(10, 10, 0.05, Counter()).result(dg.AssetKey("a"), CHECK_CONTRACT)
    assert result.severity == dg.AssetCheckSeverity.ERROR and not result.passed


def test_reasons_are_grouped_by_problem_with_values_masked() -> None:
    counter: Counter[str] = Counter()
    ev.count_reasons(
        [
            "amount: cannot convert 'x' to decimal(12,2); status: required value is missing",
            "amount: cannot convert 'secret@example.com' to decimal(12,2)",
            None,
        ],
        counter,
    )
    assert counter == Counter(
        {"amount: cannot convert '…' to decimal(12,2)": 2, "status: required value is missing": 1}
    )
    assert "secret@example.com" not in ev.reasons_preview(counter)


def test_unreadable_lines_group_by_problem_without_their_text() -> None:
    # The CSV source's reasons: a line number, a fixed problem, then the raw line, unquoted.
    counter: Counter[str] = Counter()
    ev.count_reasons(
        [
            "line 7: expected 3 fields, found 2: jane@example.com,4111 1111 1111 1111",
            "line 12: expected 3 fields, found 2: joe@example.com; 5500 0000 0000 0004",
            "a line: expected 3 fields, found 4: a,b,c,d",
            'line 30: unterminated quote: 9,"open',
            "line 31: longer than 1 MiB (2,097,152 bytes), not read: x,y,z",
            "line 40: longer than 65,536 bytes (70,000 bytes), not read: secret,row",
        ],
        counter,
    )
    assert counter == Counter(
        {
            "unreadable line: expected 3 fields, found 2": 2,
            "unreadable line: expected 3 fields, found 4": 1,
            "unreadable line: unterminated quote": 1,
            "unreadable line: longer than 1 MiB, not read": 1,
            "unreadable line: longer than 65,536 bytes, not read": 1,
        }
    )
    preview = ev.reasons_preview(counter)
    for value in ("example.com", "4111", "5500", "open", "secret", "line 7"):
        assert value not in preview


def test_the_detail_after_a_masked_value_is_dropped() -> None:
    counter: Counter[str] = Counter()
    ev.count_reasons(
        [
            "born: cannot convert '20231-01-01' to date (year 20231 is out of range)",
            "born: cannot convert 'x' to date (Invalid isoformat string: x)",
            "name: '\\xff-jane' is not valid UTF-8 (byte 1)",
            "amount: cannot convert 'y' to decimal(12,2)",
        ],
        counter,
    )
    assert counter == Counter(
        {
            "born: cannot convert '…' to date": 2,
            "name: '…' is not valid UTF-8": 1,
            "amount: cannot convert '…' to decimal(12,2)": 1,
        }
    )


def test_reason_counting_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "DISTINCT_REASONS_MAX", 2)
    counter: Counter[str] = Counter()
    ev.count_reasons(["a", "b", "c", "d", "a"], counter)
    assert counter == Counter({"a": 2, "b": 1, ev.OTHER_REASONS: 2})


# ----------------------------------------------------------------------------- table checks


def test_not_null() -> None:
    assert ev.not_null_outcome({"id": 0, "status": 0}, [], ERROR).passed
    failed = ev.not_null_outcome({"id": 0, "status": 3}, [], ERROR)
    assert not failed.passed and failed.severity is ERROR
    assert failed.metadata["nulls/status"] == 3 and failed.metadata["null_rows"] == 3
    missing = ev.not_null_outcome({"id": 0}, ["status"], WARN)
    assert not missing.passed and missing.metadata["missing_columns"] == "status"


def test_primary_key_unique() -> None:
    assert ev.primary_key_outcome(["id"], 10, 0, 0, [], ERROR).passed
    failed = ev.primary_key_outcome(["id"], 10, 2, 3, ["7", "9"], ERROR)
    assert not failed.passed and failed.metadata["duplicate_keys"] == 2
    assert failed.metadata["examples"] == "7, 9"
    # The description becomes the alert message sent to webhooks: counts, never key values.
    assert failed.description == "2 primary key value(s) of (id) appear more than once (3 extra row(s))"


def test_key_values_never_reach_the_alert_message() -> None:
    failed = ev.primary_key_outcome(["email"], 10, 1, 1, ["jane@example.com"], ERROR)
    assert "jane@example.com" not in (failed.description or "")


CONTRACT = [
    ev.ColumnFacts("id", "int64", True),
    ev.ColumnFacts("amount", "decimal(12,2)", True),
    ev.ColumnFacts("note", "string", False),
]


def test_schema_matches() -> None:
    table = [*CONTRACT, ev.ColumnFacts("_dativo_file", "string", False)]
    assert ev.schema_differences(CONTRACT, table) == []
    assert ev.schema_outcome("shop/orders v1", [], ERROR).passed


def test_schema_drift_column_by_column() -> None:
    table = [
        ev.ColumnFacts("id", "int32", True),
        ev.ColumnFacts("amount", "decimal(12,2)", False),
        ev.ColumnFacts("extra", "string", False),
    ]
    differences = ev.schema_differences(CONTRACT, table)
    assert [(d.column, d.kind) for d in differences] == [
        ("id", "type"),
        ("amount", "nullability"),
        ("note", "missing"),
        ("extra", "extra"),
    ]
    outcome = ev.schema_outcome("shop/orders v1", differences, ERROR)
    assert not outcome.passed and outcome.severity is ERROR
    assert outcome.metadata["columns_missing"] == "note" and outcome.metadata["columns_extra"] == "extra"
    assert outcome.metadata["columns_type"] == "id" and outcome.metadata["columns_nullability"] == "amount"
    assert "id: type (contract: int64, table: int32)" in outcome.metadata["details"].value


def test_volume() -> None:
    assert ev.volume_outcome(100, [], 0.5, WARN).passed  # no history yet
    assert ev.volume_outcome(60, [100, 120, 80], 0.5, WARN).passed
    assert ev.volume_outcome(0, [0, 0], 0.5, WARN).passed  # an object that usually reads nothing
    drop = ev.volume_outcome(40, [100, 120, 80], 0.5, WARN)
    assert not drop.passed and drop.severity is WARN and drop.metadata["drop_fraction"] == 0.6
    zero = ev.volume_outcome(0, [5, 0, 7], 0.9, ERROR)
    assert not zero.passed and zero.severity is ERROR and "no rows" in (zero.description or "")


def test_freshness() -> None:
    now = 10 * 60_000
    assert ev.freshness_outcome(now - 5 * 60_000, now, 5, WARN).passed
    stale = ev.freshness_outcome(now - 6 * 60_000, now, 5, WARN)
    assert not stale.passed and stale.severity is WARN and stale.metadata["age_minutes"] == 6
    never = ev.freshness_outcome(None, now, 5, ERROR)
    assert not never.passed and never.severity is ERROR


def test_quarantine_growth() -> None:
    assert ev.quarantine_outcome(0, 0, Counter(), WARN, "t.o__quarantine").passed
    assert ev.quarantine_outcome(10, 10, Counter({"x": 10}), WARN, "t.o__quarantine").passed
    grown = ev.quarantine_outcome(11, 10, Counter({"x": 11}), WARN, "t.o__quarantine")
    assert not grown.passed and grown.severity is WARN and "| 11 | x |" in grown.metadata["reasons"].value


# ----------------------------------------------------------------------------- config and specs


def _write_checks(project: Path, yaml: str, *, object_yaml: str = "") -> None:
    job = project / "tenants/demo/jobs/shop.yaml"
    text = job.read_text().replace("objects:\n", yaml + "objects:\n", 1)
    if object_yaml:
        text = text.replace("    options: {path: orders.csv}\n", "    options: {path: orders.csv}\n" + object_yaml, 1)
    job.write_text(text)


def _check_specs(project: Path) -> dict[tuple[str, str], dg.AssetCheckSpec]:
    defs = build_definitions(load_plan(project, strict=True))
    (assets,) = list(defs.assets or [])
    assert isinstance(assets, dg.AssetsDefinition)
    return {(s.asset_key.path[-1], s.name): s for s in assets.check_specs_by_output_name.values()}


def test_defaults_generate_what_applies(project: Path) -> None:
    specs = _check_specs(project)
    orders = {name for obj, name in specs if obj == "orders"}
    # freshness needs an SLA; everything else applies to a contract with a primary key
    assert orders == {CHECK_CONTRACT, CHECK_NOT_NULL, CHECK_PRIMARY_KEY, CHECK_SCHEMA, CHECK_VOLUME, CHECK_QUARANTINE}
    assert not any(spec.blocking for spec in specs.values())


def test_job_settings_and_object_override(project: Path) -> None:
    _write_checks(
        project,
        "checks:\n  freshness: {max_age_minutes: 90}\n  primary_key: {blocking: true}\n  volume: {enabled: false}\n",
        object_yaml="    checks: {volume: {enabled: true, max_drop_fraction: 0.9}, primary_key: {severity: warn}}\n",
    )
    plan = load_plan(project, strict=True)
    orders = plan.job("demo/shop").object("orders")
    customers = plan.job("demo/shop").object("customers")
    assert orders.checks.volume.enabled and orders.checks.volume.max_drop_fraction == 0.9
    assert orders.checks.primary_key.blocking and orders.checks.primary_key.severity is WARN  # job's blocking kept
    assert customers.checks is plan.job("demo/shop").job.checks  # shared, not copied per object
    specs = _check_specs(project)
    assert specs[("orders", CHECK_PRIMARY_KEY)].blocking
    assert specs[("orders", CHECK_FRESHNESS)].description and "90 minutes" in (
        specs[("orders", CHECK_FRESHNESS)].description or ""
    )
    assert ("orders", CHECK_VOLUME) in specs and ("customers", CHECK_VOLUME) not in specs


def test_unknown_check_setting_is_cfg001_naming_the_field(project: Path) -> None:
    _write_checks(project, "checks:\n  volume: {max_drop_fracton: 0.5}\n")
    with pytest.raises(ConfigProblems) as info:
        load_plan(project, strict=True)
    assert any("checks.volume.max_drop_fracton" in line for line in info.value.problems), info.value.problems


def test_no_primary_key_or_contract_no_such_check() -> None:
    from dativo_dagster.checks.specs import applicable_checks
    from dativo_dagster.config.models import ObjectConfig
    from dativo_dagster.config.plan import ObjectPlan

    obj = ObjectPlan(
        tenant="t",
        job="j",
        source_name="s",
        config=ObjectConfig(name="o"),
        contract=None,
        options={},
        primary_key=(),
        namespace="t",
        table="o",
        max_rejected_rate=0.05,
        checks=ChecksConfig(),
    )
    assert applicable_checks(obj) == [CHECK_CONTRACT, CHECK_VOLUME, CHECK_QUARANTINE]


def test_selected_check_names_follow_the_selection(project: Path) -> None:
    from dativo_dagster.checks.runtime import selected_check_names
    from dativo_dagster.translator import DativoTranslator

    job = load_plan(project, strict=True).job("demo/shop")
    orders = dg.AssetKey(["demo", "csv", "orders"])
    selected = {dg.AssetCheckKey(orders, CHECK_VOLUME), dg.AssetCheckKey(orders, CHECK_CONTRACT)}
    names = selected_check_names(job.objects, DativoTranslator(), selected)
    assert names == {"orders": [CHECK_CONTRACT, CHECK_VOLUME], "customers": []}


def test_history_rows_newest_first() -> None:
    from dativo_dagster.checks.runtime import History, RecordedRun

    history = History(tuple(RecordedRun(f"r{i}", rows, 0) for i, rows in enumerate([5, 10, 20, 30])))
    assert history.rows(2) == [5, 10]
    assert history.rows(2, skip=1) == [10, 20]  # executed alone: the last run against the ones before it
