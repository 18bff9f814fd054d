"""What a failed load was, why, and what to do: the pure half of ``dativo diagnose``.

Three pieces, none of which touches Dagster or Iceberg (the CLI reads those and passes plain data):

* :func:`failure_record`: what a run records about each failed object, in the step failure's
  ``dativo/failure`` metadata (one JSON document, object name → record). Everything in it went
  through :func:`~dativo_dagster.config.secrets.redact_text`: the error's code, class, type,
  message and hint, the failing request (method, path, status, response excerpt), the rows it
  rejected (a preview and the most frequent reasons) and a copy of the job and contract files
  as they were at the run (so a later report can show what was changed since).
* :func:`classify`: a pure function from (code, message, request summary, context) to a
  :class:`Diagnosis`: the failure kind, its likely cause and the fix, from :data:`KINDS`.
* :func:`render_report`: the markdown debug report ``dativo diagnose --report FILE.md`` writes.

The scratch comparison (``dativo compare``) leaves its verdict where the report finds it:
:func:`compare_path` names the file and :func:`read_compare` documents and checks its contract.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.text import printable

FAILURE_METADATA_KEY = "dativo/failure"
"""Step failure metadata: JSON object, object name → :func:`failure_record`."""

CONFIG_METADATA_KEY = "dativo/config_files"
"""Step failure metadata: JSON object, file path (relative to the project) → ``{"sha256", "text"}``: the
job and contract files of the failed objects as they were at the run, once per step (each object's
record names its files by digest)."""

CONFIG_FILE_CHARS = 20_000
"""A job or contract file longer than this is kept in a failure record only by its digest."""

PREVIEW_RECORDS = 5
"""Rejected rows kept in a failure record (the quarantine table keeps them all)."""

TOP_REASONS = 5
"""Most frequent rejection reasons kept in a failure record."""

VALUE_CHARS = 80


# --------------------------------------------------------------------------- recording


def _clean(value: Any, limit: int | None = None) -> Any:
    """``value`` with secrets redacted in every string it holds (lists and dicts walked)."""
    if isinstance(value, str):
        text = redact_text(value)
        return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"
    if isinstance(value, Mapping):
        return {str(k): _clean(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, limit) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _clean(str(value), limit)


def reason_parts(reason: str | None) -> list[str]:
    """The separate reasons of one rejected row (the enforcer joins them with ``; ``)."""
    return [part.strip() for part in (reason or "").split("; ") if part.strip()]


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def reason_kind(reason: str) -> str:
    """A rejection reason without the values it quotes, so rows rejected for the same reason count together."""
    return _QUOTED.sub("'…'", reason)


def top_reasons(records: Sequence[Mapping[str, Any]], limit: int = TOP_REASONS) -> list[dict[str, Any]]:
    """The most frequent rejection reasons among quarantine records (values left out), most frequent first."""
    counts: Counter[str] = Counter()
    for record in records:
        counts.update(reason_kind(part) for part in reason_parts(record.get("reason")))
    return [{"reason": redact_text(reason), "rows": rows} for reason, rows in counts.most_common(limit)]


def config_file_copy(path: Path, root: Path) -> tuple[str, dict[str, Any]] | None:
    """``(path relative to root, {"sha256", "text"})`` of a job or contract file; None when unreadable.

    The text is redacted (a job file holds ``${VAR}`` references, but a pasted value must not
    travel into the instance) and left out past :data:`CONFIG_FILE_CHARS`.
    """
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    try:
        name = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        name = path.name
    text = raw.decode("utf-8", "replace")
    entry: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest()}
    if len(text) <= CONFIG_FILE_CHARS:
        entry["text"] = redact_text(text)
    return name, entry


def failure_record(
    error: Any,
    *,
    code: str | None = None,
    duration_s: float = 0.0,
    cursor_before: str | None = None,
    config_files: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the instance keeps about one failed object (see :data:`FAILURE_METADATA_KEY`).

    Args:
        error: The object's :class:`~dativo_dagster.errors.DativoError`.
        code: The code the step reports for it when it differs (RETRY001 once retries are spent).
        duration_s: How long the object ran.
        cursor_before: The cursor the run started from (as the source shows it).
        config_files: :func:`config_file_copy` entries of the job and contract files (the record
            keeps their digests; their text goes once per step under :data:`CONFIG_METADATA_KEY`).

    Returns:
        A JSON-able dict; every string in it is redacted.
    """
    from dativo_dagster.errors import UnexpectedError

    context = dict(getattr(error, "context", {}) or {})
    sample = [r for r in context.get("quarantine_sample") or [] if isinstance(r, Mapping)]
    error_class = "bug" if isinstance(error, UnexpectedError) else error.error_class.value
    record: dict[str, Any] = {
        "code": code or error.code,
        "cause_code": error.code,
        "class": error_class,
        "severity": error.severity.value,
        "error_type": type(error).__name__,
        "message": redact_text(str(error.message)),
        "hint": redact_text(error.hint) if error.hint else None,
        "request": _clean(context.get("request"), 600) if isinstance(context.get("request"), Mapping) else None,
        "rows_read": context.get("rows_read"),
        "rows_rejected": context.get("rows_rejected"),
        "quarantine_table": context.get("quarantine_table"),
        "quarantine_preview": [
            {"reason": _clean(r.get("reason"), 300), "values": _clean(r.get("values") or {}, VALUE_CHARS)}
            for r in sample[:PREVIEW_RECORDS]
        ],
        "rejections": top_reasons(sample),
        "duration_s": round(duration_s, 3),
        "cursor_before": redact_text(cursor_before) if cursor_before else None,
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config_files": {k: {"sha256": v.get("sha256")} for k, v in (config_files or {}).items()},
    }
    if isinstance(error, UnexpectedError):
        lines = str(context.get("traceback", "")).strip().splitlines()
        record["traceback_tail"] = redact_text("\n".join(lines[-6:]))
    return record


