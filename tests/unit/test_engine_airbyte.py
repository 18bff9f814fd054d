"""The Airbyte protocol adapter: catalogs, configured catalogs, per-stream state and error codes,
against a small protocol-speaking fake (the real ``airbyte-source-faker`` runs in the integration tests)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from dativo_dagster.engines.airbyte import (
    AirbyteProtocol,
    TraceError,
    classify_trace,
    configured_catalog,
    default_executable,
    parse_catalog,
    state_file,
    stream_state_of,
)
from dativo_dagster.engines.base import Checkpoint, Record, Selection, StreamInfo
from dativo_dagster.errors import DativoError, PermanentExtractError
from dativo_dagster.logs import configure_logging

FAKE = Path(__file__).resolve().parents[1] / "fixtures" / "engines" / "airbyte_fake_source.py"
CANARY = "canary-airbyte-key-5f1e9a"

FAKER_USERS = {
    "name": "users",
    "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}, "updated_at": {"type": "string"}}},
    "supported_sync_modes": ["full_refresh", "incremental"],
    "source_defined_cursor": True,
    "default_cursor_field": ["updated_at"],
    "source_defined_primary_key": [["id"]],
    "is_resumable": True,
}


def _protocol(mode: str = "ok", **config: Any) -> AirbyteProtocol:
    return AirbyteProtocol(
        command=[sys.executable, str(FAKE)],
        label="acme/fake",
        project_dir=Path("."),
        config={"mode": mode, "api_key": CANARY, **config},
        secrets=frozenset({CANARY}),
    )


def _selection(incremental: bool = True, cursor: str | None = "id", fields: tuple[str, ...] | None = None) -> Selection:
    return Selection(fields=fields, incremental=incremental, cursor_field=cursor, primary_key=("id",))


def test_catalog_streams_keys_and_cursors() -> None:
    nested = {**FAKER_USERS, "name": "deep", "source_defined_primary_key": [["a", "b"]], "namespace": "public"}
    users, deep = parse_catalog({"streams": [FAKER_USERS, nested]}, "x")
    assert (users.name, users.key_properties, users.replication_keys, users.aliases) == (
        "users",
        ("id",),
        ("updated_at",),
        (),
    )
    assert deep.key_properties == () and deep.aliases == ("public.deep",)
    for broken in ({}, {"streams": [{"json_schema": {}}]}, {"streams": [{"name": "a"}]}):
        with pytest.raises(DativoError) as caught:
            parse_catalog(broken, "x")
        assert caught.value.code == "PAGE001"


def test_configured_catalog_modes_and_refusals() -> None:
    (users,) = parse_catalog({"streams": [FAKER_USERS]}, "x")
    incremental = configured_catalog(users, _selection(cursor="updated_at"), "x")["streams"][0]
    assert incremental["sync_mode"] == "incremental" and incremental["cursor_field"] == ["updated_at"]
    assert incremental["destination_sync_mode"] == "append_dedup" and incremental["primary_key"] == [["id"]]
    full = configured_catalog(users, _selection(incremental=False, cursor=None), "x")["streams"][0]
    assert (full["sync_mode"], full["destination_sync_mode"]) == ("full_refresh", "overwrite")
    assert "cursor_field" not in full
    trimmed = configured_catalog(users, _selection(cursor="updated_at", fields=("id", "updated_at")), "x")
    assert trimmed["streams"][0]["stream"]["json_schema"]["properties"].keys() == {"id", "updated_at"}
    assert users.entry["json_schema"]["properties"].keys() == {"id", "updated_at"}  # the catalog is not changed
    with pytest.raises(DativoError, match="defines its own cursor 'updated_at'") as wrong_cursor:
        configured_catalog(users, _selection(cursor="id"), "x")
    assert wrong_cursor.value.code == "CFG001"
    snapshot = StreamInfo(name="s", json_schema={}, entry={"name": "s", "supported_sync_modes": ["full_refresh"]})
    with pytest.raises(DativoError, match="supports only full_refresh") as not_incremental:
        configured_catalog(snapshot, _selection(), "x")
    assert not_incremental.value.code == "CFG001"


def test_state_messages_become_the_streams_cursor_and_go_back_as_a_state_file() -> None:
    (users,) = parse_catalog({"streams": [FAKER_USERS]}, "x")
    sent = {
        "type": "STREAM",
        "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"updated_at": "2024-01-01"}},
        "sourceStats": {"recordCount": 4.0},
    }
    own = stream_state_of(sent, users)
    assert own == {"type": "STREAM", "stream": sent["stream"]}  # run statistics are not a position
    assert state_file(own) == [own]
    other = {"type": "STREAM", "stream": {"stream_descriptor": {"name": "purchases"}, "stream_state": {}}}
    assert stream_state_of(other, users) is None
    legacy = stream_state_of({"data": {"users": {"cursor": 5}}}, users)
    assert legacy == {"type": "LEGACY", "data": {"users": {"cursor": 5}}}
    assert state_file(legacy) == {"users": {"cursor": 5}}
    shared = {"type": "GLOBAL", "global": {"shared_state": {"lsn": 7}, "stream_states": []}}
    assert state_file(stream_state_of(shared, users)) == [shared]
    start = _protocol().state_for(users, _selection(cursor="updated_at"), "2024-05-01")
    assert start == {
        "type": "STREAM",
        "stream": {"stream_descriptor": {"name": "users"}, "stream_state": {"updated_at": "2024-05-01"}},
    }


@pytest.mark.parametrize(
    ("failure_type", "message", "code", "transient"),
    [
        ("config_error", "The 'region' setting is not valid", "CFG001", False),
        ("transient_error", "The server answered 503", "EXT001", True),
        ("system_error", "ZeroDivisionError", "EXT001", False),
        (None, "something odd", "EXT001", False),
        ("system_error", "401 Client Error: Unauthorized", "AUTH001", False),
        ("config_error", "Invalid API key", "AUTH001", False),
    ],
)
def test_trace_errors_are_classified(failure_type: str | None, message: str, code: str, transient: bool) -> None:
    error = classify_trace(TraceError(message, "", failure_type), "acme/fake")
    assert (error.code, error.transient) == (code, transient)
    assert message in error.message


def test_default_executable() -> None:
    assert default_executable("airbyte-source-faker") == "source-faker"
    assert default_executable("source-custom") == "source-custom"


def test_spec_check_discover_and_read_with_state() -> None:
    protocol = _protocol(count=5, every=2)
    assert protocol.spec() == {"type": "object", "properties": {}}
    protocol.check()
    items = next(s for s in protocol.discover() if s.name == "items")
    messages = list(protocol.read(items, selection=_selection(), state=None))
    records = [m.data["id"] for m in messages if isinstance(m, Record) and m.stream == "items"]
    states = [m.state for m in messages if isinstance(m, Checkpoint)]
    assert records == [1, 2, 3, 4, 5]
    assert [s["stream"]["stream_state"]["id"] for s in states] == [2, 4, 5]  # another stream's states are not ours
    resumed = list(protocol.read(items, selection=_selection(), state=states[-1]))
    assert [m.data["id"] for m in resumed if isinstance(m, Record) and m.stream == "items"] == [6, 7, 8, 9, 10]
    full = list(protocol.read(items, selection=_selection(incremental=False, cursor=None), state=states[-1]))
    assert [m.data["id"] for m in full if isinstance(m, Record) and m.stream == "items"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("mode", "code", "said"),
    [
        ("config_error", "CFG001", "The 'region' setting is not valid"),
        ("transient", "EXT001", "The server answered 503"),
        ("system", "EXT001", "Something broke"),
        ("auth", "AUTH001", "401 Client Error"),
        ("crash", "EXT001", "RuntimeError: boom"),
        ("garbage", "PAGE001", "not a JSON message"),
        ("die_midway", "EXT001", "exited with code 137"),
    ],
)
def test_failures_get_their_code_and_never_the_secret(
    mode: str, code: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(logging.INFO, force=True)
    protocol = _protocol(mode, count=10, every=2)
    (items,) = parse_catalog({"streams": [_items_entry()]}, "x")
    seen: list[Any] = []
    with pytest.raises(DativoError) as caught:
        for message in protocol.read(items, selection=_selection(), state=None):
            seen.append(message)
    error = caught.value
    assert error.code == code and said in str(error)
    if mode == "system":
        assert isinstance(error, PermanentExtractError) and not error.transient
    if mode == "die_midway":
        assert [m.state["stream"]["stream_state"]["id"] for m in seen if isinstance(m, Checkpoint)] == [2]
    assert CANARY not in str(error) and CANARY not in repr(error.context)
    assert CANARY not in capsys.readouterr().err


def test_check_failures_and_a_leaky_source(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(logging.INFO, force=True)
    with pytest.raises(DativoError, match="Invalid API key") as bad_key:
        _protocol("check_failed").check()
    assert bad_key.value.code == "AUTH001"
    with pytest.raises(DativoError, match="required property") as bad_setting:
        _protocol("check_bad_setting").check()
    assert bad_setting.value.code == "CFG001"
    with pytest.raises(DativoError) as bad_config:
        _protocol("config_error").discover()
    assert bad_config.value.code == "CFG001"
    protocol = _protocol("leaky", count=2)
    items = next(s for s in protocol.discover() if s.name == "items")
    assert len([m for m in protocol.read(items, selection=_selection(), state=None) if isinstance(m, Record)]) == 4
    err = capsys.readouterr().err
    assert "using key ***" in err and "connector_config_update_ignored" in err
    assert CANARY not in err


def _items_entry() -> dict[str, Any]:
    return {
        "name": "items",
        "json_schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
        "supported_sync_modes": ["full_refresh", "incremental"],
        "source_defined_cursor": True,
        "default_cursor_field": ["id"],
        "source_defined_primary_key": [["id"]],
    }


def test_a_transient_trace_is_retried_whatever_its_words() -> None:
    from dativo_dagster.engines.airbyte import TraceError, classify_trace

    transient = TraceError("Rate limited: the token bucket is empty (unauthorized burst)", "", "transient_error")
    coded = classify_trace(transient, "acme/db/users")
    assert coded.code == "EXT001" and coded.transient
