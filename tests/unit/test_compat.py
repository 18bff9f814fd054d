"""Every private symbol of a dependency dativo uses, one test each: an upgrade fails here, by name.

The versions are pinned exactly in pyproject.toml; these tests say what to re-check when a pin moves.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pytest

from dativo_dagster.compat import dagster as dagster_compat
from dativo_dagster.compat import dagster_instance
from dativo_dagster.compat import pyiceberg as iceberg_compat


def test_pins_match_the_installed_versions() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"dagster=={version("dagster")}"' in pyproject
    assert f"pyiceberg[sql-sqlite,sql-postgres,glue,adlfs]=={version('pyiceberg')}" in pyproject


# ----------------------------------------------------------------------------- pyiceberg


def _params(func: object) -> list[str]:
    return list(inspect.signature(func).parameters)  # type: ignore[arg-type]


@pytest.fixture
def table(tmp_path: Path):  # type: ignore[no-untyped-def]
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("c", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("n")
    table = catalog.create_table(("n", "t"), schema=pa.schema([pa.field("id", pa.int64())]))
    table.append(pa.table({"id": pa.array([1, 2], pa.int64())}))
    return table


def test_overwrite_files_producer_state(table) -> None:  # type: ignore[no-untyped-def]
    from pyiceberg.table.snapshots import Operation

    producer = iceberg_compat._OverwriteFiles(
        operation=Operation.OVERWRITE, transaction=table.transaction(), io=table.io, snapshot_properties={}
    )
    for attribute in iceberg_compat.OVERWRITE_PRODUCER_ATTRIBUTES:
        assert hasattr(producer, attribute), attribute
    assert callable(producer.new_manifest_output) and callable(producer.schema)
    assert "snapshot_properties" in _params(producer._summary)
    assert callable(producer._manifests)


def test_manifest_writer_v2_meta_and_content() -> None:
    writer = iceberg_compat.ManifestWriterV2
    assert isinstance(inspect.getattr_static(writer, "_meta"), property)
    assert callable(writer.content)
    assert {"spec", "schema", "output_file", "snapshot_id", "avro_compression"} <= set(_params(writer.__init__))


def test_to_requested_schema() -> None:
    params = _params(iceberg_compat._to_requested_schema)
    assert {"requested_schema", "file_schema", "batch", "include_field_ids", "format_model"} <= set(params)


def test_read_deletes() -> None:
    assert _params(iceberg_compat._read_deletes)[:2] == ["io", "data_file"]


def test_parquet_format_writer_takes_writer_kwargs(table) -> None:  # type: ignore[no-untyped-def]
    output = table.io.new_output(table.location() + "/data/probe.parquet")
    writer = iceberg_compat.ParquetFormatWriter(output, table.schema(), table.properties)
    assert isinstance(writer._parquet_writer_kwargs, dict)
    iceberg_compat.set_dictionary_columns(writer, ["id"])
    assert writer._parquet_writer_kwargs["use_dictionary"] == ["id"]


def test_arrow_type_to_iceberg_type() -> None:
    from pyiceberg.types import LongType

    assert isinstance(iceberg_compat.iceberg_type_of(pa.int64()), LongType)


def test_public_helpers_used_with_the_private_ones() -> None:
    from pyiceberg.manifest import FileFormat

    assert iceberg_compat.FileFormatFactory.get(FileFormat.PARQUET) is not None
    assert {"schema", "name_mapping", "format_version"} <= set(_params(iceberg_compat.pyarrow_to_schema))
    assert _params(iceberg_compat.load_location_provider)[:2] == ["table_location", "table_properties"]
    assert {"summary", "previous_summary"} <= set(_params(iceberg_compat.update_snapshot_summaries))
    assert callable(iceberg_compat.SnapshotSummaryCollector().build)
    assert iceberg_compat.PYARROW_PARQUET_FIELD_ID_KEY == b"PARQUET:field_id"
    assert _params(iceberg_compat.ArrowScan.__init__)[1:4] == ["table_metadata", "io", "projected_schema"]


# ----------------------------------------------------------------------------- dagster


def test_implicit_asset_job_name() -> None:
    assert dagster_compat.IMPLICIT_ASSET_JOB_NAME == "__ASSET_JOB"


def test_cron_validation() -> None:
    assert dagster_compat.is_valid_cron_string("0 * * * *")
    assert not dagster_compat.is_valid_cron_string("every hour")


def test_storage_classes(tmp_path: Path) -> None:
    storage = dagster_instance.DagsterSqliteStorage.from_local(str(tmp_path))
    assert isinstance(storage, dagster_instance.DagsterStorage)
    assert issubclass(dagster_instance.DagsterSqliteStorage, dagster_instance.ConfigurableClass)
    assert {"module_name", "class_name", "config_yaml"} <= set(dagster_instance.ConfigurableClassData._fields)


def test_instance_ref_from_dir(tmp_path: Path) -> None:
    assert {"base_dir", "config_dir"} <= set(_params(dagster_instance.InstanceRef.from_dir))


def test_loading_definitions_does_not_import_the_storage_layer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dativo_dagster.compat.dagster, dativo_dagster.build\n"
        "print('dagster._core.storage.sqlite_storage' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_free_concurrency_slots() -> None:
    import dagster as dg

    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        assert isinstance(storage.supports_global_concurrency_limits, bool)
        assert callable(storage.free_concurrency_slots_for_run)
        assert dagster_compat.free_concurrency_slots(instance, "no-such-run") in (True, False)


def test_coordinator_instance() -> None:
    import dagster as dg

    with dg.instance_for_test() as instance:
        coordinator = instance.run_coordinator
        assert dagster_instance.coordinator_instance(coordinator) is instance


def test_latest_completed_cron_tick() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 11, 28, 10, 30, tzinfo=timezone.utc)
    tick = dagster_compat.get_latest_completed_cron_tick("0 * * * *", now, "UTC")
    assert tick == datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
    paris = dagster_compat.get_latest_completed_cron_tick("0 9 * * *", now, "Europe/Paris")
    assert paris.isoformat() == "2026-11-28T09:00:00+01:00"


def test_overwrite_files_existing_manifests_is_overridable(table) -> None:  # type: ignore[no-untyped-def]
    # MergeOnReadOverwrite rewrites delete manifests itself when a rewrite removes delete files.
    assert callable(iceberg_compat._OverwriteFiles._existing_manifests)
    assert _params(iceberg_compat._OverwriteFiles._existing_manifests) == ["self"]
    assert callable(iceberg_compat._OverwriteFiles.new_manifest_writer)


def test_require_current_snapshot_makes_a_stale_transaction_fail(table) -> None:  # type: ignore[no-untyped-def]
    from pyiceberg.exceptions import CommitFailedException

    txn = table.transaction()
    iceberg_compat.require_current_snapshot(txn, table.current_snapshot().snapshot_id)
    txn.set_properties({"k": "v"})
    table.append(pa.table({"id": pa.array([3], pa.int64())}))  # another writer moves main
    with pytest.raises(CommitFailedException):
        txn.commit_transaction()


def test_validate_config_reports_errors_with_messages() -> None:
    import dagster as dg

    ok = dagster_instance.validate_config({"bucket": dg.StringSource}, {"bucket": {"env": "UNSET_IS_FINE"}})
    assert ok.success
    bad = dagster_instance.validate_config({"bucket": dg.StringSource}, {"bucket": 3, "extra": 1})
    assert not bad.success and all(isinstance(error.message, str) for error in bad.errors or [])


def test_instance_config_schema() -> None:
    schema = set(dagster_instance.dagster_instance_config_schema())
    assert {"storage", "run_launcher", "run_coordinator", "compute_logs", "concurrency", "run_monitoring"} <= schema


# ----------------------------------------------------------------------------- fsspec


def test_fsspec_strip_protocol_names_paths_as_listings_do() -> None:
    from adlfs import AzureBlobFileSystem
    from fsspec.implementations.local import LocalFileSystem

    from dativo_dagster.compat.fsspec import fsspec_path

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"fsspec=={version("fsspec")}"' in pyproject and f'"adlfs=={version("adlfs")}"' in pyproject
    # orphan removal compares the listing's names with the table's referenced locations
    assert fsspec_path(AzureBlobFileSystem, "abfss://c@acct.dfs.core.windows.net/wh/t/a.parquet") == "c/wh/t/a.parquet"
    assert fsspec_path(AzureBlobFileSystem, "abfs://c/wh/t/a.parquet") == "c/wh/t/a.parquet"
    assert fsspec_path(AzureBlobFileSystem, "c/wh/t") == "c/wh/t"
    assert fsspec_path(LocalFileSystem, "file:///srv/wh/t") == "/srv/wh/t"
