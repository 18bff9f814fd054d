"""The demo project turned into a folder of CSV drops that a new-file sensor watches."""

from __future__ import annotations

import os
from pathlib import Path

HEADER = "order_id,customer_id,status,amount,currency,ordered_at\n"
CUSTOMERS_HEADER = "customer_id,email,name,country,created_at,updated_at\n"


def watch_drops(project: Path, *, interval_s: int = 5, schedule: bool = True, customers: bool = False) -> Path:
    """Make demo/shop read its orders from ``drops/*.csv`` by modification time (its customers
    from ``customer_drops/*.csv`` too with ``customers``), with a new-file sensor checking every
    ``interval_s``; without ``schedule`` the job has no cron sensor. Returns the drops directory."""
    data = project / "tenants/demo/data"
    (data / "drops").mkdir()
    job = project / "tenants/demo/jobs/shop.yaml"
    text = (
        job.read_text()
        .replace("options: {path: orders.csv}", "options: {path: 'drops/*.csv'}")
        .replace(
            "strategy: append        # order_id only grows: new rows are those past the last id\n"
            "      cursor_field: order_id",
            "strategy: file_mtime",
        )
    )
    if customers:
        (data / "customer_drops").mkdir()
        text = text.replace("options: {path: customers.csv}", "options: {path: 'customer_drops/*.csv'}")
    job.write_text(text)
    runner = project / "runner.yaml"
    lines = runner.read_text()
    if not schedule:
        lines = lines.replace('    schedule:\n      cron: "0 * * * *"      # hourly\n      timezone: UTC\n', "")
        # The job has no cron schedule left (comments may still mention the word).
        assert not [line for line in lines.splitlines() if "schedule:" in line.split("#", 1)[0]]
    runner.write_text(
        lines.replace("    tags:\n", f"    file_sensor: {{minimum_interval_seconds: {interval_s}}}\n    tags:\n", 1)
    )
    return data / "drops"


def drop(directory: Path, name: str, first_id: int, rows: int = 1, modified_ns: int | None = None) -> Path:
    """Write a CSV of ``rows`` orders from ``first_id`` (optionally with a given modification time)."""
    body = "".join(f"{i},1,paid,1.00,EUR,2024-01-01T00:00:00Z\n" for i in range(first_id, first_id + rows))
    path = directory / name
    path.write_text(HEADER + body)
    if modified_ns is not None:
        os.utime(path, ns=(modified_ns, modified_ns))
    return path
