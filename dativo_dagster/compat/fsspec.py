"""Private fsspec symbol dativo uses.

* ``AbstractFileSystem._strip_protocol`` turns a URL into the path the file system itself lists
  and deletes (adlfs drops the ``@account.dfs.core.windows.net`` of an ``abfss://`` URL, s3fs the
  scheme). Each implementation overrides it; orphan removal compares listed paths with the
  table's referenced locations, so both sides must be named the file system's way.
"""

from __future__ import annotations

from typing import Any


def fsspec_path(filesystem: Any, location: str) -> str:
    """``location`` (a URL or a path) as ``filesystem`` names it in listings."""
    return str(filesystem._strip_protocol(location))


__all__ = ["fsspec_path"]
