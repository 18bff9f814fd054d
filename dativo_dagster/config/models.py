"""Pydantic models for every config file dativo reads.

All models forbid unknown keys: a typo in YAML is a CFG001 naming the field, never a silently
ignored setting. Modes are Literals/enums. Nothing here resolves ``${VAR}`` references; strings
that hold them stay verbatim until run time.
"""

from __future__ import annotations

import enum
import re
import zlib
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from dativo_dagster.config.secrets import SecretGrants, is_sensitive_key, reference_problem, secret_parts
from dativo_dagster.config.storage_rules import (
    azure_account_mismatch,
    catalog_mismatch,
    connection_string_problem,
    is_reference,
    literal_secret_problem,
    properties_problems,
    static_warehouse,
    storage_mismatch,
    table_properties_problems,
    uri_password_problem,
    warehouse_kind,
)

# Tenant ids, job names and object names become asset-key parts, Iceberg namespaces and table
# names, run-tag values and file names: keep them to a safe identifier alphabet. A double
# underscore is reserved as dativo's separator (``<tenant>__<suffix>`` namespaces, op names,
# ``<table>__quarantine``), so no id can be mistaken for a compound of two others.
SAFE_ID = r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$"
SAFE_ID_MAX = 63
SAFE_ID_TEXT = "lowercase letters, digits and single underscores, starting with a letter, at most 63 characters"
_SAFE_ID_RE = re.compile(SAFE_ID)


def is_safe_identifier(value: str) -> bool:
    """True if ``value`` can be used as a tenant, job or object id."""
    return len(value) <= SAFE_ID_MAX and bool(_SAFE_ID_RE.match(value))


def _safe_id(value: str) -> str:
    if not is_safe_identifier(value):
        raise ValueError(f"{value!r} is not a safe identifier ({SAFE_ID_TEXT})")
    return value


SafeId = Annotated[str, AfterValidator(_safe_id), Field(description=SAFE_ID_TEXT)]

NAMESPACE_SEPARATOR = "__"
"""A tenant's namespaces are ``<tenant>`` and ``<tenant>__<suffix>``."""

SYSTEM_PREFIX = "_dativo_"
"""Column names dativo keeps for itself (quarantine reasons, run ids); no contract column may use it."""


class StrictModel(BaseModel):
    """Base for config models: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# --------------------------------------------------------------------------- schema contracts


class ColumnType(str, enum.Enum):
    """Logical column types of a schema contract (mapped to Arrow and Iceberg in one place)."""

    INT32 = "int32"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    DECIMAL = "decimal"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    TIME = "time"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    BINARY = "binary"
    UUID = "uuid"
    JSON = "json"
    LIST = "list"


class ColumnContract(StrictModel):
    """One column of a schema contract."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    type: ColumnType
    required: bool = False
    precision: int | None = Field(default=None, ge=1, le=38)
    scale: int | None = Field(default=None, ge=0, le=38)
    item_type: ColumnType | None = None
    description: str | None = None
    source_name: str | None = Field(
        default=None, description="column name at the source when it differs from the table column"
    )

    @model_validator(mode="after")
    def _check_type_parameters(self) -> ColumnContract:
        if self.type is ColumnType.DECIMAL:
            if self.precision is None:
                raise ValueError("decimal columns need 'precision' (and optionally 'scale')")
            if (self.scale or 0) > self.precision:
                raise ValueError("decimal 'scale' cannot exceed 'precision'")
        elif self.precision is not None or self.scale is not None:
            raise ValueError("'precision'/'scale' are only valid for decimal columns")
        if self.type is ColumnType.LIST:
            if self.item_type is None or self.item_type in (ColumnType.LIST, ColumnType.DECIMAL):
                raise ValueError("list columns need a scalar, non-decimal 'item_type'")
        elif self.item_type is not None:
            raise ValueError("'item_type' is only valid for list columns")
        return self


class SchemaContract(StrictModel):
    """A versioned schema contract for one source object."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_/]*$")
    version: int = Field(ge=1)
    description: str | None = None
    columns: list[ColumnContract] = Field(min_length=1)
    primary_key: list[str] = Field(default_factory=list)
    cursor_field: str | None = None

    @model_validator(mode="after")
    def _check_references(self) -> SchemaContract:
        names = [c.name for c in self.columns]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate column names: {', '.join(duplicates)}")
        folded: dict[str, str] = {}
        for name in names:
            if name.lower() in folded and folded[name.lower()] != name:
                raise ValueError(
                    f"columns '{folded[name.lower()]}' and '{name}' differ only by case, "
                    "which most Iceberg engines cannot tell apart"
                )
            folded[name.lower()] = name
        reserved = [n for n in names if n.lower().startswith(SYSTEM_PREFIX)]
        if reserved:
            raise ValueError(f"column '{reserved[0]}' uses the prefix '{SYSTEM_PREFIX}', which dativo reserves")
        by_name = {c.name: c for c in self.columns}
        for key in self.primary_key:
            if key not in by_name:
                raise ValueError(f"primary_key column '{key}' is not declared in columns")
            if not by_name[key].required:
                raise ValueError(f"primary_key column '{key}' must be required: true")
        if self.cursor_field is not None and self.cursor_field not in by_name:
            raise ValueError(f"cursor_field '{self.cursor_field}' is not declared in columns")
        return self

    def column(self, name: str) -> ColumnContract:
        """Return the column called ``name``."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


# --------------------------------------------------------------------------- recipes


class Engine(str, enum.Enum):
    """How a source is executed: dativo's own sources, or an external connector in its own virtualenv."""

    NATIVE = "native"
    SINGER = "singer"
    AIRBYTE = "airbyte"
    MELTANO = "meltano"


def _refuse_pip_options(value: str) -> None:
    import shlex

    try:
        tokens = shlex.split(value)
    except ValueError:
        raise ValueError("must be a list of requirements") from None
    options = [t for t in tokens if t.startswith("-")]
    if options:
        raise ValueError(f"must name packages only, not pip options ({', '.join(options)})")


