"""Local paths a tenant's configuration names, confined to that tenant's data roots.

A tenant job may name local files (a CSV ``base_path``, a CA bundle). Each such path is resolved
with every symbolic link followed and must then lie inside one of the tenant's data roots
(runner.yaml ``data_roots``, ``{tenant}`` replaced by the tenant id), so no spelling (``..``, an
absolute path, a symlink, a ``**`` glob through a linked directory) reaches another tenant's files
or the host's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from dativo_dagster.errors import ConfigError


def tenant_data_roots(templates: Iterable[str], tenant: str, project_dir: Path) -> tuple[Path, ...]:
    """The data roots of ``tenant``: each template with ``{tenant}`` filled, anchored at the project.

    The roots are resolved (links followed) so that containment is checked on real paths.
    """
    roots = []
    for template in templates:
        path = Path(os.path.expanduser(template.format(tenant=tenant)))
        if not path.is_absolute():
            path = project_dir / path
        roots.append(Path(os.path.realpath(path)))
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
