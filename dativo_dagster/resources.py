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

from dativo_dagster.config.loader import default_project_dir, load_plan, load_target_recipe
from dativo_dagster.config.models import TargetRecipe
from dativo_dagster.config.plan import JobPlan, ObjectPlan, Plan
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
    _runtime: Any = PrivateAttr(default=None)

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

    @property
    def runtime(self) -> Any:
        """What the run's API sources share by credential: token buckets, breakers, pools."""
        if self._runtime is None:
            from dativo_dagster.api.source import ApiRuntime

            self._runtime = ApiRuntime()
        return self._runtime

    def source_for(self, job: JobPlan, *, raw_pages: bool = True) -> Source:
        """A fresh source for ``job`` (one per credential per run); ``raw_pages``: see
        :func:`~dativo_dagster.sources.registry.build_source` (off for scratch runs, whose
        exchanges must never reach the production archive that ``dativo replay`` loads from)."""
        from dativo_dagster.sources.registry import build_source

        return build_source(job, self.resolver, self.runtime, raw_pages=raw_pages)

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

    Downstream assets declare ``deps``/``ins`` on a dativo asset and receive a ``pyarrow.Table``
    read from that asset's own target (catalog and warehouse of its tenant job). A user asset that
    returns a ``pyarrow.Table`` has it written (overwrite) to ``<namespace>.<table>`` of ``target``,
    where the namespace is the key prefix joined by ``_``; it records the asset as the table's
    owner, and never writes a tenant's namespace or a table another owner holds.

    Attributes:
        target: Target recipe (connectors/targets/<target>.yaml) for assets dativo does not define.
        project_dir: As for :class:`DativoResource`.
    """

    target: str = "local"
    project_dir: str | None = None
    _plan: Plan | None = PrivateAttr(default=None)
    _writers: dict[str, IcebergWriter] = PrivateAttr(default_factory=dict)

    @cached_property
    def _root(self) -> Path:
        return Path(self.project_dir).resolve() if self.project_dir else default_project_dir()

    def _load_plan(self) -> Plan:
        if self._plan is None:
            self._plan = load_plan(self._root)
        return self._plan

    def _writer(self, target: TargetRecipe) -> IcebergWriter:
        from dativo_dagster.iceberg.catalog import build_catalog
        from dativo_dagster.iceberg.writer import IcebergWriter

        writer = self._writers.get(target.name)
        if writer is None:
            writer = IcebergWriter(
                build_catalog(target, SecretResolver(), self._root), table_properties=dict(target.table_properties)
            )
            self._writers[target.name] = writer
        return writer

    def _dativo_object(self, key: dg.AssetKey) -> tuple[JobPlan, ObjectPlan] | None:
        from dativo_dagster.translator import DativoTranslator

        translator = DativoTranslator()
        for job in self._load_plan().jobs:
            for obj in job.objects:
                if translator.asset_key(obj) == key:
                    return job, obj
        return None

    def _user_table(self, key: dg.AssetKey) -> tuple[str, str]:
        """Where a user asset's table goes; CFG001 if that is a tenant's namespace."""
        from dativo_dagster.config.models import NAMESPACE_SEPARATOR
        from dativo_dagster.errors import ConfigError

        namespace = "_".join(key.path[:-1]) or "default"
        plan = self._load_plan()
        tenants = {job.tenant for job in plan.jobs} | {job.tenant for job in plan.broken}
        owner = namespace.split(NAMESPACE_SEPARATOR, 1)[0]
        if owner in tenants:
            raise ConfigError(
                f"asset {key.to_user_string()} would write namespace '{namespace}', which belongs to tenant '{owner}'",
                hint="give the asset a key prefix that is not a tenant id",
            )
        return namespace, key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Overwrite the asset's table with an Arrow table (user assets only)."""
        import pyarrow as pa

        from dativo_dagster.errors import ConfigError
        from dativo_dagster.iceberg.tables import Owner
        from dativo_dagster.state import PROP_RUN_ID

        if obj is None:
            return
        if not isinstance(obj, pa.Table):
            raise TypeError(f"IcebergIOManager stores pyarrow.Table outputs, got {type(obj).__name__}")
        key = context.asset_key
        if self._dativo_object(key) is not None:
            raise ConfigError(f"asset {key.to_user_string()} is a dativo asset; only dativo writes its table")
        namespace, name = self._user_table(key)
        writer = self._writer(load_target_recipe(self._root, self.target))
        owner = Owner(tenant="dagster", label=f"dagster:{key.to_user_string()}")
        writer.tables.check_namespace(namespace, owner)
        table = writer.ensure_table(namespace, name, obj.schema, owner)
        table.overwrite(obj, snapshot_properties={PROP_RUN_ID: context.run_id})
        context.add_output_metadata({"dagster/row_count": obj.num_rows, "dagster/table_name": f"{namespace}.{name}"})

    def load_input(self, context: dg.InputContext) -> pa.Table:
        """Read the upstream asset's Iceberg table, from the upstream asset's own target."""
        key = context.asset_key
        found = self._dativo_object(key)
        if found is not None:
            job, dativo_obj = found
            target = job.target
            namespace, name = dativo_obj.table_identifier
        else:
            target = load_target_recipe(self._root, self.target)
            namespace, name = self._user_table(key)
        table = self._writer(target).load_table(namespace, name)
        if table is None:
            raise dg.Failure(f"Iceberg table {namespace}.{name} does not exist yet; materialize it first")
        return table.scan().to_arrow()
