"""Helpers shared by the benchmark scripts: timed subprocesses with peak RSS, throw-away projects."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    """Wall time and peak resident memory of one subprocess (children included)."""

    seconds: float
    peak_rss_mb: float
    stdout: str
    stderr: str
    returncode: int


def run_measured(
    command: list[str], *, env: dict[str, str] | None = None, stdout_to_null: bool = False, cwd: Path | None = None
) -> Measured:
    """Run ``command`` and sample the RSS of its process tree every 20 ms."""
    started = time.perf_counter()
    process = psutil.Popen(
        command,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL if stdout_to_null else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            try:
                total = process.memory_info().rss
                for child in process.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    elapsed = time.perf_counter() - started
    stop.set()
    sampler.join()
    return Measured(elapsed, peak / 2**20, out or "", err or "", process.returncode)


ENGINE_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.engine import ingest_object
    from dativo_dagster.iceberg.catalog import build_catalog
    from dativo_dagster.iceberg.writer import IcebergWriter
    from dativo_dagster.sources.registry import build_source

    plan = load_plan(sys.argv[1])
    job = plan.jobs[0]
    resolver = SecretResolver()
    writer = IcebergWriter(build_catalog(job.target, resolver, plan.project_dir),
                           target_file_rows=job.target.target_file_rows)
    with build_source(job, resolver) as source:
        started = time.perf_counter()
        result = ingest_object(job.objects[0], source=source, writer=writer, run_id=sys.argv[2])
        elapsed = time.perf_counter() - started
    if result.error is not None:
        print(json.dumps({"error": str(result.error)}))
        sys.exit(2)
    w = result.write
    print(json.dumps({"load_s": elapsed, "rows": w.rows_written, "replaced": w.rows_replaced,
                      "delete_files": w.delete_files, "files_rewritten": w.files_rewritten,
                      "data_files": w.data_files, "bytes_written": w.bytes_written,
                      "rows_rejected": w.rows_rejected, "total_rows": result.total_rows}))
    """
)


def run_engine(
    project: Path, run_id: str, extra_env: dict[str, str] | None = None
) -> tuple[Measured, dict[str, float]]:
    """Run one object of the project's only job through the engine in a fresh interpreter."""
    env = {**os.environ, "DATIVO_HOME": str(project / ".dativo"), **(extra_env or {})}
    measured = run_measured([sys.executable, "-c", ENGINE_RUNNER, str(project), run_id], env=env)
    if measured.returncode != 0:
        raise RuntimeError(f"dativo run failed: {measured.stdout[-2000:]} {measured.stderr[-2000:]}")
    return measured, json.loads(measured.stdout.strip().splitlines()[-1])


def sql_project(source_type: str, connection: dict[str, object], table: str) -> Path:
    """A throw-away project with one ``updated``-merge job over ``table``."""
    root = Path(tempfile.mkdtemp(prefix=f"dativo-bench-{source_type}-"))
    (root / "tenants/bench/jobs").mkdir(parents=True)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "runner.yaml").write_text("version: 1\njobs: [{tenant: bench, job: load}]\n")
    (root / "connectors/sources" / f"{source_type}.yaml").write_text(f"name: {source_type}\ntype: {source_type}\n")
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
    )
    conn = ", ".join(f"{k}: {v}" for k, v in connection.items())
    (root / "tenants/bench/jobs/load.yaml").write_text(
        "tenant: bench\nname: load\n"
        f"source: {{recipe: {source_type}, connection: {{{conn}}}}}\n"
        "target: {recipe: local}\n"
        "objects:\n"
        f"  - name: orders\n    options: {{table: {table}}}\n    primary_key: [id]\n"
        "    incremental: {strategy: updated, cursor_field: updated_at}\n"
    )
    return root


def inc_cursor(project: Path) -> str:
    """The cursor the project's last run committed, as the lower bound of the next read."""
    from dativo_dagster.config.loader import load_plan
    from dativo_dagster.config.secrets import SecretResolver
    from dativo_dagster.iceberg.catalog import build_catalog
    from dativo_dagster.iceberg.writer import IcebergWriter, read_table_cursor

    job = load_plan(project).jobs[0]
    writer = IcebergWriter(build_catalog(job.target, SecretResolver(), project))
    table = writer.load_table(*job.objects[0].table_identifier)
    assert table is not None
    found = read_table_cursor(table)
    assert found is not None and found.cursor is not None
    return str(found.cursor.value)


def ratio(a: float, b: float) -> float:
    """a / b rounded for reports."""
    return round(a / b, 2) if b else float("nan")
