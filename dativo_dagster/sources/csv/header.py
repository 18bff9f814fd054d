"""Reading a file's header and lining it up with the contract's columns.

Header names match contract columns exactly, else after trimming spaces and a BOM,
case-insensitively (with a warning). :func:`match_header` is the pure rule;
:func:`match_file_header` reads one file's header and applies it, with the object's
``missing_columns`` setting, raising CFG001 for whatever cannot be loaded exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.csv as pacsv
import structlog

from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.csv.file_cut import SENTINEL_RE, CutPlan, FileCut, printable
from dativo_dagster.sources.csv.options import CsvFormat

log = structlog.get_logger("dativo.sources.csv")

MAX_NAMES_LOGGED = 50
"""Header names a warning lists at most."""

HEADER_BLOCK_BYTES = 1 << 16
"""Block size of the read that only looks at a file's header."""


@dataclass(frozen=True)
class HeaderMatch:
    """How a file's header lines up with the contract's columns.

    Attributes:
        columns: Contract column (source name) → the header name it was found under.
        respelled: ``(header spelling, contract spelling)`` pairs matched only after trimming
            spaces and a BOM and ignoring case.
        missing: Contract columns the header does not have.
        ignored: Header names that match no contract column.
    """

    columns: dict[str, str]
    respelled: list[tuple[str, str]]
    missing: list[str]
    ignored: list[str]


def _loose(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().casefold()


def match_header(header: Sequence[str], wanted: Sequence[str], *, where: str) -> HeaderMatch:
    """Match header names to contract columns: exactly, else trimmed and case-insensitively.

    Args:
        header: The file's header names, in file order.
        wanted: The contract's columns as the source names them (``source_name`` or ``name``).
        where: ``object: file`` for messages.

    Raises:
        ConfigError: CFG001 when two header names match one contract column, or one header name
            matches two contract columns.
    """
    wanted_set = set(wanted)
    claims: dict[int, list[str]] = {}
    columns: dict[str, str] = {}
    respelled: list[tuple[str, str]] = []
    missing: list[str] = []
    for name in wanted:
        exact = [i for i, h in enumerate(header) if h == name]
        loose = [i for i, h in enumerate(header) if h != name and h not in wanted_set and _loose(h) == _loose(name)]
        candidates = exact + loose
        if len(candidates) > 1:
            shown = ", ".join(repr(header[i]) for i in sorted(candidates))
            raise ConfigError(
                f"{where}: header columns {shown} all match contract column {name!r}; rename or remove all but one",
            )
        if not candidates:
            missing.append(name)
            continue
        index = candidates[0]
        claims.setdefault(index, []).append(name)
        columns[name] = header[index]
        if header[index] != name:
            respelled.append((header[index], name))
    for index, names in claims.items():
        if len(names) > 1:
            raise ConfigError(
                f"{where}: header column {header[index]!r} matches contract columns "
                f"{', '.join(repr(n) for n in names)}; name it exactly as one of them",
            )
    ignored = [h for i, h in enumerate(header) if i not in claims]
    return HeaderMatch(columns, respelled, missing, ignored)


def read_header(
    options: CsvFormat, fd: int, end: int, *, label: str, relative: str, plan: CutPlan | None = None
) -> list[str]:
    """The file's header names, as Arrow reads them.

    Args:
        options: The object's options (dialect, encoding, rows to skip).
        fd: The open file.
        end: Where the file's consistent cut ends.
        label: The object's label, for messages.
        relative: The file, for messages.
        plan: The file's cut plan, if the read made one (else its records are found by quote
            parity, looking at most a block or a MiB ahead: only the header must come out whole).

    Raises:
        ConfigError: CFG001 when Arrow cannot read the file as CSV, or a header name is not
            valid text in the file's encoding.
    """
    parse = pacsv.ParseOptions(
        delimiter=options.delimiter,
        quote_char=options.quote_char,
        newlines_in_values=True,
        invalid_row_handler=lambda _row: "skip",
    )
    # Arrow infers types on the whole first block: a small one keeps this cheap for a file set
    # of thousands; a header wider than that is read again with the configured block. (FileCut
    # hands Arrow whole records, so a first row longer than either still arrives in one piece.)
    sizes = sorted({min(options.block_size_bytes, HEADER_BLOCK_BYTES), options.block_size_bytes})
    for attempt, block_size in enumerate(sizes, 1):
        cut = FileCut(
            fd,
            end,
            options.encoding,
            label=f"{label}: {relative}",
            quote=options.quote_char,
            plan=plan,
            delimiter=options.delimiter,
            limit=None if plan else max(block_size, 1 << 20),
        )
        read = pacsv.ReadOptions(block_size=block_size, skip_rows=options.skip_rows, encoding="utf8", use_threads=False)
        try:
            with pacsv.open_csv(
                cut,
                read_options=read,
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(check_utf8=False, strings_can_be_null=True),
            ) as reader:
                names = list(reader.schema.names)
            break
        except pa.ArrowInvalid as exc:
            if attempt == len(sizes):
                raise ConfigError(f"{label}: {relative}: not a readable CSV file ({exc})") from None
    if cut.dirty:
        bad = [printable(n) for n in names if SENTINEL_RE.search(n)]
        if bad:
            raise ConfigError(
                f"{label}: {relative}: header name(s) {', '.join(repr(b) for b in bad)} are not valid "
                f"{options.encoding} text"
            )
    return names


def match_file_header(
    obj: ObjectPlan, options: CsvFormat, fd: int, end: int, relative: str, plan: CutPlan | None = None
) -> tuple[list[str], HeaderMatch]:
    """Read and match one file's header; CFG001 for what cannot be loaded exactly.

    Args:
        obj: The object (its contract and label).
        options: The object's options.
        fd: The open file.
        end: Where the file's consistent cut ends.
        relative: The file, for messages and logs.
        plan: The file's cut plan, if the read made one.

    Returns:
        The header names (``column 1``, ... for a file without a header) and how they match
        the contract's columns.
    """
    assert obj.contract is not None
    wanted = [c.source_name or c.name for c in obj.contract.columns]
    if not options.header:
        # Without a header the contract's columns are the file's, in order: a row with another
        # number of fields is malformed (quarantined), never shifted.
        header = [f"column {i + 1}" for i in range(len(wanted))]
        return header, HeaderMatch(dict(zip(wanted, header, strict=True)), [], [], [])
    header = read_header(options, fd, end, label=obj.label, relative=relative, plan=plan)
    where = f"{obj.label}: {relative}"
    match = match_header(header, wanted, where=where)
    for spelled, name in match.respelled:
        log.warning("csv_header_respelled", object=obj.label, file=relative, header=spelled, column=name)
    if match.ignored:
        # One line per file, bounded: a wide export may carry thousands of columns the contract skips.
        log.warning(
            "csv_header_columns_ignored",
            object=obj.label,
            file=relative,
            count=len(match.ignored),
            columns=match.ignored[:MAX_NAMES_LOGGED],
        )
    if match.missing:
        required = {c.source_name or c.name for c in obj.contract.columns if c.required}
        missing_required = [m for m in match.missing if m in required]
        shown = missing_required or match.missing
        if missing_required or options.missing_columns == "error":
            kind = "required " if missing_required else ""
            raise ConfigError(
                f"{where}: {kind}contract column(s) {', '.join(repr(m) for m in shown)} missing from the header",
                hint=None
                if missing_required
                else "add the column to the file, or set options.missing_columns: null to load it as NULL",
            )
        log.warning("csv_columns_missing_loaded_as_null", object=obj.label, file=relative, columns=match.missing)
    return header, match
