"""Dagster resources: the extractor runtime and the Iceberg IO manager.

Both are built per run (Dagster instantiates resources per run), so clients, catalogs and
resolved secrets live on the instance, never in module globals.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

from dativo_dagster.config.loader import default_project_dir, load_plan
from dativo_dagster.config.models import TargetRecipe
from dativo_dagster.config.plan import JobPlan, Plan
from dativo_dagster.config.secrets import SecretResolver

if TYPE_CHECKING:
    # pyiceberg, pyarrow and the source drivers are imported when a run needs them: the code
    # location (definitions load, the webserver's view) never does.
    import pyarrow as pa

    from dativo_dagster.iceberg.writer import IcebergWriter
    from dativo_dagster.sources.base import Source


class DativoResource(dg.ConfigurableResource):
    """Builds sources and Iceberg writers for a run, resolving ``${VAR}`` only now.

    Attributes:
        project_dir: Directory holding runner.yaml (default: ``$DATIVO_PROJECT_DIR``, the
            current directory, or the installed repository).
    """

    project_dir: str | None = None
    _resolver: SecretResolver | None = PrivateAttr(default=None)
    _writers: dict[str, IcebergWriter] = PrivateAttr(default_factory=dict)

    @property
    def root(self) -> Path:
        """Resolved project directory."""
        return Path(self.project_dir).resolve() if self.project_dir else default_project_dir()

    @property
    def resolver(self) -> SecretResolver:
        """The run's secret resolver (remembers values for redaction)."""
        if self._resolver is None:
            self._resolver = SecretResolver()
        return self._resolver

    def source_for(self, job: JobPlan) -> Source:
        """A fresh source for ``job`` (one per credential per run)."""
        from dativo_dagster.sources.registry import build_source

        return build_source(job, self.resolver)

    def writer_for(self, target: TargetRecipe) -> IcebergWriter:
        """The Iceberg writer of ``target`` (one catalog connection per target per run)."""
        from dativo_dagster.iceberg.catalog import build_catalog
        from dativo_dagster.iceberg.writer import IcebergWriter

        writer = self._writers.get(target.name)
        if writer is None:
            catalog = build_catalog(target, self.resolver, self.root)
            writer = IcebergWriter(
                catalog,
                table_properties=dict(target.table_properties),
                target_file_rows=target.target_file_rows,
            )
            self._writers[target.name] = writer
        return writer


class IcebergIOManager(dg.ConfigurableIOManager):
    """Reads dativo's Iceberg tables into downstream assets; writes Arrow tables from user assets.

    Downstream assets declare ``deps``/``ins`` on a dativo asset and receive a ``pyarrow.Table``.
    A user asset that returns a ``pyarrow.Table`` has it written (overwrite) to
    ``<namespace>.<table>`` where the namespace is the key prefix joined by ``_``.

    Attributes:
        target: Target recipe name (connectors/targets/<target>.yaml).
        project_dir: As for :class:`DativoResource`.
    """

    target: str = "local"
    project_dir: str | None = None
    _plan: Plan | None = PrivateAttr(default=None)

    @cached_property
    def _root(self) -> Path:
        return Path(self.project_dir).resolve() if self.project_dir else default_project_dir()

    def _writer(self) -> IcebergWriter:
        from dativo_dagster.config.loader import _Loader
        from dativo_dagster.iceberg.catalog import build_catalog
        from dativo_dagster.iceberg.writer import IcebergWriter

        loader = _Loader(self._root)
        recipe = loader.parse(TargetRecipe, self._root / "connectors" / "targets" / f"{self.target}.yaml")
        if recipe is None:
            from dativo_dagster.config.loader import ConfigProblems

            raise ConfigProblems(loader.problems)
        return IcebergWriter(build_catalog(recipe, SecretResolver(), self._root))

    def _identifier(self, key: dg.AssetKey) -> tuple[str, str]:
        if self._plan is None:
            self._plan = load_plan(self._root)
        for job in self._plan.jobs:
            for obj in job.objects:
                if [obj.tenant, obj.source_name, obj.name] == list(key.path):
                    return obj.table_identifier
        return ("_".join(key.path[:-1]) or "default", key.path[-1])

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Overwrite the asset's table with an Arrow table."""
        import pyarrow as pa

        if obj is None:
            return
        if not isinstance(obj, pa.Table):
            raise TypeError(f"IcebergIOManager stores pyarrow.Table outputs, got {type(obj).__name__}")
        namespace, name = self._identifier(context.asset_key)
        writer = self._writer()
        table = writer.ensure_table(namespace, name, obj.schema)
        table.overwrite(obj, snapshot_properties={"dativo.run-id": context.run_id})
        context.add_output_metadata({"dagster/row_count": obj.num_rows, "dagster/table_name": f"{namespace}.{name}"})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        """Read the upstream asset's Iceberg table."""
        namespace, name = self._identifier(context.asset_key)
        table = self._writer().load_table(namespace, name)
        if table is None:
            raise dg.Failure(f"Iceberg table {namespace}.{name} does not exist yet; materialize it first")
        return table.scan().to_arrow()