# --------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class FailureKind:
    """One row of the diagnosis table: a kind of failure, its usual cause and the fix."""

    kind: str
    title: str
    cause: str
    fix: tuple[str, ...]


KINDS: dict[str, FailureKind] = {
    k.kind: k
    for k in (
        FailureKind(
            "credentials",
            "expired or revoked credentials",
            "The source rejected the credential (HTTP 401 or a refused login): the key, token or password "
            "expired, was revoked or rotated, or the variable holds the wrong value.",
            (
                "Issue a new credential in the source (or refresh the OAuth grant) and put it in the "
                "environment variable the job references.",
                "Check it with `dativo test-connection TENANT/JOB`, then re-run the job.",
            ),
        ),
        FailureKind(
            "missing_scope",
            "missing scope or permission",
            "The credential is valid but may not read this object (HTTP 403): a restricted key or an app "
            "without the scope the endpoint needs.",
            (
                "Grant the credential read access (scope) to the object named in the failing request, or "
                "remove the object from the job.",
                "Check it with `dativo test-connection TENANT/JOB`, then re-run the job.",
            ),
        ),
        FailureKind(
            "rate_limited",
            "rate limited or quota exhausted",
            "The source throttled the run (HTTP 429) until the retries were spent, or asked to wait longer "
            "than dativo will (a daily quota): another client shares the quota, or the job reads too fast.",
            (
                "Lower the job's rate_limit (rps, burst) or share the credential's budget across processes "
                "(a Redis URL); move the schedule away from other heavy users of the same key.",
                "Nothing is lost: the next run continues from the committed cursor once the quota resets.",
            ),
        ),
        FailureKind(
            "endpoint_gone",
            "endpoint gone or API version changed",
            "The source answered 404 for an endpoint dativo lists: the resource was renamed or removed, the "
            "account does not have it, or the pinned API version no longer serves it.",
            (
                "Check the object's options (resource, path) against the vendor's current API reference and "
                "the recipe's api_version.",
                "After the fix, reproduce on a sample (`dativo run TENANT/JOB --object O --limit 100`).",
            ),
        ),
        FailureKind(
            "response_shape",
            "response shape changed",
            "The source's answers no longer match what dativo expects: invalid or truncated JSON, a field the "
            "contract requires is missing, or a field changed type.",
            (
                "Compare the response excerpt and the rejected rows with the contract; update the contract "
                "(a new version if columns change) or the object's mapping.",
                "Re-apply the fixed contract to the quarantined rows, or re-run the object on a sample first.",
            ),
        ),
        FailureKind(
            "connectivity",
            "connectivity",
            "dativo got no answer from the source: the connection was refused or reset, the host name did "
            "not resolve, or the request timed out.",
            (
                "Check that the source's host and port are right and reachable from where runs execute "
                "(VPN, firewall, DNS, the service itself).",
                "Raise timeout_s if the source is merely slow; the next run continues from the committed cursor.",
            ),
        ),
        FailureKind(
            "source_error",
            "source failing",
            "The source answered with server errors (HTTP 5xx) until the retries were spent: an outage or an "
            "overloaded endpoint on the vendor's side.",
            (
                "Check the vendor's status page; nothing is lost, the next run continues from the committed cursor.",
                "If one request fails every time, reduce page_size or the window it asks for.",
            ),
        ),
        FailureKind(
            "storage",
            "catalog or storage",
            "The Iceberg catalog or the warehouse failed (STG001): unreachable, locked, out of space, a "
            "commit conflict, or a table whose metadata or data files are missing.",
            (
                "Check the catalog and the warehouse named in the message (reachability, credentials, disk).",
                "A transient failure passes on the next run; a missing file needs the table restored or reset.",
            ),
        ),
        FailureKind(
            "data_quality",
            "data quality",
            "More rows than the object allows (quality.max_rejected_rate) violate the contract, so nothing "
            "was committed; the rejected rows are in the quarantine table.",
            (
                "Read the top rejection reasons and the quarantined rows (`dativo quarantine TENANT/JOB --object O`).",
                "Fix the data at the source, or the contract if the data is right, then re-run.",
            ),
        ),
        FailureKind(
            "pagination",
            "pagination broke",
            "The source's page chain broke (a cursor that loops, a page that cannot be read, a result cap).",
            (
                "Re-run once: a page chain broken by concurrent changes usually reads cleanly the next time.",
                "If it persists, read smaller windows (slice_days, page_size).",
            ),
        ),
        FailureKind(
            "config",
            "configuration",
            "The job, recipe, contract or environment is invalid for what the source or warehouse expects "
            "(CFG001 names the file and field).",
            (
                "Fix the file and field named in the message; `dativo validate` checks the whole project.",
                "Re-run the job.",
            ),
        ),
        FailureKind(
            "state",
            "state",
            "The object's cursor state is inconsistent (STATE001): the cursor would move backwards, or the "
            "recorded state cannot be read.",
            (
                "Find out whether the source was restored or its cursor column changed.",
                "Move the cursor on purpose: `dativo reset TENANT/JOB --object O --to VALUE` (or --full-refresh).",
            ),
        ),
        FailureKind(
            "bug",
            "bug",
            "An exception no error code covers: a bug in dativo or the connector, not a problem with the data "
            "or the configuration. It is never retried.",
            (
                "Report it with the traceback (in the run's step failure, secrets redacted) and this report.",
                "Other objects of the job are not affected; re-run after the fix.",
            ),
        ),
        FailureKind(
            "retries_exhausted",
            "retries exhausted",
            "Transient failures persisted through every retry, and the message names no more specific cause.",
            ("Read the last failure in the message; re-run once the source is healthy.",),
        ),
        FailureKind(
            "unknown",
            "unclassified failure",
            "The run failed without an error dativo classified (the run process was killed, or the failure "
            "happened outside the object's ingestion).",
            ("Read the run's log in the Dagster UI; re-run the job.",),
        ),
    )
}


