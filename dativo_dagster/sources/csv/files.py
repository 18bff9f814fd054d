"""Finding an object's files and opening them, never outside the tenant's data roots.

:func:`find_files` expands an object's path or glob under ``base_path`` into :class:`CsvFile`
entries, each resolved with its links followed and checked to lie inside the data roots;
:func:`open_confined` opens one of them for reading and checks it again, so a link swapped in
between listing and opening cannot lead out of them either.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dativo_dagster.errors import AuthError, ConfigError, ExtractError
from dativo_dagster.paths import describe_roots

log = structlog.get_logger("dativo.sources.csv")

_MAGIC = re.compile(r"[*?[]")


def is_glob(path: str) -> bool:
    """Whether ``path`` holds a glob character (``*``, ``?`` or ``[``)."""
    return bool(_MAGIC.search(path))


def _within(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path`` (already resolved) is one of ``roots`` or lies below one."""
    return any(path == root or root in path.parents for root in roots)


@dataclass(frozen=True)
class CsvFile:
    """One file an object's path or glob matched, checked to lie inside the tenant's data roots."""

    relative: str
    """Path relative to base_path (``/``-separated), as messages and ``_dativo_file`` show it."""
    path: Path
    """The real path (every link followed)."""
    mtime_ns: int
    size: int


class FileVanished(Exception):
    """A listed file is gone by the time it is opened."""


class _Matcher:
    """Expands a relative glob under a base directory without leaving the tenant's data roots.

    Unlike :func:`glob.glob`, every directory is checked (links followed) before it is listed, and
    ``**`` visits each real directory once, so neither a link out of the tenant's files nor a link
    loop is followed. Hidden names match only a pattern part that starts with a dot, like glob.
    """

    def __init__(self, base: Path, roots: Sequence[Path], *, label: str, pattern: str, project_dir: Path) -> None:
        self.base = base
        self.roots = roots
        self.label = label
        self.pattern = pattern
        self.project_dir = project_dir

    def outside(self, relative: str, what: str) -> ConfigError:
        """CFG001 for a path the pattern reached that resolves outside the data roots."""
        return ConfigError(
            f"{self.label}: options.path {self.pattern!r} reaches {what} {relative!r} (under base_path), which "
            f"resolves outside the tenant's data roots ({describe_roots(self.roots, self.project_dir)})",
            hint="a symbolic link may not lead out of the tenant's data roots; copy the file in instead",
        )

    def _inside(self, real: str) -> bool:
        return _within(Path(real), self.roots)

    def _join(self, relative: str, name: str) -> str:
        return f"{relative}/{name}" if relative else name

    def _real_dir(self, relative: str) -> str:
        real = os.path.realpath(self.base / relative) if relative else str(self.base)
        if not self._inside(real):
            raise self.outside(relative, "directory")
        return real

    def _list(self, relative: str) -> list[str]:
        self._real_dir(relative)
        try:
            with os.scandir(self.base / relative if relative else self.base) as entries:
                return sorted(entry.name for entry in entries)
        except (NotADirectoryError, FileNotFoundError):
            return []
        except PermissionError:
            raise AuthError(f"{self.label}: directory {relative or '.'!r} under base_path is not readable") from None

    def _is_dir(self, relative: str) -> bool:
        return os.path.isdir(self.base / relative)

    def _tree(self, relative: str) -> list[str]:
        """``relative`` and every non-hidden directory below it, each real directory once (links followed)."""
        visited: set[str] = set()
        found: list[str] = []
        stack = [relative]
        while stack:
            current = stack.pop()
            real = self._real_dir(current)
            if real in visited:
                continue  # a link back into the tree: walking it again would never end
            visited.add(real)
            found.append(current)
            children = [self._join(current, n) for n in self._list(current) if not n.startswith(".")]
            stack.extend(reversed([c for c in children if self._is_dir(c)]))
        return found

    def expand(self) -> list[str]:
        """Relative paths (files, directories and links alike) the pattern matches, sorted."""
        parts = [p for p in self.pattern.split("/") if p not in ("", ".")]
        found: set[str] = set()
        if parts:
            self._descend("", parts, found)
        return sorted(found)

    def _descend(self, relative: str, parts: list[str], found: set[str]) -> None:
        part, rest = parts[0], parts[1:]
        if part == "**":
            for directory in self._tree(relative):
                if rest:
                    self._descend(directory, rest, found)
                else:
                    found.update(self._join(directory, n) for n in self._list(directory) if not n.startswith("."))
            return
        if _MAGIC.search(part):
            names = [
                n
                for n in self._list(relative)
                if fnmatch.fnmatchcase(n, part) and (not n.startswith(".") or part.startswith("."))
            ]
        else:
            names = [part] if os.path.lexists(self.base / self._join(relative, part)) else []
        for name in names:
            child = self._join(relative, name)
            if not rest:
                found.add(child)
            elif self._is_dir(child):
                self._descend(child, rest, found)


def find_files(base: Path, roots: Sequence[Path], *, pattern: str, label: str, project_dir: Path) -> list[CsvFile]:
    """Every regular file ``pattern`` matches under ``base``, each checked against the data roots.

    Args:
        base: The resolved base directory (inside ``roots``).
        roots: The tenant's data roots.
        pattern: The object's ``options.path``, a file name or glob relative to ``base``.
        label: The object's label, for messages.
        project_dir: The project directory, to show the data roots relative to it.

    Raises:
        ConfigError: CFG001 naming the path (relative to base_path) of a file or directory
            that resolves outside the tenant's data roots, a dangling or looping link, or
            something that is not a regular file.
    """
    matcher = _Matcher(base, roots, label=label, pattern=pattern, project_dir=project_dir)
    files: list[CsvFile] = []
    seen: dict[Path, str] = {}
    for relative in matcher.expand():
        lexical = base / relative
        real = Path(os.path.realpath(lexical))
        if not _within(real, roots):
            raise matcher.outside(relative, "directory" if real.is_dir() else "file")
        try:
            info = os.stat(real)
        except FileNotFoundError:
            if os.path.islink(lexical):
                raise ConfigError(f"{label}: {relative!r} (under base_path) is a dangling symbolic link") from None
            continue  # deleted since it was listed
        except OSError as exc:
            raise ConfigError(f"{label}: {relative!r} (under base_path) cannot be read: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{label}: {relative!r} (under base_path) is not a regular file")
        if real in seen:
            log.warning("csv_same_file_twice", object=label, file=relative, read_as=seen[real])
            continue
        seen[real] = relative
        files.append(CsvFile(relative, real, info.st_mtime_ns, info.st_size))
    return files


def open_confined(file: CsvFile, roots: Sequence[Path], *, label: str) -> int:
    """Open the checked real path without following a link swapped in since, and re-check it.

    Args:
        file: A file :func:`find_files` listed.
        roots: The tenant's data roots.
        label: The object's label, for messages.

    Returns:
        The open descriptor; the caller closes it.

    Raises:
        FileVanished: the file was deleted (or moved away) since it was listed.
        ConfigError: it is no longer a regular file inside the data roots.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(file.path, flags)
    except FileNotFoundError:
        raise FileVanished(file.relative) from None
    except PermissionError:
        raise AuthError(f"{label}: {file.relative}: permission denied") from None
    except OSError as exc:
        raise ExtractError(f"{label}: cannot open {file.relative}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{label}: {file.relative!r} (under base_path) is not a regular file")
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = None  # no /proc: the check before opening stands alone
        if opened and opened.startswith("/") and not opened.endswith(" (deleted)"):
            real = Path(opened)
            if not _within(real, roots):
                raise ConfigError(
                    f"{label}: {file.relative!r} (under base_path) resolves outside the tenant's data roots"
                )
    except BaseException:
        os.close(fd)
        raise
    return fd
