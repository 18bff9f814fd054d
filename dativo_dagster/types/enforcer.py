""":class:`ContractEnforcer`: batches cast to the contract's schema, and the rows that do not conform.

It takes whatever a source produced (strings from a CSV, typed columns from a database) and
returns the rows that conform, cast to the contract's Arrow schema, plus the rows that do not,
each with a reason and in the quarantine table's shape (:class:`EnforcedBatch`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dativo_dagster.config.models import SchemaContract
from dativo_dagster.types.casts import cast_column
from dativo_dagster.types.converters import CONVERSION_ERRORS, excerpt, invalid_json, to_text
from dativo_dagster.types.mapping import contract_arrow_schema
from dativo_dagster.types.system_columns import (
    CURSOR_FROM_COLUMN,
    KEY_COLUMN,
    REASON_COLUMN,
    REJECTED_AT_COLUMN,
    RUN_ID_COLUMN,
    SOURCE_REASON_COLUMN,
    SYSTEM_PREFIX,
)


@dataclass
class EnforcedBatch:
    """Conforming rows (cast to the contract schema) and rejected rows with reasons."""

    good: pa.RecordBatch
    rejected: pa.RecordBatch | None

    @property
    def rejected_rows(self) -> int:
        """How many rows were rejected."""
        return 0 if self.rejected is None else self.rejected.num_rows


class ContractEnforcer:
    """Casts batches to a target schema and splits off rows that violate it.

    A source that finds a value it cannot read exactly (a malformed CSV line, an out-of-range
    code) marks the row with a reason in :data:`SOURCE_REASON_COLUMN`; such rows are rejected
    with that reason, like rows whose values do not convert.

    Args:
        schema: Target Arrow schema; non-nullable fields are the contract's ``required`` columns.
        source_names: Optional map from table column to the column name in the source batches.
        primary_key: Table columns whose source text identifies a rejected row
            (:data:`KEY_COLUMN` of the quarantine table).
    """

    def __init__(
        self,
        schema: pa.Schema,
        source_names: dict[str, str] | None = None,
        primary_key: tuple[str, ...] = (),
    ) -> None:
        self.schema = schema
        self.source_names = source_names or {}
        self.primary_key = tuple(primary_key)
        self._quarantine_schema = pa.schema(
            [pa.field(f.name, pa.string()) for f in self.schema]
            + [
                pa.field(REASON_COLUMN, pa.string(), nullable=False),
                pa.field(RUN_ID_COLUMN, pa.string(), nullable=False),
                pa.field(REJECTED_AT_COLUMN, pa.timestamp("us", tz="UTC"), nullable=False),
                pa.field(KEY_COLUMN, pa.string()),
                pa.field(CURSOR_FROM_COLUMN, pa.string()),
            ]
        )

    @classmethod
    def for_contract(cls, contract: SchemaContract, primary_key: tuple[str, ...] = ()) -> ContractEnforcer:
        """Build from a schema contract."""
        return cls(
            contract_arrow_schema(contract),
            {c.name: c.source_name for c in contract.columns if c.source_name},
            primary_key,
        )

    def quarantine_schema(self) -> pa.Schema:
        """Schema of the quarantine table: every column as text, then reason, run id, time, key, range."""
        return self._quarantine_schema

    def with_lineage(self, fields: list[pa.Field]) -> ContractEnforcer:
        """This enforcer with dativo's lineage columns (``_dativo_file``, ...) appended to the table schema.

        Raises:
            ValueError: a lineage field without the ``_dativo_`` prefix (a source bug).
        """
        if not fields:
            return self
        for lineage_field in fields:
            if not lineage_field.name.startswith(SYSTEM_PREFIX):
                raise ValueError(f"lineage column {lineage_field.name!r} must start with {SYSTEM_PREFIX!r}")
        extra = [f.with_nullable(True) for f in fields if self.schema.get_field_index(f.name) < 0]
        return ContractEnforcer(
            pa.schema([*self.schema, *extra], metadata=self.schema.metadata), self.source_names, self.primary_key
        )

    def enforce(self, batch: pa.RecordBatch, run_id: str) -> EnforcedBatch:
        """Split ``batch`` into conforming rows and rejected rows."""
        rows = batch.num_rows
        names = set(batch.schema.names)
        arrays: list[pa.Array] = []
        originals: list[pa.Array] = []
        reasons: list[list[str]] | None = None
        # Rows the source could not read carry its reason alone: their columns are placeholders,
        # so "required value is missing" or a cast error on them would only bury the real cause.
        flagged: list[bool] | None = None

        def note(row_errors: list[str | None]) -> None:
            nonlocal reasons
            if reasons is None:
                reasons = [[] for _ in range(rows)]
            for i, message in enumerate(row_errors):
                if message is not None and (flagged is None or not flagged[i]):
                    reasons[i].append(message)

        if SOURCE_REASON_COLUMN in names:
            source_reasons = batch.column(SOURCE_REASON_COLUMN)
            if source_reasons.null_count < rows:
                note(source_reasons.to_pylist())
                flagged = pc.is_valid(source_reasons).to_pylist()

        for field in self.schema:
            source_name = self.source_names.get(field.name, field.name)
            if source_name not in names:
                original = pa.nulls(rows, type=field.type)
                casted: pa.Array = original
                if not field.nullable:
                    note([f"{field.name}: required column missing from the source"] * rows)
            else:
                original = batch.column(source_name)
                casted, errors = cast_column(original, field.type)
                if errors is None and field.metadata and field.metadata.get(b"dativo.type") == b"json":
                    errors = invalid_json(casted)
                    if errors is not None:
                        casted = pc.if_else(
                            pa.array([e is None for e in errors]), casted, pa.nulls(len(casted), casted.type)
                        )
                if errors is not None:
                    note([f"{field.name}: {e}" if e else None for e in errors])
                if not field.nullable and casted.null_count:
                    missing = pc.is_null(casted)
                    if errors is not None:
                        # value present but unconvertible is already explained; don't double-report
                        missing = pc.and_(missing, pc.is_null(original))
                    if pc.any(missing).as_py():
                        note(
                            [
                                f"{field.name}: required value is missing" if flag else None
                                for flag in missing.to_pylist()
                            ]
                        )
            arrays.append(casted)
            originals.append(original)

        if reasons is None or not any(reasons):
            return EnforcedBatch(pa.RecordBatch.from_arrays(arrays, schema=self.schema), None)

        bad_mask = pa.array([bool(r) for r in reasons], type=pa.bool_())
        good_mask = pc.invert(bad_mask)
        good_arrays = [pc.filter(a, good_mask) for a in arrays]
        good = pa.RecordBatch.from_arrays(good_arrays, schema=self.schema)
        bad_reasons = [("; ".join(r)) for r in reasons if r]
        now = dt.datetime.now(dt.timezone.utc)
        rejected_columns = [_as_text(pc.filter(o, bad_mask)) for o in originals]
        count = len(bad_reasons)
        rejected = pa.RecordBatch.from_arrays(
            [
                *rejected_columns,
                pa.array(bad_reasons, pa.string()),
                pa.array([run_id] * count, pa.string()),
                pa.array([now] * count, pa.timestamp("us", tz="UTC")),
                self._row_keys(rejected_columns),
                pa.nulls(count, pa.string()),
            ],
            schema=self._quarantine_schema,
        )
        return EnforcedBatch(good, rejected)

    def _row_keys(self, text_columns: list[pa.Array]) -> pa.Array:
        """What identifies each rejected row across runs: its primary key as text, or, for a row
        without one (no key declared, or the key itself missing), a digest of all its values."""
        count = len(text_columns[0]) if text_columns else 0
        keys: pa.Array = pa.nulls(count, pa.string())
        if self.primary_key:
            index = {f.name: i for i, f in enumerate(self.schema)}
            parts = [text_columns[index[name]] for name in self.primary_key if name in index]
            if len(parts) == len(self.primary_key):
                keys = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
        if keys.null_count == 0:
            return keys
        rows = zip(*(column.to_pylist() for column in text_columns), strict=True) if text_columns else iter(())
        digests = [
            None if present else "row:" + hashlib.blake2b(repr(row).encode(), digest_size=12).hexdigest()
            for present, row in zip(pc.is_valid(keys).to_pylist(), rows, strict=False)
        ]
        return pc.coalesce(keys, pa.array(digests, pa.string()))


def _as_text(array: pa.Array) -> pa.Array:
    if pa.types.is_string(array.type):
        return array
    if not pa.types.is_nested(array.type):
        try:
            return pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
    texts: list[str | None] = []
    for value in array.to_pylist():
        if value is None:
            texts.append(None)
            continue
        try:
            texts.append(to_text(value))
        except CONVERSION_ERRORS:
            texts.append(excerpt(value) if not isinstance(value, bytes) else value.decode("utf-8", "backslashreplace"))
    return pa.array(texts, pa.string())