class MeltanoSettings(StrictModel):
    """The Meltano project and extractor an ``engine: meltano`` recipe runs."""

    project: str = Field(description="directory holding meltano.yml, relative to the dativo project")
    extractor: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", description="the extractor's name in meltano.yml (tap-mysql)"
    )
    pip_url: str = Field(default="meltano==4.4.1", min_length=1, description="what installs Meltano itself")

    @field_validator("pip_url")
    @classmethod
    def _packages_only(cls, value: str) -> str:
        _refuse_pip_options(value)
        return value

    @field_validator("project")
    @classmethod
    def _relative(cls, value: str) -> str:
        from pathlib import PurePosixPath

        path = PurePosixPath(value)
        if not value.strip() or path.is_absolute() or ".." in path.parts:
            raise ValueError("must be a relative path inside the project, without '..'")
        return value


CREDENTIAL_DESTINATION_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "hosts",
        "port",
        "url",
        "base_url",
        "uri",
        "endpoint",
        "endpoint_url",
        "dsn",
        "account",
        "account_name",
        "domain",
        "server",
        "token_uri",
        "token_url",
        "auth_uri",
        "connection_string",
        "service",
        "proxy",
    }
)
"""Settings that decide where a source sends its credentials (see :meth:`SourceRecipe.credential_redirects`)."""

_DESTINATION_SUFFIXES = ("_url", "_uri", "_host", "_hosts", "_endpoint", "_server", "_domain", "_proxy", "_dsn")


def is_credential_destination(key: str) -> bool:
    """True for a setting that decides where credentials are sent (``host``, ``base_url``, ``token_uri``, ...)."""
    name = str(key).lower()
    return name in CREDENTIAL_DESTINATION_KEYS or name.endswith(_DESTINATION_SUFFIXES)


def _names_destination(key: str, value: Any) -> bool:
    """``key`` is a destination, or its value (a mapping, a list) holds one at any depth."""
    if is_credential_destination(key):
        return True
    if isinstance(value, dict):
        return any(_names_destination(str(k), v) for k, v in value.items())
    if isinstance(value, list):
        return any(isinstance(item, dict) and _names_destination("", item) for item in value)
    return False