@dataclass(frozen=True)
class Diagnosis:
    """The classification of one failure."""

    kind: FailureKind
    evidence: str
    details: tuple[str, ...] = ()


_AUTH_DENIED = re.compile(
    r"\b403\b|forbidden|scope|permission|insufficient|not allowed|access denied to|not authori[sz]ed to|"
    r"command denied|privilege",
    re.I,
)
_CREDENTIAL = re.compile(
    r"\b401\b|expired|revoked|invalid api key|invalid_grant|unauthori[sz]ed|password authentication|"
    r"access denied for user|invalid (token|credential)|login failed",
    re.I,
)
_RATE = re.compile(r"\b429\b|rate.?limit|quota|too many requests", re.I)
_NOT_FOUND = re.compile(r"\b404\b|unrecognized request url|no such (endpoint|resource)", re.I)
_SHAPE = re.compile(
    r"json|malformed|truncated|missing from the source|could not be read as|not a list|has no (field|data)|"
    r"missing (the )?(field|key)|unexpected (type|shape)|is not an? (object|list|array)",
    re.I,
)
_CONNECT = re.compile(
    r"no answer|refused|timed? ?out|timeout|name or service not known|nodename|dns|could not translate host|"
    r"connection (reset|aborted|closed)|unreachable|getaddrinfo|failed to resolve|temporary failure in name",
    re.I,
)
_SERVER = re.compile(r"\bHTTP 5\d\d\b|\b50[0-9] (bad gateway|service unavailable|internal)", re.I)


