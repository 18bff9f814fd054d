"""Code-location load time: how long Dagster takes to load a dativo project of N assets.

Generates throw-away projects (in a temp dir) with ``N / 10`` tenants of one CSV job of 10 objects
each. Every object reads its own CSV file through the shared ``csv`` source recipe, writes through
the shared ``local`` target recipe and uses one shared schema contract; ``runner.yaml`` lists every
tenant job with an hourly cron schedule. So N objects give N assets, N asset checks, N/10
multi_assets and N/10 schedules (each launching its job's assets in Dagster's asset job).

For each size a fresh interpreter (imports included in the total) runs what
``dagster definitions validate -m dativo_dagster.definitions`` does in-process
(``dagster._cli.definitions`` → ``InProcessCodeLocation`` → ``LoadedRepositories``):

* ``load_plan`` (YAML + pydantic) and ``code_location_definitions`` (multi_assets,
  schedules; exactly what ``dativo_dagster.definitions`` runs),
* ``Definitions.get_repository_def()`` + ``validate_loadable()`` + ``load_all_definitions()``
  (asset graph, job resolution, resource checks),
* ``RepositorySnap.from_def`` (the snapshot a code location serves to the webserver/daemon) and
  the remote asset graph's ``validate_partitions()``.

Each size is loaded twice: the first load parses every YAML file (and fills the project's parse
cache), the second is what every later process pays (``load_s_N``; ``first_load_s_N`` is the
first). For the largest size it also times the real CLI, ``dagster definitions validate -m
dativo_dagster.definitions`` with ``DATIVO_PROJECT_DIR`` pointing at the generated project
(interpreter start and teardown included).

Floor: the same 1,000 multi_assets with key-only specs and checks and nothing else (no
schedules, resources, metadata), what Dagster charges for these assets however they are built
(imports included, the plan it takes the keys from excluded); ``dativo_over_bare_N`` is dativo's
load over it.

Reference: the same project built naively (one ``@asset`` with its check, one asset job and one
schedule per object) at 1,000 objects (``--naive-size``; Dagster resolves each of those jobs
against the whole graph, so the naive time grows quadratically: 5,000 objects take minutes).

Target: 10,000 assets load in under 10 s (2-core machine).

Run: ``python benchmarks/definitions_load.py [--quick] [--sizes 100,1000,10000] [--skip-cli]
[--skip-naive] [--naive-size N]``. ``--quick`` runs 100 and 1,000 objects only. The last line
printed is one JSON object.
"""

# No `from __future__ import annotations`: Dagster resolves the naive asset functions' annotations.

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ratio, run_measured

OBJECTS_PER_JOB = 10
TARGET_S = 10.0
NAIVE_OBJECTS = 1000

CONTRACT = """\
name: bench/orders
version: 1
description: One row per order
primary_key: [order_id]
cursor_field: order_id
columns:
  - {name: order_id, type: int64, required: true, description: Order id}
  - {name: customer_id, type: int64, required: true}
  - {name: status, type: string, required: true}
  - {name: amount, type: decimal, precision: 12, scale: 2, required: true}
  - {name: currency, type: string}
  - {name: ordered_at, type: timestamptz, required: true}
"""


def generate_project(root: Path, objects: int) -> Path:
    """Write a project with ``objects / 10`` tenants x 10 objects under ``root``."""
    tenants = max(objects // OBJECTS_PER_JOB, 1)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "connectors/schemas/bench").mkdir(parents=True)
    (root / "connectors/sources/csv.yaml").write_text("name: csv\ntype: csv\ndefaults: {base_path: data}\n")
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ntype: iceberg\ncatalog_name: dativo\n"
        "catalog: {type: sql, uri: 'sqlite:///${DATIVO_HOME:-.dativo}/catalog.db'}\n"
        "warehouse: '${DATIVO_HOME:-.dativo}/warehouse'\n"
    )
    (root / "connectors/schemas/bench/orders.v1.yaml").write_text(CONTRACT)
    runner = ["version: 1", "jobs:"]
    for t in range(tenants):
        tenant = f"tenant{t:05d}"
        runner.append(
            f"  - {{tenant: {tenant}, job: shop, schedule: {{cron: '{t % 60} * * * *', timezone: UTC}}, "
            "tags: {team: data-platform}}"
        )
        jobs = root / "tenants" / tenant / "jobs"
        jobs.mkdir(parents=True)
        lines = [
            f"tenant: {tenant}",
            "name: shop",
            f"description: Shop of {tenant}",
            'owners: ["team:data-platform"]',
            f"source: {{recipe: csv, connection: {{base_path: data/{tenant}}}}}",
            "target: {recipe: local}",
            "objects:",
        ]
        for o in range(OBJECTS_PER_JOB):
            lines += [
                f"  - name: orders_{o}",
                "    contract: {name: bench/orders, version: 1}",
                f"    options: {{path: orders_{o}.csv}}",
                "    incremental: {strategy: append, cursor_field: order_id}",
            ]
        (jobs / "shop.yaml").write_text("\n".join(lines) + "\n")
    (root / "runner.yaml").write_text("\n".join(runner) + "\n")
    return root


