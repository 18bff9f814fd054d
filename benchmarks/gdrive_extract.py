"""Google Drive CSV → Iceberg: rows per second and peak memory, against a bare download-and-parse floor.

The Google emulator runs as a subprocess with 30 ms of latency on every request. Three folders:
200 CSV files of 10,000 rows (``id,label,amount,created_at``, about 470 KB each), 50 files of
10,000 rows, and 200 files of 2,500 rows. Four measurements, each a subprocess (wall time and
peak RSS of its process tree, sampled every 20 ms):

* ``floor``: a bare Python loop that downloads each file of the 200 x 10,000 folder with one
  request and parses it with ``pyarrow.csv`` (no Dagster, no Iceberg, nothing kept): the least the
  job can cost on this machine;
* ``dativo run`` of a ``gdrive_csv`` job (``file_mtime``) over each folder into a fresh local
  warehouse (the run includes the object's asset checks); each table's row count is checked
  (every id once).

Figures: ``rows_per_s`` (200 x 10,000 rows over dativo's wall time, interpreter start and Dagster
included), ``ratio_to_floor``, ``peak_rss_mb`` (200 x 10,000), and ``rss_growth_with_files``: peak
RSS with 200 files of 2,500 rows over 50 files of 10,000 rows, the same 500,000 rows in four times
the files (memory must not grow with the number of files; target <= 1.1). ``rss_growth_with_rows``
(200 x 10,000 over 50 x 10,000) is shown too: the primary-key and not-null checks that follow the
load scan the table, so a run's peak grows with the table's rows, not with its files.

Run: ``python benchmarks/gdrive_extract.py [--files 200] [--rows 10000]``. The last line printed is
one JSON object ``{"files": ..., "rows_per_s": ..., "peak_rss_mb": ..., ...}``.
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
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, run_measured
from tests.fakes.server import AdminClient, ServerProcess

LATENCY_MS = 30
EMAIL = "bench-reader@acme-data.iam.gserviceaccount.com"
TARGET = "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
CONTRACT = """name: drive/parts
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: label, type: string}
  - {name: amount, type: decimal, precision: 12, scale: 2}
  - {name: created_at, type: timestamptz}
"""
RSS_GROWTH_TARGET = 1.1
ENV_DROPPED = ("DAGSTER_HOME", "DATIVO_HOME", "DATIVO_RATE_LIMIT_URL")

FLOOR = textwrap.dedent(
    """
    import io, json, sys, time, urllib3
    import pyarrow.csv as pacsv
    from google.oauth2 import service_account
    from google.auth.transport.requests import Request
    url, key, folder = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    creds = service_account.Credentials.from_service_account_info(
        key, scopes=["https://www.googleapis.com/auth/drive.readonly"])
    http = urllib3.PoolManager()
    import requests
    session = requests.Session()
    creds.refresh(Request(session))
    auth = {"Authorization": "Bearer " + creds.token}
    files, token = [], None
    while True:
        fields = {"q": f"'{folder}' in parents and trashed = false", "pageSize": "1000",
                  "fields": "nextPageToken,files(id)"}
        if token:
            fields["pageToken"] = token
        page = json.loads(http.request("GET", url + "/drive/v3/files", fields=fields, headers=auth).data)
        files += [f["id"] for f in page["files"]]
        token = page.get("nextPageToken")
        if not token:
            break
    rows = 0
    for file_id in files:
        body = http.request("GET", f"{url}/drive/v3/files/{file_id}", fields={"alt": "media"}, headers=auth).data
        rows += pacsv.read_csv(io.BytesIO(body)).num_rows
    print(rows)
    """
)


def project(root: Path, url: str, folder: str) -> Path:
    """A project whose job ``acme/drive`` loads ``folder`` incrementally by modifiedTime."""
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "connectors/schemas/drive").mkdir(parents=True)
    (root / "tenants/acme/jobs").mkdir(parents=True)
    shutil.copy(REPO / "connectors/sources/gdrive_csv.yaml", root / "connectors/sources/gdrive_csv.yaml")
    (root / "connectors/schemas/drive/parts.v1.yaml").write_text(CONTRACT)
    (root / "connectors/targets/local.yaml").write_text(TARGET)
    (root / "runner.yaml").write_text(yaml.safe_dump({"version": 1, "jobs": [{"tenant": "acme", "job": "drive"}]}))
    job = {
        "tenant": "acme",
        "name": "drive",
        "source": {
            "recipe": "gdrive_csv",
            "connection": {"base_url": url},
            "credentials": {"service_account_json": "${GOOGLE_SA}"},
        },
        "target": {"recipe": "local"},
        "objects": [
            {
                "name": "parts",
                "contract": {"name": "drive/parts", "version": 1},
                "incremental": {"strategy": "file_mtime"},
                "options": {"folder_id": folder},
            }
        ],
    }
    (root / "tenants/acme/jobs/drive.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    return root


def table_rows(root: Path) -> tuple[int, int]:
    """``(rows, distinct ids)`` of the loaded table."""
    import pyarrow.compute as pc

    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.iceberg.catalog import build_catalog
    from dativo_dagster.iceberg.writer import IcebergWriter

    plan = load_plan(root).job("acme/drive")
    writer = IcebergWriter(build_catalog(plan.target, SecretResolver({}), root))
    table = writer.load_table(*plan.object("parts").table_identifier)
    assert table is not None
    ids = table.scan(selected_fields=("id",)).to_arrow()["id"]
    return len(ids), int(pc.count_distinct(ids).as_py())


def run_dativo(root: Path, key: dict[str, Any]) -> Any:
    """``dativo run acme/drive`` in ``root``, measured."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env["GOOGLE_SA"] = json.dumps(key)
    script = Path(sys.executable).parent / "dativo"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "dativo_dagster.cli"]
    measured = run_measured([*command, "--project", str(root), "run", "acme/drive"], env=env, cwd=root)
    if measured.returncode != 0:
        raise RuntimeError(f"dativo run failed:\n{measured.stdout[-3000:]}\n{measured.stderr[-3000:]}")
    return measured