class SourceRecipe(StrictModel):
    """connectors/sources/<name>.yaml: how to reach one kind of source.

    ``engine: native`` runs the source module named by ``type``. ``singer``, ``airbyte`` and ``meltano``
    run an external connector (``pip_url`` + ``executable``, or a Meltano project's extractor) with
    ``config`` as its config template (``${VAR}`` references resolved at run time); their ``type``
    is the engine's name and may be left out.
    """

    name: SafeId
    type: SafeId = Field(description="source type: a module of dativo_dagster.sources, or a registered plugin")
    engine: Engine = Engine.NATIVE
    description: str | None = None
    credentials: dict[str, str] = Field(
        default_factory=dict, description="credential template; values are usually ${VAR} references"
    )
    defaults: dict[str, Any] = Field(default_factory=dict, description="connection defaults")
    objects: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="well-known objects with their default per-object config"
    )
    pip_url: str | None = Field(
        default=None, min_length=1, description="engines: what pip installs into the connector's own virtualenv"
    )
    executable: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="engines: the command the package installs (default: the package's name)",
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="engines: the connector's config template (job connection keys override)"
    )
    meltano: MeltanoSettings | None = Field(default=None, description="engine meltano: the project and extractor")
    tenant_settings: list[str] | None = Field(
        default=None,
        description="the connection settings a tenant job may set (default: engines, the keys of config; native, "
        "any the source knows); anything else is CFG001, so a tenant cannot point the connector somewhere the "
        "platform did not mean it to go. While the recipe supplies credentials the job does not replace, a "
        "setting that decides where they are sent (host, port, url, base_url, token_uri, ...) is tenant-settable "
        "only when listed here",
    )
    path_settings: list[str] = Field(
        default_factory=list,
        description="engines: connector settings holding local paths (or file:// URLs), at any depth under the key; "
        "each must lie inside the tenant's data roots (links followed)",
    )
    checkpoint_rows: int = Field(
        default=100_000, ge=1, description="engines: commit at the first connector state after this many rows"
    )
    checkpoint_seconds: float = Field(
        default=60, gt=0, description="engines: ... or at the first state after this many seconds"
    )

    @field_validator("pip_url")
    @classmethod
    def _packages_only(cls, value: str | None) -> str | None:
        """pip options (an index URL, a requirements file) would change where connectors come from."""
        if value is not None:
            _refuse_pip_options(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _engine_type(cls, data: Any) -> Any:
        # An engine recipe's type is its engine: the connector is named by pip_url/executable.
        if isinstance(data, dict) and "type" not in data and data.get("engine") not in (None, "native"):
            data = {**data, "type": data.get("engine")}
        return data

    @model_validator(mode="after")
    def _engine_settings(self) -> SourceRecipe:
        engine_fields = ("pip_url", "executable", "meltano")
        if self.engine is Engine.NATIVE:
            given = [name for name in engine_fields if getattr(self, name) is not None]
            if self.config:
                given.append("config")
            if given:
                raise ValueError(
                    f"{', '.join(given)}: only for engine singer, airbyte or meltano (this recipe is native)"
                )
            return self
        check_references(self.config)
        if self.type != self.engine.value:
            raise ValueError(f"type: an engine '{self.engine.value}' recipe has type '{self.engine.value}' (or none)")
        if self.defaults:
            raise ValueError("defaults: an engine recipe puts the connector's settings under 'config'")
        if self.engine is Engine.MELTANO:
            if self.meltano is None:
                raise ValueError("engine 'meltano' needs 'meltano: {project: ..., extractor: ...}'")
            if self.pip_url is not None or self.executable is not None:
                raise ValueError("pip_url/executable: a Meltano project installs its own extractor (meltano.yml)")
        else:
            if self.meltano is not None:
                raise ValueError(f"meltano: only for engine 'meltano' (this recipe is '{self.engine.value}')")
            if self.pip_url is None:
                raise ValueError(f"engine '{self.engine.value}' needs 'pip_url' (the connector package to install)")
        return self

    def tenant_settable(self) -> set[str] | None:
        """The connection keys a tenant job may set on this recipe (None: any its model knows)."""
        if self.tenant_settings is not None:
            return set(self.tenant_settings)
        return None if self.engine is Engine.NATIVE else set(self.config)

    def held_credentials(self, job_source: SourceRef) -> list[str]:
        """The credentials this recipe supplies that ``job_source`` does not replace (``section.key``).

        A credential is any ``credentials`` entry, and any connection default holding a secret (a
        secret-named key, or a URL with a password), whether a literal or a reference.
        """
        held = [
            f"credentials.{key}"
            for key, value in self.credentials.items()
            if value and key not in job_source.credentials and not is_credential_destination(key)
        ]
        for key, value in self.connection_defaults.items():
            if key in job_source.connection or is_credential_destination(key):
                continue
            if secret_parts(value, sensitive=is_sensitive_key(key)):
                held.append(f"connection.{key}")
        return held

    def credential_redirects(self, job_source: SourceRef) -> list[tuple[str, str]]:
        """The settings of ``job_source`` that would send this recipe's credentials where the tenant chose.

        While the recipe holds credentials the job does not replace (:meth:`held_credentials`), a
        tenant may not set a key deciding where they go (:func:`is_credential_destination`, at any
        depth of the value it sets) unless ``tenant_settings`` lists it: a recipe's password, token
        or key file must never reach a host the tenant picked.

        Returns:
            ``(section.key, held credential)`` for each such setting; empty when none.
        """
        held = self.held_credentials(job_source)
        if not held:
            return []
        allowed = set(self.tenant_settings or ())
        found: list[tuple[str, str]] = []
        for section, settings in (("connection", job_source.connection), ("credentials", job_source.credentials)):
            for key, value in settings.items():
                if key not in allowed and _names_destination(key, value):
                    found.append((f"{section}.{key}", held[0]))
        return found

    @property
    def connection_defaults(self) -> dict[str, Any]:
        """What a job's ``connection`` overrides: ``defaults`` (native) or the connector ``config`` (engines)."""
        return dict(self.config) if self.engine is not Engine.NATIVE else dict(self.defaults)


def _reference_only(value: str) -> str:
    problem = literal_secret_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _connection_string(value: str) -> str:
    problem = connection_string_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _literal_free_properties(value: dict[str, str]) -> dict[str, str]:
    problems = properties_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


def _uri_without_password(value: str | None) -> str | None:
    problem = uri_password_problem(value) if value else None
    if problem:
        raise ValueError(problem)
    return value


def _settable_table_properties(value: dict[str, str]) -> dict[str, str]:
    problems = table_properties_problems(value)
    if problems:
        raise ValueError("; ".join(problems))
    return value


SecretReference = Annotated[
    str,
    AfterValidator(_reference_only),
    Field(description="a ${VAR} reference resolved at run time; a literal credential is refused"),
]
"""A credential field: only a reference may stand here, never the credential itself."""


class S3Storage(StrictModel):
    """A warehouse on S3 or an S3-compatible store (MinIO, Cloudflare R2, Ceph RGW).

    Written through pyiceberg's PyArrow FileIO (``s3.*`` properties). With no keys set, the AWS
    default chain supplies credentials: environment, shared config/profile, web identity, ECS task
    role or EC2 instance role.
    """

    endpoint: Annotated[str | None, AfterValidator(_uri_without_password)] = Field(
        default=None,
        description="S3 API URL of an S3-compatible store, e.g. http://minio:9000; "
        "default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL from the run environment, else AWS",
    )
    region: str | None = Field(
        default=None, description="bucket region; default: AWS_REGION / AWS_DEFAULT_REGION of the run environment"
    )
    path_style: bool | None = Field(
        default=None,
        description="true: path-style requests (host/bucket/key; MinIO, Ceph: the default whenever an endpoint "
        "is set); false: virtual-hosted-style (bucket.host/key), for stores that require it",
    )
    access_key_id: SecretReference | None = None
    secret_access_key: SecretReference | None = None
    session_token: SecretReference | None = None

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> S3Storage:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together (or neither: the default chain)")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        return self


class AzureStorage(StrictModel):
    """A warehouse on Azure Blob Storage / ADLS Gen2, written through adlfs (pyiceberg's fsspec FileIO).

    Give either ``connection_string`` alone, or ``account_name`` with ``account_key`` or
    ``sas_token`` (and ``endpoint`` for an emulator or a sovereign cloud), or ``account_name``
    alone: adlfs then uses ``DefaultAzureCredential`` (service-principal environment variables,
    workload identity, managed identity).
    """

    account_name: str | None = Field(default=None, description="storage account name")
    endpoint: Annotated[str | None, AfterValidator(_uri_without_password)] = Field(
        default=None,
        description="blob service URL, e.g. http://127.0.0.1:10000/devstoreaccount1 (Azurite); "
        "default: https://<account_name>.blob.core.windows.net",
    )
    connection_string: Annotated[str, AfterValidator(_connection_string)] | None = Field(
        default=None, description="a reference (it carries the key); a literal AccountKey/SAS is refused"
    )
    account_key: SecretReference | None = None
    sas_token: SecretReference | None = None

    @model_validator(mode="after")
    def _one_way_in(self) -> AzureStorage:
        if self.connection_string is not None:
            others = [
                name
                for name in ("account_name", "endpoint", "account_key", "sas_token")
                if getattr(self, name) is not None
            ]
            if others:
                raise ValueError(f"connection_string carries the account, endpoint and key: drop {', '.join(others)}")
            return self
        if self.account_key is not None and self.sas_token is not None:
            raise ValueError("account_key and sas_token: give one of them")
        if (self.account_key is not None or self.sas_token is not None or self.endpoint) and not self.account_name:
            raise ValueError("account_name is needed with account_key, sas_token or endpoint")
        if (
            self.endpoint
            and not is_reference(self.endpoint)
            and not self.endpoint.startswith("https://")
            and self.account_key is None
            and self.sas_token is None
        ):
            raise ValueError("an http:// endpoint (an emulator) needs account_key or sas_token")
        return self


class StorageConfig(StrictModel):
    """Where the warehouse's files live: exactly one of ``s3`` or ``azure`` (omit for a local disk)."""

    s3: S3Storage | None = None
    azure: AzureStorage | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StorageConfig:
        if (self.s3 is None) == (self.azure is None):
            raise ValueError("give exactly one of 's3' or 'azure'")
        return self

    @property
    def kind(self) -> Literal["s3", "azure"]:
        """Which store the block configures."""
        return "s3" if self.s3 is not None else "azure"


class GlueSettings(StrictModel):
    """AWS Glue Data Catalog settings; credentials come from the AWS default chain."""

    region: str | None = Field(default=None, description="Glue region; default: AWS_REGION of the run environment")
    endpoint: Annotated[str | None, AfterValidator(_uri_without_password)] = Field(
        default=None,
        description="Glue API URL (an emulator); default: AWS_ENDPOINT_URL_GLUE / AWS_ENDPOINT_URL, else AWS",
    )
    catalog_id: str | None = Field(default=None, description="AWS account id owning the catalog (cross-account)")


class CatalogConfig(StrictModel):
    """Iceberg catalog settings (one class for every catalog kind, as dagster-iceberg does)."""

    type: Literal["sql", "rest", "glue"] = "sql"
    uri: Annotated[str | None, AfterValidator(_uri_without_password)] = Field(
        default=None, description="SQLAlchemy URI (sql) or REST endpoint (rest); a password only as ${VAR}"
    )
    glue: GlueSettings | None = Field(default=None, description="AWS Glue settings (type glue)")
    properties: Annotated[dict[str, str], AfterValidator(_literal_free_properties)] = Field(
        default_factory=dict,
        description="extra pyiceberg catalog properties (credential, s3.sse-kms-key-id, ...); "
        "credentials only as ${VAR}",
    )

    @model_validator(mode="after")
    def _uri_required(self) -> CatalogConfig:
        if self.type in ("sql", "rest") and not self.uri:
            raise ValueError(f"catalog type '{self.type}' needs 'uri'")
        if self.glue is not None and self.type != "glue":
            raise ValueError(f"glue: only for catalog type 'glue' (this catalog is '{self.type}')")
        return self


class TargetRecipe(StrictModel):
    """connectors/targets/<name>.yaml: an Iceberg catalog plus warehouse."""

    name: SafeId
    type: Literal["iceberg"] = "iceberg"
    description: str | None = None
    catalog_name: SafeId = "dativo"
    catalog: CatalogConfig
    storage: StorageConfig | None = Field(
        default=None, description="object-store settings of the warehouse (s3 or azure); omit for a local disk"
    )
    warehouse: Annotated[str, AfterValidator(_uri_without_password)] = Field(
        description="file path, file://, s3:// or abfs(s):// URI; may use ${VAR}"
    )
    table_properties: Annotated[dict[str, str], AfterValidator(_settable_table_properties)] = Field(
        default_factory=dict,
        description="properties of the tables this target creates, written as given (no references, no "
        "credentials: every catalog reader sees them)",
    )
    target_file_rows: int = Field(default=1_000_000, ge=1_000, description="rows per data file (bounds memory)")

    @field_validator("warehouse")
    @classmethod
    def _warehouse_fits_storage(cls, value: str, info: ValidationInfo) -> str:
        known = static_warehouse(value)
        if known is None:
            return value  # decided by a reference: checked when the run resolves it
        catalog = info.data.get("catalog")
        kind = warehouse_kind(known, catalog_type=catalog.type if catalog is not None else "sql")
        storage = info.data.get("storage")
        problem = storage_mismatch(kind, storage.kind if storage is not None else None) or catalog_mismatch(
            kind, catalog.type if catalog is not None else "sql"
        )
        if problem is None and storage is not None and storage.azure is not None:
            problem = azure_account_mismatch(known, storage.azure.account_name, storage.azure.connection_string)
        if problem:
            raise ValueError(problem)
        return value


# --------------------------------------------------------------------------- tenant jobs


class Strategy(str, enum.Enum):
    """Incremental strategies."""

    FULL_REFRESH = "full_refresh"
    APPEND = "append"  # monotonically increasing id: read id > cursor
    UPDATED = "updated"  # updated-at timestamp with lookback, merged on the primary key
    CREATED = "created"  # created-at timestamp with lookback, merged on the primary key
    FILE_MTIME = "file_mtime"  # whole files newer than the cursor (file sources only)


class WriteMode(str, enum.Enum):
    """How a run's rows land in the Iceberg table."""

    APPEND = "append"
    MERGE = "merge"
    OVERWRITE = "overwrite"


DEFAULT_WRITE_MODE: dict[Strategy, WriteMode] = {
    Strategy.FULL_REFRESH: WriteMode.OVERWRITE,
    Strategy.APPEND: WriteMode.APPEND,
    Strategy.UPDATED: WriteMode.MERGE,
    Strategy.CREATED: WriteMode.MERGE,
    Strategy.FILE_MTIME: WriteMode.APPEND,
}


class Incremental(StrictModel):
    """How an object is read incrementally."""

    strategy: Strategy = Strategy.FULL_REFRESH
    cursor_field: str | None = None
    lookback_days: float = Field(default=0, ge=0, le=3650)
    initial_value: str | int | None = Field(default=None, description="cursor to start from on first run")
    cursor_unit: Literal["seconds", "milliseconds", "microseconds"] | None = Field(
        default=None, description="the unit of a numeric epoch cursor (needed for lookback_days on one)"
    )
    slice_days: float | None = Field(
        default=None, gt=0, le=3650, description="commit a long read in windows of this many days (API sources)"
    )

    @model_validator(mode="after")
    def _cursor_field_needed(self) -> Incremental:
        needs_field = self.strategy in (Strategy.APPEND, Strategy.UPDATED, Strategy.CREATED)
        if needs_field and not self.cursor_field:
            raise ValueError(f"strategy '{self.strategy.value}' needs 'cursor_field'")
        if not needs_field and self.cursor_field:
            raise ValueError(f"strategy '{self.strategy.value}' takes no 'cursor_field'")
        if self.lookback_days and self.strategy not in (Strategy.UPDATED, Strategy.CREATED):
            raise ValueError("'lookback_days' only applies to the 'updated' and 'created' strategies")
        return self


class Quality(StrictModel):
    """Data-quality thresholds for one object."""

    max_rejected_rate: float = Field(default=0.05, ge=0, le=1)
    allow_empty_refresh: bool = Field(
        default=False, description="let a full refresh that reads no valid row empty a table that has rows"
    )


class CheckSeverity(str, enum.Enum):
    """Severity of a failed asset check (Dagster's WARN or ERROR)."""

    WARN = "warn"
    ERROR = "error"


class CheckSettings(StrictModel):
    """One kind of asset check: whether it is generated, how bad its failure is, whether it blocks."""

    enabled: bool = True
    severity: CheckSeverity = CheckSeverity.ERROR
    blocking: bool = Field(default=False, description="an ERROR failure stops downstream assets of the run")


class WarnCheckSettings(CheckSettings):
    """A check whose failure is a warning unless configured otherwise."""

    severity: CheckSeverity = CheckSeverity.WARN


class VolumeCheckSettings(WarnCheckSettings):
    """Rows read by a run against the object's own recent runs."""

    max_drop_fraction: float = Field(
        default=0.5, gt=0, le=1, description="fail when a run reads this fraction fewer rows than its history's median"
    )
    history: int = Field(default=10, ge=1, le=100, description="earlier runs the median is taken over")


class FreshnessCheckSettings(WarnCheckSettings):
    """Age of the table's last commit against a per-job SLA (generated only when the SLA is set)."""

    max_age_minutes: float | None = Field(default=None, gt=0, le=525_600)


class QuarantineCheckSettings(WarnCheckSettings):
    """Rows one run adds to ``<table>__quarantine``."""

    max_growth_rows: int = Field(default=1000, ge=0)


class ChecksConfig(StrictModel):
    """The ``checks:`` section of a tenant job (or of one object, overriding the job's per kind)."""

    contract: CheckSettings = Field(default_factory=CheckSettings)
    not_null: CheckSettings = Field(default_factory=CheckSettings)
    primary_key: CheckSettings = Field(default_factory=CheckSettings)
    schema_drift: CheckSettings = Field(default_factory=CheckSettings)
    volume: VolumeCheckSettings = Field(default_factory=VolumeCheckSettings)
    freshness: FreshnessCheckSettings = Field(default_factory=FreshnessCheckSettings)
    quarantine: QuarantineCheckSettings = Field(default_factory=QuarantineCheckSettings)

    def overridden_by(self, other: ChecksConfig | None) -> ChecksConfig:
        """These settings with the fields ``other`` sets explicitly taking precedence (an object's override).

        An object writing ``volume: {max_drop_fraction: 0.9}`` keeps the job's other volume settings.
        """
        if other is None or not other.model_fields_set:
            return self
        update: dict[str, CheckSettings] = {}
        for kind in other.model_fields_set:
            mine: CheckSettings = getattr(self, kind)
            theirs: CheckSettings = getattr(other, kind)
            update[kind] = mine.model_copy(update={name: getattr(theirs, name) for name in theirs.model_fields_set})
        return self.model_copy(update=update)


class ContractRef(StrictModel):
    """Reference to connectors/schemas/<name>.v<version>.yaml."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*(/[a-z][a-z0-9_]*)*$")
    version: int = Field(ge=1)


class ObjectConfig(StrictModel):
    """One object (table, file set, API resource) of a tenant job."""

    name: SafeId
    description: str | None = None
    contract: ContractRef | None = Field(
        default=None, description="schema contract; optional for sources that discover their schema"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="source-specific object settings")
    incremental: Incremental = Field(default_factory=Incremental)
    write_mode: WriteMode | None = None
    primary_key: list[str] | None = None
    quality: Quality | None = None
    checks: ChecksConfig | None = Field(default=None, description="per-kind overrides of the job's checks")
    table: SafeId | None = Field(default=None, description="Iceberg table name (default: object name)")

    @property
    def effective_write_mode(self) -> WriteMode:
        """Explicit write mode, else the default for the strategy."""
        return self.write_mode or DEFAULT_WRITE_MODE[self.incremental.strategy]

    @model_validator(mode="after")
    def _mode_fits_strategy(self) -> ObjectConfig:
        mode = self.effective_write_mode
        strategy = self.incremental.strategy
        if mode is WriteMode.OVERWRITE and strategy is not Strategy.FULL_REFRESH:
            raise ValueError("write_mode 'overwrite' only fits strategy 'full_refresh'")
        if strategy is Strategy.FULL_REFRESH and mode is WriteMode.APPEND:
            raise ValueError("strategy 'full_refresh' with write_mode 'append' would duplicate every row")
        return self


class SourceRef(StrictModel):
    """The source section of a tenant job."""

    recipe: SafeId
    connection: dict[str, Any] = Field(default_factory=dict, description="overrides of the recipe defaults")
    credentials: dict[str, str] = Field(default_factory=dict, description="overrides of the recipe template")

    @field_validator("credentials")
    @classmethod
    def _credentials_are_references(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            # A key file's path is not a secret (its content is, and is read at run time from
            # inside the tenant's data roots); every other credential value must be a reference.
            if "${" not in text and not key.endswith("_file"):
                raise ValueError(
                    f"credential '{key}' must be a ${{VAR}} reference (or ${{file:/path}}, ${{aws-sm:id}}, "
                    "${aws-ssm:/name}), not a literal secret"
                )
        return value


def namespace_belongs_to(namespace: str, tenant: str) -> bool:
    """True for the tenant's own namespaces: ``<tenant>`` and ``<tenant>__<suffix>``."""
    if namespace == tenant:
        return True
    prefix = tenant + NAMESPACE_SEPARATOR
    return namespace.startswith(prefix) and is_safe_identifier(namespace[len(prefix) :])


_NAMESPACE_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*(__[a-z0-9]+(_[a-z0-9]+)*)?$")


def _namespace(value: str) -> str:
    if len(value) > 127 or not _NAMESPACE_RE.match(value):
        raise ValueError(f"{value!r} is not a namespace: '<tenant>' or '<tenant>__<suffix>', each part {SAFE_ID_TEXT}")
    return value


class TargetRef(StrictModel):
    """The target section of a tenant job."""

    recipe: SafeId
    namespace: Annotated[str, AfterValidator(_namespace)] | None = Field(
        default=None, description="Iceberg namespace: the tenant id (default) or '<tenant>__<suffix>'"
    )


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _owner(value: str) -> str:
    """An asset owner as Dagster accepts it: an e-mail address or ``team:<name>``."""
    if _EMAIL.match(value) or (value.startswith("team:") and len(value) > 5):
        return value
    raise ValueError(f"owner {value!r} must be an e-mail address or 'team:<name>'")


class Partitions(StrictModel):
    """Time partitions of a tenant job's objects (every object needs a timestamp cursor).

    A partition run reads the rows whose cursor lies in the partition's window and replaces
    exactly that window of the table in one Iceberg commit; runs without a partition key (the
    schedule) stay incremental.
    """

    granularity: Literal["daily", "monthly"]
    start: str = Field(description="first partition, YYYY-MM-DD (monthly: the first day of a month)")
    timezone: str = Field(default="UTC", description="IANA time zone the partition boundaries are in")
    end_offset: int = Field(
        default=0, ge=-3650, le=3650, description="partitions past the current one (1: the running one too)"
    )
    max_partitions_per_run: int | None = Field(
        default=None,
        ge=1,
        le=3660,
        description=(
            "a backfill reads up to this many partitions as one window per run (default: the whole range in "
            "one run, which `dagster asset materialize --partition-range` needs)"
        ),
    )

    @field_validator("start")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        import datetime as dt

        try:
            if len(value) != 10:
                raise ValueError
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _month_start(self) -> Partitions:
        if self.granularity == "monthly" and not self.start.endswith("-01"):
            raise ValueError(f"monthly partitions start on the first day of a month, not {self.start}")
        return self


class TenantJob(StrictModel):
    """tenants/<tenant>/jobs/<job>.yaml."""

    tenant: SafeId
    name: SafeId
    description: str | None = None
    owners: list[Annotated[str, AfterValidator(_owner)]] = Field(
        default_factory=list, description="e-mail addresses or 'team:<name>' (shown on every asset)"
    )
    source: SourceRef
    target: TargetRef
    max_workers: int = Field(default=4, ge=1, le=64, description="objects extracted in parallel")
    max_failed_objects: int | None = Field(
        default=None,
        ge=1,
        description="stop starting objects after this many failed (a rejected credential stops the run at once)",
    )
    quality: Quality = Field(default_factory=Quality)
    checks: ChecksConfig = Field(default_factory=ChecksConfig, description="asset checks generated per object")
    objects: list[ObjectConfig] = Field(min_length=1)
    partitions: Partitions | None = Field(
        default=None, description="time partitions of the job's objects (daily or monthly, from a start date)"
    )
    include_payloads: bool = Field(
        default=False,
        description="log API request and response bodies (secrets and pii_fields redacted, truncated) to the "
        "run's payloads.jsonl; bodies may hold personal data",
    )
    pii_fields: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="keys whose values are redacted from payload logs: JSON keys at any depth, form and query "
        "parameters (case-insensitive)",
    )
    payload_max_bytes: int = Field(
        default=4096, ge=256, le=1_048_576, description="bytes of each logged request or response body"
    )
    raw_retention_days: float = Field(
        default=0,
        ge=0,
        le=3650,
        description="API sources: keep each run's raw responses this many days for `dativo inspect` and "
        "`dativo replay --from raw` (0: keep none)",
    )

    @model_validator(mode="after")
    def _namespace_belongs_to_tenant(self) -> TenantJob:
        namespace = self.target.namespace
        if namespace is not None and not namespace_belongs_to(namespace, self.tenant):
            raise ValueError(
                f"target.namespace '{namespace}' must be the tenant id '{self.tenant}' or "
                f"'{self.tenant}{NAMESPACE_SEPARATOR}<suffix>' (tenants never write into each other's namespaces)"
            )
        return self

    @model_validator(mode="after")
    def _unique_objects(self) -> TenantJob:
        names = Counter(o.name for o in self.objects)
        duplicates = sorted(n for n, count in names.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate object names: {', '.join(duplicates)}")
        tables = Counter(o.table or o.name for o in self.objects)
        clashes = sorted(t for t, count in tables.items() if count > 1)
        if clashes:
            raise ValueError(f"two objects write the same table: {', '.join(clashes)}")
        return self


# --------------------------------------------------------------------------- runner.yaml


class Backoff(str, enum.Enum):
    """Retry delay growth."""

    LINEAR = "linear"
    EXPONENTIAL = "exponential"


class Jitter(str, enum.Enum):
    """Retry delay randomisation."""

    NONE = "none"
    FULL = "full"
    PLUS_MINUS = "plus_minus"


class RetryConfig(StrictModel):
    """Dagster RetryPolicy for transient failures (permanent ones never retry)."""

    max_retries: int = Field(default=3, ge=0, le=20)
    delay_s: float = Field(default=10, ge=0, le=3600)
    backoff: Backoff = Backoff.EXPONENTIAL
    jitter: Jitter = Jitter.PLUS_MINUS


class Schedule(StrictModel):
    """A cron or interval schedule; exactly one of the two."""

    cron: str | None = None
    interval_minutes: int | None = Field(default=None, ge=1, le=1440)
    timezone: str = "UTC"
    enabled: bool = True

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.cron is None) == (self.interval_minutes is None):
            raise ValueError("give exactly one of 'cron' or 'interval_minutes'")
        if self.cron is not None:
            from dativo_dagster.compat.dagster import is_valid_cron_string

            if not is_valid_cron_string(self.cron):
                raise ValueError(f"'{self.cron}' is not a valid cron expression")
        if self.interval_minutes is not None:
            minutes = self.interval_minutes
            if not (minutes < 60 and 60 % minutes == 0) and not (minutes % 60 == 0 and 1440 % minutes == 0):
                raise ValueError(
                    "interval_minutes must divide an hour (1..30) or be whole hours dividing a day (60..1440)"
                )
        return self

    @property
    def cron_expression(self) -> str:
        """The schedule as a cron string."""
        if self.cron is not None:
            return self.cron
        minutes = self.interval_minutes or 60
        if minutes < 60:
            return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
        hours = minutes // 60
        return "0 0 * * *" if hours == 24 else ("0 * * * *" if hours == 1 else f"0 */{hours} * * *")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone '{value}'") from exc
        return value


