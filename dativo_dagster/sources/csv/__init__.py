"""CSV files (one path or a glob per object), streamed with Arrow's CSV reader.

Columns are read as text and cast to the contract by the writer's enforcer, so one bad value
sends one row to quarantine instead of failing a whole block. Incremental by a cursor column
(every run scans the files and keeps rows past the cursor) or by file modification time (only
new or changed files are read; a changed file's rows replace the ones it gave before).

What this package guarantees, file by file:

* **Confinement.** ``options.path`` is relative with no ``..`` part (checked at config load).
  Every file and directory the path or glob reaches is resolved with its links followed and
  must lie inside the tenant's data roots, else CFG001 naming it (relative to ``base_path``).
  ``**`` never walks a directory twice, so a link loop cannot make a glob run forever.
* **A consistent cut.** A file is read up to its last line end as of the moment the read starts,
  and never into a record whose quoted value is still open there: a row still being written is
  never read half (cursor strategies pick it up later; ``file_mtime`` leaves the whole file for a
  later run and reads it once it is complete). A last line without a line end is read once the
  file has not been modified for ``settle_seconds`` (60; 0: at once); an open quote in a settled
  file never closes, so its line is quarantined. Every row left behind is logged as a warning.
* **Records of any size.** A record longer than ``block_size_bytes`` is read with a block that
  holds it; one longer than 64 MiB (or the block, if larger) is quarantined with a reason.
* **Headers matched, not guessed.** Header names match contract columns exactly, else after
  trimming spaces and a BOM, case-insensitively (with a warning); an ambiguous or missing
  column is CFG001 naming it and the file.
* **Bad rows quarantined, good rows loaded.** A row with too many or too few fields (or an
  unterminated quote, whose following lines are parsed again one by one) and a row holding
  bytes that are not valid in the file's encoding are passed on with a reason in
  :data:`~dativo_dagster.types.SOURCE_REASON_COLUMN`, so the writer quarantines exactly those.
  Only encodings that decode row by row are accepted (checked at config load), so a bad byte
  never takes more than its row with it.
* **Re-read files replace their rows.** ``file_mtime`` rows carry the file they came from
  (``_dativo_file``); a changed file's new rows replace its earlier ones in the same commit.

Modules, in the order a read goes through them:

* :mod:`.source`: :class:`CsvSource`, which checks objects and orchestrates a read;
* :mod:`.options`: the connection and per-object options, validated at config load;
* :mod:`.files`: finding an object's files and opening them inside the data roots;
* :mod:`.file_mtime`: the ``file_mtime`` cursor, which files a run reads, the lineage column;
* :mod:`.file_cut`: a file's consistent cut (what Arrow may read), re-encoded as UTF-8 for Arrow;
* :mod:`.header`: reading a file's header and matching it to the contract;
* :mod:`.reader`: one object's files into text batches with reasons, cursor and lineage;
* :mod:`.prefetch`: Arrow's reader run a batch or two ahead in a worker thread;
* :mod:`.malformed`: rows Arrow could not split, collected and parsed again.

Importing this package defines (and so registers) :class:`CsvSource`.
"""

from __future__ import annotations

from dativo_dagster.sources.csv.file_cut import CutPlan, FileCut, last_newline_end, plan_cut
from dativo_dagster.sources.csv.file_mtime import FILE_COLUMN, FileCursorCodec, file_cursor, files_after
from dativo_dagster.sources.csv.files import CsvFile, find_files
from dativo_dagster.sources.csv.files import _Matcher as _Matcher
from dativo_dagster.sources.csv.header import HeaderMatch, match_header
from dativo_dagster.sources.csv.options import CsvConnection, CsvOptions
from dativo_dagster.sources.csv.source import CsvSource

# The names these helpers had when the source was one module; tests import them.
_FileCut = FileCut
_last_newline_end = last_newline_end

__all__ = [
    "FILE_COLUMN",
    "CsvConnection",
    "CsvFile",
    "CsvOptions",
    "CsvSource",
    "CutPlan",
    "FileCursorCodec",
    "FileCut",
    "HeaderMatch",
    "file_cursor",
    "files_after",
    "find_files",
    "last_newline_end",
    "match_header",
    "plan_cut",
]
