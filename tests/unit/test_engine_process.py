"""Connector processes and the Singer protocol against small scripted taps: codes, files, secrets, stopping."""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from dativo_dagster.engines.base import Checkpoint, Record, Selection, StreamInfo
from dativo_dagster.engines.process import ConnectorProcess
from dativo_dagster.engines.singer import SingerProtocol
from dativo_dagster.engines.venvs import executable, package_name, venv_name
from dativo_dagster.errors import AuthError, ConfigError, ExtractError, PaginationError

SECRET = "s3cr3t-Pa55word-9a7c"


def _tap(tmp_path: Path, body: str) -> SingerProtocol:
    """A 'tap' that runs ``body`` (Python) with ``config`` loaded from --config."""
    script = tmp_path / "tap.py"
    script.write_text(
        "import json, sys\n"
        "args = sys.argv[1:]\n"
        "config = json.load(open(args[args.index('--config') + 1]))\n"
        "def emit(message):\n"
        "    sys.stdout.write(json.dumps(message) + '\\n')\n" + textwrap.dedent(body)
    )
    return SingerProtocol(
        command=[sys.executable, str(script)],
        label="acme/db (fake)",
        project_dir=tmp_path,
        config={"host": "db.example", "password": SECRET},
        secrets=frozenset({SECRET}),
    )


SCHEMA = {"properties": {"id": {"type": "integer"}}}
STREAM = StreamInfo(
    name="items",
    json_schema=SCHEMA,
    key_properties=("id",),
    entry={"tap_stream_id": "items", "stream": "items", "schema": SCHEMA, "metadata": []},
)
INCREMENTAL = Selection(fields=None, incremental=True, cursor_field="id", primary_key=("id",))


def _read(protocol: SingerProtocol, state: Any = None) -> list[Any]:
    return list(protocol.read(STREAM, selection=INCREMENTAL, state=state))


def test_records_and_states_stream_and_the_state_comes_back(tmp_path: Path) -> None:
    protocol = _tap(
        tmp_path,
        """
        state = json.load(open(args[args.index('--state') + 1])) if '--state' in args else {}
        start = state.get('bookmarks', {}).get('items', {}).get('replication_key_value', 0)
        catalog = json.load(open(args[args.index('--catalog') + 1]))
        root = [m for m in catalog['streams'][0]['metadata'] if m['breadcrumb'] == []][0]['metadata']
        assert root['selected'] and root['replication-method'] == 'INCREMENTAL' and root['replication-key'] == 'id'
        emit({'type': 'SCHEMA', 'stream': 'items', 'schema': {}, 'key_properties': ['id']})
        for i in range(start, start + 3):
            emit({'type': 'RECORD', 'stream': 'items', 'record': {'id': i}})
        emit({'type': 'ACTIVATE_VERSION', 'stream': 'items', 'version': 1})
        emit({'type': 'STATE', 'value': {'currently_syncing': 'items',
              'bookmarks': {'items': {'replication_key': 'id', 'replication_key_value': start + 2}}}})
        """,
    )
    messages = _read(protocol, protocol.state_for(STREAM, INCREMENTAL, 5))
    records = [m.data["id"] for m in messages if isinstance(m, Record)]
    states = [m.state for m in messages if isinstance(m, Checkpoint)]
    assert records == [5, 6, 7]
    # currently_syncing says nothing once committed and is dropped.
    assert states == [{"bookmarks": {"items": {"replication_key": "id", "replication_key_value": 7}}}]
    assert SingerProtocol.state_position(states[0]) == 7


@pytest.mark.parametrize(
    ("body", "error", "words"),
    [
        ("print('hello, I am not JSON')", PaginationError, "not a JSON message"),
        ("emit({'type': 'RECORD', 'stream': 'items'})", PaginationError, "without a stream or a record"),
        ("print('[1, 2]')", PaginationError, "not a JSON message"),
        ("raise RuntimeError('connection reset by peer')", ExtractError, "connection reset by peer"),
        (
            "sys.stderr.write('CRITICAL Config is missing required keys: [\\'user\\']\\n'); sys.exit(1)",
            ConfigError,
            "missing required keys",
        ),
        ("config['user']", ConfigError, "KeyError"),
        (
            "sys.stderr.write(\"CRITICAL (1045, \\\"Access denied for user 'root'@'x'\\\")\\n\"); sys.exit(1)",
            AuthError,
            "Access denied",
        ),
        ("import os; os.kill(os.getpid(), 9)", ExtractError, "killed by signal 9"),
    ],
)
def test_a_failing_tap_gets_its_code(tmp_path: Path, body: str, error: type[Exception], words: str) -> None:
    protocol = _tap(tmp_path, body)
    with pytest.raises(error) as raised:
        _read(protocol)
    assert words in str(raised.value)


def test_a_crash_after_garbage_is_reported_as_the_crash(tmp_path: Path) -> None:
    """A tap that prints its traceback to stdout and exits 1 failed: its failure wins over the garbage."""
    protocol = _tap(tmp_path, "print('Traceback: boom'); sys.stderr.write('ERROR upstream timed out\\n'); sys.exit(2)")
    with pytest.raises(ExtractError) as raised:
        _read(protocol)
    assert "exited with code 2" in str(raised.value)