class FileSensor(StrictModel):
    """The new-file sensor of a job whose objects watch files (a CSV glob, a Drive folder).

    A job with at least one such object gets the sensor unless ``enabled`` is false.
    """

    enabled: bool = True
    minimum_interval_seconds: int = Field(
        default=60, ge=5, le=86400, description="how often the daemon lists the watched files (seconds)"
    )


class SecretAllowlist(StrictModel):
    """The file and AWS secret references a tenant's jobs may use (nothing unless listed).

    Each entry is a pattern matching a whole path, secret id or parameter name: ``*`` matches any
    run of characters, ``/`` included (as in IAM resource patterns), ``?`` one character, and
    ``{tenant}`` is replaced by the tenant id, so one runner-level list can give every tenant its
    own prefix. ``${VAR}`` environment references are governed only when ``env`` is set (its
    patterns also take ``{TENANT}``, the tenant id in upper case).
    """

    files: list[str] = Field(
        default_factory=list,
        description="absolute path patterns of real secret file paths (a file's path, links followed, is matched "
        "against the pattern as written), e.g. "
        "/run/secrets/{tenant}/*",
    )
    aws_sm: list[str] = Field(
        default_factory=list, description="AWS Secrets Manager secret id patterns, e.g. {tenant}/*"
    )
    aws_ssm: list[str] = Field(default_factory=list, description="SSM Parameter Store name patterns, e.g. /{tenant}/*")
    env: list[str] | None = Field(
        default=None,
        description="environment variable name patterns a tenant's job may reference as ${VAR} (case-sensitive; "
        "{tenant} and {TENANT}, the id in upper case), e.g. {TENANT}__*; unset: any variable (recommended for "
        "multi-tenant deployments: set it)",
    )

    @field_validator("files", "aws_sm", "aws_ssm", "env")
    @classmethod
    def _patterns(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        env = info.field_name == "env"
        placeholders = "placeholders {tenant} and {TENANT} are" if env else "placeholder {tenant} is"
        for pattern in value or ():
            if not pattern.strip() or any(ord(c) < 32 for c in pattern):
                raise ValueError("a pattern cannot be empty or hold control characters")
            try:
                filled = pattern.format(tenant="t", **({"TENANT": "T"} if env else {}))
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"pattern {pattern!r}: only the {placeholders} allowed") from exc
            if info.field_name == "files" and not filled.startswith("/"):
                raise ValueError(f"pattern {pattern!r}: a file pattern is an absolute path")
            if filled.strip("*?/") == "":
                raise ValueError(f"pattern {pattern!r} would allow every secret; name a prefix")
        return value

    def grants(self, tenant: str, setting: str) -> SecretGrants:
        """The patterns of ``tenant`` (``{tenant}`` filled); ``setting`` names this list in runner.yaml."""
        return SecretGrants(
            files=tuple(p.format(tenant=tenant) for p in self.files),
            aws_sm=tuple(p.format(tenant=tenant) for p in self.aws_sm),
            aws_ssm=tuple(p.format(tenant=tenant) for p in self.aws_ssm),
            env=None if self.env is None else tuple(p.format(tenant=tenant, TENANT=tenant.upper()) for p in self.env),
            setting=setting,
            tenant=tenant,
        )


