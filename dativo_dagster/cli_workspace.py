"""``dativo workspace``: Dagster's workspace.yaml written from runner.yaml's code locations.

Each code location runner.yaml defines (``code_locations``: named groups of tenants, hash shards
of the others, a default) becomes one ``python_module`` entry that loads
``dativo_dagster.locations`` with ``attribute: <location>``, so ``dagster dev`` (or a webserver
pointed at the file) runs one code server per location, and one location failing to load never
hides the others. A project that does not split its tenants keeps the single entry
``dativo_dagster.definitions``. ``--check`` only compares, for CI and image builds.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from dativo_dagster.config.models import RunnerConfig

WORKSPACE_FILE = "workspace.yaml"
LOCATIONS_MODULE = "dativo_dagster.locations"
SINGLE_LOCATION_MODULE = "dativo_dagster.definitions"

_HEADER = (
    "# Written by `dativo workspace` from runner.yaml (code_locations): one code location per entry,\n"
    "# each its own code server. Edit runner.yaml and run `dativo workspace` again;\n"
    "# `dativo workspace --check` fails when this file is out of date.\n"
)


def workspace_entries(runner: RunnerConfig) -> list[dict[str, Any]]:
    """The ``load_from`` entries of workspace.yaml for ``runner``'s code locations."""
    locations = runner.code_locations
    if not locations.groups and not locations.shards:
        # Every tenant in one location: the definitions module the README and `dagster dev -m` use.
        return [{"python_module": {"module_name": SINGLE_LOCATION_MODULE, "location_name": locations.default}}]
    return [
        {"python_module": {"module_name": LOCATIONS_MODULE, "attribute": name, "location_name": name}}
        for name in locations.names()
    ]


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key, as Dagster's own workspace examples are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def workspace_yaml(runner: RunnerConfig) -> str:
    """The text of workspace.yaml for ``runner``."""
    body = yaml.dump(
        {"load_from": workspace_entries(runner)}, Dumper=_IndentedDumper, sort_keys=False, default_flow_style=False
    )
    return _HEADER + body


def check_workspace(path: Path, runner: RunnerConfig) -> list[str]:
    """What differs between the workspace file at ``path`` and ``runner``'s locations (empty: up to date).

    The entries are compared, not the text, so comments and layout may be edited by hand.
    """
    try:
        current = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{path.name} does not exist"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [f"{path.name} cannot be read ({exc.__class__.__name__})"]
    entries = current.get("load_from") if isinstance(current, dict) else None
    expected = workspace_entries(runner)
    if entries == expected:
        return []
    have = _locations(entries)
    want = _locations(expected)
    problems = [f"location '{name}' is missing" for name in want if name not in have]
    problems += [f"location '{name}' is not in runner.yaml" for name in have if name not in want]
    problems += [
        f"location '{name}' loads {have[name]}, expected {want[name]}"
        for name in want
        if name in have and have[name] != want[name]
    ]
    return problems or ["load_from differs from what runner.yaml gives (order or extra keys)"]


def _locations(entries: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        module = entry.get("python_module") if isinstance(entry, dict) else None
        if not isinstance(module, dict):
            continue
        target = str(module.get("module_name"))
        if module.get("attribute"):
            target += f" -a {module['attribute']}"
        found[str(module.get("location_name") or target)] = target
    return found


def cmd_workspace(args: argparse.Namespace) -> int:
    """Write workspace.yaml from runner.yaml, or with ``--check`` fail when it is out of date."""
    from dativo_dagster.cli import EXIT_FAILED, EXIT_OK, say_error, say_ok
    from dativo_dagster.config.loader import default_project_dir, load_plan

    project = Path(args.project).resolve() if args.project else default_project_dir()
    runner = load_plan(project).runner
    path = Path(args.file) if args.file else project / WORKSPACE_FILE
    names = ", ".join(entry["python_module"]["location_name"] for entry in workspace_entries(runner))
    if args.check:
        problems = check_workspace(path, runner)
        for problem in problems:
            say_error(f"CFG001 {path.name}: {problem}")
        if problems:
            say_error("workspace.yaml is out of date: run `dativo workspace`")
            return EXIT_FAILED
        say_ok(f"{path.name} is up to date: {names}")
        return EXIT_OK
    path.write_text(workspace_yaml(runner), encoding="utf-8")
    say_ok(f"wrote {path.name}: {names}")
    return EXIT_OK


def add_workspace_command(sub: Any) -> None:
    """Register ``dativo workspace`` on the CLI's subparsers."""
    workspace = sub.add_parser("workspace", help="write workspace.yaml from runner.yaml's code locations")
    workspace.add_argument("--check", action="store_true", help="fail (exit 2) when workspace.yaml is out of date")
    workspace.add_argument(
        "--file", type=Path, default=None, help="workspace file (default: workspace.yaml in the project)"
    )
    workspace.set_defaults(func=cmd_workspace)
