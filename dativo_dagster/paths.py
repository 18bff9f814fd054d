"""Local paths a tenant's configuration names, confined to that tenant's data roots.

A tenant job may name local files (a CSV ``base_path``, a CA bundle). Each such path is resolved
with every symbolic link followed and must then lie inside one of the tenant's data roots
(runner.yaml ``data_roots``, ``{tenant}`` replaced by the tenant id), so no spelling (``..``, an
absolute path, a symlink, a ``**`` glob through a linked directory) reaches another tenant's files
or the host's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dativo_dagster.errors import ConfigError


def tenant_data_roots(templates: Iterable[str], tenant: str, project_dir: Path) -> tuple[Path, ...]:
    """The data roots of ``tenant``: each template with ``{tenant}`` filled, anchored at the project.

    The part of a template before ``{tenant}`` is the platform's: its links are followed. From the
    component holding ``{tenant}`` on, the directories are the tenant's own, and a tenant that can
    turn one into a symbolic link would move its root anywhere (``tenants/evil/data -> /etc``): none
    of those components may be a link. A root that does not exist yet is fine (nothing to read).

    Raises:
        ConfigError: CFG001 naming the root when a tenant-controlled part of it is a link.
    """
    roots = []
    for template in templates:
        expanded = Path(os.path.expanduser(template))
        parts = expanded.parts
        at = next((i for i, part in enumerate(parts) if "{tenant}" in part), len(parts))
        platform = Path(*parts[:at]) if at else Path(".")
        if not platform.is_absolute():
            platform = project_dir / platform
        root = Path(os.path.realpath(platform))
        for part in parts[at:]:
            root = root / part.format(tenant=tenant)
            if root.is_symlink():
                shown = describe_roots((root,), project_dir)
                raise ConfigError(
                    f"data root '{template.format(tenant=tenant)}': {shown} is a symbolic link; a tenant's "
                    "data root must be a real directory (a link would let it read anywhere)",
                    hint="replace the link by a directory, or add the real location to data_roots in runner.yaml",
                )
        roots.append(root)
    return tuple(roots)


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """True if the real ``path`` lies inside (or is) one of ``roots``."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def confine(path: str | Path, roots: Sequence[Path], *, base: Path, what: str) -> Path:
    """Resolve ``path`` (relative to ``base``) and require it to lie inside the data roots.

    Args:
        path: The path as configured.
        roots: The tenant's resolved data roots.
        base: Directory a relative ``path`` is relative to.
        what: What the path is, for the message (e.g. ``"tenants/acme/jobs/crm.yaml: source.connection.base_path"``).

    Returns:
        The real path (links followed).

    Raises:
        ConfigError: CFG001 naming the field and the allowed roots when it lies outside them.
    """
    candidate = Path(os.path.expanduser(str(path)))
    if not candidate.is_absolute():
        candidate = base / candidate
    real = Path(os.path.realpath(candidate))
    if not any(real == root or root in real.parents for root in roots):
        raise ConfigError(
            f"{what}: {str(path)!r} is outside the tenant's data roots ({describe_roots(roots, base)})",
            hint="put the files under a data root, or add a root for this tenant in runner.yaml (data_roots)",
        )
    return real


def describe_roots(roots: Sequence[Path], project_dir: Path) -> str:
    """The roots as people read them (relative to the project where they lie inside it)."""
    shown = []
    real_project = Path(os.path.realpath(project_dir))
    for root in roots:
        try:
            shown.append(str(root.relative_to(real_project)) or ".")
        except ValueError:
            shown.append(str(root))
    return ", ".join(shown) or "none configured"


def confine_setting_paths(
    value: Any, roots: Sequence[Path], *, base: Path, what: str, literal_only: bool = False
) -> None:
    """Every path (or ``file://`` URL) in a connector setting, at any depth, must lie in the data roots.

    Args:
        value: The setting: a path, a list or mapping holding paths.
        roots: The tenant's resolved data roots.
        base: Directory relative paths are relative to.
        what: The setting, for messages.
        literal_only: Skip values holding a ``${VAR}`` (checked at run time, once resolved).

    Raises:
        ConfigError: CFG001 naming the setting and the path outside the roots.
    """
    if isinstance(value, str):
        if literal_only and "${" in value:
            return
        text = value[len("file://") :] if value.startswith("file://") else value
        if "://" in text or not text.strip():
            return  # a network location, not a local path
        confine(text, roots, base=base, what=what)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            confine_setting_paths(item, roots, base=base, what=f"{what}.{key}", literal_only=literal_only)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            confine_setting_paths(item, roots, base=base, what=f"{what}[{index}]", literal_only=literal_only)
