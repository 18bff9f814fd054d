"""PostgreSQL → Iceberg: dativo against the COPY floor and against dlt, in one run.

Builds an N-row table (default 5,000,000: bigint id PK, bigint customer_id, text status,
numeric(12,2) amount, char(3) currency, nullable text email, boolean, timestamptz created_at,
timestamptz updated_at) in a scratch schema of the local server, then measures:

* floor: ``psql -c "COPY (SELECT * FROM t) TO STDOUT" > /dev/null``
* dativo: full load into a local Iceberg warehouse (wall time of the load, peak RSS of the process)
* dlt: ``sql_table(backend="pyarrow")`` into a filesystem destination with ``table_format="iceberg"``
* dativo incremental (``updated`` strategy, merge on the primary key) after updating 1% of rows
  (spread uniformly over the table, ``id % 100 = 0``) and inserting 1% new rows, next to the floor
  for that delta: ``psql`` running the same ``updated_at >= cursor`` COPY
* dativo peak RSS on a 500,000-row table, to show memory does not grow with the table

Run: ``python benchmarks/postgres_to_iceberg.py [--rows N] [--skip-dlt]``. Needs the bench extra
(``pip install -e '.[bench]'``) for dlt. The last line printed is one JSON object.
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

import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import inc_cursor, ratio, run_engine, run_measured, sql_project

DSN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
# Unique per run: two benchmark runs on one server must not drop each other's tables.
SCHEMA = f"dativo_bench_{os.getpid()}"

DLT_RUNNER = textwrap.dedent(
    """
    import sys, time
    import dlt
    from dlt.sources.sql_database import sql_table
    started = time.perf_counter()
    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=sys.argv[2],
                            destination=dlt.destinations.filesystem(bucket_url=sys.argv[1]),
                            dataset_name="bench")
    source = sql_table(credentials="postgresql+psycopg2://postgres@127.0.0.1:5432/test",
                       schema=sys.argv[3], table=sys.argv[4], backend="pyarrow")
    info = pipeline.run(source, table_format="iceberg")
    print(time.perf_counter() - started)
    """
)


def execute(statements: list[str]) -> None:
    with psycopg2.connect(**DSN) as connection, connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


def build_table(name: str, rows: int) -> None:
    execute(
        [
            f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
            f"DROP TABLE IF EXISTS {SCHEMA}.{name}",
            f"""CREATE UNLOGGED TABLE {SCHEMA}.{name} (
                id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
                amount numeric(12,2) NOT NULL, currency char(3) NOT NULL, email text,
                is_paid boolean NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)""",
            f"""INSERT INTO {SCHEMA}.{name}
                SELECT i, (i * 7919) % 100000,
                       (ARRAY['paid','pending','refunded','shipped'])[1 + i % 4],
                       ((i * 37) % 100000) / 100.0,
                       (ARRAY['USD','EUR','GBP'])[1 + i % 3],
                       CASE WHEN i % 5 = 0 THEN NULL ELSE 'customer' || i || '@example.com' END,
                       i % 2 = 0,
                       timestamptz '2024-01-01' + i * interval '1 second',
                       timestamptz '2024-01-01' + i * interval '1 second'
                FROM generate_series(1::bigint, {rows}) AS i""",
            f"CREATE INDEX ON {SCHEMA}.{name} (updated_at)",
            f"ANALYZE {SCHEMA}.{name}",
        ]
    )


PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test"]


def floor_seconds(name: str) -> float:
    command = [*PSQL, "-c", f"COPY (SELECT * FROM {SCHEMA}.{name}) TO STDOUT"]
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
        execute([f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"])


def run(args: argparse.Namespace) -> None:
    """Build the tables, measure, print the figures (the last line is JSON)."""
    figures: dict[str, float] = {"rows": args.rows}

    print(f"building {args.rows:,}-row and {args.small_rows:,}-row tables ...", flush=True)
    build_table("orders", args.rows)
    build_table("orders_small", args.small_rows)

    figures["floor_s"] = round(floor_seconds("orders"), 2)
    print(f"floor  COPY → /dev/null           {figures['floor_s']:8.2f} s")

    project = sql_project("postgres", {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"},
                          f"{SCHEMA}.orders")  # fmt: skip
    full, result = run_engine(project, "bench-full")
    figures["dativo_s"] = round(result["load_s"], 2)
    figures["dativo_process_s"] = round(full.seconds, 2)
    figures["dativo_rows_per_s"] = round(args.rows / result["load_s"])
    figures["dativo_peak_rss_mb"] = round(full.peak_rss_mb, 1)
    figures["rss_5m_mb"] = figures["dativo_peak_rss_mb"]
    print(f"dativo full load                  {figures['dativo_s']:8.2f} s  "
          f"({figures['dativo_rows_per_s']:,} rows/s, peak RSS {figures['dativo_peak_rss_mb']} MB, "
          f"process incl. start-up {figures['dativo_process_s']} s)")  # fmt: skip

    small = sql_project("postgres", {"host": "127.0.0.1", "port": 5432, "database": "test", "user": "postgres"},
                        f"{SCHEMA}.orders_small")  # fmt: skip
    small_run, _ = run_engine(small, "bench-small")
    figures["rss_500k_mb"] = round(small_run.peak_rss_mb, 1)
    print(
        f"dativo peak RSS {args.small_rows:,} rows       {figures['rss_500k_mb']:8.1f} MB "
        f"(vs {figures['rss_5m_mb']} MB at {args.rows:,})"
    )

    if not args.skip_dlt:
        # dlt reads the same table as dativo's full load (before the incremental change)
        work = Path(tempfile.mkdtemp(prefix="dativo-bench-dlt-"))
        dlt_run = run_measured(
            [sys.executable, "-c", DLT_RUNNER, f"file://{work}/bucket", str(work / "pipelines"), SCHEMA, "orders"],
            env={**os.environ, "RUNTIME__LOG_LEVEL": "WARNING"},
        )
        if dlt_run.returncode != 0:
            print(dlt_run.stderr[-3000:])
            raise SystemExit("dlt run failed")
        figures["dlt_s"] = round(float(dlt_run.stdout.strip().splitlines()[-1]), 2)
        figures["dlt_peak_rss_mb"] = round(dlt_run.peak_rss_mb, 1)
        print(
            f"dlt sql_table(pyarrow) → iceberg  {figures['dlt_s']:8.2f} s  (peak RSS {figures['dlt_peak_rss_mb']} MB)"
        )
        shutil.rmtree(work, ignore_errors=True)
        figures["dlt_over_dativo"] = ratio(figures["dlt_s"], figures["dativo_s"])

    delta = max(args.rows // 100, 1)
    execute(
        [
            f"UPDATE {SCHEMA}.orders SET status = 'updated', updated_at = now() WHERE id % 100 = 0",
            f"""INSERT INTO {SCHEMA}.orders SELECT i, 1, 'new', 1.00, 'EUR', NULL, true, now(), now()
                FROM generate_series({args.rows + 1}, {args.rows + delta}) AS i""",
        ]
    )
    cursor = inc_cursor(project)
    figures["incremental_floor_s"] = round(
        min(
            run_measured(
                [*PSQL, "-c", f"COPY (SELECT * FROM {SCHEMA}.orders WHERE updated_at >= '{cursor}') TO STDOUT"],
                stdout_to_null=True,
            ).seconds
            for _ in range(2)
        ),
        2,
    )
    print(f"floor  incremental COPY → /dev/null {figures['incremental_floor_s']:6.2f} s")
    _, inc = run_engine(project, "bench-incremental")
    figures["incremental_s"] = round(inc["load_s"], 2)
    figures["incremental_rows"] = inc["rows"]
    figures["incremental_replaced"] = inc["replaced"]
    print(
        f"dativo incremental (1% upd + 1% new) {figures['incremental_s']:6.2f} s  "
        f"({inc['rows']:,} rows, {inc['replaced']:,} replaced via {inc['delete_files']} delete files, "
        f"{inc['total_rows']:,} rows in table)"
    )

    figures["dativo_over_floor"] = ratio(figures["dativo_s"], figures["floor_s"])
    figures["incremental_over_full"] = ratio(figures["incremental_s"], figures["dativo_s"])
    figures["incremental_over_floor"] = ratio(figures["incremental_s"], figures["incremental_floor_s"])
    figures["rss_5m_over_500k"] = ratio(figures["rss_5m_mb"], figures["rss_500k_mb"])
    print(
        f"ratios: dativo/floor {figures['dativo_over_floor']}  "
        f"dlt/dativo {figures.get('dlt_over_dativo', 'n/a')}  "
        f"incremental/full {figures['incremental_over_full']}  "
        f"incremental/its floor {figures['incremental_over_floor']}  rss 5m/500k {figures['rss_5m_over_500k']}"
    )
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(small, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