def main() -> None:
    """Run the measurements; print one line each, then one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10_000, help="rows per file")
    args = parser.parse_args()
    few = max(1, args.files // 4)
    shapes = {"full": (args.files, args.rows), "few": (few, args.rows), "many_small": (args.files, args.rows // 4)}
    server = ServerProcess("tests.fakes.google_api", ["--port", "0", "--latency-ms", str(LATENCY_MS)])
    server.start()
    temp = Path(tempfile.mkdtemp(prefix="dativo-bench-gdrive-"))
    try:
        admin = AdminClient(server.url, timeout=120)
        key = admin.call("add_service_account", email=EMAIL, token_uri=f"{server.url}/token")
        folders = {}
        for shape, (count, rows) in shapes.items():
            folder = admin.call("add_folder", name=f"drops-{shape}", shared_with=[EMAIL])
            admin.call("add_csv_files", folder_id=folder, count=count, rows_per_file=rows,
                       start_time="2024-05-01T00:00:00Z")  # fmt: skip
            folders[shape] = folder

        floor = run_measured([sys.executable, "-c", FLOOR, server.url, json.dumps(key), folders["full"]])
        if floor.returncode != 0 or int(floor.stdout.strip() or 0) != args.files * args.rows:
            raise RuntimeError(f"the floor failed: {floor.stdout[-500:]} {floor.stderr[-2000:]}")
        print(f"floor: {args.files} files in {floor.seconds:.2f} s, peak RSS {floor.peak_rss_mb:.0f} MB", flush=True)

        measured = {}
        for shape, (count, rows_per_file) in shapes.items():
            root = project(temp / shape, server.url, folders[shape])
            run = run_dativo(root, key)
            rows, distinct = table_rows(root)
            if rows != distinct or rows != count * rows_per_file:
                raise RuntimeError(f"{count} files: expected {count * rows_per_file:,} rows once, got {rows:,}")
            measured[shape] = run
            print(
                f"dativo, {count} files of {rows_per_file:,} rows: {rows:,} rows in {run.seconds:.2f} s "
                f"({rows / run.seconds:,.0f} rows/s), peak RSS {run.peak_rss_mb:.0f} MB",
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(temp, ignore_errors=True)

    full = measured["full"]
    with_files = measured["many_small"].peak_rss_mb / measured["few"].peak_rss_mb
    with_rows = full.peak_rss_mb / measured["few"].peak_rss_mb
    figures = {
        "files": args.files,
        "rows": args.files * args.rows,
        "rows_per_s": round(args.files * args.rows / full.seconds),
        "peak_rss_mb": round(full.peak_rss_mb, 1),
        "dativo_s": round(full.seconds, 2),
        "floor_s": round(floor.seconds, 2),
        "ratio_to_floor": round(full.seconds / floor.seconds, 2),
        "peak_rss_mb_few_files": round(measured["few"].peak_rss_mb, 1),
        "peak_rss_mb_many_small_files": round(measured["many_small"].peak_rss_mb, 1),
        "rss_growth_with_files": round(with_files, 3),
        "rss_growth_with_rows": round(with_rows, 3),
        "latency_ms": LATENCY_MS,
    }
    print(
        f"ratio to the floor {figures['ratio_to_floor']}; peak RSS with {args.files} files vs {few} files of the same "
        f"rows: {with_files:.3f}x (target <= {RSS_GROWTH_TARGET}); with 4x the rows: {with_rows:.3f}x",
        flush=True,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
