"""MySQL/MariaDB → Iceberg: dativo against the client floor and against dlt, in one run.

Same table and steps as ``postgres_to_iceberg.py`` on the local MariaDB server; the floor is
``mariadb --quick -e 'SELECT * FROM t' > /dev/null`` (the client streaming every row as text), and
the incremental floor is the same client running the incremental ``updated_at >= cursor`` query.

Run: ``python benchmarks/mysql_to_iceberg.py [--rows N] [--skip-dlt]``. The last line printed is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import inc_cursor, ratio, run_engine, run_measured, sql_project

# Unique per run: two benchmark runs on one server must not drop each other's tables.
DATABASE = f"dativo_bench_{os.getpid()}"

DLT_RUNNER = textwrap.dedent(
    """
    import sys, time
    import dlt
    from dlt.sources.sql_database import sql_table
    started = time.perf_counter()
    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=sys.argv[2],
                            destination=dlt.destinations.filesystem(bucket_url=sys.argv[1]),
                            dataset_name="bench")
    source = sql_table(credentials="mysql+pymysql://root@127.0.0.1:3306/" + sys.argv[3],
                       table=sys.argv[4], backend="pyarrow")
    pipeline.run(source, table_format="iceberg")
    print(time.perf_counter() - started)
    """
)


def execute(statements: list[str]) -> None:
    connection = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def build_table(name: str, rows: int) -> None:
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


MARIADB = ["mariadb", "-h", "127.0.0.1", "-u", "root", "--quick", "--init-command=SET time_zone = '+00:00'"]


def floor_seconds(name: str) -> float:
    command = [*MARIADB, "-e", f"SELECT * FROM {DATABASE}.{name}"]
    return min(run_measured(command, stdout_to_null=True).seconds for _ in range(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--small-rows", type=int, default=500_000)
    parser.add_argument("--skip-dlt", action="store_true")
    args = parser.parse_args()
    try:
        run(args)
    finally:
        execute([f"DROP DATABASE IF EXISTS {DATABASE}"])


def run(args: argparse.Namespace) -> None:
    """Build the tables, measure, print the figures (the last line is JSON)."""
    figures: dict[str, float] = {"rows": args.rows}
    print(f"building {args.rows:,}-row and {args.small_rows:,}-row tables ...", flush=True)
    build_table("orders", args.rows)
    build_table("orders_small", args.small_rows)
    connection = {"host": "127.0.0.1", "port": 3306, "database": DATABASE, "user": "root"}

    figures["floor_s"] = round(floor_seconds("orders"), 2)
    print(f"floor  mariadb --quick → /dev/null  {figures['floor_s']:8.2f} s")

    project = sql_project("mysql", connection, f"{DATABASE}.orders")
    full, result = run_engine(project, "bench-full")
    figures["dativo_s"] = round(result["load_s"], 2)
    figures["dativo_process_s"] = round(full.seconds, 2)
    figures["dativo_rows_per_s"] = round(args.rows / result["load_s"])
    figures["dativo_peak_rss_mb"] = figures["rss_5m_mb"] = round(full.peak_rss_mb, 1)
    print(f"dativo full load                    {figures['dativo_s']:8.2f} s  "
          f"({figures['dativo_rows_per_s']:,} rows/s, peak RSS {figures['dativo_peak_rss_mb']} MB)")  # fmt: skip

    small = sql_project("mysql", connection, f"{DATABASE}.orders_small")
    small_run, _ = run_engine(small, "bench-small")
    figures["rss_500k_mb"] = round(small_run.peak_rss_mb, 1)
    print(f"dativo peak RSS {args.small_rows:,} rows         {figures['rss_500k_mb']:8.1f} MB")

    # dlt reads the same table as dativo's full load (before the incremental change)
    if not args.skip_dlt:
        work = Path(tempfile.mkdtemp(prefix="dativo-bench-dlt-"))
        dlt_run = run_measured(
            [sys.executable, "-c", DLT_RUNNER, f"file://{work}/bucket", str(work / "pipelines"), DATABASE, "orders"],
            env={**os.environ, "RUNTIME__LOG_LEVEL": "WARNING"},
        )
        if dlt_run.returncode != 0:
            print(dlt_run.stderr[-3000:])
            raise SystemExit("dlt run failed")
        figures["dlt_s"] = round(float(dlt_run.stdout.strip().splitlines()[-1]), 2)
        figures["dlt_peak_rss_mb"] = round(dlt_run.peak_rss_mb, 1)
        figures["dlt_over_dativo"] = ratio(figures["dlt_s"], figures["dativo_s"])
        print(
            f"dlt sql_table(pyarrow) → iceberg    {figures['dlt_s']:8.2f} s  (peak RSS {figures['dlt_peak_rss_mb']} MB)"
        )
        shutil.rmtree(work, ignore_errors=True)

    delta = max(args.rows // 100, 1)
    execute(
        [
            f"UPDATE {DATABASE}.orders SET status = 'updated', updated_at = NOW(6) WHERE id % 100 = 0",
            f"""INSERT INTO {DATABASE}.orders (id, customer_id, status, amount, currency, email, is_paid)
                SELECT seq, 1, 'new', 1.00, 'EUR', NULL, true
                FROM {DATABASE}.seq_{args.rows + 1}_to_{args.rows + delta}""",
        ]
    )
    cursor = inc_cursor(project).replace("T", " ")[:26]  # the session runs in UTC
    query = f"SELECT * FROM {DATABASE}.orders WHERE updated_at >= '{cursor}'"
    figures["incremental_floor_s"] = round(
        min(run_measured([*MARIADB, "-e", query], stdout_to_null=True).seconds for _ in range(2)), 2
    )
    print(f"floor  incremental SELECT → /dev/null {figures['incremental_floor_s']:6.2f} s")
    _, inc = run_engine(project, "bench-incremental")
    figures["incremental_s"] = round(inc["load_s"], 2)
    figures["incremental_rows"] = inc["rows"]
    print(f"dativo incremental (1% upd + 1% new) {figures['incremental_s']:7.2f} s  ({inc['rows']:,} rows, "
          f"{inc['replaced']:,} replaced, {inc['total_rows']:,} rows in table)")  # fmt: skip

    figures["dativo_over_floor"] = ratio(figures["dativo_s"], figures["floor_s"])
    figures["incremental_over_full"] = ratio(figures["incremental_s"], figures["dativo_s"])
    figures["incremental_over_floor"] = ratio(figures["incremental_s"], figures["incremental_floor_s"])
    figures["rss_5m_over_500k"] = ratio(figures["rss_5m_mb"], figures["rss_500k_mb"])
    print(
        f"ratios: dativo/floor {figures['dativo_over_floor']}  dlt/dativo {figures.get('dlt_over_dativo', 'n/a')}  "
        f"incremental/full {figures['incremental_over_full']}  "
        f"incremental/its floor {figures['incremental_over_floor']}  rss 5m/500k {figures['rss_5m_over_500k']}"
    )
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(small, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
