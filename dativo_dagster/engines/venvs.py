"""One cached virtualenv per connector package.

Connectors pin conflicting dependencies (a Singer tap may want an old ``PyMySQL``, an Airbyte source
its own ``pydantic``), so none of them is installed into dativo's environment: each ``pip_url`` gets
a virtualenv of its own, created on first use and kept under the project's state directory::

    <state dir>/connectors/<name>-<digest>/     # state dir: dativo_dagster.instance.state_dir
    <state dir>/connectors/<name>-<digest>.lock

``<name>`` is the first requirement's project name, ``<digest>`` a digest of the whole ``pip_url``
and the interpreter version, so changing a pin builds a new environment and never mutates one a
running job uses. ``DATIVO_CONNECTORS_DIR`` moves the cache (CI and tests share one directory, so
each environment is built once).

Creation happens under a file lock: two runs needing the same connector build it once, and the
second waits. An environment is only used once a marker file written after a successful install
says it is complete; a half-built one (a run killed during ``pip install``) is removed and built
again.

Interface (used by every engine):

* :func:`connector_venv` ``(project_dir, pip_url, *, label) -> Path``: the environment, built if needed;
* :func:`executable` ``(venv, name) -> Path``: a console script installed in it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import structlog
from filelock import FileLock, Timeout

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import ConfigError, ExtractError

log = structlog.get_logger("dativo.engines.venvs")

CONNECTORS_DIR_ENV = "DATIVO_CONNECTORS_DIR"
READY_MARKER = ".dativo-ready"
LOCK_TIMEOUT_S = 1800.0
"""How long a run waits for another process building the same environment (a large install)."""

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# What pip prints when the requirement itself is wrong (a typo, a version that does not exist):
# a configuration problem, not something a retry can fix.
_BAD_REQUIREMENT = re.compile(
    r"(No matching distribution found|Could not find a version that satisfies|Invalid requirement|"
    r"ResolutionImpossible|conflicting dependencies|is not a valid editable requirement|"
    r"does not appear to be a Python project|No such file or directory)",
    re.I,
)
_TAIL_LINES = 15


def connectors_dir(project_dir: Path) -> Path:
    """Where connector environments are cached: ``$DATIVO_CONNECTORS_DIR``, else ``<state dir>/connectors``."""
    override = os.environ.get(CONNECTORS_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    from dativo_dagster.instance import state_dir  # imports Dagster: only when the cache is not overridden

    return state_dir(project_dir) / "connectors"


def package_name(pip_url: str) -> str:
    """The first requirement's project name (``tap-mysql`` for ``tap-mysql==1.17.7``): a default executable.

    Raises:
        ConfigError: CFG001 for a ``pip_url`` naming no package.
    """
    match = _NAME.match(pip_url)
    if not match:
        raise ConfigError(f"pip_url {_shown(pip_url)!r} names no package")
    return match.group(1)


def venv_name(pip_url: str) -> str:
    """``<name>-<digest>``: the directory name of the environment for ``pip_url``.

    Raises:
        ConfigError: CFG001 for an empty ``pip_url``.
    """
    match = _NAME.match(pip_url)
    if not match or not pip_url.strip():
        raise ConfigError(f"pip_url {_shown(pip_url)!r} names no package")
    name = re.sub(r"[^a-z0-9]+", "-", match.group(1).lower()).strip("-")[:40] or "connector"
    interpreter = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(f"{interpreter}\0{pip_url.strip()}".encode()).hexdigest()[:12]
    return f"{name}-{digest}"


def connector_venv(project_dir: Path, pip_url: str, *, label: str) -> Path:
    """The virtualenv holding ``pip_url``, created and installed on first use.

    Args:
        project_dir: The project (the cache lives under its state directory).
        pip_url: What ``pip install`` is given: one or more requirements separated by spaces
            (``tap-mysql==1.17.7``, ``git+https://...``, ``tap-x==1.0 PyMySQL==0.9.3``).
        label: Names the connector in messages (``tenant/job`` or the recipe).

    Raises:
        ConfigError: CFG001 when pip cannot find or resolve the requirement (with pip's last lines).
        ExtractError: EXT001 (transient) for any other install failure (the index unreachable).
    """
    root = connectors_dir(project_dir)
    name = venv_name(pip_url)
    venv = root / name
    if (venv / READY_MARKER).exists():
        return venv
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{label}: cannot create the connector cache {root}: {exc.strerror}") from None
    lock = FileLock(str(root / f"{name}.lock"))
    try:
        with lock.acquire(timeout=LOCK_TIMEOUT_S):
            if (venv / READY_MARKER).exists():
                return venv  # another process built it while this one waited
            _build(venv, pip_url, label=label)
    except Timeout:
        raise ExtractError(
            f"{label}: waited {LOCK_TIMEOUT_S:.0f}s for another process installing {_shown(pip_url)!r}",
            hint=f"remove {root / (name + '.lock')} if no dativo process is installing it",
        ) from None
    return venv


def _build(venv: Path, pip_url: str, *, label: str) -> None:
    """Create ``venv`` and install ``pip_url`` into it (under the lock); the marker is written last."""
    if venv.exists():
        log.warning("connector_venv_incomplete", venv=str(venv), action="rebuilding")
        shutil.rmtree(venv)
    started = time.monotonic()
    log.info("connector_venv_building", venv=venv.name, pip_url=_shown(pip_url))
    _run([sys.executable, "-m", "venv", str(venv)], label=label, what="create a virtualenv for", pip_url=pip_url)
    python = venv / "bin" / "python"
    requirements = check_pip_url(pip_url, label=label)
    _run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", *requirements],
        label=label,
        what="install",
        pip_url=pip_url,
    )
    (venv / READY_MARKER).write_text(pip_url + "\n", encoding="utf-8")
    log.info("connector_venv_ready", venv=venv.name, seconds=round(time.monotonic() - started, 1))


_INSTALL_ENV_PREFIXES = ("PIP_", "UV_")
_INSTALL_ENV = (
    *("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"),
    *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"),
)
"""What pip sees of dativo's environment: its own settings and the network's. Installing a package can run
its build code, which must not see the tenants' ``${VAR}`` secrets living in dativo's environment."""


def check_pip_url(pip_url: str, *, label: str) -> list[str]:
    """The requirements ``pip_url`` names (pip's own options are refused: an index URL or a
    requirements file would let a recipe change where every connector comes from).

    Raises:
        ConfigError: CFG001 for an option, or for text that does not split into requirements.
    """
    try:
        requirements = shlex.split(pip_url)
    except ValueError:
        raise ConfigError(f"{label}: pip_url is not a list of requirements") from None
    options = [r for r in requirements if r.startswith("-")]
    if options or not requirements:
        raise ConfigError(
            f"{label}: pip_url may name packages only, not pip options ({', '.join(options) or 'empty'})",
            hint="configure the package index for pip itself (PIP_INDEX_URL) where dativo runs",
        )
    return requirements


def _shown(pip_url: str) -> str:
    """``pip_url`` for messages, without the password of a URL (``https://user:token@host/...``)."""
    return redact_text(re.sub(r"(://[^/@\s:]+):[^@/\s]+@", r"\1:***@", pip_url))


def _run(argv: list[str], *, label: str, what: str, pip_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k in _INSTALL_ENV or k.startswith(_INSTALL_ENV_PREFIXES)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False)
    except OSError as exc:
        raise ExtractError(f"{label}: could not {what} {_shown(pip_url)!r}: {exc.strerror}") from None
    if done.returncode == 0:
        return
    output = (done.stdout or "") + (done.stderr or "")
    tail = "\n".join(line for line in output.strip().splitlines()[-_TAIL_LINES:])
    tail = redact_text(tail)
    message = f"{label}: could not {what} {_shown(pip_url)!r} (pip exited {done.returncode}):\n{tail}"
    if _BAD_REQUIREMENT.search(output):
        raise ConfigError(message, hint="check the recipe's pip_url (package name and version)")
    raise ExtractError(message, hint="check that the package index is reachable")


def executable(venv: Path, name: str) -> Path:
    """The console script ``name`` installed in ``venv``.

    Raises:
        ConfigError: CFG001 when the package installed no such command (the recipe's ``executable``).
    """
    if "/" in name or name in ("", ".", ".."):
        raise ConfigError(f"executable {name!r} must be the name of a command the package installs")
    path = venv / "bin" / name
    if not path.exists():
        installed = sorted(
            p.name
            for p in (venv / "bin").iterdir()
            if p.is_file() and not p.name.startswith(("python", "pip", "activate", "Activate"))
        )
        raise ConfigError(
            f"the connector package installed no command {name!r} (it installed: {', '.join(installed) or 'none'})",
            hint="set the recipe's executable to one of those",
        )
    return path
