"""``google_sheets``: one worksheet (or an A1 range of it) of a spreadsheet, typed by the contract.

Read through gspread's ``HTTPClient`` on a :class:`~dativo_dagster.sources.google.client.GoogleSession`
(every request on the run's transport, in the Sheets bucket). A read:

1. asks Drive for the spreadsheet's ``modifiedTime`` and ``version``; when they, the worksheet,
   range and contract are those of the copy in the table (recorded in its cursor), the sheet is
   skipped without a single Sheets read and nothing is committed;
2. reads the spreadsheet's metadata (sheet titles, ids, grid sizes, time zone) and finds the
   worksheet by name or ``gid`` (CFG001 naming the ones there are);
3. reads the range in blocks of ``chunk_rows`` rows (one values request each, so a sheet of any
   length is read in bounded memory), finds the header row (``header_row``, else the first row
   holding a value), matches it to the contract like a CSV header, and types each cell by its
   contract column (:mod:`.sheets_values`); a cell that does not fit sends its row to quarantine
   with the cell's A1 address in the reason. Empty rows are skipped.

A worksheet is a full refresh: each read replaces the table (there is no reliable change cursor
in a sheet's rows). Rows carry their sheet row number (``_dativo_sheet_row``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import structlog
from pydantic import Field, field_validator, model_validator

from dativo_dagster.config.models import Strategy
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import ConfigError, ExtractError, PaginationError
from dativo_dagster.sources.base import Extraction, ReadRequest, SourceOptions, SourceStats
from dativo_dagster.sources.csv.header import match_header
from dativo_dagster.sources.cursors import CursorCodec
from dativo_dagster.sources.google.client import GoogleApi, GoogleSession
from dativo_dagster.sources.google.common import GoogleSource
from dativo_dagster.sources.google.drive import SPREADSHEET_MIME, Drive
from dativo_dagster.sources.google.sheets_values import (
    GridRange,
    block,
    header_names,
    header_row,
    is_empty,
    parse_a1_range,
    time_zone,
    typed_column,
)
from dativo_dagster.types import SOURCE_REASON_COLUMN, arrow_type, contract_arrow_schema

log = structlog.get_logger("dativo.sources.google_sheets")

ROW_COLUMN = "_dativo_sheet_row"
LINEAGE = [pa.field(ROW_COLUMN, pa.int64())]
"""The sheet row a table row came from (1-based, as the sheet numbers it)."""

VALUE_PARAMS = {
    "valueRenderOption": "UNFORMATTED_VALUE",
    "dateTimeRenderOption": "SERIAL_NUMBER",
    "majorDimension": "ROWS",
}


class GoogleSheetsOptions(SourceOptions):
    """Per-object settings of a worksheet."""

    spreadsheet_id: str = Field(min_length=1, description="the spreadsheet's id (from its URL)")
    worksheet: str | None = Field(default=None, min_length=1, description="the sheet's name (tab)")
    gid: int | None = Field(default=None, ge=0, description="the sheet's id (gid= in its URL), instead of its name")
    range: str | None = Field(default=None, description="an A1 range without sheet name, e.g. A1:F or B3:H500")
    header_row: int | None = Field(
        default=None, ge=1, description="the sheet row holding the header (default: the first row with a value)"
    )
    chunk_rows: int = Field(default=10_000, ge=100, le=100_000, description="rows per values request")
    skip_unchanged: bool = Field(
        default=True, description="skip the read when the spreadsheet has not changed since the last load"
    )

    @field_validator("spreadsheet_id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        if not all(c.isalnum() or c in "-_" for c in value):
            raise ValueError(f"{value!r} is not a spreadsheet id (letters, digits, '-' and '_')")
        return value

    @field_validator("range")
    @classmethod
    def _a1(cls, value: str | None) -> str | None:
        if value is not None:
            parse_a1_range(value)
        return value

    @model_validator(mode="after")
    def _one_sheet(self) -> GoogleSheetsOptions:
        if self.worksheet is not None and self.gid is not None:
            raise ValueError("give worksheet or gid, not both")
        grid = self.grid()
        if self.header_row is not None and (
            self.header_row < grid.first_row or (grid.last_row is not None and self.header_row > grid.last_row)
        ):
            raise ValueError(f"header_row {self.header_row} lies outside range {self.range!r}")
        return self

    def grid(self) -> GridRange:
        """The configured range (the whole sheet by default)."""
        return parse_a1_range(self.range) if self.range else GridRange()


class SpreadsheetVersionCodec(CursorCodec):
    """The "cursor" of a worksheet copy: the spreadsheet's Drive version it was taken from.

    It orders copies (Drive's version only grows) and says which one the table holds; it is
    never a position to read from, so ``dativo reset --to`` has nothing to parse.
    """

    def order_key(self, value: Any) -> Any:
        """Copies are ordered by the spreadsheet's version number."""
        if isinstance(value, dict):
            try:
                return int(value.get("version") or 0)
            except ValueError:
                return 0
        return 0

    def display(self, value: Any, field: str | None = None) -> str:
        """``spreadsheet version 12 (modified 2024-05-01T10:00:00.000Z)``."""
        if not isinstance(value, dict):
            return "no copy yet"
        return f"spreadsheet version {value.get('version')} (modified {value.get('modified_time')})"

    def from_text(self, text: str, value_type: Any = None) -> Any:
        """A worksheet is always read whole: there is no position to move to.

        Raises:
            ConfigError: always (reset a worksheet with a full refresh instead).
        """
        raise ConfigError("a google_sheets object is read whole each time; reset it with --full-refresh")


class GoogleSheetsSource(GoogleSource):
    """One worksheet of a Google Sheets spreadsheet."""

    type = "google_sheets"
    options_model = GoogleSheetsOptions
    supported_strategies = frozenset({Strategy.FULL_REFRESH})
    needs_contract = True

    def _options(self, obj: ObjectPlan) -> GoogleSheetsOptions:
        options: GoogleSheetsOptions = self.object_options(obj)
        return options

    @classmethod
    def cursor_codec(cls, obj: ObjectPlan) -> CursorCodec:
        """Spreadsheet versions (see :class:`SpreadsheetVersionCodec`)."""
        return SpreadsheetVersionCodec()

    def check_connection(self) -> None:
        """Obtain an access token (proves the credential)."""
        api = self.api(SourceStats())
        api.credentials.token(api.transport)

    def list_objects(self) -> list[str]:
        """Objects are worksheets named in the job; there is nothing to enumerate."""
        return []

    def check_object(self, obj: ObjectPlan) -> None:
        """The spreadsheet is shared with the credential and has the worksheet."""
        options = self._options(obj)
        api = self.api(SourceStats(), obj)
        self._worksheet(api, obj, options, self._spreadsheet_version(api, options))

    def discover_schema(self, obj: ObjectPlan) -> pa.Schema:
        """The contract's schema (cells are typed by it)."""
        assert obj.contract is not None
        return contract_arrow_schema(obj.contract)

    # ------------------------------------------------------------------ reads

    def _spreadsheet_version(self, api: GoogleApi, options: GoogleSheetsOptions) -> dict[str, Any]:
        """Drive's ``modifiedTime`` and ``version`` of the spreadsheet (CFG001 when it is not one)."""
        data = Drive(api).metadata(options.spreadsheet_id, "id,name,mimeType,modifiedTime,version")
        if data.get("mimeType") != SPREADSHEET_MIME:
            raise ConfigError(
                f"{api.label}: options.spreadsheet_id {options.spreadsheet_id!r} is a {data.get('mimeType')} "
                "file, not a Google Sheets spreadsheet",
                hint="open it in Google Sheets and save it as a spreadsheet, or read it with gdrive_csv",
            )
        return {"modified_time": data.get("modifiedTime"), "version": str(data.get("version", ""))}

    def _worksheet(
        self, api: GoogleApi, obj: ObjectPlan, options: GoogleSheetsOptions, _version: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], str | None]:
        """gspread's client, the worksheet's properties, and the spreadsheet's time zone."""
        from gspread.http_client import HTTPClient

        client = HTTPClient(auth=None, session=GoogleSession(api, file_id=options.spreadsheet_id))  # type: ignore[arg-type]
        metadata = self._call(
            api, lambda: client.fetch_sheet_metadata(options.spreadsheet_id), "spreadsheets.get", options.spreadsheet_id
        )
        sheets = [s.get("properties", {}) for s in metadata.get("sheets", [])]
        if not sheets:
            raise PaginationError(f"{obj.label}: the spreadsheet's metadata lists no sheet")
        if options.worksheet is not None:
            found = [p for p in sheets if p.get("title") == options.worksheet]
        elif options.gid is not None:
            found = [p for p in sheets if p.get("sheetId") == options.gid]
        else:
            found = [min(sheets, key=lambda p: p.get("index", 0))]
        if not found:
            wanted = f"worksheet {options.worksheet!r}" if options.worksheet is not None else f"gid {options.gid}"
            names = ", ".join(f"{p.get('title')!r} (gid {p.get('sheetId')})" for p in sheets)
            raise ConfigError(f"{obj.label}: options: the spreadsheet has no {wanted}; it has {names}")
        zone = (metadata.get("properties") or {}).get("timeZone")
        return client, found[0], zone

    def _call(self, api: GoogleApi, call: Any, what: str, file_id: str) -> Any:
        """One gspread call; its ``APIError`` (an answer the transport passed on) becomes a coded error."""
        import requests
        from gspread.exceptions import APIError

        try:
            answer = call()
        except APIError as exc:
            response = exc.response
            from dativo_dagster.api.transport import HttpResponse

            raise api.refused(
                HttpResponse(response.status_code, dict(response.headers), response.content or b""),
                f"Sheets {what}",
                file_id=file_id,
            ) from None
        except (ValueError, requests.RequestException) as exc:  # a body that is not JSON, a cut answer
            raise PaginationError(
                f"{api.label}: Sheets {what}: the answer cannot be read ({type(exc).__name__})",
                hint="a proxy or an outage answered instead of Google; the next run tries again",
            ) from None
        if not isinstance(answer, dict):
            raise PaginationError(f"{api.label}: Sheets {what}: the answer is not a JSON object")
        return answer

    def _fingerprint(self, obj: ObjectPlan) -> str:
        """What else a copy depends on: the object's whole config (worksheet, range, header row,
        quality thresholds, ...), its contract and its key; any change means a new copy."""
        assert obj.contract is not None
        parts = {
            "object": obj.config.model_dump(mode="json"),
            "contract": obj.contract.model_dump(mode="json"),
            "primary_key": list(obj.primary_key),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def read(self, request: ReadRequest) -> Extraction:
        """The worksheet's rows (none, and nothing committed, when it has not changed)."""
        obj = request.obj
        assert obj.contract is not None
        options = self._options(obj)
        stats = SourceStats()
        api = self.api(stats, obj)
        version = self._spreadsheet_version(api, options)
        version["copy_of"] = self._fingerprint(obj)
        schema = contract_arrow_schema(obj.contract).append(LINEAGE[0])
        previous = request.cursor.value if request.cursor is not None else None
        if options.skip_unchanged and previous == version and request.limit is None:
            stats.note(
                f"spreadsheet unchanged since the last load (version {version['version']}, "
                f"modified {version['modified_time']}): not read"
            )
            log.info("sheet_unchanged_skipped", object=obj.label, version=version["version"])
            return Extraction(
                schema,
                iter(()),
                request,
                stats,
                cursor_override=lambda: version,
                unchanged=True,
                codec=SpreadsheetVersionCodec(),
            )
        client, sheet, zone_name = self._worksheet(api, obj, options, version)
        return Extraction(
            schema,
            self._batches(api, client, obj, options, sheet, zone_name, stats, version),
            request,
            stats,
            cursor_override=lambda: version,
            lineage=LINEAGE,
            codec=SpreadsheetVersionCodec(),
        )

    def _batches(
        self,
        api: GoogleApi,
        client: Any,
        obj: ObjectPlan,
        options: GoogleSheetsOptions,
        sheet: dict[str, Any],
        zone_name: str | None,
        stats: SourceStats,
        version: dict[str, Any] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        assert obj.contract is not None
        title = str(sheet.get("title"))
        grid_size = sheet.get("gridProperties") or {}
        grid = options.grid()
        # Sheets refuses a range past the grid ("exceeds grid limits"): a configured range that
        # reaches beyond the sheet's rows or columns is read up to the sheet's edge.
        rows = int(grid_size.get("rowCount") or 0)
        columns_in_grid = int(grid_size.get("columnCount") or 1)
        last_row = min(grid.last_row or rows, rows)
        last_column = min(
            grid.last_column if grid.last_column is not None else columns_in_grid - 1, columns_in_grid - 1
        )
        if grid.first_column > last_column:
            raise ConfigError(
                f"{obj.label}: options.range {options.range!r} starts right of sheet {title!r}'s last column "
                f"({columns_in_grid} columns)"
            )
        zone = time_zone(zone_name)
        if zone is None:
            if any(pa.types.is_timestamp(arrow_type(c)) and arrow_type(c).tz for c in obj.contract.columns):
                raise ConfigError(
                    f"{obj.label}: the spreadsheet's time zone {zone_name!r} is unknown to this system, so its "
                    "date-times cannot be placed in time",
                    hint="install the tzdata package, or set the spreadsheet's time zone in File > Settings",
                )
            zone = dt.timezone.utc  # only zone-less columns: the zone is never used
        columns = obj.contract.columns
        wanted = [c.source_name or c.name for c in columns]
        positions: dict[str, int] | None = None
        header_at = options.header_row
        empty_rows = 0
        row = grid.first_row
        while row <= last_row:
            end = min(row + options.chunk_rows - 1, last_row)
            what = f"values.get {block(title, grid.first_column, last_column, row, end)}"
            answer = self._call(
                api,
                lambda start=row, stop=end: client.values_get(
                    options.spreadsheet_id,
                    block(title, grid.first_column, last_column, start, stop),
                    params=dict(VALUE_PARAMS),
                ),
                what,
                options.spreadsheet_id,
            )
            stats.add(pages=1)
            values: list[list[Any]] = answer.get("values") or []
            numbers = list(range(row, row + len(values)))
            if positions is None:
                if header_at is None:
                    try:
                        header_at = header_row(values, row)
                    except ValueError:
                        if end < last_row:
                            row = end + 1
                            continue
                        raise ConfigError(
                            f"{obj.label}: sheet {title!r} holds no header row in the range read"
                        ) from None
                if header_at > end:
                    row = end + 1
                    continue
                offset = header_at - row
                if offset >= len(values) or not any(not is_empty(v) for v in values[offset]):
                    raise ConfigError(f"{obj.label}: sheet {title!r} row {header_at} (options.header_row) is empty")
                names = header_names(values[offset])
                where = f"{obj.label}: sheet {title!r} row {header_at}"
                match = match_header(names, wanted, where=where)
                if match.missing:
                    raise ConfigError(
                        f"{where}: the header has no column {', '.join(repr(m) for m in match.missing)} "
                        f"(it has {', '.join(repr(n) for n in names if n)})",
                        hint="rename the header cells, or set source_name in the contract",
                    )
                positions = {name: names.index(match.columns[name]) for name in wanted if name in match.columns}
                values, numbers = values[offset + 1 :], numbers[offset + 1 :]
            kept = [(n, v) for n, v in zip(numbers, values, strict=True) if any(not is_empty(x) for x in v)]
            empty_rows += len(values) - len(kept)
            if kept:
                yield self._batch(obj, kept, positions, grid.first_column, zone)
            row = end + 1
        if positions is None:
            raise ConfigError(f"{obj.label}: sheet {title!r} holds no header row in the range read")
        if version is not None and row > grid.first_row + options.chunk_rows:
            # Read in several blocks: an edit between two of them would commit a torn copy (rows
            # moved across a block boundary read twice or not at all). Nothing is committed then.
            now = self._spreadsheet_version(api, options)
            if now["version"] != version["version"]:
                raise ExtractError(
                    f"{obj.label}: the spreadsheet changed while it was read (version {version['version']} → "
                    f"{now['version']}); nothing was committed",
                    hint="the next run reads it again",
                )
        if empty_rows:
            log.info("sheet_empty_rows_skipped", object=obj.label, rows=empty_rows)

    def _batch(
        self,
        obj: ObjectPlan,
        rows: list[tuple[int, list[Any]]],
        positions: dict[str, int],
        first_column: int,
        zone: Any,
    ) -> pa.RecordBatch:
        """Typed columns of a block of rows, with the reasons of the cells that did not fit."""
        assert obj.contract is not None
        numbers = [n for n, _ in rows]
        arrays: list[pa.Array] = []
        names: list[str] = []
        reasons: list[str | None] | None = None
        for column in obj.contract.columns:
            source = column.source_name or column.name
            target = arrow_type(column)
            position = positions.get(source)
            if position is None:
                arrays.append(pa.nulls(len(rows), target))
            else:
                cells = [values[position] if position < len(values) else None for _, values in rows]
                typed, errors = typed_column(
                    cells, target, column=first_column + position, rows=numbers, name=column.name, zone=zone
                )
                arrays.append(typed)
                if errors is not None:
                    reasons = reasons or [None] * len(rows)
                    for i, error in enumerate(errors):
                        if error is not None:
                            reasons[i] = error if reasons[i] is None else f"{reasons[i]}; {error}"
            names.append(source)
        if reasons is not None:
            arrays.append(pa.array(reasons, pa.string()))
            names.append(SOURCE_REASON_COLUMN)
        arrays.append(pa.array(numbers, pa.int64()))
        names.append(ROW_COLUMN)
        return pa.RecordBatch.from_arrays(arrays, names=names)


__all__ = ["ROW_COLUMN", "GoogleSheetsOptions", "GoogleSheetsSource", "SpreadsheetVersionCodec"]
