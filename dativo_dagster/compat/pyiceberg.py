"""Private pyiceberg symbols dativo uses (pyiceberg==0.12.0, pinned exactly in pyproject.toml).

* ``_OverwriteFiles`` is subclassed to commit position-delete files with an overwrite snapshot
  (merge-on-read); the subclass reads its producer state (``_transaction``, ``_snapshot_id``,
  ``_added_data_files``, ...), listed in :data:`OVERWRITE_PRODUCER_ATTRIBUTES`, and overrides
  ``_manifests``, ``_existing_manifests`` and ``_summary`` (a rewrite also removes delete files).
* ``Transaction._stage`` adds a requirement to a transaction: pyiceberg's snapshot expiry carries
  none, and table maintenance must not remove snapshots from metadata another writer just changed.
* ``ManifestWriterV2`` is subclassed for delete manifests (``content`` and ``_meta``).
* ``_to_requested_schema`` gives batches the table's field ids before they are written.
* ``_read_deletes`` reads the positions of an existing position-delete file.
* ``ParquetFormatWriter._parquet_writer_kwargs`` takes per-column dictionary encoding.
* ``_ConvertToIcebergWithoutIDs`` + ``visit_pyarrow`` turn an Arrow type into an Iceberg type for
  schema evolution.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import (
    PYARROW_PARQUET_FIELD_ID_KEY,
    ArrowScan,
    ParquetFormatWriter,
    _ConvertToIcebergWithoutIDs,
    _read_deletes,
    _to_requested_schema,
    pyarrow_to_schema,
    visit_pyarrow,
)
from pyiceberg.manifest import ManifestWriterV2
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.snapshots import SnapshotSummaryCollector, update_snapshot_summaries
from pyiceberg.table.update.snapshot import _OverwriteFiles

OVERWRITE_PRODUCER_ATTRIBUTES = (
    "_transaction",
    "_snapshot_id",
    "_compression",
    "_added_data_files",
    "_deleted_data_files",
    "_parent_snapshot_id",
    "_operation",
    "_io",
)
"""State of ``_OverwriteFiles`` that :class:`~dativo_dagster.iceberg.deletes.MergeOnReadOverwrite` reads."""


def set_dictionary_columns(writer: ParquetFormatWriter, columns: list[str]) -> None:
    """Dictionary-encode only ``columns`` in the Parquet file ``writer`` opens on its first write."""
    kwargs: dict[str, Any] = writer._parquet_writer_kwargs
    kwargs["use_dictionary"] = columns


def require_current_snapshot(transaction: Any, snapshot_id: int | None) -> None:
    """Make ``transaction`` commit only while the main branch is still at ``snapshot_id``."""
    from pyiceberg.table.update import AssertRefSnapshotId

    requirement = AssertRefSnapshotId(snapshot_id=snapshot_id, ref="main")  # type: ignore[call-arg]
    transaction._stage((), (requirement,))


def iceberg_type_of(arrow_type: Any) -> Any:
    """The Iceberg type of an Arrow type (field ids left for the schema update to assign)."""
    return visit_pyarrow(arrow_type, _ConvertToIcebergWithoutIDs())


__all__ = [
    "OVERWRITE_PRODUCER_ATTRIBUTES",
    "PYARROW_PARQUET_FIELD_ID_KEY",
    "ArrowScan",
    "FileFormatFactory",
    "ManifestWriterV2",
    "ParquetFormatWriter",
    "SnapshotSummaryCollector",
    "_OverwriteFiles",
    "_read_deletes",
    "_to_requested_schema",
    "iceberg_type_of",
    "load_location_provider",
    "pyarrow_to_schema",
    "require_current_snapshot",
    "set_dictionary_columns",
    "update_snapshot_summaries",
]
