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

``--target s3`` loads each file a second time into a warehouse on S3: moto's server on localhost
(reused when one answers on ``DATIVO_BENCH_MOTO_PORT``, default 5000, else started for the run and
stopped after it), through the same SQL catalog and PyArrow FileIO a production ``s3`` recipe
uses, and reports its rows/s beside the local figure of the same run (``s3_local_ratio``). moto
keeps objects in memory on the same machine, so the figure measures dativo's object-store path
(multipart uploads, metadata round trips), not a real network.

Run: ``python benchmarks/csv_to_iceberg.py [--quick] [--rows N] [--small-rows N] [--target local|s3]``
(``--quick``: 20,000 and 200,000 rows). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
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


S3_REGION = "us-east-1"
S3_TARGET = """\
name: s3
catalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}
storage:
  s3: {endpoint: '${BENCH_S3_ENDPOINT}', region: us-east-1}
warehouse: s3://BUCKET/warehouse
"""


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def moto_endpoint() -> Iterator[str]:
    """moto's S3 on localhost: the one already running, or one started (and stopped) here."""
    port = int(os.environ.get("DATIVO_BENCH_MOTO_PORT", "5000"))
    if _port_open(port):
        yield f"http://127.0.0.1:{port}"
        return
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not _port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start on 127.0.0.1:{port}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_environment(endpoint: str) -> dict[str, str]:
    """Dummy credentials (moto accepts any) and the endpoint the recipe references."""
    return {
        "BENCH_S3_ENDPOINT": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": S3_REGION,
    }


def new_bucket(endpoint: str) -> str:
    import boto3

    name = "dativo-bench-" + uuid.uuid4().hex[:10]
    boto3.client(
        "s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=name)
    return name


def make_project(rows: int, bucket: str | None = None) -> Path:
    """A throw-away project with one CSV object of ``rows`` rows (into ``bucket`` on S3 if given)."""
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
    if bucket is not None:
        (root / "connectors/targets/s3.yaml").write_text(S3_TARGET.replace("BUCKET", bucket))
    (root / "tenants/bench/jobs/load.yaml").write_text(
        "tenant: bench\nname: load\nsource: {recipe: csv}\n"
        f"target: {{recipe: {'s3' if bucket else 'local'}}}\n"
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
    parser.add_argument(
        "--target", choices=("local", "s3"), default="local", help="s3: also load into S3 (moto) and compare"
    )
    args = parser.parse_args()
    large = args.rows or (200_000 if args.quick else 2_000_000)
    small = args.small_rows or (20_000 if args.quick else 200_000)

    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(moto_endpoint()) if args.target == "s3" else None
        per_size, on_s3 = _measure_all(small, large, endpoint)
    _summarize(per_size, on_s3, small, large)


def load_once(rows: int, label: str, endpoint: str | None) -> dict[str, float]:
    """Load a fresh ``rows``-row file into a local warehouse, or an S3 one on ``endpoint``."""
    bucket = new_bucket(endpoint) if endpoint else None
    root = make_project(rows, bucket)
    try:
        size_mb = (root / "tenants/bench/data/orders.csv").stat().st_size / 2**20
        env = s3_environment(endpoint) if endpoint else None
        measured, result = run_engine(root, f"bench-{label}", env)
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
    where = "S3 (moto)" if endpoint else "local"
    print(
        f"{rows:>9,} rows ({size_mb:.0f} MB CSV) → {where}: load {figures['load_s']} s, "
        f"{figures['rows_per_s']:,} rows/s, {figures['data_files']} data file(s), "
        f"peak RSS {figures['peak_rss_mb']} MB (wall {figures['wall_s']} s)",
        flush=True,
    )
    return figures


def _measure_all(
    small: int, large: int, endpoint: str | None
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    per_size: dict[str, dict[str, float]] = {}
    on_s3: dict[str, dict[str, float]] = {}
    for label, rows in (("small", small), ("large", large)):
        per_size[label] = load_once(rows, label, None)
        if endpoint:
            on_s3[label] = load_once(rows, f"{label}-s3", endpoint)
    return per_size, on_s3


def _summarize(
    per_size: dict[str, dict[str, float]], on_s3: dict[str, dict[str, float]], small: int, large: int
) -> None:
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
    if on_s3:
        s3_ratio = ratio(on_s3["large"]["rows_per_s"], per_size["large"]["rows_per_s"])
        print(
            f"S3 (moto) / local rows/s at {tag['large']} rows = {s3_ratio} "
            f"({on_s3['large']['rows_per_s']:,} vs {per_size['large']['rows_per_s']:,})",
            flush=True,
        )
        summary.update(
            {
                "s3_rows_per_s": on_s3["large"]["rows_per_s"],
                f"s3_rows_per_s_{tag['small']}": on_s3["small"]["rows_per_s"],
                f"s3_load_s_{tag['large']}": on_s3["large"]["load_s"],
                f"s3_peak_rss_mb_{tag['large']}": on_s3["large"]["peak_rss_mb"],
                "s3_local_ratio": s3_ratio,
                "s3_endpoint": "moto server on 127.0.0.1",
            }
        )
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
