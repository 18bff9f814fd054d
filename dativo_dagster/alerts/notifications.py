"""What an alert says, and how each kind of route receives it (pure functions, no I/O).

An :class:`Alert` is built once per failed run (per tenant job it touched) or per failed ERROR
check; a generic webhook receives :meth:`Alert.as_json`, a Slack-compatible webhook
:func:`slack_payload`. Messages are redacted before they get here and again by
:func:`redacted_message`, and cut to a length every receiver accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import SEVERITY_BY_CODE

MESSAGE_MAX_CHARS = 2000
"""Longer messages are cut: Slack refuses a text block over 3,000 characters."""

RUN_FAILURE: Final = "run_failure"
CHECK_FAILURE: Final = "check_failure"

_LEADING_CODE = re.compile(r"^\s*(?P<code>[A-Z]+[0-9]{3}|BUG)\b")


@dataclass(frozen=True)
class Alert:
    """One notification: a failed run of a tenant job, or a failed ERROR-severity check.

    Attributes:
        kind: ``run_failure`` or ``check_failure``.
        tenant: Tenant id (routes are chosen by it).
        job: Tenant job name.
        assets: The failed assets (or the checked asset), as ``tenant/source/object``.
        error_code: dativo's error code (``RETRY001``, ``QUAL001``, ...), when known.
        error_class: ``transient``, ``permanent`` or ``bug``, when known.
        message: What went wrong, secrets redacted.
        last_success: Per asset (or check), when it last succeeded (ISO 8601 UTC), or None.
        run_id: The Dagster run.
        run_url: ``/runs/<run_id>``, prefixed with runner.yaml's ``alerts.base_url`` when set.
        check: The check's name (check failures only).
    """

    kind: Literal["run_failure", "check_failure"]
    tenant: str
    job: str
    assets: tuple[str, ...]
    error_code: str | None
    error_class: str | None
    message: str
    run_id: str
    run_url: str
    last_success: Mapping[str, str | None] = field(default_factory=dict)
    check: str | None = None

    @property
    def key(self) -> str:
        """What the alert is about, unique among the alerts of one run (its progress is kept by it):
        ``tenant/job`` for a failed run, ``asset:check`` for a failed check."""
        if self.kind == CHECK_FAILURE:
            return f"{self.assets[0] if self.assets else ''}:{self.check}"
        return f"{self.tenant}/{self.job}"

    @property
    def title(self) -> str:
        """One line: what failed, where, with which code."""
        code = f" {self.error_code}" if self.error_code else ""
        if self.kind == CHECK_FAILURE:
            subject = f"check {self.check} on {', '.join(self.assets)}"
            return f"dativo{code}: {self.tenant}/{self.job}: {subject} failed"
        return f"dativo{code}: {self.tenant}/{self.job}: run failed ({', '.join(self.assets) or 'no asset'})"

    def as_json(self) -> dict[str, Any]:
        """The body a generic webhook receives."""
        return {
            "kind": self.kind,
            "title": self.title,
            "tenant": self.tenant,
            "job": self.job,
            "assets": list(self.assets),
            "check": self.check,
            "error_code": self.error_code,
            "error_class": self.error_class,
            "message": self.message,
            "last_success": dict(self.last_success),
            "run_id": self.run_id,
            "run_url": self.run_url,
        }

    def as_log_fields(self) -> dict[str, Any]:
        """The fields of the ``log`` route's line (the message last: it is the longest)."""
        fields = self.as_json()
        fields.pop("title")
        return {"alert": self.kind, **{k: v for k, v in fields.items() if k != "kind"}}


def run_url(run_id: str, base_url: str | None) -> str:
    """``/runs/<run_id>``, or the full link under the Dagster UI's address."""
    path = f"/runs/{run_id}"
    return f"{base_url.rstrip('/')}{path}" if base_url else path


def redacted_message(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secret values hidden, cut to :data:`MESSAGE_MAX_CHARS`."""
    text = redact_text(text, secrets).strip()
    if len(text) > MESSAGE_MAX_CHARS:
        text = text[: MESSAGE_MAX_CHARS - 1] + "…"
    return text


def error_code_in(text: str) -> str | None:
    """The dativo error code a message starts with (``QUAL001: ...``), if it is one."""
    match = _LEADING_CODE.match(text)
    if match and match.group("code") in SEVERITY_BY_CODE:
        return match.group("code")
    return None


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """The body a Slack-compatible incoming webhook receives: ``text`` (the notification's
    fallback) and ``blocks`` (the formatted message)."""
    last = ", ".join(f"{name}: {when or 'never'}" for name, when in alert.last_success.items()) or "-"
    facts = [
        ("Tenant", alert.tenant),
        ("Job", alert.job),
        ("Assets", ", ".join(alert.assets) or "-"),
        *([("Check", alert.check)] if alert.check else []),
        ("Error", f"{alert.error_code or '-'} ({alert.error_class or '-'})"),
        ("Last success", last),
        ("Run", alert.run_id),
    ]
    link = alert.run_url if alert.run_url.startswith(("http://", "https://")) else None
    run_text = f"<{link}|Open the run in Dagster>" if link else f"Run: `{_slack_escape(alert.run_url)}`"
    message = _slack_escape(alert.message)[:2900] or "-"  # a text block holds at most 3,000 characters
    return {
        "text": _slack_escape(f"{alert.title}: {alert.message}")[:MESSAGE_MAX_CHARS],
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_slack_escape(alert.title)}*"}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(value)}"} for name, value in facts],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"```{message}```"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": run_text}]},
        ],
    }
