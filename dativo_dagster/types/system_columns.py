"""Names of dativo's own columns: the reserved prefix, the quarantine table's bookkeeping
columns, and the column a source batch may add to say why it could not read a row exactly."""

SYSTEM_PREFIX = "_dativo_"
"""Column names starting with this are dativo's own; source and contract columns may not use it."""

REASON_COLUMN = "_dativo_reason"
RUN_ID_COLUMN = "_dativo_run_id"
REJECTED_AT_COLUMN = "_dativo_rejected_at"
KEY_COLUMN = "_dativo_key"
"""Quarantine: the rejected row's primary key as source text (composite keys joined by U+001F)."""
CURSOR_FROM_COLUMN = "_dativo_cursor_from"
"""Quarantine: the cursor the read started from; a retry of the same range replaces its rows."""
SOURCE_REASON_COLUMN = "_dativo_source_reason"
"""Optional column of a source batch: why the source could not read the row exactly (null: fine)."""
