"""``${VAR}`` references: found at load time, resolved only at run time, never logged.

Config files keep references like ``${PGPASSWORD}`` or ``${DATIVO_HOME:-.dativo}``. Definitions
load never resolves them (a code location must load with no secrets in its environment); the
run resolves them through a :class:`SecretResolver`, which remembers every value it handed out
so the log redactor can scrub them from any text.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from dativo_dagster.errors import ConfigError

# ${NAME} or ${NAME:-default}; NAME is a POSIX-ish env var name.
_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")
_MALFORMED = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\})")

REDACTED = "***"


def find_references(value: Any) -> set[str]:
    """Return the variable names referenced anywhere inside ``value`` (nested dicts/lists)."""
    names: set[str] = set()
    for text in _strings(value):
        names.update(m.group("name") for m in _REFERENCE.finditer(text))
    return names


def required_references(value: Any) -> set[str]:
    """Names referenced without a ``:-default`` (they must be set at run time)."""
    names: set[str] = set()
    for text in _strings(value):
        names.update(m.group("name") for m in _REFERENCE.finditer(text) if m.group("default") is None)
    return names


def malformed_reference(text: str) -> str | None:
    """Return the offending fragment if ``text`` has a ``${`` that is not a valid reference."""
    match = _MALFORMED.search(text)
    if match is None:
        return None
    return text[match.start() : match.start() + 24]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


class SecretResolver:
    """Resolves ``${VAR}`` references against an environment and remembers the values.

    Args:
        environ: Mapping to read from; defaults to ``os.environ`` at call time.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ
        self._lock = threading.Lock()
        self._values: set[str] = set()

    @property
    def environ(self) -> Mapping[str, str]:
        """The environment references are resolved against."""
        return self._environ if self._environ is not None else os.environ

    def resolve(self, value: Any, *, where: str = "config") -> Any:
        """Return ``value`` with every reference replaced; raises CFG001 naming a missing variable."""
        if isinstance(value, str):
            return self._resolve_text(value, where)
        if isinstance(value, Mapping):
            return {key: self.resolve(item, where=f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [self.resolve(item, where=f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    def _resolve_text(self, text: str, where: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group("name")
            default = match.group("default")
            resolved = self.environ.get(name)
            if resolved is None or (resolved == "" and default is not None):
                if default is None:
                    raise ConfigError(
                        f"{where}: environment variable {name} is not set",
                        hint=f"export {name}=... in the run environment",
                        field=where,
                    )
                return default
            if resolved:
                with self._lock:
                    self._values.add(resolved)
            return resolved

        return _REFERENCE.sub(substitute, text)

    def secret_values(self) -> frozenset[str]:
        """Every non-empty value this resolver produced (used for redaction)."""
        with self._lock:
            return frozenset(self._values)

    def redact(self, text: str) -> str:
        """Replace any resolved value found in ``text`` with ``***``."""
        return redact_text(text, self.secret_values())


# Process-wide set of values to scrub from logs. Only values, never names; populated by
# resolvers that resolve *credentials* so logging anywhere in the process can redact them.
_GLOBAL_SECRETS: set[str] = set()
_GLOBAL_LOCK = threading.Lock()

# Values shorter than this are too likely to collide with ordinary words ("1", "on").
_MIN_SECRET_LEN = 4


def register_secrets(values: Iterable[str]) -> None:
    """Add values that the log redactor must scrub everywhere in this process."""
    with _GLOBAL_LOCK:
        _GLOBAL_SECRETS.update(v for v in values if v and len(v) >= _MIN_SECRET_LEN)


def registered_secrets() -> frozenset[str]:
    """Values currently scrubbed by :func:`redact_text` callers that use the registry."""
    with _GLOBAL_LOCK:
        return frozenset(_GLOBAL_SECRETS)


def redact_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Scrub secret values (longest first, so overlapping values are fully hidden)."""
    values = registered_secrets() if secrets is None else frozenset(secrets) | registered_secrets()
    for value in sorted(values, key=len, reverse=True):
        if value and len(value) >= _MIN_SECRET_LEN and value in text:
            text = text.replace(value, REDACTED)
    return text


_SENSITIVE_KEY = re.compile(
    r"(pass(word|wd|phrase)?|pwd|secret|token|api[_.-]?key|apikey|access[_.-]?key|private[_.-]?key|credential"
    r"|auth|bearer|signature|sas|cookie)",
    re.I,
)


def is_sensitive_key(key: str) -> bool:
    """True for config keys whose values are secrets by name (password, token, api_key, ...)."""
    return bool(_SENSITIVE_KEY.search(str(key)))


# scheme://user:password@host... : the password runs to the LAST '@' of the authority, since a
# password may itself hold '@' (unencoded, as people paste them) or '/'.
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<password>[^\s]+)@[^@\s]*$", re.I)


def secret_parts(value: Any, *, sensitive: bool) -> list[str]:
    """The secret pieces of a resolved config value: all of it under a secret-named key, and the
    password part of any ``scheme://user:password@host`` URL wherever it appears."""
    parts: list[str] = []
    for text in _strings(value):
        if sensitive:
            parts.append(text)
        match = _URL_PASSWORD.match(text.split("?", 1)[0])
        if match:
            password = match.group("password")
            # Also each piece between '@'s: a driver that misparses such a URL quotes the pieces.
            pieces = {password, unquote(password), *(p for p in password.split("@") if len(p) >= 4)}
            parts.extend(sorted(pieces))
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not sensitive and is_sensitive_key(key):
                parts.extend(_strings(item))
    return parts
