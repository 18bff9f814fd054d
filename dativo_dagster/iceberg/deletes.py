"""Merge-on-read: Iceberg v2 position-delete files, so a merge costs what its delta costs.

A copy-on-write merge rewrites every data file holding an updated key; with updates spread over
a table that is the whole table. Instead, each touched data file gets a small position-delete
file (``file_path``, ``pos``) listing the rows the merge replaces, and the new versions are
appended; readers (pyiceberg, Spark, Trino, ...) drop deleted positions at scan time.

pyiceberg (0.12) reads position deletes but has no public API to write them, so this module adds
the two missing pieces on its snapshot machinery: a delete-manifest writer and an overwrite
producer that also commits delete files. Each delete file names exactly one data file (its
``file_path`` bounds are equal), which lets readers index it by path.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Summary
from pyiceberg.typedef import Record
from pyiceberg.types import LongType, StringType

from dativo_dagster.compat.pyiceberg import (
    PYARROW_PARQUET_FIELD_ID_KEY,
    ManifestWriterV2,
    SnapshotSummaryCollector,
    _OverwriteFiles,
    update_snapshot_summaries,
)
from dativo_dagster.iceberg.integrity import FileDigests, hashing_output

FILE_PATH_FIELD_ID = 2147483546
POS_FIELD_ID = 2147483545

POSITION_DELETE_SCHEMA = pa.schema(
    [
        pa.field("file_path", pa.string(), nullable=False, metadata={PYARROW_PARQUET_FIELD_ID_KEY: b"2147483546"}),
        pa.field("pos", pa.int64(), nullable=False, metadata={PYARROW_PARQUET_FIELD_ID_KEY: b"2147483545"}),
    ]
)


def write_position_delete_file(
    table: Table, data_file: DataFile, positions: pa.Array, *, digests: FileDigests | None = None
) -> DataFile:
    """Write the deleted ``positions`` of ``data_file`` and describe the new delete file.

    Args:
        table: The table (for its FileIO and location provider).
        data_file: The data file the positions refer to.
        positions: Row positions (0-based, within the data file) that are deleted.
        digests: Records the new file's SHA-256 and size (computed while writing).
    """
    positions = positions.cast(pa.int64()).sort()
    count = len(positions)
    rows = pa.table(
        [pa.array([data_file.file_path] * count, pa.string()), positions],
        schema=POSITION_DELETE_SCHEMA,
    )
    location = table.location_provider().new_data_location(f"{uuid.uuid4()}-deletes.parquet")
    output = hashing_output(table.io, location, digests)
    with output.create(overwrite=True) as stream:
        pq.write_table(rows, stream, compression="zstd")
    size = len(output) if digests is not None else len(table.io.new_input(location))
    first, last = positions[0].as_py(), positions[count - 1].as_py()
    path_bytes = to_bytes(StringType(), data_file.file_path)
    return DataFile.from_args(
        content=DataFileContent.POSITION_DELETES,
        file_path=location,
        file_format=FileFormat.PARQUET,
        partition=Record(),
        record_count=count,
        file_size_in_bytes=size,
        column_sizes={},
        value_counts={FILE_PATH_FIELD_ID: count, POS_FIELD_ID: count},
        null_value_counts={FILE_PATH_FIELD_ID: 0, POS_FIELD_ID: 0},
        nan_value_counts={},
        lower_bounds={FILE_PATH_FIELD_ID: path_bytes, POS_FIELD_ID: to_bytes(LongType(), first)},
        upper_bounds={FILE_PATH_FIELD_ID: path_bytes, POS_FIELD_ID: to_bytes(LongType(), last)},
        split_offsets=None,
        equality_ids=None,
        sort_order_id=None,
        spec_id=data_file.spec_id,
    )


def referenced_data_file(delete_file: DataFile) -> str | None:
    """The single data file a position-delete file applies to (None if it may span several)."""
    from pyiceberg.conversions import from_bytes

    lower = (delete_file.lower_bounds or {}).get(FILE_PATH_FIELD_ID)
    upper = (delete_file.upper_bounds or {}).get(FILE_PATH_FIELD_ID)
    if lower is None or lower != upper:
        return None
    return str(from_bytes(StringType(), lower))


class _DeleteManifestWriter(ManifestWriterV2):
    """A v2 manifest whose entries are delete files."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class MergeOnReadOverwrite(_OverwriteFiles):
    """An OVERWRITE snapshot that may add data files, remove data files and add delete files."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._added_delete_files: list[DataFile] = []

    def add_delete_file(self, delete_file: DataFile) -> MergeOnReadOverwrite:
        """Register a position-delete file for this snapshot."""
        self._added_delete_files.append(delete_file)
        return self

    def _manifests(self) -> list[ManifestFile]:
        manifests = super()._manifests()
        if not self._added_delete_files:
            return manifests
        writer = _DeleteManifestWriter(
            spec=self._transaction.table_metadata.spec(),
            schema=self.schema(),
            output_file=self.new_manifest_output(),
            snapshot_id=self._snapshot_id,
            avro_compression=self._compression,
        )
        with writer:
            for delete_file in self._added_delete_files:
                writer.add(
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.ADDED,
                        snapshot_id=self._snapshot_id,
                        sequence_number=None,
                        file_sequence_number=None,
                        data_file=delete_file,
                    )
                )
        return [*manifests, writer.to_manifest_file()]

    def _summary(self, snapshot_properties: dict[str, str] | None = None) -> Summary:
        metadata = self._transaction.table_metadata
        schema = metadata.schema()
        collector = SnapshotSummaryCollector()
        for data_file in [*self._added_data_files, *self._added_delete_files]:
            collector.add_file(data_file=data_file, partition_spec=metadata.spec(), schema=schema)
        specs = metadata.specs()
        for data_file in self._deleted_data_files:
            collector.remove_file(data_file=data_file, partition_spec=specs[data_file.spec_id], schema=schema)
        previous = metadata.snapshot_by_id(self._parent_snapshot_id) if self._parent_snapshot_id is not None else None
        return update_snapshot_summaries(
            summary=Summary(operation=self._operation, **collector.build(), **(snapshot_properties or {})),
            previous_summary=previous.summary if previous is not None else None,
        )
