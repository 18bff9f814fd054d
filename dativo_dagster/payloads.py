"""Debug runs: every HTTP exchange at DEBUG, and request/response bodies in the run's payload log.

An API source's transport shows each exchange to the run's observers
(:attr:`~dativo_dagster.api.source.ApiRuntime.observers`). Two observers live here:

* with DEBUG logging (``dativo run --debug``), one log line per exchange: method, path, status,
  bytes and seconds, never a body;
* with ``include_payloads: true`` in the job (or ``dativo run --payloads``), one JSON line per
  exchange in ``<state dir>/runs/<run id>/payloads.jsonl``, holding the URL and both bodies.

Bodies are redacted before they are cut: the credential's secrets (the transport already removed
them; every value the process registered as a secret is scrubbed again here), values under
secret-named keys, and the values of the job's ``pii_fields`` wherever they appear: JSON keys at
any depth, form fields and query parameters (``customer[email]`` matches ``email``). Only then is
each body truncated to ``payload_max_bytes``, so a cut never leaves half a secret behind.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import structlog

from dativo_dagster.api.transport import Exchange, Observer
from dativo_dagster.config.plan import JobPlan
from dativo_dagster.config.secrets import REDACTED, is_sensitive_key, redact_text
from dativo_dagster.instance import state_dir
from dativo_dagster.logs import debug_enabled

log = structlog.get_logger("dativo.http")

PAYLOAD_FILE = "payloads.jsonl"
TRUNCATED = "...[truncated]"
_MAX_DEPTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def run_dir(project_dir: Path, run_id: str) -> Path:
    """The directory of one run's debug files: ``<state dir>/runs/<run id>``."""
    return state_dir(project_dir) / "runs" / (_UNSAFE.sub("_", run_id) or "run")


def payload_path(project_dir: Path, run_id: str) -> Path:
    """Where a run's payload log is written."""
    return run_dir(project_dir, run_id) / PAYLOAD_FILE


def pii_names(fields: Iterable[str]) -> frozenset[str]:
    """The configured PII keys, compared case-insensitively."""
    return frozenset(field.strip().lower() for field in fields if field.strip())


def _key_parts(key: str) -> list[str]:
    """``customer[email]`` → ``customer``, ``email``: a form key matches by any of its parts."""
    return [part.lower() for part in re.findall(r"[^\[\]]+", key)] or [key.lower()]


def _hidden(key: str, pii: frozenset[str]) -> bool:
    return is_sensitive_key(key) or any(part in pii for part in _key_parts(key))


