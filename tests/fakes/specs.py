"""Check requests and responses against the vendors' own API specifications.

The specs live outside the repository, in ``<repo>/../shared/vendor-specs`` (override with the
environment variable ``DATIVO_VENDOR_SPECS``): Stripe's ``stripe/spec3.yaml`` (OpenAPI 3.0,
API version 2023-08-16), HubSpot's ``hubspot/crm-*-v3.json`` (OpenAPI 3.0.1), and Google's
discovery documents ``google/drive.v3.json`` and ``google/sheets.v4.json`` (APIs ``drive`` and
``sheets``; see "Google discovery documents" below).

API::

    validate_request("stripe", "GET", "/v1/charges", {"limit": "10", "created[gte]": "1"}) -> []
    validate_response("hubspot", "POST", "/crm/v3/objects/contacts/search", 200, body) -> []

Both return a list of human-readable problems (empty: conforms). What is checked:

* the operation exists (method + path template; HubSpot object types may be given by name or
  by id, ``deals`` = ``0-3``);
* requests: path parameters, every query parameter is documented (Stripe's ``deepObject``
  brackets such as ``created[gte]`` and ``expand[0]`` are decoded), values coerced from strings
  and validated against the parameter schema, required parameters present, the body against the
  request-body schema (a JSON object; Stripe form bodies must be passed already decoded);
* responses: the status is documented (exactly, as ``4XX``, or as ``default``) and the body
  validates against its schema with every ``$ref`` resolved. Stripe's expandable fields are
  ``anyOf`` (id string or object), so expanded and unexpanded objects both pass. Fields the
  spec does not know are not errors (the spec predates the clients' API versions); missing
  required fields, wrong types, unknown enum values and ``null`` where not ``nullable`` are.

Not checked: headers, authentication, response media types other than JSON, string
``format`` values, and anything the specs do not describe (HubSpot's owners and OAuth
endpoints are not in the stored specs). OpenAPI 3.0 ``nullable`` is translated to JSON Schema
(draft 2020-12) before validation with ``jsonschema`` and ``referencing``.

Known gaps between HubSpot's spec and its API are relaxed unless ``strict=True``
(see :data:`RELAXATIONS`).

Stripe's YAML takes a couple of seconds to parse, so its converted form is cached as JSON
under ``<repo>/.dativo/cache/vendor-specs/``, keyed by the SHA-256 of the file.

Google discovery documents (``drive``, ``sheets``): a method matches by HTTP method and
``servicePath`` + ``flatPath`` (``/drive/v3/files/{fileId}``, ``/v4/spreadsheets/{spreadsheetId}/values/{range}``;
path parameters are percent-decoded). Request query parameters are the method's ``parameters``
plus the API's standard ones (``fields``, ``alt``, ``key``, ``prettyPrint``, ``quotaUser``,
``$.xgafv``, ...), each checked for ``type``, ``format``, ``enum``, ``minimum``/``maximum``,
``pattern`` and ``repeated``; required ones must be present. Discovery schemas (``type``,
``properties``, ``$ref``, ``items``, ``additionalProperties``, ``format``, ``enum``) are converted to
JSON Schema: an object schema with ``properties`` and no ``additionalProperties`` allows no other
fields (the documents are exhaustive, so an unknown field is a misspelling), ``int64``/``uint64``
strings must be decimal digits, ``date-time``/``google-datetime`` strings RFC 3339, ``any`` allows
anything. Discovery documents describe no error bodies: a non-2xx JSON body is checked against
Google's error envelope (:data:`GOOGLE_ERROR_SCHEMA`: ``google.rpc.Status`` as JSON plus the
``errors[]`` list Drive v3 still sends) and its ``error.code`` must equal the status. Media
answers (``alt=media``, ``files.export``) are not JSON and are not checked; pass ``query`` to
:func:`validate_response` so it knows ``alt=media``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
SPECS_ENV = "DATIVO_VENDOR_SPECS"
CACHE_DIR = REPO / ".dativo" / "cache" / "vendor-specs"
# Bump when the conversion below changes, so cached conversions are rebuilt.
CONVERTER_VERSION = "1"
MAX_PROBLEMS = 25

#: Documents per API, in the order their operations are preferred when two match equally.
SPEC_FILES: dict[str, tuple[str, ...]] = {
    "stripe": ("stripe/spec3.yaml",),
    "hubspot": (
        "hubspot/crm-contacts-v3.json",
        "hubspot/crm-companies-v3.json",
        "hubspot/crm-deals-v3.json",
        "hubspot/crm-objects-v3.json",
        "hubspot/crm-properties-v3.json",
    ),
}
#: Google discovery documents, per API.
DISCOVERY_FILES: dict[str, str] = {"drive": "google/drive.v3.json", "sheets": "google/sheets.v4.json"}
_HUBSPOT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tickets": "0-5"}

#: Relaxations applied unless ``strict=True``: places where HubSpot's spec is stricter than the
#: API it describes. Each entry: (API, component schema name prefix, what changes, why).
RELAXATIONS: tuple[tuple[str, str, str, str], ...] = (
    (
        "hubspot",
        "SimplePublicObject",
        "properties values may be null",
        "the API returns null for a requested property the record has no value for",
    ),
    (
        "hubspot",
        "Error",
        "category not required",
        "429 rate-limit bodies carry errorType/policyName/groupName instead of category",
    ),
    (
        "hubspot",
        "(query parameters)",
        "booleans read case-insensitively",
        "hubspot-api-client sends archived=False/True and the API accepts it",
    ),
    (
        "hubspot",
        "PublicObjectSearchRequest",
        "no required fields",
        "the spec marks after/filterGroups/limit/properties/sorts required; the API and the "
        "official client treat all of them as optional",
    ),
)


class SpecsUnavailable(RuntimeError):
    """The vendor-specs folder (or a file in it) is not there."""


def vendor_specs_dir() -> Path:
    """Where the vendor specs are: ``$DATIVO_VENDOR_SPECS`` or ``<repo>/../shared/vendor-specs``."""
    override = os.environ.get(SPECS_ENV)
    return Path(override) if override else REPO.parent / "shared" / "vendor-specs"


def require_vendor_specs(api: str | None = None) -> Path:
    """In a test: skip when the specs are absent, or fail with ``DATIVO_REQUIRE_SERVERS=1`` (CI).

    Args:
        api: Also require this API's files (``stripe``/``hubspot``/``drive``/``sheets``).

    Returns:
        The specs folder.
    """
    import pytest

    folder = vendor_specs_dir()
    missing = [] if folder.is_dir() else [str(folder)]
    if not missing and api is not None:
        names = (DISCOVERY_FILES[api],) if api in DISCOVERY_FILES else SPEC_FILES[api]
        missing = [name for name in names if not (folder / name).is_file()]
    if not missing:
        return folder
    message = f"vendor OpenAPI specs not found ({', '.join(missing)}); set {SPECS_ENV} or add shared/vendor-specs"
    if os.environ.get("DATIVO_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{message} (DATIVO_REQUIRE_SERVERS=1: CI must run this test)")
    pytest.skip(message)
    raise AssertionError("unreachable")  # pytest.skip raises


# --------------------------------------------------------------------------------------------
# loading and OpenAPI 3.0 → JSON Schema conversion


def _convert(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 schema dialect into JSON Schema 2020-12, in place, recursively."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            node[i] = _convert(item)
        return node
    if not isinstance(node, dict):
        return node
    for key, value in list(node.items()):
        node[key] = _convert(value)
    if node.get("nullable") is True:
        del node["nullable"]
        if isinstance(node.get("type"), str) and not any(k in node for k in ("anyOf", "oneOf", "allOf", "$ref")):
            node["type"] = [node["type"], "null"]
            if "enum" in node and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        else:
            inner = {k: v for k, v in node.items() if k not in ("description", "title")}
            for k in inner:
                del node[k]
            node["anyOf"] = [inner, {"type": "null"}]
    elif "nullable" in node and isinstance(node["nullable"], bool):
        del node["nullable"]
    return node


def _load_file(path: Path) -> dict[str, Any]:
    raw = path.read_bytes()
    if path.suffix == ".json":
        return dict(_convert(json.loads(raw)))
    digest = hashlib.sha256(raw).hexdigest()[:16]
    cached = CACHE_DIR / f"{path.stem}-{digest}-v{CONVERTER_VERSION}.json"
    if cached.is_file():
        return dict(json.loads(cached.read_text(encoding="utf-8")))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = _convert(yaml.load(raw, Loader=loader))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, cached)  # atomic: parallel test processes may race here
    return dict(doc)


def _relax(api: str, name: str, doc: dict[str, Any]) -> dict[str, Any]:
    if not any(r[0] == api for r in RELAXATIONS):
        return doc
    doc = copy.deepcopy(doc)
    schemas = doc.get("components", {}).get("schemas", {})
    if api == "hubspot":
        for schema_name, schema in schemas.items():
            if schema_name.startswith("SimplePublicObject"):
                values = schema.get("properties", {}).get("properties", {})
                if isinstance(values.get("additionalProperties"), dict):
                    values["additionalProperties"] = {"anyOf": [values["additionalProperties"], {"type": "null"}]}
            if schema_name == "PublicObjectSearchRequest":
                schema.pop("required", None)
            if schema_name == "Error" and "category" in schema.get("required", []):
                schema["required"] = [r for r in schema["required"] if r != "category"]
    return doc


@dataclass(frozen=True)
class Operation:
    """One operation of a spec document."""

    doc: str
    method: str
    template: str
    pointer: str
    literal_segments: int
    regex: re.Pattern[str]


class ApiSpec:
    """The loaded specs of one API, with validators built on demand."""

    def __init__(self, api: str, documents: Mapping[str, dict[str, Any]], strict: bool = False) -> None:
        """Index the operations of ``documents`` (name → converted OpenAPI document)."""
        self.api = api
        self.strict = strict
        self.documents = dict(documents)
        resources = [
            (self._uri(name), Resource.from_contents(doc, default_specification=DRAFT202012))
            for name, doc in documents.items()
        ]
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self.operations: list[Operation] = []
        for name, doc in documents.items():
            for template, item in doc.get("paths", {}).items():
                regex = re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template)) + "$")
                literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
                for method in item:
                    if method in ("get", "post", "put", "patch", "delete", "head", "options"):
                        pointer = "/paths/" + _escape(template) + "/" + method
                        self.operations.append(Operation(name, method.upper(), template, pointer, literal, regex))
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}

    def _uri(self, name: str) -> str:
        return f"urn:vendor-spec:{self.api}:{name}"

    def node(self, doc: str, pointer: str) -> Any:
        """The JSON value at ``pointer`` in document ``doc``."""
        value: Any = self.documents[doc]
        for part in pointer.strip("/").split("/"):
            if part:
                value = value[part.replace("~1", "/").replace("~0", "~")]
        return value

    def resolve(self, doc: str, value: Any) -> Any:
        """Follow a local ``$ref`` object (parameters, responses)."""
        while isinstance(value, dict) and "$ref" in value and value["$ref"].startswith("#/"):
            value = self.node(doc, value["$ref"][1:])
        return value

    def validator(self, doc: str, pointer: str) -> Draft202012Validator:
        """A validator for the schema at ``pointer`` in ``doc`` (cached)."""
        key = (doc, pointer)
        found = self._validators.get(key)
        if found is None:
            ref = self._uri(doc) + "#" + quote(pointer, safe="/~")
            found = Draft202012Validator({"$ref": ref}, registry=self.registry)
            self._validators[key] = found
        return found

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        """The best operation for ``method path`` and its path parameters."""
        candidates = [path]
        if self.api == "hubspot":
            parts = path.split("/")
            if len(parts) > 4 and parts[1:4] == ["crm", "v3", "objects"] and parts[4] in _HUBSPOT_TYPE_IDS:
                candidates.append("/".join([*parts[:4], _HUBSPOT_TYPE_IDS[parts[4]], *parts[5:]]))
        best: tuple[Operation, dict[str, str]] | None = None
        for candidate in candidates:
            for op in self.operations:
                if op.method != method.upper():
                    continue
                m = op.regex.match(candidate)
                if m and (best is None or op.literal_segments > best[0].literal_segments):
                    best = (op, m.groupdict())
        return best


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@functools.lru_cache(maxsize=8)
def load_api(api: str, strict: bool = False, specs_dir: str | None = None) -> ApiSpec:
    """Load (and cache) an API's specs.

    Args:
        api: ``stripe`` or ``hubspot``.
        strict: Skip :data:`RELAXATIONS`.
        specs_dir: Folder of the specs (default: :func:`vendor_specs_dir`).

    Raises:
        SpecsUnavailable: A file is missing.
    """
    if api not in SPEC_FILES:
        raise ValueError(f"unknown API {api!r}; known: {sorted(SPEC_FILES)}")
    folder = Path(specs_dir) if specs_dir else vendor_specs_dir()
    documents = {}
    for name in SPEC_FILES[api]:
        path = folder / name
        if not path.is_file():
            raise SpecsUnavailable(f"{path} not found")
        doc = _load_base(str(path))
        documents[Path(name).stem] = doc if strict else _relax(api, name, doc)
    return ApiSpec(api, documents, strict)


@functools.lru_cache(maxsize=16)
def _load_base(path: str) -> dict[str, Any]:
    return _load_file(Path(path))


# --------------------------------------------------------------------------------------------
# validation


def _format(error: ValidationError) -> str:
    deepest = best_match(error.context) if error.context else None
    chosen = deepest if deepest is not None else error
    message = chosen.message
    if len(message) > 240:
        message = message[:240] + "…"
    return f"{chosen.json_path}: {message}"


def _errors(validator: Draft202012Validator, instance: Any, where: str) -> list[str]:
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{where} {_format(e)}" for e in errors[:MAX_PROBLEMS]]


def _kinds(schema: Mapping[str, Any]) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "properties" in schema else set()
    return set(kind) if isinstance(kind, list) else {kind}


def _coerce(value: Any, schema: Mapping[str, Any], spec: ApiSpec, doc: str) -> Any:
    """Turn query-string text into the JSON value the parameter schema describes."""
    schema = spec.resolve(doc, schema)
    variants = [spec.resolve(doc, v) for v in schema.get("anyOf") or schema.get("oneOf") or []]
    if variants:
        wanted = "object" if isinstance(value, dict) else "array" if isinstance(value, list) else None
        pick = next((v for v in variants if wanted in _kinds(v)), None) if wanted else None
        if pick is None and isinstance(value, list) and len(value) == 1:
            value = value[0]
        if pick is None:
            # a scalar: the first variant whose type the text can be read as
            for variant in variants:
                candidate = _coerce(value, variant, spec, doc)
                if not isinstance(candidate, str) or "string" in _kinds(variant):
                    return candidate
            return value
        return _coerce(value, pick, spec, doc)
    kinds = _kinds(schema)
    if isinstance(value, list):
        if "array" in kinds:
            return [_coerce(v, spec.resolve(doc, schema.get("items", {})), spec, doc) for v in value]
        if len(value) != 1:
            return value  # a repeated scalar parameter: fails validation, as it should
        value = value[0]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {}), spec, doc) for k, v in value.items()}
    text = str(value)
    if "integer" in kinds and re.fullmatch(r"-?\d+", text):
        return int(text)
    if "number" in kinds and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        return float(text)
    if "boolean" in kinds:
        # HubSpot's servers read booleans case-insensitively (its own client sends "False")
        word = text.lower() if spec.api == "hubspot" and not spec.strict else text
        if word in ("true", "false"):
            return word == "true"
    if "array" in kinds:
        return [_coerce(text, spec.resolve(doc, schema.get("items", {})), spec, doc)]
    return text


def _query_pairs(query: Any) -> list[tuple[str, str]]:
    if query is None:
        return []
    if isinstance(query, str):
        return parse_qsl(query.lstrip("?"), keep_blank_values=True)
    items: Iterable[tuple[str, Any]] = query.items() if isinstance(query, Mapping) else query
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        if isinstance(value, (list, tuple)):
            pairs.extend((key, _text(v)) for v in value)
        else:
            pairs.append((key, _text(value)))
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def validate_request(
    api: str,
    method: str,
    path: str,
    query: Mapping[str, Any] | Sequence[tuple[str, Any]] | str | None = None,
    body: Any = None,
    *,
    strict: bool = False,
) -> list[str]:
    """Problems of a request against the API's spec (empty list: conforms).

    Args:
        api: ``stripe``, ``hubspot``, ``drive`` or ``sheets``.
        method: HTTP method.
        path: Request path without the query string (``/v1/charges``).
        query: Query parameters: a mapping (a list value = a repeated parameter), a sequence of
            pairs, or a raw query string; keys as sent (``created[gte]``, ``expand[0]``).
        body: The decoded body (JSON value, or Stripe's form fields as a nested dict), or None.
        strict: Do not apply :data:`RELAXATIONS`.

    Raises:
        SpecsUnavailable: The specs are not there.
    """
    if api in DISCOVERY_FILES:
        return _discovery_request(load_discovery(api), method, path, _query_pairs(query), body)
    spec = load_api(api, strict)
    found = spec.match(method, path)
    if found is None:
        return [f"no operation in the {api} spec matches {method.upper()} {path}"]
    op, path_params = found
    operation = spec.node(op.doc, op.pointer)
    item = spec.node(op.doc, op.pointer.rsplit("/", 1)[0])
    declared: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
    for source, params in (("item", item.get("parameters", [])), ("op", operation.get("parameters", []))):
        for i, param in enumerate(params):
            resolved = spec.resolve(op.doc, param)
            base = op.pointer.rsplit("/", 1)[0] if source == "item" else op.pointer
            declared[(resolved["in"], resolved["name"])] = (resolved, f"{base}/parameters/{i}/schema")
    problems: list[str] = []
    where = f"{method.upper()} {path}"
    for name, value in path_params.items():
        entry = declared.get(("path", name))
        if entry is None:
            continue
        coerced = _coerce(value, entry[0].get("schema", {}), spec, op.doc)
        problems += _errors(spec.validator(op.doc, entry[1]), coerced, f"{where} path parameter {name}:")
    values: dict[str, Any] = {}
    for key, value in _query_pairs(query):
        m = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        base, brackets = (m.group(1), re.findall(r"\[([^\[\]]*)\]", m.group(2))) if m else (key, [])
        entry = declared.get(("query", base))
        if entry is None:
            problems.append(f"{where}: query parameter {key!r} is not in the spec")
            continue
        if not brackets or brackets[0] == "" or brackets[0].isdigit():
            values.setdefault(base, []).append(value)
        else:
            current = values.setdefault(base, {})
            if isinstance(current, dict):
                current[brackets[0]] = value
            else:
                problems.append(f"{where}: query parameter {base!r} given both as a value and as an object")
    for (location, name), (param, pointer) in declared.items():
        if location != "query":
            continue
        if name not in values:
            if param.get("required"):
                problems.append(f"{where}: required query parameter {name!r} is missing")
            continue
        coerced = _coerce(values[name], param.get("schema", {}), spec, op.doc)
        problems += _errors(spec.validator(op.doc, pointer), coerced, f"{where} query parameter {name}:")
    request_body = spec.resolve(op.doc, operation.get("requestBody"))
    if body is None:
        if request_body and request_body.get("required"):
            problems.append(f"{where}: a request body is required")
    elif request_body is None:
        problems.append(f"{where}: this operation takes no request body")
    else:
        content = request_body.get("content", {})
        media = next((m for m in ("application/json", "application/x-www-form-urlencoded") if m in content), None)
        media = media or next(iter(content), None)
        if media is not None and "schema" in content[media]:
            pointer = f"{op.pointer}/requestBody/content/{_escape(media)}/schema"
            if "$ref" in (operation.get("requestBody") or {}):
                pointer = operation["requestBody"]["$ref"][1:] + f"/content/{_escape(media)}/schema"
            problems += _errors(spec.validator(op.doc, pointer), body, f"{where} body:")
    return problems


def validate_response(
    api: str,
    method: str,
    path: str,
    status: int,
    body: Any,
    *,
    strict: bool = False,
    query: Mapping[str, Any] | Sequence[tuple[str, Any]] | str | None = None,
) -> list[str]:
    """Problems of a response against the API's spec (empty list: conforms).

    Args:
        api: ``stripe``, ``hubspot``, ``drive`` or ``sheets``.
        method: The request's HTTP method.
        path: The request's path without the query string.
        status: HTTP status of the response.
        body: The body: decoded JSON, or ``bytes``/``str`` to be decoded (empty = no body).
        strict: Do not apply :data:`RELAXATIONS`.
        query: The request's query (Google: ``alt=media`` answers are media, not JSON).

    Raises:
        SpecsUnavailable: The specs are not there.
    """
    if api in DISCOVERY_FILES:
        return _discovery_response(load_discovery(api), method, path, status, body, _query_pairs(query))
    spec = load_api(api, strict)
    found = spec.match(method, path)
    where = f"{method.upper()} {path} → {status}"
    if found is None:
        return [f"no operation in the {api} spec matches {method.upper()} {path}"]
    op, _ = found
    responses = spec.node(op.doc, op.pointer).get("responses", {})
    for key in (str(status), f"{status // 100}XX", "default"):
        if key in responses:
            break
    else:
        return [f"{where}: status {status} is not documented (documented: {sorted(responses)})"]
    pointer = f"{op.pointer}/responses/{key}"
    response = responses[key]
    if "$ref" in response:
        pointer = response["$ref"][1:]
        response = spec.resolve(op.doc, response)
    if isinstance(body, (bytes, bytearray, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        if not text.strip():
            body = None
        else:
            try:
                body = json.loads(text)
            except ValueError as exc:
                return [f"{where}: body is not JSON ({exc})"]
    content = response.get("content") or {}
    if not content:
        return [] if body is None else [f"{where}: the spec documents no body, but one was sent"]
    media = next((m for m in ("application/json", "*/*") if m in content), None) or next(
        (m for m in content if "json" in m), None
    )
    if media is None or "schema" not in content[media]:
        return []
    if body is None:
        return [f"{where}: a JSON body was expected"]
    return _errors(spec.validator(op.doc, f"{pointer}/content/{_escape(media)}/schema"), body, f"{where} body")


# --------------------------------------------------------------------------------------------
# Google discovery documents

_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
_RPC_CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]
#: Google's JSON error envelope (``google.rpc.Status`` plus Drive v3's legacy ``errors`` list).
GOOGLE_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "status": {"enum": _RPC_CODES},
                "errors": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["message", "domain", "reason"],
                        "additionalProperties": False,
                        "properties": {
                            "message": {"type": "string"},
                            "domain": {"type": "string"},
                            "reason": {"type": "string"},
                            "location": {"type": "string"},
                            "locationType": {"enum": ["header", "parameter"]},
                            "extendedHelp": {"type": "string"},
                            "sendReport": {"type": "string"},
                        },
                    },
                },
                "details": {
                    "type": "array",
                    "items": {"type": "object", "required": ["@type"], "properties": {"@type": {"type": "string"}}},
                },
            },
        }
    },
}


def _discovery_schema(node: Mapping[str, Any], base: str) -> dict[str, Any]:
    """One discovery-format schema as JSON Schema 2020-12 (``$ref`` names point into ``base#/$defs``)."""
    if "$ref" in node:
        return {"$ref": f"{base}#/$defs/{node['$ref']}"}
    out: dict[str, Any] = {}
    kind = node.get("type")
    fmt = node.get("format")
    if kind and kind != "any":
        out["type"] = kind
    if kind == "string" and fmt in ("int64", "uint64"):
        out["pattern"] = r"^-?\d+$"
    elif kind == "string" and fmt in ("date-time", "google-datetime"):
        out["pattern"] = _RFC3339
    if "enum" in node:
        out["enum"] = list(node["enum"])
    for bound in ("minimum", "maximum"):
        if bound in node:
            text = str(node[bound])
            out[bound] = int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    if "pattern" in node and "pattern" not in out:
        out["pattern"] = node["pattern"]
    if "properties" in node:
        out["properties"] = {k: _discovery_schema(v, base) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = _discovery_schema(node["items"], base)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        out["additionalProperties"] = _discovery_schema(extra, base)
    elif "properties" in node:
        out["additionalProperties"] = False
    return out


def _parameter_schema(param: Mapping[str, Any], base: str) -> dict[str, Any]:
    schema = _discovery_schema({k: v for k, v in param.items() if k != "repeated"}, base)
    return {"type": "array", "items": schema} if param.get("repeated") else schema


@dataclass(frozen=True)
class DiscoveryMethod:
    """One method of a discovery document."""

    id: str
    http_method: str
    template: str
    regex: re.Pattern[str]
    literal_segments: int
    spec: Mapping[str, Any]


class DiscoverySpec:
    """A loaded Google discovery document, with validators built on demand."""

    def __init__(self, api: str, doc: Mapping[str, Any]) -> None:
        """Index the methods of ``doc`` and convert its schemas."""
        self.api = api
        self.doc = doc
        self.uri = f"urn:vendor-spec:{api}:discovery"
        self.schemas = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": self.uri,
            "$defs": {name: _discovery_schema(schema, self.uri) for name, schema in doc.get("schemas", {}).items()},
        }
        resource = Resource.from_contents(self.schemas, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(self.uri, resource)
        self.methods: list[DiscoveryMethod] = []
        prefix = "/" + str(doc.get("servicePath") or "")
        self._collect(doc.get("resources", {}), prefix)

    def _collect(self, resources: Mapping[str, Any], prefix: str) -> None:
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                template = prefix + str(method.get("flatPath") or method["path"])
                pattern = re.sub(r"\\\{([^}]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                literal = sum(1 for seg in re.split(r"[/:]", template) if seg and not seg.startswith("{"))
                self.methods.append(
                    DiscoveryMethod(
                        method["id"], method["httpMethod"], template, re.compile(f"^{pattern}$"), literal, method
                    )
                )
            self._collect(resource.get("resources", {}), prefix)

    def match(self, method: str, path: str) -> tuple[DiscoveryMethod, dict[str, str]] | None:
        """The method for ``method path`` and its (percent-decoded) path parameters."""
        best: tuple[DiscoveryMethod, dict[str, str]] | None = None
        for candidate in self.methods:
            if candidate.http_method != method.upper():
                continue
            m = candidate.regex.match(path)
            if m and (best is None or candidate.literal_segments > best[0].literal_segments):
                best = (candidate, {k: unquote(v) for k, v in m.groupdict().items()})
        return best

    @functools.lru_cache(maxsize=512)  # noqa: B019 - specs are cached for the process anyway
    def validator(self, schema_json: str) -> Draft202012Validator:
        """A validator for a JSON-encoded schema (cached by its text)."""
        return Draft202012Validator(json.loads(schema_json), registry=self.registry)

    def check(self, schema: Mapping[str, Any], instance: Any, where: str) -> list[str]:
        """Problems of ``instance`` against ``schema``."""
        return _errors(self.validator(json.dumps(schema, sort_keys=True)), instance, where)


@functools.lru_cache(maxsize=4)
def load_discovery(api: str, specs_dir: str | None = None) -> DiscoverySpec:
    """Load (and cache) a Google discovery document.

    Args:
        api: ``drive`` or ``sheets``.
        specs_dir: Folder of the specs (default: :func:`vendor_specs_dir`).

    Raises:
        SpecsUnavailable: The file is missing.
    """
    path = (Path(specs_dir) if specs_dir else vendor_specs_dir()) / DISCOVERY_FILES[api]
    if not path.is_file():
        raise SpecsUnavailable(f"{path} not found")
    return DiscoverySpec(api, json.loads(path.read_text(encoding="utf-8")))


def _coerce_text(text: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
        return float(text)
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def _discovery_request(
    spec: DiscoverySpec, method: str, path: str, pairs: Sequence[tuple[str, str]], body: Any
) -> list[str]:
    where = f"{method.upper()} {path}"
    found = spec.match(method, path)
    if found is None:
        return [f"no method in the {spec.api} discovery document matches {where}"]
    dmethod, path_params = found
    params: dict[str, Mapping[str, Any]] = {**spec.doc.get("parameters", {}), **dmethod.spec.get("parameters", {})}
    problems: list[str] = []
    values: dict[str, list[str]] = {}
    for key, value in pairs:
        if key not in params or params[key].get("location") != "query":
            problems.append(f"{where}: query parameter {key!r} is not in the discovery document")
            continue
        values.setdefault(key, []).append(value)
    for name, param in params.items():
        schema = _parameter_schema(param, spec.uri)
        if param.get("location") == "path":
            if name in path_params:
                text = path_params[name]
                problems += spec.check(schema, _coerce_text(text, schema), f"{where} path parameter {name}:")
            continue
        given = values.get(name)
        if given is None:
            if param.get("required"):
                problems.append(f"{where}: required query parameter {name!r} is missing")
            continue
        if param.get("repeated"):
            instance: Any = [_coerce_text(v, schema["items"]) for v in given]
        elif len(given) > 1:
            problems.append(f"{where}: query parameter {name!r} is not repeated but was given {len(given)} times")
            continue
        else:
            instance = _coerce_text(given[0], schema)
        problems += spec.check(schema, instance, f"{where} query parameter {name}:")
    request = dmethod.spec.get("request")
    if body is not None:
        if request is None:
            problems.append(f"{where}: this method takes no request body")
        else:
            problems += spec.check(_discovery_schema(request, spec.uri), body, f"{where} body")
    return problems


def _discovery_response(
    spec: DiscoverySpec, method: str, path: str, status: int, body: Any, pairs: Sequence[tuple[str, str]]
) -> list[str]:
    where = f"{method.upper()} {path} → {status}"
    found = spec.match(method, path)
    if found is None:
        return [f"no method in the {spec.api} discovery document matches {method.upper()} {path}"]
    dmethod, _ = found
    media = dict(pairs).get("alt") == "media" or "response" not in dmethod.spec
    if 200 <= status < 300 and media:
        if not dmethod.spec.get("supportsMediaDownload") and "response" in dmethod.spec:
            return [f"{where}: {dmethod.id} does not support media download"]
        return []
    if status == 206:
        return [f"{where}: 206 answers only media downloads"]
    if isinstance(body, (bytes, bytearray, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray)) else body
        if not text.strip():
            body = None
        else:
            try:
                body = json.loads(text)
            except ValueError as exc:
                return [f"{where}: body is not JSON ({exc})"]
    if 200 <= status < 300:
        if body is None:
            return [f"{where}: a JSON body was expected"]
        return spec.check(_discovery_schema(dmethod.spec["response"], spec.uri), body, f"{where} body")
    if body is None:
        return [f"{where}: an error body was expected"]
    problems = spec.check(GOOGLE_ERROR_SCHEMA, body, f"{where} body")
    code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    if code is not None and code != status:
        problems.append(f"{where}: error.code {code} differs from the HTTP status")
    return problems
