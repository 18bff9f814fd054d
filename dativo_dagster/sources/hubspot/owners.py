"""HubSpot owners (``/crm/v3/owners``): their table and the read, always in full.

Owners cannot be searched by modification time, so they are read page by page, active owners
first, then archived ones (deals and tickets still point at those), into one table with
HubSpot's camelCase fields in snake_case.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dativo_dagster.api.paging import next_after, parse_json_object
from dativo_dagster.config.plan import ObjectPlan
from dativo_dagster.errors import PaginationError
from dativo_dagster.sources.base import SourceStats
from dativo_dagster.sources.hubspot.errors import call_api

OWNERS = "owners"
"""The object name (or ``options.object_type``) that reads owners."""
OWNERS_PAGE = 500
"""Largest page of the owners endpoint."""

OWNER_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("email", pa.string()),
        pa.field("first_name", pa.string()),
        pa.field("last_name", pa.string()),
        pa.field("type", pa.string()),
        pa.field("user_id", pa.int64()),
        pa.field("user_id_including_inactive", pa.int64()),
        pa.field("teams", pa.string()),
        pa.field("archived", pa.bool_()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Owners (``/crm/v3/owners``) as a table: HubSpot's camelCase fields in snake_case, teams as JSON."""
OWNER_BATCH_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string() if pa.types.is_timestamp(f.type) else f.type) for f in OWNER_SCHEMA]
)
"""Owners as read: times stay HubSpot's ISO text for the contract enforcer to convert."""
_OWNER_FIELDS = {
    "id": "id",
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "type": "type",
    "user_id": "userId",
    "user_id_including_inactive": "userIdIncludingInactive",
    "archived": "archived",
    "created_at": "createdAt",
    "updated_at": "updatedAt",
}


def owner_batches(client: Any, obj: ObjectPlan, stats: SourceStats) -> Iterator[pa.RecordBatch]:
    """Active owners, then archived ones (deals and tickets still point at those)."""
    api = client.crm.owners.owners_api
    what = "GET /crm/v3/owners"
    columns: dict[str, list[Any]] = {f.name: [] for f in OWNER_SCHEMA}
    number = 0
    for archived in (False, True):
        after: str | None = None
        seen: set[str] = set()
        while True:
            number += 1
            where = f"{obj.label}: {what} page {number}"
            arguments: dict[str, Any] = {"limit": OWNERS_PAGE, "archived": archived, "_preload_content": False}
            if after is not None:
                arguments["after"] = after
            response = call_api(functools.partial(api.get_page, **arguments), what=what, label=obj.label)
            stats.add(pages=1)
            page = next_after(parse_json_object(response.data, where=where), where=where)
            for item in page.items:
                for column, key in _OWNER_FIELDS.items():
                    value = item.get(key)
                    if column in ("id", "user_id", "user_id_including_inactive") and value is not None:
                        try:
                            value = int(str(value))
                        except ValueError:
                            raise PaginationError(f"{where}: owner {key} {value!r} is not a number") from None
                    if column == "archived":
                        value = archived if value is None else bool(value)
                    columns[column].append(value)
                teams = item.get("teams")
                columns["teams"].append(None if teams is None else json.dumps(teams, separators=(",", ":")))
            if page.next_token is None:
                break
            if page.next_token in seen:
                raise PaginationError(f"{where}: the next page points back to an earlier one (cursor loop)")
            seen.add(page.next_token)
            after = page.next_token
    if columns["id"]:
        yield pa.RecordBatch.from_arrays(
            [pa.array(columns[f.name], type=f.type) for f in OWNER_BATCH_SCHEMA], schema=OWNER_BATCH_SCHEMA
        )