def redact_tree(value: Any, pii: frozenset[str], depth: int = 0) -> Any:
    """A parsed JSON document with the values of PII and secret-named keys replaced, at any depth."""
    if depth > _MAX_DEPTH:
        return REDACTED  # deeper than any real payload: nothing below is shown rather than unchecked
    if isinstance(value, Mapping):
        return {
            key: REDACTED if _hidden(str(key), pii) else redact_tree(item, pii, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_tree(item, pii, depth + 1) for item in value]
    return value


_PAIR = re.compile(r"(?P<lead>^|[?&;])(?P<key>[^=&;?#\s]+)=(?P<value>[^&;#\s]*)")


def redact_pairs(text: str, pii: frozenset[str]) -> str:
    """``key=value`` pairs (a form body, a query string) with the values of PII and secret keys hidden."""

    def substitute(match: re.Match[str]) -> str:
        key = unquote_plus(match.group("key"))
        if not _hidden(key, pii):
            return match.group(0)
        return f"{match.group('lead')}{match.group('key')}={REDACTED}"

    return _PAIR.sub(substitute, text)


def _json_pairs(text: str, pii: frozenset[str]) -> str:
    """``"key": value`` in text that does not parse as JSON (cut off, malformed): values hidden all the same."""

    pattern = re.compile(r'(?P<head>(?P<key>"(?:[^"\\]|\\.)*")\s*:\s*)')
    out: list[str] = []
    position = 0
    for match in pattern.finditer(text):
        if match.start() < position:
            continue  # inside a value already hidden
        try:
            key = json.loads(match.group("key"))
        except ValueError:
            continue
        if not _hidden(str(key), pii):
            continue
        end = _value_end(text, match.end())
        out.append(text[position : match.end()] + f'"{REDACTED}"')
        position = end
    out.append(text[position:])
    return "".join(out)


def _value_end(text: str, start: int) -> int:
    """Where the JSON value starting at ``start`` ends: a string, a number or word, or an object or
    array up to its matching bracket (or the end of the text, when it was cut off inside it)."""
    if start >= len(text):
        return start
    first = text[start]
    if first == '"':
        i = start + 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i + 1
            i += 1
        return len(text)
    if first in "{[":
        depth = 0
        in_string = False
        i = start
        while i < len(text):
            char = text[i]
            if in_string:
                if char == "\\":
                    i += 2
                    continue
                if char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return len(text)
    match = re.compile(r"[^,}\]\s]+").match(text, start)
    return match.end() if match else start


def redact_url(url: str, pii: frozenset[str]) -> str:
    """A URL with secrets and the values of PII query parameters hidden."""
    base, question, query = url.partition("?")
    text = base + question + (redact_pairs(query, pii) if question else "")
    return redact_text(text)


def redact_body(body: bytes | None, pii: frozenset[str], limit: int, content_type: str = "") -> dict[str, Any]:
    """A body as the payload log holds it: redacted text, its size, and whether it was cut.

    Args:
        body: The bytes on the wire (None: no body).
        pii: Keys whose values are hidden (lower case).
        limit: Bytes of redacted text kept.
        content_type: The Content-Type header, which tells a form from a JSON document.

    Returns:
        ``{"text": ..., "bytes": <size on the wire>, "truncated": bool}`` (``text`` None without a body).
    """
    if body is None:
        return {"text": None, "bytes": 0, "truncated": False}
    # A downloaded file can be large: only its start is parsed (a cut document is redacted pair by pair).
    scanned = body[: max(limit * 16, 1 << 16)]
    text = scanned.decode("utf-8", "ignore" if len(scanned) < len(body) else "replace")
    try:
        document = json.loads(text) if text.strip()[:1] in ("{", "[") else None
    except ValueError:
        document = None
    if document is not None:
        text = json.dumps(redact_tree(document, pii), ensure_ascii=False, separators=(",", ":"))
    elif "form-urlencoded" in content_type.lower() or "=" in text:
        text = _json_pairs(redact_pairs(text, pii), pii)
    else:
        text = _json_pairs(text, pii)
    text = redact_text(text)
    encoded = text.encode("utf-8")
    truncated = len(encoded) > limit or len(scanned) < len(body)
    if truncated:
        # Cut on a character boundary: the log stays valid UTF-8.
        text = encoded[:limit].decode("utf-8", "ignore") + TRUNCATED
    return {"text": text, "bytes": len(body), "truncated": truncated}


def _headers(headers: Mapping[str, str], pii: frozenset[str]) -> dict[str, str]:
    return {name: REDACTED if _hidden(name, pii) else redact_text(value) for name, value in headers.items()}


def _content_type(headers: Mapping[str, str]) -> str:
    return next((value for name, value in headers.items() if name.lower() == "content-type"), "")


def payload_record(exchange: Exchange, pii: frozenset[str], limit: int) -> dict[str, Any]:
    """One exchange as one line of the payload log (redacted, bodies truncated)."""
    context = structlog.contextvars.get_contextvars()
    request = redact_body(exchange.request_body, pii, limit, _content_type(exchange.request_headers))
    response = redact_body(exchange.response_body, pii, limit, _content_type(exchange.response_headers))
    return {
        "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        "object": context.get("object"),
        "component": redact_text(exchange.component),
        "method": exchange.method,
        "url": redact_url(exchange.url, pii),
        "status": exchange.status,
        "failure": redact_text(exchange.failure) if exchange.failure else None,
        "elapsed_s": round(exchange.elapsed_s, 3),
        "request_headers": _headers(exchange.request_headers, pii),
        "request_body": request["text"],
        "request_bytes": request["bytes"],
        "request_truncated": request["truncated"],
        "response_headers": _headers(exchange.response_headers, pii),
        "response_body": response["text"],
        "response_bytes": response["bytes"],
        "response_truncated": response["truncated"],
    }


class PayloadLog:
    """An observer appending each exchange to a JSON-lines file (thread-safe: page chains run in parallel).

    Args:
        path: The file (created with its directory on the first exchange).
        pii_fields: Keys whose values are redacted.
        max_bytes: Bytes kept of each body.
        scope: ``(tenant, job)``: only that job's exchanges are written (a Dagster run may hold several
            jobs sharing one runtime, each with its own PII fields). None: every exchange.
    """

    def __init__(
        self,
        path: Path,
        pii_fields: Iterable[str] = (),
        max_bytes: int = 4096,
        scope: tuple[str, str] | None = None,
    ) -> None:
        self.path = path
        self.scope = scope
        self.pii = pii_names(pii_fields)
        self.max_bytes = max_bytes
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self, exchange: Exchange) -> None:
        """Write one exchange; a failure to write is logged, never raised (the run must go on)."""
        if self.scope is not None:
            context = structlog.contextvars.get_contextvars()
            if (context.get("tenant"), context.get("job")) != self.scope:
                return
        line = json.dumps(payload_record(exchange, self.pii, self.max_bytes), ensure_ascii=False, default=str)
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
                self.count += 1
            except OSError as exc:
                log.warning("payload_log_unwritable", path=str(self.path), error=f"{type(exc).__name__}: {exc}")