# ----------------------------------------------------------------------------- child process


def naive_definitions(plan):  # type: ignore[no-untyped-def]
    """Reference: one @asset (with its check), one asset job and one schedule per object."""
    import dagster as dg

    from dativo_dagster.resources import DativoResource
    from dativo_dagster.specs import CHECK_CONTRACT, build_asset_spec
    from dativo_dagster.translator import DativoTranslator

    translator = DativoTranslator()
    assets, jobs, schedules = [], [], []
    for job in plan.jobs:
        for obj in job.objects:
            spec = build_asset_spec(obj, job, translator)
            op_name = f"{obj.tenant}__{obj.job}__{obj.name}"

            @dg.asset(
                key=spec.key,
                name=None,
                group_name=spec.group_name,
                description=spec.description,
                tags=spec.tags,
                kinds=spec.kinds,
                owners=spec.owners,
                metadata=spec.metadata,
                check_specs=[dg.AssetCheckSpec(name=CHECK_CONTRACT, asset=spec.key, blocking=False)],
                op_tags=translator.run_tags(job),
                pool=translator.pool(job),
            )
            def _one(context: dg.AssetExecutionContext, dativo: DativoResource):
                return None

            assets.append(_one)
            asset_job = dg.define_asset_job(
                name=f"{op_name}__job", selection=dg.AssetSelection.assets(spec.key), tags=translator.run_tags(job)
            )
            jobs.append(asset_job)
            assert job.schedule is not None
            schedules.append(
                dg.ScheduleDefinition(
                    name=f"{op_name}__schedule",
                    job=asset_job,
                    cron_schedule=job.schedule.cron_expression,
                    execution_timezone=job.schedule.timezone,
                )
            )
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        resources={"dativo": DativoResource(project_dir=str(plan.project_dir))},
    )


def bare_definitions(plan):  # type: ignore[no-untyped-def]
    """Floor: the same multi_assets with key-only specs and checks, no jobs, schedules or resources.

    What any code location exposing these 10,000 assets and checks pays Dagster, however it is built.
    """
    import dagster as dg

    assets = []
    for job in plan.jobs:
        keys = [dg.AssetKey([obj.tenant, obj.source_name, obj.name]) for obj in job.objects]

        @dg.multi_asset(
            name=f"{job.tenant}__{job.name}",
            specs=[dg.AssetSpec(key) for key in keys],
            check_specs=[dg.AssetCheckSpec(name="check", asset=key) for key in keys],
            can_subset=True,
        )
        def _bare(context):  # type: ignore[no-untyped-def]
            return None

        assets.append(_bare)
    return dg.Definitions(assets=assets)


def child(project: str, naive: bool, bare: bool = False) -> None:
    """Load the code location the way ``dagster definitions validate`` does; print stage times."""
    t0 = time.perf_counter()
    import dagster as dg
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.remote_representation.handle import RepositoryHandle

    from dativo_dagster.build import code_location_definitions
    from dativo_dagster.config.loader import load_plan

    times: dict[str, float] = {}
    t1 = time.perf_counter()
    times["import_s"] = t1 - t0
    plan = load_plan(project)
    t2 = time.perf_counter()
    times["load_plan_s"] = t2 - t1
    if naive or bare:
        from dativo_dagster.build import _gc_paused

        # The same treatment dativo's own build gets: no cyclic GC while building, frozen after.
        with _gc_paused():
            defs = naive_definitions(plan) if naive else bare_definitions(plan)
        gc.freeze()
    else:
        defs = code_location_definitions(plan)  # exactly what dativo_dagster.definitions runs
    t3 = time.perf_counter()
    times["build_s"] = t3 - t2
    repo = defs.get_repository_def()
    repo.validate_loadable()
    repo.load_all_definitions()
    t4 = time.perf_counter()
    times["repository_s"] = t4 - t3
    snap = RepositorySnap.from_def(repo)
    t5 = time.perf_counter()
    times["snapshot_s"] = t5 - t4
    handle = RepositoryHandle.for_test(location_name="bench", repository_name=repo.name)
    remote = RemoteRepository(snap, handle, auto_materialize_use_sensors=True)
    remote.asset_graph.validate_partitions()
    t6 = time.perf_counter()
    times["remote_graph_s"] = t6 - t5
    times["total_s"] = t6 - t0
    counts = {
        "assets": len(list(repo.asset_graph.get_all_asset_keys())),
        "checks": len(list(repo.asset_graph.asset_check_keys)),
        "schedules": len(list(repo.schedule_defs)),
        "jobs": len(repo.get_all_jobs()),
    }
    del dg
    print(json.dumps({**{k: round(v, 3) for k, v in times.items()}, **counts}), flush=True)
    # The process ends here: skip tearing down ~10^6 objects, which is not loading (the wall time
    # measured from outside would count it).
    os._exit(0)