class JobEntry(StrictModel):
    """One tenant job that the runner runs."""

    tenant: SafeId
    job: SafeId
    enabled: bool = True
    schedule: Schedule | None = None
    file_sensor: FileSensor = Field(
        default_factory=FileSensor,
        description="a run when new or changed files arrive in the objects that watch files (globs, folders)",
    )
    retry: RetryConfig | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    data_roots: list[str] | None = Field(
        default=None, description="directories this job may read local files from (replaces the runner's list)"
    )
    alerts: list[SafeId] | None = Field(
        default=None, description="alert routes of this job (replaces the tenant's and the default routes)"
    )
    secrets: SecretAllowlist | None = Field(
        default=None, description="secret references this job may use (replaces the runner's 'secrets')"
    )

    @field_validator("data_roots")
    @classmethod
    def _roots_are_templates(cls, value: list[str] | None) -> list[str] | None:
        return _check_root_templates(value) if value is not None else None

    @field_validator("tags")
    @classmethod
    def _no_reserved_tags(cls, value: dict[str, str]) -> dict[str, str]:
        # dativo/tenant and dativo/job choose a run's tenant limit and its alerts' routes: only
        # dativo sets them (and dagster/ tags steer Dagster itself).
        reserved = sorted(key for key in value if key.startswith(RESERVED_TAG_PREFIXES))
        if reserved:
            raise ValueError(
                f"tag(s) {', '.join(repr(key) for key in reserved)}: the prefixes "
                f"{' and '.join(RESERVED_TAG_PREFIXES)} are reserved (dativo tags each run with its tenant and job)"
            )
        return value