def log_exchange(exchange: Exchange) -> None:
    """The DEBUG line of one exchange: method, path, status, sizes and time; no query string, no body."""
    log.debug(
        "http_exchange",
        component=exchange.component,
        method=exchange.method,
        # The path only: a query string may hold personal data, and this line goes to the run's log.
        path=redact_text(urlsplit(exchange.url).path),
        status=exchange.status,
        failure=exchange.failure,
        request_bytes=len(exchange.request_body or b""),
        response_bytes=len(exchange.response_body),
        elapsed_s=round(exchange.elapsed_s, 3),
    )


def attach_observers(runtime: Any, job: JobPlan, run_id: str, *, payloads: bool = False) -> Path | None:
    """Attach the debug observers a run asked for to its API runtime.

    Args:
        runtime: The run's :class:`~dativo_dagster.api.source.ApiRuntime`.
        job: The job (its ``include_payloads``, ``pii_fields`` and ``payload_max_bytes``).
        run_id: The run's id (names the payload log's directory).
        payloads: Log bodies even if the job does not say so (``dativo run --payloads``).

    Returns:
        The payload log's path when bodies are logged, else None.
    """
    observers: list[Observer] = runtime.observers
    if debug_enabled() and log_exchange not in observers:
        observers.append(log_exchange)
    if not (payloads or job.job.include_payloads):
        return None
    path = payload_path(job.project_dir, run_id)
    scope = (job.tenant, job.name)
    if not any(isinstance(o, PayloadLog) and o.scope == scope and o.path == path for o in observers):
        observers.append(PayloadLog(path, job.job.pii_fields, job.job.payload_max_bytes, scope))
    return path


def payloads_requested(tags: Mapping[str, str]) -> bool:
    """Whether a run's tags ask for the payload log (``dativo run --payloads``)."""
    return tags.get(TAG_PAYLOADS) == "true"


TAG_PAYLOADS = "dativo/payloads"
"""Run tag set by ``dativo run --payloads``: the run logs request and response bodies."""