def _status(request: Mapping[str, Any] | None) -> int | None:
    status = request.get("status") if request else None
    return status if isinstance(status, int) else None


def classify(
    code: str | None,
    message: str,
    request: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Diagnosis:
    """The failure kind of one failure, with the clue that decided it.

    Args:
        code: The error code recorded (RETRY001 for spent retries; its cause is in the message).
        message: The error's message (and hint).
        request: The failing request's summary (method, path, status, failure, response_excerpt).
        context: The rest of the failure record: ``cause_code``, ``rejections``, ``rows_read``,
            ``rows_rejected``.

    Returns:
        The :class:`Diagnosis`; ``unknown`` when nothing matches.
    """
    context = context or {}
    status = _status(request)
    failure = str((request or {}).get("failure") or "")
    cause = str(context.get("cause_code") or code or "")
    text = f"{message} {failure}"
    rejections = [r for r in context.get("rejections") or [] if isinstance(r, Mapping)]

    def found(kind: str, evidence: str, *details: str) -> Diagnosis:
        return Diagnosis(KINDS[kind], evidence, tuple(details))

    if code == "BUG" or cause == "BUG":
        return found("bug", "error code BUG (an exception no code covers)")
    # The code of the layer that failed decides before any wording: a full disk's "quota" is storage,
    # not a rate limit.
    if cause == "STG001" or code == "STG001":
        return found("storage", "error code STG001")
    # A throttle or a spent quota can come as a 403 (Google's rateLimitExceeded, dailyLimitExceeded).
    if status == 429 or (_RATE.search(text) and status in (None, 403, 429)):
        return found("rate_limited", "HTTP 429 or a rate limit / quota in the message")
    if status == 401:
        return found("credentials", "the source answered HTTP 401")
    if status == 403:
        return found("missing_scope", "the source answered HTTP 403")
    if cause == "AUTH001" or code == "AUTH001":
        # "SELECT command denied to user" names a user but means a missing privilege, not a bad password.
        if _AUTH_DENIED.search(text) and not _CREDENTIAL.search(text.replace("denied to user", "")):
            return found("missing_scope", f"AUTH001: {_AUTH_DENIED.search(text).group(0)!r} in the message")  # type: ignore[union-attr]
        if _CREDENTIAL.search(text):
            return found("credentials", f"AUTH001: {_CREDENTIAL.search(text).group(0)!r} in the message")  # type: ignore[union-attr]
        if _AUTH_DENIED.search(text):
            return found("missing_scope", f"AUTH001: {_AUTH_DENIED.search(text).group(0)!r} in the message")  # type: ignore[union-attr]
        return found("credentials", "AUTH001 (authentication failed)")
    if status is None and failure:
        return found("connectivity", f"no answer: {failure[:120]}")
    if (status is not None and status >= 500) and not _RATE.search(text):
        return found("source_error", f"the source answered HTTP {status}")
    if status == 429 or _RATE.search(text):
        return found("rate_limited", "HTTP 429 or a rate limit / quota in the message")
    if status == 404 or (code in ("CFG001", "EXT001", "PAGE001", "RETRY001") and _NOT_FOUND.search(text)):
        return found("endpoint_gone", "the source answered HTTP 404")
    if cause == "STATE001" or code == "STATE001":
        return found("state", "error code STATE001")
    if cause == "QUAL001" or code == "QUAL001":
        shape = [r for r in rejections if "missing from the source" in str(r.get("reason", ""))]
        details = tuple(f"{r.get('rows')} row(s): {r.get('reason')}" for r in rejections)
        if (
            shape
            and sum(int(r.get("rows") or 0) for r in shape) >= sum(int(r.get("rows") or 0) for r in rejections) / 2
        ):
            return found("response_shape", "most rejected rows miss a column the contract requires", *details)
        return found("data_quality", "error code QUAL001 (rejected-row rate over the threshold)", *details)
    if cause == "PAGE001" or code == "PAGE001":
        if _SHAPE.search(text):
            return found("response_shape", f"PAGE001: {_SHAPE.search(text).group(0)!r} in the message")  # type: ignore[union-attr]
        return found("pagination", "error code PAGE001")
    if _CONNECT.search(text):
        return found("connectivity", f"{_CONNECT.search(text).group(0)!r} in the message")  # type: ignore[union-attr]
    if (status is not None and status >= 500) or _SERVER.search(text):
        return found("source_error", "the source answered HTTP 5xx")
    if code == "CFG001" or cause == "CFG001":
        return found("config", "error code CFG001")
    if code == "RETRY001" or cause in ("EXT001", "RETRY001"):
        return found("retries_exhausted", f"error code {code}")
    return found("unknown", f"error code {code or 'none'}")


def shape_diff(
    contract_columns: Sequence[str], required: Sequence[str], records: Sequence[Mapping[str, Any]]
) -> dict[str, list[str]]:
    """How rejected rows differ from the contract: required columns they all lack, and columns it does not know.

    Args:
        contract_columns: Every column of the contract.
        required: The contract's required (non-null) columns.
        records: Quarantine preview records (``values``: column → text as read).
    """
    if not records:
        return {"missing": [], "new": []}
    present: set[str] = set()
    valued: set[str] = set()
    for record in records:
        values = record.get("values") or {}
        present.update(values)
        valued.update(name for name, value in values.items() if value not in (None, ""))
    known = set(contract_columns)
    return {
        "missing": [c for c in required if c not in valued],
        "new": sorted(c for c in present - known if not c.startswith("_dativo")),
    }


# --------------------------------------------------------------------------- config changes


def config_diff(recorded: Mapping[str, Mapping[str, Any]], root: Path) -> list[str]:
    """Unified diffs of the job and contract files now against their copies recorded at the failing run.

    Returns:
        One diff per changed file (a line for a file recorded by digest only, or gone); empty when
        nothing changed.
    """
    diffs: list[str] = []
    for name, entry in sorted(recorded.items()):
        path = root / name
        try:
            now = path.read_bytes()
        except OSError:
            diffs.append(f"{name}: removed since the failing run")
            continue
        if hashlib.sha256(now).hexdigest() == entry.get("sha256"):
            continue
        before = entry.get("text")
        if not isinstance(before, str):
            diffs.append(f"{name}: changed since the failing run (too large to show)")
            continue
        lines = difflib.unified_diff(
            before.splitlines(keepends=True),
            redact_text(now.decode("utf-8", "replace")).splitlines(keepends=True),
            fromfile=f"{name} (at the failing run)",
            tofile=f"{name} (now)",
        )
        diffs.append("".join(lines))
    return diffs


# --------------------------------------------------------------------------- scratch comparison contract

COMPARE_FILE = "compare.json"
COMPARE_VERSION = 1


def compare_path(state_dir: Path, tenant: str, job: str, obj: str) -> Path:
    """Where ``dativo compare`` leaves its verdict for ``tenant/job/obj``.

    ``<state dir>/diagnose/<tenant>__<job>__<object>/compare.json`` (the state dir is the project's
    ``.dativo``, or ``$DATIVO_HOME``). The file is one JSON object::

        {
          "version": 1,
          "object": "tenant/job/object",
          "created_at": "2026-01-01T00:00:00+00:00",   # ISO-8601 with a zone
          "scratch_table": "…", "production_table": "…", # optional, as shown to people
          "passed": true,                                # every check passed
          "checks": [                                    # one per line of `dativo compare`
            {"name": "row_count", "passed": true, "detail": "1,200 vs 1,200 rows in the overlap"},
            …
          ]
        }

    A newer comparison replaces the file. The report shows it when it is newer than the failure.
    """
    return state_dir / "diagnose" / f"{tenant}__{job}__{obj}" / COMPARE_FILE


def read_compare(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The comparison at ``path`` if it keeps the contract of :func:`compare_path`.

    Returns:
        ``(comparison, None)``, or ``(None, why)`` when the file is absent or breaks the contract.
    """
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "no scratch comparison recorded (`dativo compare` writes one)"
    except (OSError, ValueError) as exc:
        return None, f"{path.name} is unreadable: {exc}"
    if not isinstance(data, dict) or data.get("version") != COMPARE_VERSION:
        return None, f"{path.name}: not a version {COMPARE_VERSION} comparison"
    checks = data.get("checks")
    if not isinstance(data.get("passed"), bool) or not isinstance(checks, list):
        return None, f"{path.name}: 'passed' (true/false) and 'checks' (a list) are required"
    for check in checks:
        if (
            not isinstance(check, dict)
            or not isinstance(check.get("name"), str)
            or not isinstance(check.get("passed"), bool)
        ):
            return None, f"{path.name}: every check needs a 'name' and 'passed'"
    try:
        created = dt.datetime.fromisoformat(str(data.get("created_at")))
    except ValueError:
        return None, f"{path.name}: 'created_at' is not an ISO-8601 time"
    if created.tzinfo is None:
        return None, f"{path.name}: 'created_at' has no time zone"
    return _clean(data), None


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class RunView:
    """One run of one object, as the report and ``status`` show it."""

    run_id: str
    outcome: str  # "success" | "failure"
    at: float | None  # end (or start) time, epoch seconds
    duration_s: float | None = None
    rows_written: int | None = None
    rows_rejected: int | None = None
    cursor: str | None = None
    code: str | None = None
    message: str | None = None
    record: Mapping[str, Any] | None = None
    schema_changes: Sequence[Any] = ()


@dataclass
class Report:
    """Everything a debug report says (rendered by :func:`render_report`)."""

    label: str
    failure: RunView
    diagnosis: Diagnosis
    last_success: RunView | None = None
    changes_since_success: list[str] = field(default_factory=list)
    fix_diffs: list[str] = field(default_factory=list)
    fix_checked: bool = False
    after: RunView | None = None
    comparison: dict[str, Any] | None = None
    comparison_note: str | None = None
    shape: dict[str, list[str]] | None = None
    generated_at: float = 0.0

    @property
    def status(self) -> str:
        """``failing``, or ``recovered`` once a later run succeeded."""
        return "recovered" if self.after is not None and self.after.outcome == "success" else "failing"

    def as_json(self) -> dict[str, Any]:
        """The report as one JSON document (``dativo diagnose --json``)."""
        return _clean(
            {
                "object": self.label,
                "status": self.status,
                "kind": self.diagnosis.kind.kind,
                "title": self.diagnosis.kind.title,
                "cause": self.diagnosis.kind.cause,
                "fix": list(self.diagnosis.kind.fix),
                "evidence": self.diagnosis.evidence,
                "details": list(self.diagnosis.details),
                "failure": _run_json(self.failure),
                "last_success": _run_json(self.last_success) if self.last_success else None,
                "changes_since_success": self.changes_since_success,
                "fix_diffs": self.fix_diffs,
                "after": _run_json(self.after) if self.after else None,
                "comparison": self.comparison,
                "comparison_note": self.comparison_note,
                "shape": self.shape,
            }
        )


def _run_json(run: RunView) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    data["at"] = when(run.at)
    return data


def when(epoch: float | None) -> str | None:
    """An epoch time as ISO-8601 UTC (seconds)."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=dt.timezone.utc).isoformat(timespec="seconds")


def _md(text: Any) -> str:
    """Text safe in markdown prose: secrets redacted, control characters escaped."""
    return printable(redact_text("" if text is None else str(text)))


def _code_block(text: str) -> list[str]:
    fence = "````" if "```" in text else "```"
    return [fence, redact_text(text).rstrip("\n"), fence]


def _run_line(run: RunView) -> str:
    parts = [f"run `{run.run_id}` at {when(run.at) or '?'}"]
    if run.rows_written is not None:
        parts.append(f"{run.rows_written:,} row(s) written")
    if run.rows_rejected:
        parts.append(f"{run.rows_rejected:,} rejected")
    if run.duration_s is not None:
        parts.append(f"{run.duration_s:.1f} s")
    if run.cursor:
        parts.append(f"cursor {run.cursor}")
    return _md(", ".join(parts))


def request_lines(request: Mapping[str, Any] | None) -> list[str]:
    """The failing request as lines (method, path, status or failure, elapsed, excerpt)."""
    if not request:
        return []
    status = request.get("status")
    answer = f"HTTP {status}" if status is not None else f"no answer ({request.get('failure') or 'unknown'})"
    lines = [f"{request.get('method', '?')} {request.get('path', '?')} → {answer}"]
    if request.get("elapsed_s") is not None:
        lines[0] += f" after {request['elapsed_s']} s"
    excerpt = request.get("response_excerpt")
    if excerpt:
        lines.append(f"response: {excerpt}")
    return [_md(line) for line in lines]


def render_report(report: Report) -> str:
    """The markdown debug report: summary, root cause, fix applied, validation, next steps."""
    failure, diagnosis = report.failure, report.diagnosis
    record = failure.record or {}
    out: list[str] = [f"# Debug report: {_md(report.label)}", ""]
    out += [f"Generated {when(report.generated_at) or '?'}.", "", "## Summary", ""]
    out += [
        f"- **Status:** {report.status}",
        f"- **Failed run:** {_run_line(failure)}",
        f"- **Error:** {_md(failure.code or '?')} ({_md(record.get('class') or '?')}, "
        f"{_md(record.get('error_type') or 'no error type recorded')})",
        f"- **Kind:** {_md(diagnosis.kind.title)}",
        "- **Last success:** " + (_run_line(report.last_success) if report.last_success else "none recorded"),
        "",
        "The error as reported:",
        "",
        *_code_block(str(failure.message or "(no message recorded)")),
        "",
        "## Root-cause analysis",
        "",
        f"{_md(diagnosis.kind.cause)}",
        "",
        f"Classified as **{_md(diagnosis.kind.title)}** because {_md(diagnosis.evidence)}.",
    ]
    if record.get("hint"):
        out += ["", f"dativo's hint: {_md(record['hint'])}"]
    requested = request_lines(record.get("request"))
    if requested:
        out += ["", "Failing request:", "", *_code_block("\n".join(requested))]
    rejections = record.get("rejections") or []
    if rejections:
        out += ["", "Top rejection reasons (among the rows previewed):", ""]
        out += [f"- {int(r.get('rows') or 0)} row(s): {_md(r.get('reason'))}" for r in rejections]
    if report.shape and (report.shape.get("missing") or report.shape.get("new")):
        out += ["", "Against the contract:", ""]
        if report.shape.get("missing"):
            out.append(f"- required field(s) absent from every rejected row: {_md(', '.join(report.shape['missing']))}")
        if report.shape.get("new"):
            out.append(f"- field(s) the contract does not know: {_md(', '.join(report.shape['new']))}")
    if record.get("traceback_tail"):
        out += ["", "End of the traceback:", "", *_code_block(str(record["traceback_tail"]))]
    if report.changes_since_success:
        out += ["", "Changed since the last success:", ""]
        out += [f"- {_md(line)}" for line in report.changes_since_success]
    out += ["", "## Fix applied", ""]
    if report.fix_diffs:
        out.append("The job and contract files differ from their copies recorded at the failing run:")
        for diff in report.fix_diffs:
            out += ["", *_code_block(diff)]
    elif report.fix_checked:
        out.append("None detected: the job and contract files are as they were at the failing run.")
    else:
        out.append("Unknown: the failing run recorded no copy of the configuration to compare with.")
    out += ["", "Suggested fix:", ""]
    out += [f"{n}. {_md(step)}" for n, step in enumerate(diagnosis.kind.fix, start=1)]
    out += ["", "## Validation", ""]
    if report.after is None:
        out.append("No run of the object since the failure.")
    else:
        verdict = "succeeded" if report.after.outcome == "success" else f"failed ({_md(report.after.code or '?')})"
        out.append(f"- Latest run after the failure {verdict}: {_run_line(report.after)}")
        if report.after.outcome == "success":
            rejected = report.after.rows_rejected or 0
            quality = "pass (no row rejected)" if not rejected else f"{rejected:,} row(s) quarantined"
            out.append(f"- Data quality: {quality}")
    if report.comparison is not None:
        verdict = "passed" if report.comparison.get("passed") else "FAILED"
        out += ["", f"Scratch comparison ({_md(report.comparison.get('created_at'))}): {verdict}", ""]
        for check in report.comparison.get("checks", []):
            mark = "pass" if check.get("passed") else "FAIL"
            detail = f": {_md(check.get('detail'))}" if check.get("detail") else ""
            out.append(f"- {mark} {_md(check.get('name'))}{detail}")
    elif report.comparison_note:
        out += ["", f"Scratch comparison: {_md(report.comparison_note)}."]
    out += ["", "## Next steps", ""]
    steps = []
    if report.status == "failing":
        steps.append("Apply the fix above (config, contract, credential or source side).")
        steps.append("Reproduce on a small sample before touching production (`dativo run … --object O --limit N`).")
        steps.append("Re-run the job, or wait for its next scheduled run.")
    else:
        steps.append("The fix is validated by a successful run.")
    job_label = "/".join(report.label.split("/")[:2])
    steps.append(
        f"Watch the next scheduled run: `dativo status {job_label}` exits non-zero while the object is unhealthy."
    )
    steps.append("Record the cause and the fix where the team keeps incident notes.")
    done = report.status == "recovered"
    out += [f"- [{'x' if done and i == 0 else ' '}] {_md(step)}" for i, step in enumerate(steps)]
    return "\n".join(out) + "\n"


def object_config_files(job_file: Path | None, contract: Any, root: Path) -> dict[str, dict[str, Any]]:
    """Copies (:func:`config_file_copy`) of an object's job file and contract file, by relative path."""
    paths = [job_file] if job_file is not None else []
    if contract is not None:
        paths.append(root / "connectors" / "schemas" / f"{contract.name}.v{contract.version}.yaml")
    copies: dict[str, dict[str, Any]] = {}
    for path in paths:
        found = config_file_copy(path, root)
        if found is not None:
            copies[found[0]] = found[1]
    return copies