RESERVED_TAG_PREFIXES = ("dativo/", "dagster/")
"""Tag keys runner.yaml cannot set on a job's runs."""

DEFAULT_DATA_ROOTS = ("tenants/{tenant}/data",)


def _check_root_templates(templates: list[str]) -> list[str]:
    for template in templates:
        if not template.strip():
            raise ValueError("a data root cannot be empty")
        try:
            template.format(tenant="t")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"data root {template!r}: only the placeholder {{tenant}} is allowed") from exc
    return templates


class CodeLocations(StrictModel):
    """How tenants are split into Dagster code locations (each its own process, loaded alone).

    Tenants named in ``groups`` load in that location; the others go to ``default``, or, with
    ``shards``, to ``<default>_<n>`` by a stable hash of the tenant id.
    """

    default: SafeId = "dativo"
    groups: dict[str, list[SafeId]] = Field(default_factory=dict)
    shards: int = Field(default=0, ge=0, le=256, description="spread other tenants over this many locations")

    @field_validator("groups")
    @classmethod
    def _groups_are_disjoint(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        owner: dict[str, str] = {}
        for name, tenants in value.items():
            _safe_id(name)
            for tenant in tenants:
                if tenant in owner and owner[tenant] != name:
                    raise ValueError(f"tenant '{tenant}' is in two code locations: {owner[tenant]} and {name}")
                owner[tenant] = name
        return value

    def location_of(self, tenant: str) -> str:
        """The code location that loads ``tenant``."""
        for name, tenants in self.groups.items():
            if tenant in tenants:
                return name
        if self.shards:
            return f"{self.default}_{zlib.crc32(tenant.encode()) % self.shards}"
        return self.default

    def names(self) -> list[str]:
        """Every code location name, groups first."""
        rest = [f"{self.default}_{n}" for n in range(self.shards)] if self.shards else [self.default]
        return [*self.groups, *[name for name in rest if name not in self.groups]]


class AlertRoute(StrictModel):
    """One named place alerts go: a generic JSON webhook, a Slack-compatible webhook, or the log.

    ``url`` and header values may be ``${VAR}`` references, resolved only when an alert is sent
    and never logged.
    """

    type: Literal["webhook", "slack", "log"]
    url: str | None = Field(default=None, description="http(s) URL or a ${VAR} reference to one")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers; values may be ${VAR}")
    timeout_s: float = Field(default=5, gt=0, le=60, description="seconds one attempt may take, connecting included")
    max_attempts: int = Field(default=3, ge=1, le=10, description="delivery attempts before the route is given up")
    backoff_s: float = Field(default=1, ge=0, le=30, description="wait before the second attempt; doubles after")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_references(value)
        if "${" in value:
            return value  # checked once resolved, when an alert is sent
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, or a ${VAR} reference to one")
        return value

    @field_validator("headers")
    @classmethod
    def _header_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name!r}: a value cannot hold a line break")
        check_references(value)
        return value

    @model_validator(mode="after")
    def _url_fits_type(self) -> AlertRoute:
        if self.type == "log":
            if self.url is not None or self.headers:
                raise ValueError("a 'log' route takes no 'url' or 'headers'")
        elif self.url is None:
            raise ValueError(f"a '{self.type}' route needs 'url'")
        return self


