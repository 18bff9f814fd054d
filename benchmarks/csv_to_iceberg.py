"""CSV → Iceberg throughput and memory: a full load of 200,000 and 2,000,000 rows through the engine.

Generates order-like CSV files (order_id, customer_id, status, amount decimal(12,2), currency,
ordered_at timestamptz; ~55 bytes a row), each in the tenant's data root (``tenants/bench/data``, the
only place a tenant reads local files from) of a throw-away one-job project (csv source recipe,
local SQLite-catalog target recipe with the default ``target_file_rows`` of 1,000,000, a schema
contract, strategy ``append`` on order_id), and loads each file into a
fresh local Iceberg warehouse with ``ingest_object`` (the code path Dagster assets and
``dativo run`` share) in a fresh interpreter. Reported per size:

* ``load_s``: time inside ``ingest_object`` (read, cast to the contract, write Parquet, commit),
* ``rows_per_s``: rows / load_s (the headline figure is the 2,000,000-row run),
* ``peak_rss_mb``: peak resident memory of the subprocess (sampled every 20 ms, imports included).

Target: peak RSS stays flat between the two sizes (2m / 200k ≤ 1.3).

Run: ``python benchmarks/csv_to_iceberg.py [--quick] [--rows N] [--small-rows N]``
(``--quick``: 20,000 and 200,000 rows). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ratio, run_engine

RSS_TARGET = 1.3

CONTRACT = """\
name: bench/orders
version: 1
primary_key: [order_id]
cursor_field: order_id
columns:
  - {name: order_id, type: int64, required: true}
  - {name: customer_id, type: int64, required: true}
  - {name: status, type: string, required: true}
  - {name: amount, type: decimal, precision: 12, scale: 2, required: true}
  - {name: currency, type: string}
  - {name: ordered_at, type: timestamptz, required: true}
"""


def write_csv(path: Path, rows: int) -> None:
    """``rows`` orders; one in ten has no currency (nullable column)."""
    base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    statuses = ("paid", "pending", "refunded", "shipped")
    currencies = ("USD", "EUR", "GBP", "USD", "EUR", "GBP", "USD", "EUR", "GBP", "")
    with path.open("w") as handle:
        handle.write("order_id,customer_id,status,amount,currency,ordered_at\n")
        chunk: list[str] = []
        for i in range(1, rows + 1):
            stamp = (base + dt.timedelta(seconds=i)).isoformat()
            amount = (i * 37) % 100000 / 100
            chunk.append(f"{i},{(i * 7919) % 100000},{statuses[i % 4]},{amount:.2f},{currencies[i % 10]},{stamp}\n")
            if len(chunk) == 100_000:
                handle.write("".join(chunk))
                chunk = []
        handle.write("".join(chunk))


def make_project(rows: int) -> Path:
    """A throw-away project with one CSV object of ``rows`` rows."""
    root = Path(tempfile.mkdtemp(prefix="dativo-bench-csv-"))
    # A tenant reads local files only under its data roots (default tenants/<tenant>/data).
    data = root / "tenants/bench/data"
    data.mkdir(parents=True)
    (root / "tenants/bench/jobs").mkdir(parents=True)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "connectors/schemas/bench").mkdir(parents=True)
    (root / "runner.yaml").write_text("version: 1\njobs: [{tenant: bench, job: load}]\n")
    (root / "connectors/sources/csv.yaml").write_text("name: csv\ntype: csv\n")
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
    )
    (root / "connectors/schemas/bench/orders.v1.yaml").write_text(CONTRACT)
    (root / "tenants/bench/jobs/load.yaml").write_text(
        "tenant: bench\nname: load\nsource: {recipe: csv}\ntarget: {recipe: local}\n"
        "objects:\n  - name: orders\n    contract: {name: bench/orders, version: 1}\n    options: {path: orders.csv}\n"
        "    incremental: {strategy: append, cursor_field: order_id}\n"
    )
    write_csv(data / "orders.csv", rows)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 and 200,000 rows")
    parser.add_argument("--rows", type=int, help="rows of the large file (default 2,000,000)")
    parser.add_argument("--small-rows", type=int, help="rows of the small file (default 200,000)")
    args = parser.parse_args()
    large = args.rows or (200_000 if args.quick else 2_000_000)
    small = args.small_rows or (20_000 if args.quick else 200_000)

    per_size: dict[str, dict[str, float]] = {}
    for label, rows in (("small", small), ("large", large)):
        root = make_project(rows)
        try:
            size_mb = (root / "tenants/bench/data/orders.csv").stat().st_size / 2**20
            measured, result = run_engine(root, f"bench-{label}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if result["rows"] != rows or result.get("rows_rejected"):
            raise RuntimeError(f"expected {rows} rows written and none rejected, got {result}")
        figures = {
            "rows": rows,
            "csv_mb": round(size_mb, 1),
            "load_s": round(result["load_s"], 2),
            "rows_per_s": round(rows / result["load_s"]),
            "wall_s": round(measured.seconds, 2),
            "peak_rss_mb": round(measured.peak_rss_mb, 1),
            "data_files": result.get("data_files"),
        }
        per_size[label] = figures
        print(
            f"{rows:>9,} rows ({size_mb:.0f} MB CSV): load {figures['load_s']} s, {figures['rows_per_s']:,} rows/s, "
            f"{figures['data_files']} data file(s), peak RSS {figures['peak_rss_mb']} MB (wall {figures['wall_s']} s)",
            flush=True,
        )

    tag = {"small": _tag(small), "large": _tag(large)}
    rss_ratio = ratio(per_size["large"]["peak_rss_mb"], per_size["small"]["peak_rss_mb"])
    print(f"peak RSS {tag['large']} / {tag['small']} = {rss_ratio} (target ≤ {RSS_TARGET})", flush=True)
    summary = {
        "rows": large,
        "rows_per_s": per_size["large"]["rows_per_s"],
        f"rows_per_s_{tag['small']}": per_size["small"]["rows_per_s"],
        f"load_s_{tag['large']}": per_size["large"]["load_s"],
        f"load_s_{tag['small']}": per_size["small"]["load_s"],
        f"peak_rss_mb_{tag['small']}": per_size["small"]["peak_rss_mb"],
        f"peak_rss_mb_{tag['large']}": per_size["large"]["peak_rss_mb"],
        "rss_ratio": rss_ratio,
        "rss_flat": rss_ratio <= RSS_TARGET,
        "data_files_large": per_size["large"]["data_files"],
        "target_file_rows": 1_000_000,
    }
    print(json.dumps(summary))


def _tag(rows: int) -> str:
    """200000 → '200k', 2000000 → '2m'."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


if __name__ == "__main__":
    main()
