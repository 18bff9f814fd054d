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
from urllib.parse import parse_qsl, urlsplit

from dativo_dagster.config.secrets import is_sensitive_key, parse_references

WarehouseKind = Literal["local", "s3", "azure", "name"]
"""``local`` disk, ``s3`` (and S3-compatible stores), ``azure`` (Blob / ADLS Gen2), or ``name``: a
warehouse a REST catalog server knows by name (no scheme)."""

S3_SCHEMES = frozenset({"s3", "s3a", "s3n"})
AZURE_SCHEMES = frozenset({"abfs", "abfss"})
LEGACY_AZURE_SCHEMES = frozenset({"wasb", "wasbs"})
SUPPORTED_SCHEMES_TEXT = "a local path, file://, s3://, s3a://, s3n://, abfs:// or abfss://"

# FileIO and catalog property names that carry a credential, beyond what ``is_sensitive_key``
# already recognises (secret, token, access-key, credential, sas, password...): pyiceberg's
# ``adls.account-key`` / ``adls.connection-string`` / ``hdfs.kerberos_ticket``, and the same names
# under the legacy ``adlfs.`` prefix or any other FileIO's.
_CREDENTIAL_PROPERTY = re.compile(r"(account[_.-]?key|connection[_.-]?string|kerberos|client[_.-]?secret)", re.I)

_NOT_CREDENTIAL_SUFFIXES = ("-uri", "-url", ".uri", ".url", "endpoint", "expires-at", "-enabled")

# The parts of an Azure connection string that carry a credential.
_CONNECTION_STRING_SECRETS = ("accountkey", "sharedaccesssignature")

# URL query parameters that carry a credential although is_sensitive_key does not know them: an
# Azure SAS's signature.
_QUERY_SECRETS = frozenset({"sig"})

NEVER_LITERAL_HINT = (
    "write a reference such as ${VAR} resolved at run time, or leave the credential out so the "
    "default chain (environment, shared config, instance/workload role, managed identity) supplies it"
)


def is_reference(text: str) -> bool:
    """True when ``text`` takes (part of) its value from a ``${...}`` reference."""
    return "${" in text


def is_whole_reference(text: str) -> bool:
    """True when ``text`` is exactly one ``${...}`` reference and nothing else.

    A credential must be all reference: ``AKIA...${X:-}`` is a literal key with an empty suffix,
    and ``${X:-AKIA...}`` a literal key behind a variable that need not exist.
    """
    references = parse_references(text)
    if len(references) != 1 or references[0].text != text:
        return False
    return not references[0].default


def is_credential_property(key: str) -> bool:
    """True for a catalog/FileIO property whose value is a credential (registered for redaction,
    refused as a literal and refused outright in table properties)."""
    if key.lower().endswith(_NOT_CREDENTIAL_SUFFIXES):
        # Where a credential is fetched from or when it expires, not the credential itself
        # (``oauth2-server-uri``, ``gcs.oauth2.token-expires-at``): a URL is checked as a URL.
        return False
    return is_sensitive_key(key) or bool(_CREDENTIAL_PROPERTY.search(key))


def literal_secret_problem(value: str) -> str | None:
    """Why ``value`` may not stand in a credential field, or None when it is one reference (or empty)."""
    if not value or is_whole_reference(value):
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
    """Why an Azure connection string may not stand in a recipe: a key or SAS written out.

    The whole string may be one reference; otherwise each credential part must be one.
    """
    if not value or is_whole_reference(value):
        return None
    parts = connection_string_parts(value)
    if not parts:
        # Not a connection string at all: whatever it is, it is written out.
        return literal_secret_problem(value)
    for key in _CONNECTION_STRING_SECRETS:
        if parts.get(key) and not is_whole_reference(parts[key]):
            shown = "AccountKey" if key == "accountkey" else "SharedAccessSignature"
            return f"holds a literal {shown}; {NEVER_LITERAL_HINT}"
    return None


def uri_password_problem(uri: str) -> str | None:
    """Why a URI may not stand in a recipe: a password in its ``user:password@`` part, or a
    credential in its query string (``?password=``, a SAS ``sig=``), written out."""
    if "://" not in uri:
        return None
    authority = uri.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    userinfo, at, _host = authority.rpartition("@")
    if at and ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        if password and not is_whole_reference(password):
            return f"holds a literal password; {NEVER_LITERAL_HINT}"
    query = uri.split("?", 1)[1].split("#", 1)[0] if "?" in uri else ""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if (name.lower() in _QUERY_SECRETS or is_sensitive_key(name)) and value and not is_whole_reference(value):
            return f"holds a literal credential in its query ('{name}='); {NEVER_LITERAL_HINT}"
    return None