def _check_route_names(names: list[str], routes: dict[str, AlertRoute], where: str) -> None:
    for index, name in enumerate(names):
        if name not in routes:
            known = ", ".join(sorted(routes)) or "none are defined under alerts.routes"
            raise ValueError(f"{where}[{index}]: unknown alert route '{name}' (routes: {known})")


class AlertsConfig(StrictModel):
    """Where failed runs and failed ERROR checks are reported, per tenant.

    A job's routes are its runner.yaml entry's ``alerts``, else its tenant's under ``tenants``,
    else ``default``; an empty list sends nothing.
    """

    base_url: str | None = Field(
        default=None, description="the Dagster UI's address; alerts link to <base_url>/runs/<run_id>"
    )
    routes: dict[SafeId, AlertRoute] = Field(default_factory=dict)
    default: list[SafeId] = Field(default_factory=list, description="routes of tenants not listed under 'tenants'")
    tenants: dict[SafeId, list[SafeId]] = Field(default_factory=dict, description="routes per tenant")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be the http(s) address of the Dagster UI, e.g. https://dagster.example.com")
        return value.rstrip("/")

    @field_validator("default")
    @classmethod
    def _default_routes_exist(cls, value: list[str], info: ValidationInfo) -> list[str]:
        routes = info.data.get("routes")
        if routes is not None:
            _check_route_names(value, routes, "default")
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_routes_exist(cls, value: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        routes = info.data.get("routes")
        if routes is not None:
            for tenant, names in value.items():
                _check_route_names(names, routes, f"tenants.{tenant}")
        return value

    @property
    def enabled(self) -> bool:
        """True when any route is configured (the alert sensors are only built then)."""
        return bool(self.routes)

    def route_names(self, tenant: str, job_routes: list[str] | None = None) -> list[str]:
        """The routes alerts of ``tenant`` go to (``job_routes``: the job entry's own list, if any)."""
        if job_routes is not None:
            return list(job_routes)
        return list(self.tenants.get(tenant, self.default))


class TenantMaintenance(StrictModel):
    """Scheduled table upkeep of one tenant's tables (what ``dativo maintain`` does, on a cron).

    The code location gets a job ``<tenant>__maintain`` running compaction, snapshot expiry and
    orphan removal on every table of the tenant's jobs, and a schedule for it.
    """

    schedule: str = Field(description="cron expression, e.g. '0 3 * * 0' (Sundays at 03:00)")
    timezone: str = "UTC"
    enabled: bool = True
    retain_days: float = Field(default=7, ge=0, le=3650, description="keep snapshots younger than this")
    orphan_age_hours: float = Field(
        default=72,
        ge=24,
        le=87600,
        description="delete unreferenced files only when older than this (at least 24: a scheduled run starts "
        "unattended beside any load, and a load's staged files are unreferenced until it commits; no run "
        "timeout bounds how long a load takes)",
    )

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from dativo_dagster.compat.dagster import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"'{value}' is not a valid cron expression")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        return Schedule._known_timezone(value)


