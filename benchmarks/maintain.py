"""Table upkeep: reading a table after 100 merge runs, before and after ``maintain``, against a fresh copy.

Loads 1,000,000 rows (id int64, value string, updated_at timestamptz; merge on id) into a local
Iceberg warehouse with dativo's writer (``IcebergWriter``, the code path of every run), then runs
100 merge runs of 1% updates each (10,000 ids drawn at random over the whole table, so every data
file gets a position-delete file) through the same writer. Then:

* ``read_s_fresh``: a full scan (``table.scan().to_arrow()``) of the same rows freshly written
  into another table in one commit, in id order as a full load would write them (the reference),
* ``read_s_before``: a full scan of the merged table,
* ``maintain_s``: compaction, snapshot expiry (retention 0, keeping what the cursor needs) and
  orphan removal on the merged table, as ``dativo maintain`` runs them,
* ``read_s_after``: a full scan of the merged table after upkeep.

Scans of the fresh and the merged table alternate (twice before upkeep, nine times after) and the
fastest of each is kept. ``rows_identical``: the merged table's rows
(sorted by id) are the same before and after upkeep. Target: ``read_s_after / read_s_fresh ≤ 1.2``.

Run: ``python benchmarks/maintain.py [--rows N] [--runs N] [--update-fraction F]``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ratio

TARGET = 1.2
BATCH_ROWS = 100_000
BASE = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _object(table: str):  # type: ignore[no-untyped-def]
    from dativo_dagster.config.models import ObjectConfig, SchemaContract
    from dativo_dagster.config.plan import ObjectPlan

    contract = SchemaContract.model_validate(
        {
            "name": "bench/items",
            "version": 1,
            "primary_key": ["id"],
            "columns": [
                {"name": "id", "type": "int64", "required": True},
                {"name": "value", "type": "string"},
                {"name": "updated_at", "type": "timestamptz", "required": True},
            ],
        }
    )
    config = ObjectConfig.model_validate(
        {"name": table, "incremental": {"strategy": "updated", "cursor_field": "updated_at"}}
    )
    return ObjectPlan(
        tenant="bench",
        job="upkeep",
        source_name="bench",
        config=config,
        contract=contract,
        options={},
        primary_key=("id",),
        namespace="bench",
        table=table,
        max_rejected_rate=0.0,
    ), contract


def _batches(ids: list[int], version: int) -> Iterator[pa.RecordBatch]:
    stamp = BASE + dt.timedelta(hours=version)
    for start in range(0, len(ids), BATCH_ROWS):
        chunk = ids[start : start + BATCH_ROWS]
        yield pa.RecordBatch.from_pydict(
            {
                "id": pa.array(chunk, pa.int64()),
                "value": pa.array([f"v{version}-{i}" for i in chunk], pa.string()),
                "updated_at": pa.array([stamp] * len(chunk), pa.timestamp("us", tz="UTC")),
            }
        )


def _write(writer, obj, contract, ids: list[int], version: int, previous):  # type: ignore[no-untyped-def]
    from dativo_dagster.state import CursorState
    from dativo_dagster.types import ContractEnforcer

    cursor = CursorState(obj.strategy, "updated_at", (BASE + dt.timedelta(hours=version)).isoformat())
    return writer.write(
        obj,
        _batches(ids, version),
        enforcer=ContractEnforcer.for_contract(contract),
        run_id=f"bench-{version}",
        previous_cursor=previous,
        new_cursor=lambda: cursor,
        keys_unique=True,
    )


def _read_once(table) -> tuple[float, pa.Table]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    data = table.refresh().scan().to_arrow()
    return time.perf_counter() - started, data


def _read_s(*tables, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    """The fastest of ``repeat`` full scans of each table, the tables read in turn (so a slower
    moment of a shared machine weighs on each of them alike)."""
    best = [float("inf")] * len(tables)
    for _ in range(repeat):
        for index, table in enumerate(tables):
            best[index] = min(best[index], _read_once(table)[0])
    return [round(value, 3) for value in best]


def _layout(table) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    tasks = list(table.refresh().scan().plan_files())
    return len(tasks), len({d.file_path for t in tasks for d in t.delete_files})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--update-fraction", type=float, default=0.01)
    args = parser.parse_args()

    import structlog
    from pyiceberg.catalog.sql import SqlCatalog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # warnings and up only
    from dativo_dagster.iceberg.maintenance import compact_table, expire_snapshots, remove_orphans
    from dativo_dagster.iceberg.writer import IcebergWriter
    from dativo_dagster.types import ContractEnforcer

    work = Path(tempfile.mkdtemp(prefix="dativo-bench-maintain-"))
    try:
        catalog = SqlCatalog("bench", uri=f"sqlite:///{work}/c.db", warehouse=f"file://{work}/wh")
        writer = IcebergWriter(catalog)  # the default target of 1,000,000 rows a file
        obj, contract = _object("items")
        rng = random.Random(7)
        started = time.perf_counter()
        result = _write(writer, obj, contract, list(range(args.rows)), 0, None)
        updates = max(1, int(args.rows * args.update_fraction))
        for run in range(1, args.runs + 1):
            ids = sorted(rng.sample(range(args.rows), updates))
            result = _write(writer, obj, contract, ids, run, result.cursor)
            if run % 10 == 0:
                print(f"merge run {run}/{args.runs}: {time.perf_counter() - started:.1f} s", flush=True)
        merge_s = round(time.perf_counter() - started, 1)
        merged = writer.load_table("bench", "items")
        assert merged is not None
        files_before, deletes_before = _layout(merged)

        _, before = _read_once(merged)
        assert before.num_rows == args.rows, before.num_rows
        before = before.sort_by("id")

        fresh_obj, _ = _object("fresh")
        fresh_writer = IcebergWriter(catalog)
        fresh_writer.write(
            fresh_obj,
            iter(before.to_batches(max_chunksize=BATCH_ROWS)),
            enforcer=ContractEnforcer.for_contract(contract),
            run_id="bench-fresh",
            previous_cursor=None,
            new_cursor=lambda: None,
            keys_unique=True,
        )
        fresh = writer.load_table("bench", "fresh")
        assert fresh is not None
        read_s_fresh, read_s_before = _read_s(fresh, merged, repeat=2)

        started = time.perf_counter()
        compaction = compact_table(merged, target_rows=writer.target_file_rows)
        expiry = expire_snapshots(merged.refresh(), retain_days=0)
        orphans = remove_orphans(
            merged.refresh(), older_than_hours=1, now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
        )
        maintain_s = round(time.perf_counter() - started, 2)
        files_after, deletes_after = _layout(merged)

        _, after = _read_once(merged)
        rows_identical = bool(after.sort_by("id").equals(before))
        del after
        read_s_fresh_again, read_s_after = _read_s(fresh, merged, repeat=9)
        read_s_fresh = min(read_s_fresh, read_s_fresh_again)

        print(
            f"{args.runs} merge runs of {updates:,} updates on {args.rows:,} rows: {merge_s} s; "
            f"{files_before} data files + {deletes_before} delete files before upkeep, "
            f"{files_after} + {deletes_after} after",
            flush=True,
        )
        print(
            f"upkeep: {maintain_s} s (compacted {compaction.files_rewritten} files, folded "
            f"{compaction.delete_files_folded} delete files; expired {expiry.snapshots_expired} snapshots; "
            f"removed {orphans.orphans_removed} orphan files, {orphans.bytes_removed:,} bytes)",
            flush=True,
        )
        print(
            f"read before / fresh = {ratio(read_s_before, read_s_fresh)}; "
            f"after / fresh = {ratio(read_s_after, read_s_fresh)} (target ≤ {TARGET})",
            flush=True,
        )
        print(
            json.dumps(
                {
                    "read_s_fresh": read_s_fresh,
                    "read_s_before": read_s_before,
                    "read_s_after": read_s_after,
                    "rows_identical": rows_identical,
                    "before_vs_fresh": ratio(read_s_before, read_s_fresh),
                    "after_vs_fresh": ratio(read_s_after, read_s_fresh),
                    "within_target": ratio(read_s_after, read_s_fresh) <= TARGET,
                    "maintain_s": maintain_s,
                    "merge_runs_s": merge_s,
                    "data_files_before": files_before,
                    "delete_files_before": deletes_before,
                    "data_files_after": files_after,
                    "delete_files_after": deletes_after,
                    "rows": args.rows,
                    "runs": args.runs,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
