"""Code-location load time, measured against bare Dagster loading the same assets in the same run.

Absolute load times swing by a factor of three between machines (and by a third between runs on
one machine), so the bar is a ratio: dativo's load over the **floor**, bare Dagster loading the
same assets and checks, measured the same way a moment apart.

Generates throw-away projects (in a temp dir) with ``N / 10`` tenants of one CSV job of 10 objects
each. Every object reads its own CSV file through the shared ``csv`` source recipe, writes through
the shared ``local`` target recipe and uses one shared schema contract; ``runner.yaml`` lists every
tenant job with an hourly cron schedule. Each job keeps the default checks and sets a freshness SLA,
as a real user would, so every object gets dativo's seven checks (contract conformance, required
columns not null, primary key unique, schema matches contract, volume, freshness, quarantine
growth). So N objects give N assets, 7N asset checks, N/10 multi_assets and N/10 cron sensors (one
per tenant job, targeting its assets).

Every measurement is a fresh interpreter (imports included in the total) running what
``dagster definitions validate`` does in-process (``InProcessCodeLocation`` → ``LoadedRepositories``):

* the code location's own load: ``dativo_dagster.definitions`` (every tenant, one location), or
  ``getattr(dativo_dagster.locations, NAME)`` for one location of a sharded project,
* ``Definitions.get_repository_def()`` + ``validate_loadable()`` + ``load_all_definitions()``
  (asset graph, job resolution, resource checks),
* ``RepositorySnap.from_def`` (the snapshot a code location serves to the webserver/daemon) and
  the remote asset graph's ``validate_partitions()``.

dativo is loaded twice per size: the first load parses every YAML file (and fills the project's
caches), later loads are what every later process pays (``load_s_N``: the fastest of
``--repeat`` later loads; ``first_load_s_N`` is the first). Every figure is the fastest of its
runs: on a shared machine other processes only ever add time.

**Floor** (``floor_s_10000``): a fresh interpreter that imports Dagster only and loads the same
asset keys and check keys, grouped into the same multi_assets (the dativo process writes that layout
to a JSON file), with nothing else: no dativo plan, schedules, resources, descriptions, metadata,
tags or kinds. It gets the same GC treatment dativo's build has (no cyclic GC while building,
``gc.freeze()`` after), so the floor is what Dagster charges for these assets however they are
built. ``over_floor_10000`` is dativo's load over it (target ≤ 1.3); floor and dativo loads
alternate so a machine slowing down mid-run affects both.

**Sharded** (``sharded_*``): the same 10,000 objects with ``code_locations: {shards: 4}`` in
runner.yaml; each location loads in its own fresh interpreter, as its own code server would, and
its floor is bare Dagster loading that location's share of the assets. ``sharded_max_location_s`` is
the slowest location, ``sharded_over_floor`` that location's load over its floor (target ≤ 1.3).

Also timed: the real CLI ``dagster definitions validate -m dativo_dagster.definitions`` at the
largest size (interpreter start and teardown included), and a naive reference (one ``@asset`` with
its checks, one asset job and one schedule per object) at 1,000 objects (``--naive-size``; Dagster
resolves each of those jobs against the whole graph, so the naive time grows quadratically).

Run: ``python benchmarks/definitions_load.py [--quick] [--sizes 100,1000,10000] [--repeat 2]
[--shards 4] [--skip-sharded] [--skip-cli] [--skip-naive] [--naive-size N]``. ``--quick`` runs 100
and 1,000 objects only. The last line printed is one JSON object.
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
CHECKS_PER_OBJECT = 7
TARGET_OVER_FLOOR = 1.3
NAIVE_OBJECTS = 1000
SHARDS = 4
_NOT_STAGES = ("total_s", "cpu_s", "process_cpu_s")

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


def generate_project(root: Path, objects: int, shards: int = 0) -> Path:
    """Write a project with ``objects / 10`` tenants x 10 objects under ``root``.

    Args:
        root: Directory to create.
        objects: Number of objects (assets) in total.
        shards: With a positive value, runner.yaml spreads the tenants over this many code locations.
    """
    tenants = max(objects // OBJECTS_PER_JOB, 1)
    (root / "connectors/sources").mkdir(parents=True)
    (root / "connectors/targets").mkdir(parents=True)
    (root / "connectors/schemas/bench").mkdir(parents=True)
    (root / "connectors/sources/csv.yaml").write_text("name: csv\ntype: csv\n")
    (root / "connectors/targets/local.yaml").write_text(
        "name: local\ntype: iceberg\ncatalog_name: dativo\n"
        "catalog: {type: sql, uri: 'sqlite:///${DATIVO_HOME:-.dativo}/catalog.db'}\n"
        "warehouse: '${DATIVO_HOME:-.dativo}/warehouse'\n"
    )
    (root / "connectors/schemas/bench/orders.v1.yaml").write_text(CONTRACT)
    runner = ["version: 1"]
    if shards:
        runner.append(f"code_locations: {{shards: {shards}}}")
    runner.append("jobs:")
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
            # Inside the tenant's default data root: a path outside it makes the job broken.
            f"source: {{recipe: csv, connection: {{base_path: tenants/{tenant}/data}}}}",
            "target: {recipe: local}",
            "checks: {freshness: {max_age_minutes: 120}}",
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
    # A deployed project's files are at rest: date them back, so the first load can keep its
    # validated plan (a plan read while its files change is not kept).
    past = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    return root


# ----------------------------------------------------------------------------- child process


def naive_definitions(plan):  # type: ignore[no-untyped-def]
    """Reference: one @asset (with its checks), one asset job and one schedule per object."""
    import dagster as dg

    from dativo_dagster.resources import DativoResource
    from dativo_dagster.specs import build_asset_spec, build_check_specs
    from dativo_dagster.translator import DativoTranslator

    translator = DativoTranslator()
    assets, jobs, schedules = [], [], []
    for job in plan.jobs:
        checks_by_key: dict = {}
        for check in build_check_specs(job, translator):
            checks_by_key.setdefault(check.asset_key, []).append(check)
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
                check_specs=checks_by_key[spec.key],
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


def bare_definitions(layout):  # type: ignore[no-untyped-def]
    """Floor: the same multi_assets with key-only specs and checks, no jobs, schedules or resources.

    ``layout`` is what :func:`dump_layout` wrote: per multi_asset its op name, asset keys and
    check keys. What any code location exposing these assets and checks pays Dagster.
    """
    import dagster as dg

    assets = []
    for op_name, asset_paths, checks in layout:
        keys = [dg.AssetKey(path) for path in asset_paths]

        @dg.multi_asset(
            name=op_name,
            specs=[dg.AssetSpec(key) for key in keys],
            check_specs=[dg.AssetCheckSpec(name=name, asset=dg.AssetKey(path)) for path, name in checks],
            can_subset=True,
        )
        def _bare(context):  # type: ignore[no-untyped-def]
            return None

        assets.append(_bare)
    return dg.Definitions(assets=assets)


def dump_layout(repo, path: str) -> None:  # type: ignore[no-untyped-def]
    """Write the op name, asset keys and check keys of every multi_asset of ``repo`` to ``path``."""
    layout = []
    for assets_def in repo.assets_defs_by_key.values():
        if not assets_def.is_executable:
            continue
        entry = (
            assets_def.node_def.name,
            [list(key.path) for key in sorted(assets_def.keys)],
            [[list(key.asset_key.path), key.name] for key in sorted(assets_def.check_keys)],
        )
        layout.append(entry)
    # One entry per multi_asset (assets_defs_by_key repeats it once per key).
    unique = {entry[0]: entry for entry in layout}
    Path(path).write_text(json.dumps(sorted(unique.values())))


def child(args: argparse.Namespace) -> None:
    """Load one code location the way ``dagster definitions validate`` does; print stage times."""
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    import dagster as dg
    from dagster._core.remote_representation.external import RemoteRepository
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster._core.remote_representation.handle import RepositoryHandle

    times: dict[str, float] = {}
    if args.floor:
        # Bare Dagster: nothing of dativo is imported.
        t1 = time.perf_counter()
        layout = json.loads(Path(args.floor).read_text())
        t2 = time.perf_counter()
        enabled = gc.isenabled()
        gc.disable()  # the same treatment dativo's build gets: no cyclic GC while building, frozen after
        try:
            defs = bare_definitions(layout)
        finally:
            if enabled:
                gc.enable()
        gc.freeze()
    elif args.naive:
        from dativo_dagster.build import _gc_paused
        from dativo_dagster.config.loader import load_plan

        t1 = time.perf_counter()
        plan = load_plan(args.child)
        t2 = time.perf_counter()
        with _gc_paused():
            defs = naive_definitions(plan)
        gc.freeze()
    elif args.location:
        import dativo_dagster.locations as locations

        t1 = time.perf_counter()
        locations.location_plan(args.location)  # read once per process; getattr below builds from it
        t2 = time.perf_counter()
        defs = getattr(locations, args.location)  # what `dagster code-server start -a NAME` does
    else:
        # Exactly what ``dativo_dagster.definitions`` runs, split in two to time the stages.
        from dativo_dagster.build import code_location_definitions, code_location_plan

        t1 = time.perf_counter()
        plan = code_location_plan()
        t2 = time.perf_counter()
        defs = code_location_definitions(plan)
    times["import_s"] = t1 - t0
    times["load_plan_s"] = t2 - t1
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
    # CPU time of the load: what the load costs, less sensitive than wall time to other processes
    # competing for the machine's cores.
    times["cpu_s"] = time.process_time() - cpu0
    times["process_cpu_s"] = time.process_time()  # interpreter start included
    counts = {
        "assets": len(list(repo.asset_graph.get_all_asset_keys())),
        "checks": len(list(repo.asset_graph.asset_check_keys)),
        "schedules": len(list(repo.schedule_defs)),
        "sensors": len(list(repo.sensor_defs)),
        "jobs": len(repo.get_all_jobs()),
    }
    if args.dump_layout:
        dump_layout(repo, args.dump_layout)
    del dg
    print(json.dumps({**{k: round(v, 3) for k, v in times.items()}, **counts}), flush=True)
    # The process ends here: skip tearing down ~10^6 objects, which is not loading (the wall time
    # measured from outside would count it).
    os._exit(0)


# ----------------------------------------------------------------------------- parent


def measure(
    project: Path,
    *,
    naive: bool = False,
    floor: Path | None = None,
    location: str | None = None,
    dump_layout_to: Path | None = None,
) -> dict[str, float]:
    """One fresh interpreter loading ``project``; wall time measured from outside as well."""
    command = [sys.executable, __file__, "--child", str(project)]
    command += ["--naive"] if naive else []
    command += ["--floor", str(floor)] if floor else []
    command += ["--location", location] if location else []
    command += ["--dump-layout", str(dump_layout_to)] if dump_layout_to else []
    env = {**os.environ, "DATIVO_HOME": str(project / ".dativo"), "DATIVO_PROJECT_DIR": str(project)}
    env.pop("DAGSTER_HOME", None)
    # From the project directory, as a code server started there would run.
    measured = run_measured(command, env=env, cwd=project)
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
    # The interpreter's own console script first: the benchmark may run without its venv activated.
    beside = Path(sys.executable).with_name("dagster")
    dagster = str(beside) if beside.exists() else (shutil.which("dagster") or "dagster")
    command = [dagster, "definitions", "validate", "-m", "dativo_dagster.definitions"]
    # Run from the generated project (no dagster.yaml there): an ephemeral instance, as in CI.
    measured = run_measured(command, env=env, cwd=project)
    if measured.returncode != 0:
        raise RuntimeError(f"dagster definitions validate failed:\n{measured.stderr[-3000:]}")
    return round(measured.seconds, 3)


def _check_counts(result: dict[str, float], assets: int, what: str) -> None:
    # A project whose jobs are all set aside as broken loads fast and empty: never report that.
    if result["assets"] != assets or result["checks"] != assets * CHECKS_PER_OBJECT:
        raise RuntimeError(
            f"{what}: loaded {result['assets']} assets and {result['checks']} checks, "
            f"expected {assets} and {assets * CHECKS_PER_OBJECT}"
        )


def compare_with_floor(project: Path, n: int, repeat: int, workdir: Path, summary: dict[str, object]) -> None:
    """dativo's later loads of ``project`` alternating with the floor's; fills ``summary``."""
    layout = workdir / f"layout-{n}.json"
    cold = measure(project, dump_layout_to=layout)
    _check_counts(cold, n, f"{n} objects")
    print(f"{n:>6} objects, first load: {json.dumps(cold)}", flush=True)
    loads, floors = [], []
    for _ in range(repeat):
        loads.append(measure(project))
        print(f"{n:>6} objects, next load: {json.dumps(loads[-1])}", flush=True)
        floors.append(measure(project, floor=layout))
        _check_counts(floors[-1], n, f"floor of {n} objects")
        print(f"{n:>6} objects, bare Dagster floor: {json.dumps(floors[-1])}", flush=True)
    warm = min(loads, key=lambda r: r["total_s"])
    bare = min(floors, key=lambda r: r["total_s"])
    summary[f"load_s_{n}"] = warm["total_s"]
    summary[f"load_runs_s_{n}"] = [r["total_s"] for r in loads]
    summary[f"first_load_s_{n}"] = cold["total_s"]
    summary[f"peak_rss_mb_{n}"] = warm["peak_rss_mb"]
    summary[f"stages_{n}"] = {k: v for k, v in warm.items() if k.endswith("_s") and k not in _NOT_STAGES}
    summary[f"floor_s_{n}"] = bare["total_s"]
    summary[f"floor_runs_s_{n}"] = [r["total_s"] for r in floors]
    summary[f"floor_stages_{n}"] = {k: v for k, v in bare.items() if k.endswith("_s") and k not in _NOT_STAGES}
    summary[f"over_floor_{n}"] = ratio(warm["total_s"], bare["total_s"])
    summary[f"over_floor_cpu_{n}"] = ratio(min(r["cpu_s"] for r in loads), min(r["cpu_s"] for r in floors))


def sharded(n: int, shards: int, repeat: int, workdir: Path, summary: dict[str, object]) -> None:
    """The same ``n`` objects over ``shards`` code locations, each loaded alone against its floor."""
    from dativo_dagster.config.models import CodeLocations

    project = generate_project(workdir / f"sharded{n}", n, shards=shards)
    names = CodeLocations(shards=shards).names()
    # The first load of any location parses the YAML and fills the project's caches, which every
    # location's later loads share (each location's code server reads the same project).
    cold = measure(project, location=names[0])
    print(f"sharded {n} objects, first load of {names[0]}: {json.dumps(cold)}", flush=True)
    per_location: dict[str, dict[str, float]] = {}
    total_assets = 0
    for name in names:
        layout = workdir / f"layout-{name}.json"
        loads, floors = [], []
        for index in range(repeat):
            loads.append(measure(project, location=name, dump_layout_to=layout if index == 0 else None))
            floors.append(measure(project, floor=layout))
        warm = min(loads, key=lambda r: r["total_s"])
        bare = min(floors, key=lambda r: r["total_s"])
        _check_counts(bare, int(warm["assets"]), f"floor of location {name}")
        total_assets += int(warm["assets"])
        per_location[name] = {
            "assets": warm["assets"],
            "load_s": warm["total_s"],
            "floor_s": bare["total_s"],
            "over_floor": ratio(warm["total_s"], bare["total_s"]),
            "over_floor_cpu": ratio(min(r["cpu_s"] for r in loads), min(r["cpu_s"] for r in floors)),
            "load_runs_s": [r["total_s"] for r in loads],  # type: ignore[dict-item]
            "floor_runs_s": [r["total_s"] for r in floors],  # type: ignore[dict-item]
            "stages": {k: v for k, v in warm.items() if k.endswith("_s") and k not in _NOT_STAGES},  # type: ignore[dict-item]
        }
        print(f"sharded {n} objects, location {name}: {json.dumps(per_location[name])}", flush=True)
    if total_assets != n:
        raise RuntimeError(f"the {shards} locations load {total_assets} assets in total, expected {n}")
    slowest = max(per_location, key=lambda name: per_location[name]["load_s"])
    summary[f"sharded_locations_{n}"] = {
        name: {k: v for k, v in row.items() if k in ("assets", "load_s", "floor_s", "over_floor", "over_floor_cpu")}
        for name, row in per_location.items()
    }
    summary["sharded_slowest_location"] = slowest
    summary["sharded_max_location_s"] = per_location[slowest]["load_s"]
    summary["sharded_max_location_floor_s"] = per_location[slowest]["floor_s"]
    summary["sharded_over_floor"] = per_location[slowest]["over_floor"]
    summary["sharded_over_floor_cpu"] = per_location[slowest]["over_floor_cpu"]
    summary["sharded_worst_over_floor"] = max(row["over_floor"] for row in per_location.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 objects only")
    parser.add_argument("--sizes", help="comma-separated object counts (default 100,1000,10000)")
    parser.add_argument(
        "--repeat", type=int, default=2, help="later loads (and floor loads) per size; the fastest counts"
    )
    parser.add_argument("--shards", type=int, default=SHARDS, help="code locations of the sharded project")
    parser.add_argument("--skip-sharded", action="store_true", help="do not time the sharded project")
    parser.add_argument("--skip-cli", action="store_true", help="do not time `dagster definitions validate`")
    parser.add_argument("--skip-naive", action="store_true", help="do not time the naive reference")
    parser.add_argument("--naive-size", type=int, default=NAIVE_OBJECTS, help="objects in the naive reference project")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", help=argparse.SUPPRESS)
    parser.add_argument("--location", help=argparse.SUPPRESS)
    parser.add_argument("--dump-layout", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    sizes = (
        [int(s) for s in args.sizes.split(",")] if args.sizes else ([100, 1000] if args.quick else [100, 1000, 10000])
    )
    largest = max(sizes)
    workdir = Path(tempfile.mkdtemp(prefix="dativo-bench-defs-"))
    summary: dict[str, object] = {}
    try:
        projects = {}
        for n in sizes:
            projects[n] = generate_project(workdir / f"p{n}", n)
            compare_with_floor(projects[n], n, args.repeat, workdir, summary)
        if not args.skip_sharded and args.shards > 1:
            sharded(largest, args.shards, args.repeat, workdir, summary)
        if not args.skip_cli:
            cli_s = measure_cli(projects[largest])
            print(f"dagster definitions validate, {largest} objects: {cli_s} s", flush=True)
            summary[f"cli_validate_s_{largest}"] = cli_s
        if not args.skip_naive:
            n = args.naive_size
            project = projects.get(n) or generate_project(workdir / f"p{n}", n)
            naive = measure(project, naive=True)
            print(f"naive reference, {n} objects: {json.dumps(naive)}", flush=True)
            summary[f"naive_load_s_{n}"] = naive["total_s"]
            if f"load_s_{n}" in summary:
                summary[f"naive_over_dativo_{n}"] = ratio(naive["total_s"], float(summary[f"load_s_{n}"]))  # type: ignore[arg-type]
        summary["target_over_floor"] = TARGET_OVER_FLOOR
        met = float(summary[f"over_floor_{largest}"]) <= TARGET_OVER_FLOOR  # type: ignore[arg-type]
        if "sharded_over_floor" in summary:
            met = met and float(summary["sharded_over_floor"]) <= TARGET_OVER_FLOOR  # type: ignore[arg-type]
        summary["target_met"] = met
    finally:
        if args.keep:
            print(f"projects kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