class RunnerDefaults(StrictModel):
    """Defaults applied to every job entry."""

    retry: RetryConfig = Field(default_factory=RetryConfig)


class RunnerConfig(StrictModel):
    """runner.yaml."""

    version: Literal[1] = 1
    tenants_dir: str = "tenants"
    connectors_dir: str = "connectors"
    defaults: RunnerDefaults = Field(default_factory=RunnerDefaults)
    data_roots: list[str] = Field(
        default_factory=lambda: list(DEFAULT_DATA_ROOTS),
        description="directories tenants may read local files from; '{tenant}' is replaced by the tenant id; "
        "relative paths are anchored at the project",
    )
    secrets: SecretAllowlist = Field(
        default_factory=lambda: SecretAllowlist(),
        description="secret references every tenant's jobs may use ('{tenant}' is replaced by the tenant id); "
        "nothing by default",
    )
    code_locations: CodeLocations = Field(default_factory=CodeLocations)
    alerts: AlertsConfig = Field(default_factory=lambda: AlertsConfig())
    maintenance: dict[SafeId, TenantMaintenance] = Field(
        default_factory=dict, description="scheduled table upkeep per tenant (a job and a schedule each)"
    )
    jobs: list[JobEntry] = Field(default_factory=list)

    @field_validator("data_roots")
    @classmethod
    def _roots_are_templates(cls, value: list[str]) -> list[str]:
        return _check_root_templates(value)

    @field_validator("jobs")
    @classmethod
    def _job_alert_routes_exist(cls, value: list[JobEntry], info: ValidationInfo) -> list[JobEntry]:
        alerts = info.data.get("alerts")
        if alerts is None:  # the alerts section itself is invalid and reported
            return value
        for index, entry in enumerate(value):
            if entry.alerts is not None:
                _check_route_names(entry.alerts, alerts.routes, f"jobs[{index}].alerts")
        return value

    @model_validator(mode="after")
    def _maintained_tenants_have_jobs(self) -> RunnerConfig:
        tenants = {entry.tenant for entry in self.jobs}
        unknown = sorted(tenant for tenant in self.maintenance if tenant not in tenants)
        if unknown:
            raise ValueError(
                f"maintenance: tenant(s) {', '.join(unknown)} have no job in 'jobs' "
                f"(tenants with jobs: {', '.join(sorted(tenants)) or 'none'})"
            )
        return self

    @model_validator(mode="after")
    def _unique_entries(self) -> RunnerConfig:
        seen: set[tuple[str, str]] = set()
        for entry in self.jobs:
            key = (entry.tenant, entry.job)
            if key in seen:
                raise ValueError(f"job {entry.tenant}/{entry.job} is listed twice")
            seen.add(key)
        return self


def check_references(value: Any) -> None:
    """Raise ValueError if any string in ``value`` holds a malformed ``${...}`` reference."""
    if isinstance(value, str):
        problem = reference_problem(value)
        if problem:
            raise ValueError(problem)
    elif isinstance(value, dict):
        for item in value.values():
            check_references(item)
    elif isinstance(value, list):
        for item in value:
            check_references(item)