def test_secrets_stay_in_a_private_file_and_out_of_argv_and_logs(tmp_path: Path) -> None:
    protocol = _tap(
        tmp_path,
        """
        import os, stat
        path = args[args.index('--config') + 1]
        mode = stat.S_IMODE(os.stat(path).st_mode)
        folder = stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)
        argv = open('/proc/self/cmdline', 'rb').read().decode()
        open(sys.argv[0] + '.seen', 'w').write(json.dumps([path, mode, folder, config['password'] in argv]))
        sys.stderr.write('INFO connecting with password ' + config['password'] + '\\n')
        sys.stderr.write('CRITICAL Access denied, password was ' + config['password'] + '\\n')
        sys.exit(1)
        """,
    )
    with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as raised:
        _read(protocol)
    path, mode, folder, in_argv = json.loads((tmp_path / "tap.py.seen").read_text())
    assert mode == 0o600 and folder == 0o700 and not in_argv
    assert not os.path.exists(path)  # deleted after the run
    assert SECRET not in str(raised.value)
    lines = [entry["line"] for entry in logs if entry.get("event") == "connector_stderr"]
    assert any("connecting with password" in line for line in lines)
    assert all(SECRET not in line for line in lines)


def test_leaving_early_stops_the_connector(tmp_path: Path) -> None:
    script = tmp_path / "endless.py"
    script.write_text(
        "import json, os, sys\n"
        "open(sys.argv[0] + '.pid', 'w').write(str(os.getpid()))\n"
        "while True:\n"
        "    sys.stdout.write(json.dumps({'type': 'RECORD', 'stream': 'items', 'record': {'id': 1}}) + '\\n')\n"
    )
    with ConnectorProcess([sys.executable, str(script)], label="endless") as proc:
        for count, _message in enumerate(proc.messages()):
            if count == 10_000:
                break
    pid = int((tmp_path / "endless.py.pid").read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break  # a zombie is dead; its parent reaps it
        time.sleep(0.05)
    alive = Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    assert not alive, "the connector kept running after dativo stopped reading"


def test_a_missing_executable_is_cfg001(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ConnectorProcess([str(tmp_path / "no-such-tap")], label="x").start()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tap-real").write_text("#!/bin/sh\n")
    (tmp_path / "bin" / "tap-real").chmod(stat.S_IRWXU)
    with pytest.raises(ConfigError) as raised:
        executable(tmp_path, "tap-typo")
    assert "tap-real" in str(raised.value)


def test_venv_names_follow_the_requirement() -> None:
    assert package_name("tap-mysql==1.17.7") == "tap-mysql"
    assert package_name("tap-x==1.0 PyMySQL==0.9.3") == "tap-x"
    name = venv_name("tap-mysql==1.17.7")
    assert name.startswith("tap-mysql-") and name != venv_name("tap-mysql==1.17.8")
    with pytest.raises(ConfigError):
        venv_name("   ")


def test_a_killed_dativo_takes_its_connector_and_leaves_its_secrets_to_the_next_sweep(tmp_path: Path) -> None:
    import signal
    import subprocess

    from dativo_dagster.engines.process import INPUT_DIR_PREFIX, sweep_orphaned_inputs

    marker = tmp_path / "child.pid"
    sleeper = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    parent = textwrap.dedent(
        f"""
        import os, sys, time
        from dativo_dagster.engines.process import ConnectorProcess
        proc = ConnectorProcess(
            [sys.executable, "-c", {sleeper!r}],
            label="sleeper", files={{"config": {{"password": "hunter22-canary"}}}},
        )
        proc.start()
        print("CONFIG=" + str(proc.paths["config"]), flush=True)
        time.sleep(60)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    line = runner.stdout.readline()
    while not line.startswith("CONFIG="):  # the run's own log lines come first
        assert line, "the parent ended early"
        line = runner.stdout.readline()
    config = Path(line.strip().removeprefix("CONFIG="))
    deadline = time.monotonic() + 30
    while not (marker.exists() and marker.read_text()):
        assert time.monotonic() < deadline, "the connector did not start"
        time.sleep(0.05)
    child = int(marker.read_text())
    assert config.exists() and oct(config.stat().st_mode & 0o777) == "0o600"
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 30
    while True:  # the connector dies with its parent (no orphan keeps reading the source)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the connector outlived dativo"
        time.sleep(0.05)
    assert config.parent.name.startswith(INPUT_DIR_PREFIX) and config.exists()
    removed = sweep_orphaned_inputs(config.parent.parent)
    assert config.parent in removed and not config.exists()


def test_numbers_wider_than_a_float_arrive_exact(tmp_path: Path) -> None:
    import decimal

    from dativo_dagster.engines.jsonschema import build_batch, stream_arrow_schema

    script = tmp_path / "tap.py"
    script.write_text(
        'print(\'{"type": "RECORD", "stream": "s", "record": {"amt": 12345678901234567.89, "f": 1.5}}\')\n'
    )
    with ConnectorProcess([sys.executable, str(script)], label="wide") as proc:
        (message,) = list(proc.messages())
        proc.finish()
    record = message["record"]
    assert record["amt"] == decimal.Decimal("12345678901234567.89")
    schema = stream_arrow_schema(
        {"type": "object", "properties": {"amt": {"type": "number", "multipleOf": 0.01}, "f": {"type": "number"}}}
    )
    batch = build_batch([record], schema)
    assert batch.column("amt").to_pylist() == [decimal.Decimal("12345678901234567.89")]
    assert batch.column("f").to_pylist() == [1.5]
