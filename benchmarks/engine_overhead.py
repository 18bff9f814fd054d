"""Singer engine overhead: ``tap-mysql`` through dativo into Iceberg, against the tap alone into /dev/null.

Builds a table of ``--rows`` rows (and one of ``--small`` rows) in the local MariaDB, installs
``tap-mysql`` into its cached virtualenv (``DATIVO_CONNECTORS_DIR``, else the throw-away project's),
then measures:

* ``tap_alone_s``: ``tap-mysql --config c.json --catalog cat.json > /dev/null`` (incremental by
  ``updated_at``, the stream selected as dativo selects it): the floor;
* ``dativo_s``: a fresh interpreter loading the same stream through the Singer engine into a local
  Iceberg table (discovery, the tap run, checkpoints every 100,000 rows, merge on ``id``), start to end;
* ``peak_rss_mb_100k`` / ``peak_rss_mb_1m``: peak resident memory of the dativo process (the connector
  excluded: it is a process of its own, and tap-mysql alone grows from about 25 to 44 MB over a million
  rows) for the small and the large table; ``*_with_tap`` adds the connector's process.

Run: ``python benchmarks/engine_overhead.py [--rows N] [--small N]``. The last line printed is one JSON
object: ``{"records", "tap_alone_s", "dativo_s", "overhead", "peak_rss_mb_100k", "peak_rss_mb_1m"}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ENGINE_RUNNER, ratio, run_measured

DATABASE = f"dativo_engine_bench_{os.getpid()}"
TAP = "tap-mysql==1.17.7"


def execute(statements: list[str]) -> None:
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def build_table(name: str, rows: int) -> None:
    """The same orders table as mysql_to_iceberg.py (MariaDB's sequence engine fills it)."""
    execute(
        [
            f"CREATE DATABASE IF NOT EXISTS {DATABASE}",
            f"DROP TABLE IF EXISTS {DATABASE}.{name}",
            f"""CREATE TABLE {DATABASE}.{name} (
                id bigint PRIMARY KEY, customer_id bigint NOT NULL, status varchar(16) NOT NULL,
                amount decimal(12,2) NOT NULL, currency char(3) NOT NULL, email varchar(64),
                is_paid boolean NOT NULL, created_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
                updated_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), KEY (updated_at))""",
            f"""INSERT INTO {DATABASE}.{name}
                SELECT seq, (seq * 7919) % 100000, ELT(1 + seq % 4, 'paid', 'pending', 'refunded', 'shipped'),
                       ((seq * 37) % 100000) / 100.0, ELT(1 + seq % 3, 'USD', 'EUR', 'GBP'),
                       IF(seq % 5 = 0, NULL, CONCAT('customer', seq, '@example.com')), seq % 2 = 0,
                       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND,
                       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND
                FROM {DATABASE}.seq_1_to_{rows}""",
        ]
    )


def project(root: Path, table: str) -> Path:
    """A project with one Singer job reading ``table`` incrementally (merge on id)."""
    (root / "tenants/bench/jobs").mkdir(parents=True)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "runner.yaml").write_text("version: 1\njobs: [{tenant: bench, job: load}]\n")
    (root / "connectors/sources/mysql_singer.yaml").write_text(
        f"name: mysql_singer\nengine: singer\npip_url: {TAP}\nexecutable: tap-mysql\n"
        "config: {host: 127.0.0.1, port: 3306, user: root, password: '', filter_dbs: " + DATABASE + "}\n"
    )
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
    )
    (root / "tenants/bench/jobs/load.yaml").write_text(
        "tenant: bench\nname: load\nsource: {recipe: mysql_singer}\ntarget: {recipe: local}\n"
        f"objects:\n  - name: orders\n    options: {{stream: {DATABASE}-{table}}}\n    primary_key: [id]\n"
        "    incremental: {strategy: updated, cursor_field: updated_at}\n"
    )
    return root


def run_dativo(root: Path, run_id: str) -> tuple[float, float, float, dict[str, float]]:
    """Wall seconds, peak RSS (MB) of the dativo process alone and with its children, and its figures."""
    env = {**os.environ, "DATIVO_HOME": str(root / ".dativo")}
    started = time.perf_counter()
    process = psutil.Popen(
        [sys.executable, "-c", ENGINE_RUNNER, str(root), run_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    own = tree = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal own, tree
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                mine = process.memory_info().rss
                total = mine + sum(c.memory_info().rss for c in process.children(recursive=True))
                own, tree = max(own, mine), max(tree, total)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"dativo failed: {out[-2000:]}")
    return elapsed, own / 2**20, tree / 2**20, json.loads(out.strip().splitlines()[-1])


def tap_alone(root: Path, table: str) -> float:
    """Seconds for the tap alone to sync ``table`` into /dev/null, selected as dativo selects it."""
    from dativo_dagster.engines.base import Selection
    from dativo_dagster.engines.singer import SingerProtocol
    from dativo_dagster.engines.venvs import connector_venv, executable

    venv = connector_venv(root, TAP, label="benchmark")
    command = executable(venv, "tap-mysql")
    config = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "filter_dbs": DATABASE}
    protocol = SingerProtocol(
        command=[str(command)], label="benchmark", project_dir=root, config=config, secrets=frozenset()
    )
    stream = next(s for s in protocol.discover() if s.name == f"{DATABASE}-{table}")
    catalog = protocol.read_catalog(stream, Selection(None, True, "updated_at", ("id",)))
    (root / "tap-config.json").write_text(json.dumps(config))
    (root / "tap-catalog.json").write_text(json.dumps(catalog))
    measured = run_measured(
        [str(command), "--config", str(root / "tap-config.json"), "--catalog", str(root / "tap-catalog.json")],
        stdout_to_null=True,
    )
    if measured.returncode != 0:
        raise RuntimeError(f"tap-mysql failed: {measured.stderr[-2000:]}")
    return measured.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dativo-engine-bench-"))
    os.environ.setdefault("DATIVO_CONNECTORS_DIR", str(work / "connectors"))
    try:
        build_table("orders_small", args.small)
        build_table("orders_large", args.rows)
        small_s, small_own, small_tree, _ = run_dativo(project(work / "small", "orders_small"), "bench-small")
        print(f"dativo {args.small} rows: {small_s:.1f}s, peak RSS {small_own:.0f} MB ({small_tree:.0f} with the tap)")
        tap_s = tap_alone(work, "orders_large")
        print(f"tap alone {args.rows} rows: {tap_s:.1f}s", flush=True)
        large_s, large_own, large_tree, figures = run_dativo(project(work / "large", "orders_large"), "bench-large")
        if figures["rows"] != args.rows:
            raise RuntimeError(f"dativo loaded {figures['rows']} rows, expected {args.rows}")
        print(f"dativo {args.rows} rows: {large_s:.1f}s, peak RSS {large_own:.0f} MB ({large_tree:.0f} with the tap)")
        print(
            json.dumps(
                {
                    "records": args.rows,
                    "tap_alone_s": round(tap_s, 2),
                    "dativo_s": round(large_s, 2),
                    "overhead": ratio(large_s, tap_s),
                    "peak_rss_mb_100k": round(small_own, 1),
                    "peak_rss_mb_1m": round(large_own, 1),
                    "peak_rss_mb_100k_with_tap": round(small_tree, 1),
                    "peak_rss_mb_1m_with_tap": round(large_tree, 1),
                }
            )
        )
    finally:
        execute([f"DROP DATABASE IF EXISTS {DATABASE}"])
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
