"""Rules for where a warehouse lives and how a target recipe may hold credentials.

Two checks shared by the config models (at definitions load, on the text of a recipe) and the
catalog builder (at run time, on resolved values):

* a warehouse URI has a scheme dativo writes through (a local path or ``file://``, ``s3://`` /
  ``s3a://`` / ``s3n://``, ``abfs://`` / ``abfss://``), names its bucket or container, and matches
  the recipe's ``storage`` block;
* a credential (access key, secret key, session token, account key, SAS token, a connection string
  holding a key, a password in a URI) is never written into a recipe: it is a reference such as
  ``${AWS_SECRET_ACCESS_KEY}``, resolved at run time, or it is left out so the cloud SDK's own chain
  (environment, shared config, instance or workload role, managed identity) supplies it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from dativo_dagster.config.secrets import is_sensitive_key

WarehouseKind = Literal["local", "s3", "azure", "name"]
"""``local`` disk, ``s3`` (and S3-compatible stores), ``azure`` (Blob / ADLS Gen2), or ``name``: a
warehouse a REST catalog server knows by name (no scheme)."""

S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})
AZURE_SCHEMES = frozenset({"abfs", "abfss"})
LEGACY_AZURE_SCHEMES = frozenset({"wasb", "wasbs"})
SUPPORTED_SCHEMES_TEXT = "a local path, file://, s3://, s3a://, s3n://, abfs:// or abfss://"

# FileIO and catalog properties whose values are credentials although their names do not say so.
_SECRET_PROPERTIES = frozenset({"adls.connection-string", "adls.credential", "gcs.oauth2.token", "hf.token"})

# The parts of an Azure connection string that carry a credential.
_CONNECTION_STRING_SECRETS = ("accountkey", "sharedaccesssignature")

# scheme://user:password@host: the password runs to the last '@' of the authority.
_URI_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>[^\s]*)@[^@\s/]*", re.I)

NEVER_LITERAL_HINT = (
    "write a reference such as ${VAR} resolved at run time, or leave the credential out so the "
    "default chain (environment, shared config, instance/workload role, managed identity) supplies it"
)


def is_reference(text: str) -> bool:
    """True when ``text`` takes (part of) its value from a ``${...}`` reference."""
    return "${" in text


def literal_secret_problem(value: str) -> str | None:
    """Why ``value`` may not stand in a credential field, or None when it is a reference (or empty)."""
    if not value or is_reference(value):
        return None
    return f"holds a literal credential; {NEVER_LITERAL_HINT}"


def connection_string_parts(value: str) -> dict[str, str]:
    """An Azure connection string's ``Key=Value`` parts, keys lower-cased (values may hold '=')."""
    parts: dict[str, str] = {}
    for piece in value.split(";"):
        key, sep, item = piece.partition("=")
        if sep:
            parts[key.strip().lower()] = item.strip()
    return parts


def connection_string_problem(value: str) -> str | None:
    """Why an Azure connection string may not stand in a recipe: a key or SAS written out."""
    if not value:
        return None
    parts = connection_string_parts(value)
    for key in _CONNECTION_STRING_SECRETS:
        if parts.get(key) and not is_reference(parts[key]):
            shown = "AccountKey" if key == "accountkey" else "SharedAccessSignature"
            return f"holds a literal {shown}; {NEVER_LITERAL_HINT}"
    return None


def uri_password_problem(uri: str) -> str | None:
    """Why a catalog URI may not stand in a recipe: a password written into it."""
    match = _URI_PASSWORD.match(uri.split("?", 1)[0])
    if match and match.group("password") and not is_reference(match.group("password")):
        return f"holds a literal password; {NEVER_LITERAL_HINT}"
    return None


def property_secret_problem(key: str, value: str) -> str | None:
    """Why one catalog/table property may not be written as it is (None when it may)."""
    if key.lower() in _SECRET_PROPERTIES:
        if key.lower() == "adls.connection-string":
            return connection_string_problem(value)
        return literal_secret_problem(value)
    if is_sensitive_key(key):
        return literal_secret_problem(value)
    return uri_password_problem(value)


def properties_problems(properties: Mapping[str, str]) -> list[str]:
    """One line per property holding a literal credential (``'<key>' holds ...``)."""
    return [
        f"'{key}' {problem}"
        for key, value in properties.items()
        if (problem := property_secret_problem(str(key), str(value))) is not None
    ]


def warehouse_kind(warehouse: str, *, catalog_type: str) -> WarehouseKind:
    """Classify a resolved warehouse by its scheme.

    Raises:
        ValueError: the scheme is one dativo does not write through, or the URI names no bucket
            or container (the message is the field's problem, without the field name).
    """
    if "://" not in warehouse:
        # A REST catalog server keeps its warehouses by name; everything else is a local path.
        return "name" if catalog_type == "rest" else "local"
    scheme = warehouse.split("://", 1)[0].lower()
    if scheme == "file":
        return "local"
    if scheme in LEGACY_AZURE_SCHEMES:
        raise ValueError(
            f"'{scheme}://' is the legacy Blob driver's scheme, which pyiceberg's adlfs FileIO does not read: "
            "write the same container as abfs://<container>@<account>.dfs.core.windows.net/<path> (or abfss://)"
        )
    if scheme not in S3_SCHEMES | AZURE_SCHEMES:
        raise ValueError(f"unknown scheme '{scheme}://' (a warehouse is {SUPPORTED_SCHEMES_TEXT})")
    if not bucket_of(warehouse):
        what = "bucket" if scheme in S3_SCHEMES else "container"
        raise ValueError(f"'{warehouse}' names no {what} ({scheme}://<{what}>/<path>)")
    return "s3" if scheme in S3_SCHEMES else "azure"


def bucket_of(warehouse: str) -> str:
    """The bucket (S3) or container (Azure) a warehouse URI names, '' when none."""
    netloc = urlsplit(warehouse).netloc
    # abfs://<container>@<account>.dfs.core.windows.net/<path>
    return netloc.split("@", 1)[0]


def static_warehouse(warehouse: str) -> str | None:
    """The part of an unresolved warehouse that decides its kind, or None when a reference does.

    ``s3://${BUCKET}/wh`` is an S3 warehouse whatever BUCKET holds; ``${ICEBERG_WAREHOUSE}`` is
    known only at run time.
    """
    if not is_reference(warehouse):
        return warehouse
    head = warehouse.split("${", 1)[0]
    if "://" in head:
        scheme = head.split("://", 1)[0]
        # Enough for the kind; the bucket is known only at run time.
        return f"{scheme}://bucket-set-at-run-time/"
    return None


def storage_mismatch(kind: WarehouseKind, storage_kind: str | None) -> str | None:
    """Why a ``storage`` block does not fit a warehouse of ``kind`` (None when it does)."""
    if storage_kind is None or kind == "name" or kind == storage_kind:
        return None
    shown = {"local": "a local path", "s3": "an S3 URI", "azure": "an Azure (abfs://) URI"}[kind]
    return f"storage.{storage_kind} is set but the warehouse is {shown}: the scheme must match the storage block"