# ----------------------------------------------------------------------------- parent


def measure(project: Path, naive: bool = False, bare: bool = False) -> dict[str, float]:
    """One fresh interpreter loading ``project``; wall time measured from outside as well."""
    command = [sys.executable, __file__, "--child", str(project)]
    command += (["--naive"] if naive else []) + (["--bare"] if bare else [])
    measured = run_measured(command, env={**os.environ, "DATIVO_HOME": str(project / ".dativo")})
    if measured.returncode != 0:
        raise RuntimeError(f"load failed:\n{measured.stderr[-3000:]}")
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(measured.seconds, 3)
    result["peak_rss_mb"] = round(measured.peak_rss_mb, 1)
    return result


def measure_cli(project: Path) -> float:
    """Wall time of the real ``dagster definitions validate`` on the project (teardown included)."""
    env = {**os.environ, "DATIVO_PROJECT_DIR": str(project), "DATIVO_HOME": str(project / ".dativo")}
    env.pop("DAGSTER_HOME", None)
    dagster = shutil.which("dagster") or "dagster"
    command = [dagster, "definitions", "validate", "-m", "dativo_dagster.definitions"]
    # Run from the generated project (no dagster.yaml there): an ephemeral instance, as in CI.
    measured = run_measured(command, env=env, cwd=project)
    if measured.returncode != 0:
        raise RuntimeError(f"dagster definitions validate failed:\n{measured.stderr[-3000:]}")
    return round(measured.seconds, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 objects only")
    parser.add_argument("--sizes", help="comma-separated object counts (default 100,1000,10000)")
    parser.add_argument("--skip-cli", action="store_true", help="do not time `dagster definitions validate`")
    parser.add_argument("--skip-naive", action="store_true", help="do not time the naive reference")
    parser.add_argument("--naive-size", type=int, default=NAIVE_OBJECTS, help="objects in the naive reference project")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.naive, args.bare)
        return

    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick else [100, 1000, 10000])
    )
    naive_size = args.naive_size
    workdir = Path(tempfile.mkdtemp(prefix="dativo-bench-defs-"))
    summary: dict[str, object] = {}
    try:
        projects = {}
        for n in sizes:
            projects[n] = generate_project(workdir / f"p{n}", n)
            # The first load parses every YAML file and fills the project's parse cache; the
            # second is what every later process (code server restart, run worker) pays.
            cold = measure(projects[n])
            warm = measure(projects[n])
            print(f"{n:>6} objects, first load: {json.dumps(cold)}", flush=True)
            print(f"{n:>6} objects, next loads: {json.dumps(warm)}", flush=True)
            summary[f"load_s_{n}"] = warm["total_s"]
            summary[f"first_load_s_{n}"] = cold["total_s"]
            summary[f"peak_rss_mb_{n}"] = warm["peak_rss_mb"]
            summary[f"stages_{n}"] = {k: v for k, v in warm.items() if k.endswith("_s") and k != "total_s"}
        largest = max(sizes)
        bare = measure(projects[largest], bare=True)
        print(f"{largest:>6} objects, bare Dagster floor: {json.dumps(bare)}", flush=True)
        # The floor needs the keys only: the plan it read them from is not part of it.
        floor = round(bare["total_s"] - bare["load_plan_s"], 3)
        summary[f"bare_dagster_load_s_{largest}"] = floor
        summary[f"dativo_over_bare_{largest}"] = ratio(float(summary[f"load_s_{largest}"]), floor)  # type: ignore[arg-type]
        if not args.skip_cli:
            cli_s = measure_cli(projects[largest])
            print(f"dagster definitions validate, {largest} objects: {cli_s} s", flush=True)
            summary[f"cli_validate_s_{largest}"] = cli_s
        if not args.skip_naive:
            n = naive_size
            project = projects.get(n) or generate_project(workdir / f"p{n}", n)
            naive = measure(project, naive=True)
            print(f"naive reference, {n} objects: {json.dumps(naive)}", flush=True)
            summary[f"naive_load_s_{n}"] = naive["total_s"]
            if f"load_s_{n}" in summary:
                summary[f"naive_over_dativo_{n}"] = ratio(naive["total_s"], float(summary[f"load_s_{n}"]))  # type: ignore[arg-type]
        if 10000 in sizes:
            summary["target_s_10000"] = TARGET_S
            summary["target_met"] = float(summary["load_s_10000"]) < TARGET_S  # type: ignore[arg-type]
    finally:
        if args.keep:
            print(f"projects kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