def url_query_secrets(text: str) -> list[str]:
    """The credential values in a resolved URL's query string (``?password=...``, a SAS ``sig=``)."""
    if "://" not in text or "?" not in text:
        return []
    query = text.split("?", 1)[1].split("#", 1)[0]
    return [
        value
        for name, value in parse_qsl(query, keep_blank_values=True)
        if value and (name.lower() in _QUERY_SECRETS or is_sensitive_key(name))
    ]


def property_secret_problem(key: str, value: str) -> str | None:
    """Why one catalog/table property may not be written as it is (None when it may)."""
    if "connection-string" in key.lower() or "connection_string" in key.lower():
        return connection_string_problem(value)
    if is_credential_property(key):
        return literal_secret_problem(value)
    return uri_password_problem(value)


def properties_problems(properties: Mapping[str, str]) -> list[str]:
    """One line per property holding a literal credential (``'<key>' holds ...``)."""
    return [
        f"'{key}' {problem}"
        for key, value in properties.items()
        if (problem := property_secret_problem(str(key), str(value))) is not None
    ]


LOCATION_TABLE_PROPERTIES = frozenset(
    {
        "write.data.path",
        "write.metadata.path",
        "write.object-storage.path",
        "write.folder-storage.path",
        "write.location-provider.impl",
    }
)
"""Table properties that move a table's files out of its own location (``table.location()``)."""


def table_properties_problems(properties: Mapping[str, str]) -> list[str]:
    """One line per table property that may not be set.

    Table properties are written into the table's metadata, which every reader of the catalog
    sees: a credential-named one is refused whatever it holds, and a ``${...}`` reference is
    refused because it would be persisted as written (table properties are fixed settings, not
    run-time configuration).
    """
    problems: list[str] = []
    for key, value in properties.items():
        if str(key).lower() in LOCATION_TABLE_PROPERTIES:
            problems.append(
                f"'{key}' moves the table's files out of its own location: tables sharing a path cannot tell "
                "their files apart, so orphan removal and ownership checks would touch another table's data; "
                "choose the location with the target's warehouse and namespace instead"
            )
        elif is_credential_property(str(key)):
            problems.append(
                f"'{key}' names a credential: table properties are stored in the table's metadata, readable "
                "by every catalog reader; give FileIO credentials in the storage block or catalog.properties"
            )
        elif is_reference(str(value)):
            problems.append(
                f"'{key}' holds a reference: table properties are written as given into the table's metadata; "
                "write the value itself"
            )
        elif (problem := uri_password_problem(str(value))) is not None:
            problems.append(f"'{key}' {problem}")
    return problems


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


def catalog_mismatch(kind: WarehouseKind, catalog_type: str) -> str | None:
    """Why a warehouse of ``kind`` does not fit a catalog of ``catalog_type`` (None when it does)."""
    if catalog_type == "glue" and kind == "local":
        # Glue is a shared, remote catalog: a table whose files sit on one machine's disk is
        # unreadable to every other Glue client (Athena, EMR, another worker).
        return "a Glue catalog's tables must live on object storage: the warehouse must be an s3:// URI"
    return None


def warehouse_account(warehouse: str) -> str | None:
    """The storage account an ``abfs://<container>@<account>.dfs.core.windows.net/...`` warehouse
    names, or None when it names none (``abfs://<container>/<path>``)."""
    netloc = urlsplit(warehouse).netloc
    if "@" not in netloc:
        return None
    host = netloc.split("@", 1)[1]
    account = host.split(".", 1)[0]
    return account or None


def azure_account_mismatch(warehouse: str, account_name: str | None, connection_string: str | None) -> str | None:
    """Why an Azure warehouse names another account than the storage settings (None when it does not).

    Data files would be written through the configured account while the table metadata records
    locations in the other one, which no reader can then open. Unresolved references are not
    compared (the run compares the resolved values).
    """
    named = warehouse_account(warehouse)
    if named is None or is_reference(named):
        return None
    configured, field = account_name, "storage.azure.account_name"
    if configured is None and connection_string and not is_whole_reference(connection_string):
        configured = connection_string_parts(connection_string).get("accountname")
        field = "the AccountName of storage.azure.connection_string"
    if not configured or is_reference(configured) or configured.lower() == named.lower():
        return None
    return f"the warehouse names the account '{named}' but {field} is '{configured}': they must be the same account"
