"""``engine: meltano``: an extractor defined in a Meltano project, run with that project's settings.

Recipe::

    name: shop_meltano
    engine: meltano
    meltano:
      project: meltano/shop        # the directory holding meltano.yml, inside the dativo project
      extractor: tap-mysql         # the extractor's name in meltano.yml
      pip_url: meltano==4.4.1      # Meltano itself (its own cached virtualenv); this is the default
    config:                        # optional overrides of the extractor's settings, as TAP_MYSQL_<SETTING>
      password: "${SHOP_DB_PASSWORD}"

How it runs:

* Meltano is installed into its own cached virtualenv (:mod:`dativo_dagster.engines.venvs`); the
  extractor is installed by ``meltano install --plugin-type extractor <name>`` into the Meltano project
  (``.meltano/``) the first time, under a file lock.
* Discovery is ``meltano invoke <extractor> --discover``; a sync is ``meltano invoke <extractor>
  --state <file>`` with dativo's catalog given through Meltano's catalog extra
  (``<EXTRACTOR>__CATALOG=<file>``, Meltano then skips its own discovery): the extractor gets its
  config from the Meltano project (meltano.yml, its environment, ``.env``), with the recipe's
  ``config`` (and the job's ``connection``/``credentials``) as ``<EXTRACTOR>_<SETTING>`` environment
  variables on top. Values never appear in argv.
* State is dativo's, exactly as for :mod:`~dativo_dagster.engines.singer` (Meltano's own state
  backend is not used): the object's cursor is the tap's state, committed in the Iceberg snapshot.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import ClassVar

import structlog
from filelock import FileLock

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.engines.base import EngineProtocol, EngineSource
from dativo_dagster.engines.singer import SingerProtocol
from dativo_dagster.errors import ConfigError, ExtractError

log = structlog.get_logger("dativo.engines.meltano")

_MELTANO_ENV = {
    "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
    "MELTANO_DISABLE_TRACKING": "true",
}


def env_prefix(extractor: str) -> str:
    """Meltano's environment-variable prefix of a plugin (``tap-mysql`` → ``TAP_MYSQL``)."""
    return re.sub(r"[^A-Za-z0-9]", "_", extractor).upper()


class MeltanoSource(EngineSource):
    """A Singer tap managed by a Meltano project (``meltano invoke``)."""

    type = "meltano"
    protocol_class: ClassVar[builtins.type[EngineProtocol]] = SingerProtocol

    def make_protocol(self) -> EngineProtocol:
        """Install Meltano and the extractor (first use) and run the tap through ``meltano invoke``."""
        from dativo_dagster.engines.venvs import connector_venv, executable

        settings = self.recipe.meltano
        if settings is None:  # the recipe model refuses this; kept for type checkers
            raise ConfigError(f"{self.label}: engine meltano needs 'meltano: {{project, extractor}}'")
        project = (self.project_dir / settings.project).resolve()
        if self.project_dir.resolve() not in project.parents and project != self.project_dir.resolve():
            raise ConfigError(f"{self.label}: meltano.project {settings.project!r} lies outside the project")
        if not (project / "meltano.yml").is_file():
            raise ConfigError(f"{self.label}: meltano.project: no meltano.yml in {settings.project}")
        venv = connector_venv(self.project_dir, settings.pip_url, label=self.label)
        meltano = executable(venv, "meltano")
        env = {**_MELTANO_ENV, "MELTANO_PROJECT_ROOT": str(project)}
        self._install(meltano, project, settings.extractor, env, venv)
        prefix = env_prefix(settings.extractor)
        for key, value in self.config.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"{prefix}_{env_prefix(str(key))}"] = text
        return SingerProtocol(
            command=[str(meltano), "invoke", settings.extractor],
            env=env,
            cwd=project,
            pass_config=False,
            catalog_env=f"{prefix}__CATALOG",
            path_prefix=(venv / "bin",),
            label=self.label,
            project_dir=self.project_dir,
            config=self.config,
            secrets=self.secrets,
        )

    def _install(self, meltano: Path, project: Path, extractor: str, env: dict[str, str], venv: Path) -> None:
        """``meltano install`` the extractor unless the project already has it (under a file lock)."""
        # Written only once ``meltano install`` succeeded: a venv directory alone may be one a killed
        # install left half built, or one a concurrent install is still filling.
        # Keyed by meltano.yml's content too: a changed extractor definition is installed again.
        digest = hashlib.sha256((project / "meltano.yml").read_bytes()).hexdigest()[:12]
        ready = project / ".meltano" / f"dativo-installed-{extractor}-{digest}"
        if ready.exists():
            return
        (project / ".meltano").mkdir(exist_ok=True)
        with FileLock(str(project / ".meltano" / "dativo-install.lock")):
            if ready.exists():
                return
            log.info("meltano_install", connector=self.label, extractor=extractor)
            run_env = {k: os.environ[k] for k in ("HOME", "LANG", "TMPDIR", "SSL_CERT_FILE") if k in os.environ}
            run_env.update(env)
            run_env["PATH"] = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "/usr/bin:/bin")])
            done = subprocess.run(
                [str(meltano), "install", "--plugin-type", "extractor", extractor],
                cwd=project,
                env=run_env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode != 0:
                tail = redact_text("\n".join((done.stdout + done.stderr).strip().splitlines()[-15:]), self.secrets)
                message = f"{self.label}: meltano install of {extractor!r} failed:\n{tail}"
                if re.search(r"(not found|No matching distribution|Could not find a version|does not exist)", tail):
                    raise ConfigError(message, hint="check the extractor's name and pip_url in meltano.yml")
                raise ExtractError(message)
            ready.write_text(extractor + "\n", encoding="utf-8")
