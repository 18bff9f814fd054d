"""A connector subprocess: private input files, a message stream from stdout, stderr to the run log.

:class:`ConnectorProcess` is what every engine runs a connector with (a Singer tap, an Airbyte
source, ``meltano invoke``)::

    with ConnectorProcess([exe, "--config", "{config}", "--catalog", "{catalog}"],
                          files={"config": config, "catalog": catalog}, label=..., secrets=...) as proc:
        for message in proc.messages():   # parsed JSON objects, one per stdout line
            ...
        proc.finish()                     # waits; a non-zero exit is a coded error

* **Inputs never reach argv.** ``files`` are written as JSON into a private temporary directory
  (mode 0700, each file 0600, readable only by the run's user) and an argv element that is exactly
  ``{name}`` is replaced by that file's path. The directory is deleted when the block ends, however it
  ends. Configs hold secrets, and argv is visible to every user of the machine (``ps``).
* **Environment.** The connector gets a small environment (``PATH``, ``HOME``, locale, ``TMPDIR``, ``TZ``)
  plus what the engine passes, never dativo's whole environment: another tenant's ``${VAR}``
  values live there.
* **Backpressure.** stdout is read only as fast as the caller consumes :meth:`messages`; a connector
  writing faster blocks on its pipe, so memory stays bounded whatever it sends. A line longer than
  ``max_line_bytes`` is PAGE001.
* **stderr** is read by a thread, redacted (:func:`~dativo_dagster.config.secrets.redact_text` with the
  config's secret values) and written to the run log line by line; the last lines are kept to
  classify a failure.
* **Invalid JSON on stdout** is PAGE001: the Singer spec and the Airbyte protocol both make stdout
  messages only, so a line that is not a JSON object means the stream cannot be trusted.
* **Failures.** :meth:`finish` raises, for a non-zero exit, an error classified from the connector's
  last error message (:meth:`note_error`, e.g. an Airbyte TRACE error) and its stderr tail:
  authentication words → AUTH001, a missing or invalid setting → CFG001, anything else → EXT001.
* **Stopping.** Leaving the block before :meth:`finish` (a failed commit, a row limit reached) kills the
  connector's whole process group, so nothing keeps reading the source after dativo stopped.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
import structlog

from dativo_dagster.config.secrets import redact_text
from dativo_dagster.errors import AuthError, ConfigError, DativoError, ExtractError, PaginationError

log = structlog.get_logger("dativo.engines.process")

CHUNK_BYTES = 1 << 20
QUEUE_CHUNKS = 32
SMALL_CHUNK_BYTES = 64 << 10
"""stdout read ahead while dativo is busy (a commit): at most QUEUE_CHUNKS chunks of CHUNK_BYTES."""
MAX_LINE_BYTES = 64 << 20
"""Longest stdout line accepted (one message)."""
PIPE_BYTES = 1 << 20
"""Pipe buffer asked for (Linux): the connector runs ahead of dativo by up to this much."""
STDERR_TAIL_LINES = 40
_F_SETPIPE_SZ = 1031
_PASSED_ENV = (
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)

# Classification of a connector's failure from what it said last. Order matters: a message naming a
# missing setting may mention "password" ("'password' is a required property") and is CFG001.
_CONFIG_WORDS = re.compile(
    r"(required (property|key|field|setting|config)|missing (required )?(key|field|setting|config|propert)"
    r"|is missing|KeyError|config(uration)? (is )?(invalid|error)|invalid config|validation error|ValidationError"
    r"|not a valid|unknown database|does not exist|no such (table|database|stream)|unknown (setting|option)"
    r"|unrecognized arguments|must be (one of|set|provided)|Unknown column)",
    re.I,
)
_AUTH_WORDS = re.compile(
    r"(access denied|authenticat|unauthori[sz]ed|forbidden|permission denied|invalid (api )?(key|token|credential)"
    r"|bad credentials|login failed|password authentication failed|\b401\b|\b403\b|not authorized|expired token"
    r"|invalid_grant)",
    re.I,
)


class ConnectorProcess:
    """One run of a connector executable (a context manager).

    Args:
        argv: The command; an element equal to ``{name}`` becomes the path of ``files[name]`` (so does
            an ``env`` value).
        label: Names the connector in log lines and errors (``tenant/job/object (tap-mysql)``).
        files: JSON documents to pass as files (config, catalog, state).
        secrets: Values to scrub from stderr and error text (the config's secret values).
        env: Extra environment variables for the connector.
        cwd: Working directory (default: the private temporary directory).
        path_prefix: Directories put first on the connector's ``PATH`` (its virtualenv's ``bin``).
        max_line_bytes: Longest stdout line accepted.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        label: str,
        files: Mapping[str, Any] | None = None,
        secrets: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        path_prefix: Sequence[Path] = (),
        max_line_bytes: int = MAX_LINE_BYTES,
    ) -> None:
        self.label = label
        self._argv = list(argv)
        self._files = dict(files or {})
        self._secrets = frozenset(s for s in secrets if s)
        self._env = dict(env or {})
        self._cwd = cwd
        self._path_prefix = list(path_prefix)
        self._max_line = max_line_bytes
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_thread: threading.Thread | None = None
        self._stdout_thread: threading.Thread | None = None
        self._chunks: queue.Queue[bytes | BaseException | None] | None = None
        self._stopping = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._errors: list[str] = []
        self._finished = False
        self.paths: dict[str, Path] = {}
        self.lines_read = 0
        self.bytes_read = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ConnectorProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Write the input files and start the connector.

        Raises:
            ConfigError: CFG001 when the executable cannot be started.
        """
        sweep_orphaned_inputs()
        # The owner's pid is in the name: a run killed with SIGKILL cannot delete its files, the
        # next run that starts a connector does (see sweep_orphaned_inputs).
        self._dir = Path(tempfile.mkdtemp(prefix=f"{INPUT_DIR_PREFIX}{os.getpid()}-"))
        os.chmod(self._dir, 0o700)
        for name, document in self._files.items():
            path = self._dir / f"{name}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(document, default=str))
            self.paths[name] = path
        argv = [str(self.paths[a[1:-1]]) if _placeholder(a) and a[1:-1] in self.paths else a for a in self._argv]
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.setdefault("HOME", str(self._dir))
        env["PATH"] = os.pathsep.join([*map(str, self._path_prefix), os.environ.get("PATH", "/usr/bin:/bin")])
        env["PYTHONUNBUFFERED"] = "1"
        # An environment value that is exactly ``{name}`` is that file's path too (a Meltano catalog).
        env.update(
            {
                k: str(self.paths[v[1:-1]]) if _placeholder(v) and v[1:-1] in self.paths else v
                for k, v in self._env.items()
            }
        )
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=str(self._cwd or self._dir),
                env=env,
                bufsize=PIPE_BYTES,
                start_new_session=True,  # its own process group: kill() stops whatever it spawned
                # Dies with this process (even on SIGKILL) and writes its own files privately.
                preexec_fn=_child_setup,
            )
        except OSError as exc:
            self._cleanup()
            raise ConfigError(f"{self.label}: cannot start {Path(argv[0]).name}: {exc.strerror}") from None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        with contextlib.suppress(OSError):
            import fcntl

            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
        self._stderr_thread = threading.Thread(
            target=self._pump_stderr, args=(self._proc.stderr,), name=f"connector-stderr-{self._proc.pid}", daemon=True
        )
        self._stderr_thread.start()
        log.info("connector_started", connector=self.label, pid=self._proc.pid, command=Path(argv[0]).name)

    def close(self) -> None:
        """Stop the connector and whatever it started, and delete its input files (idempotent)."""
        try:
            if self._proc is not None and (self._proc.poll() is None or _group_alive(self._proc.pid)):
                self.kill()
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        self._stopping.set()
        if self._stdout_thread is not None:
            self._stdout_thread.join(timeout=5)
        if self._proc is not None:
            for stream in (self._proc.stdout,):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def kill(self) -> None:
        """Stop the connector and everything it started (SIGTERM, then SIGKILL after 5 s).

        The whole process group is signalled even when its leader already exited: a wrapper such
        as ``meltano invoke`` may be gone while the tap it started still runs.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            log.warning("connector_stopped", connector=self.label, pid=proc.pid)
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                return  # nothing of the group is left
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(proc.pid):
                return

    # ------------------------------------------------------------------ stdout

    def lines(self) -> Iterator[bytes]:
        """stdout, one line at a time (without the line end; empty lines skipped).

        A thread reads stdout in chunks into a queue of at most ``QUEUE_CHUNKS`` chunks: the connector
        keeps running while dativo commits a checkpoint, and memory stays bounded (the thread waits,
        and the connector blocks on its pipe, once the queue is full).

        Raises:
            PaginationError: PAGE001 for a line longer than ``max_line_bytes``.
        """
        chunks = self._start_pump()
        limit = self._max_line
        pending = b""
        while True:
            chunk = chunks.get()
            if chunk is None:
                break
            if isinstance(chunk, BaseException):
                raise ExtractError(f"{self.label}: reading the connector's output failed: {chunk}") from chunk
            parts = chunk.split(b"\n")
            if pending:
                parts[0] = pending + parts[0]
            pending = parts.pop()
            if len(pending) > limit:
                raise PaginationError(
                    f"{self.label}: the connector wrote a line longer than {limit >> 20} MiB on stdout",
                    hint="a single message this large is not supported",
                )
            self.lines_read += len(parts)
            for line in parts:
                if line:
                    yield line
        if pending:
            self.lines_read += 1
            yield pending

    def _start_pump(self) -> queue.Queue[bytes | BaseException | None]:
        proc = self._require()
        assert proc.stdout is not None
        if self._chunks is None:
            self._chunks = queue.Queue(maxsize=QUEUE_CHUNKS)
            self._stdout_thread = threading.Thread(
                target=self._pump_stdout,
                args=(proc.stdout, self._chunks),
                name=f"connector-stdout-{proc.pid}",
                daemon=True,
            )
            self._stdout_thread.start()
        return self._chunks

    def _pump_stdout(self, stream: IO[bytes], chunks: queue.Queue[bytes | BaseException | None]) -> None:
        """Copy stdout into the queue chunk by chunk (runs in a thread; stops when the process is closed)."""
        read = getattr(stream, "read1", stream.read)
        item: bytes | BaseException | None
        try:
            while not self._stopping.is_set():
                item = read(CHUNK_BYTES)
                if not item:
                    break
                self.bytes_read += len(item)
                if not self._put(chunks, item):
                    return
                if len(item) < SMALL_CHUNK_BYTES:
                    # A connector writes a line at a time: waiting a moment lets the pipe fill, so the
                    # next read takes many lines at once (a thread switch per line cost more CPU than
                    # parsing it). 5 ms is nothing next to a checkpoint interval.
                    time.sleep(0.005)
            item = None
        except (OSError, ValueError) as exc:
            item = None if self._stopping.is_set() else exc
        self._put(chunks, item)

    def _put(self, chunks: queue.Queue[bytes | BaseException | None], item: bytes | BaseException | None) -> bool:
        while not self._stopping.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def messages(self) -> Iterator[dict[str, Any]]:
        """stdout as parsed JSON objects, one per line, read as the caller consumes them.

        Raises:
            PaginationError: PAGE001 for a line that is not a JSON object.
        """
        loads = orjson.loads
        for line in self.lines():
            try:
                # A number of more digits than a float holds (a wide DECIMAL, a 20-digit id) is read
                # exactly, as a Decimal or an int; every other line takes orjson's fast path.
                message = _exact_loads(line) if _LONG_NUMBER.search(line) else loads(line)
            except (orjson.JSONDecodeError, ValueError):
                if not line.strip():
                    continue
                raise self.invalid_line(line) from None
            if not isinstance(message, dict):
                raise self.invalid_line(line)
            yield message

    def document(self, max_bytes: int = 256 << 20) -> Any:
        """stdout as one JSON document (a catalog, which connectors may pretty-print over many lines).

        Raises:
            PaginationError: PAGE001 when it is not JSON, or longer than ``max_bytes``.
        """
        proc = self._require()
        assert proc.stdout is not None
        data = proc.stdout.read(max_bytes + 1)
        self.bytes_read += len(data)
        if len(data) > max_bytes:
            raise PaginationError(f"{self.label}: the connector's output is larger than {max_bytes >> 20} MiB")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            first = data.strip().splitlines()[0] if data.strip() else b""
            raise self.invalid_line(first) from None

    def invalid_line(self, line: bytes) -> DativoError:
        """PAGE001 for a stdout line that is not a message (stops the connector first).

        A connector that crashed may have printed its error to stdout: if it already exited
        non-zero, its own failure is reported instead.
        """
        proc = self._require()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        if proc.returncode not in (0, None) and proc.returncode > 0:
            self._join_stderr()
            return self._failure(proc.returncode, extra=line.decode("utf-8", "replace"))
        shown = redact_text(line[:200].decode("utf-8", "replace"), self._secrets)
        return PaginationError(
            f"{self.label}: the connector wrote a line that is not a JSON message on stdout (line {self.lines_read}): "
            f"{shown!r}",
            hint="connectors must write only protocol messages to stdout; logs belong on stderr",
        )

    # ------------------------------------------------------------------ errors and exit

    def note_error(self, text: str) -> None:
        """Remember an error message the connector sent (a TRACE error, a CRITICAL log line) for :meth:`finish`."""
        self._errors.append(redact_text(text, self._secrets))

    def finish(self, timeout: float = 120.0) -> None:
        """Wait for the connector to exit; raise a coded error for a non-zero exit.

        Raises:
            AuthError: AUTH001 when its last words are about credentials.
            ConfigError: CFG001 when they name a missing or invalid setting.
            ExtractError: EXT001 otherwise (transient: a dropped connection, a crash).
        """
        proc = self._require()
        if self._finished:
            return
        self._finished = True
        self._stopping.set()
        if proc.stdout is not None:
            # Whatever it still writes is not read: the caller has all the messages it wanted.
            with contextlib.suppress(OSError):
                proc.stdout.close()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ExtractError(
                f"{self.label}: the connector did not exit within {timeout:.0f}s of closing stdout"
            ) from None
        self._join_stderr()
        log.info("connector_exited", connector=self.label, pid=proc.pid, exit_code=code, lines=self.lines_read)
        if code != 0:
            raise self._failure(code)
        if self._errors:
            # Exit 0 after reporting an error (some Airbyte sources do): the error stands.
            raise self._failure(code)

    @property
    def stderr_tail(self) -> list[str]:
        """The connector's last stderr lines (redacted)."""
        return list(self._tail)

    def _failure(self, code: int, extra: str = "") -> DativoError:
        said = [*self._errors, extra] if extra else list(self._errors)
        evidence = "\n".join([*said, *self._tail])
        last = next((line for line in reversed(said) if line.strip()), "") or _last_words(list(self._tail))
        last = redact_text(last, self._secrets)[:500]
        how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        if code == 0:
            how = "reported an error"
        message = f"{self.label}: the connector {how}: {last or 'no error message'}"
        hint = "see the run log for the connector's stderr"
        if _CONFIG_WORDS.search(evidence):
            return ConfigError(message, hint="check the recipe's config and the job's connection settings")
        if _AUTH_WORDS.search(evidence):
            return AuthError(message, hint="check the connector's credentials")
        return ExtractError(message, hint=hint)

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("the connector process was not started")
        return self._proc

    def _join_stderr(self) -> None:
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=10)

    def _pump_stderr(self, stream: IO[bytes]) -> None:
        """Copy stderr into the run log, redacted, keeping the tail (runs in a thread)."""
        try:
            while True:
                raw = stream.readline(64 << 10)
                if not raw:
                    return
                text = redact_text(raw.decode("utf-8", "replace").rstrip("\r\n"), self._secrets)
                if not text.strip():
                    continue
                self._tail.append(text[:2000])
                emit = {40: log.error, 30: log.warning}.get(_level(text), log.info)
                emit("connector_stderr", connector=self.label, line=text[:2000])
        except (OSError, ValueError):
            return  # the pipe was closed while stopping the connector
        finally:
            with contextlib.suppress(OSError):
                stream.close()


def _placeholder(arg: str) -> bool:
    return len(arg) > 2 and arg.startswith("{") and arg.endswith("}")


_LEVELS = (("CRITICAL", 40), ("FATAL", 40), ("ERROR", 40), ("Traceback", 40), ("WARN", 30))


def _level(line: str) -> int:
    head = line[:80]
    for word, level in _LEVELS:
        if word in head:
            return level
    return 20


def _last_words(tail: list[str]) -> str:
    """The most telling stderr line: the last CRITICAL/ERROR line or exception, else the last line."""
    for line in reversed(tail):
        if re.search(r"(CRITICAL|FATAL|ERROR|Error:|Exception:|error:)", line):
            return line
    return tail[-1] if tail else ""


def dumps(document: Any) -> str:
    """JSON text of a connector document (config, catalog, state) as the engines log or compare it."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)


INPUT_DIR_PREFIX = "dativo-connector-"
"""Temporary directories holding a connector's config, catalog and state: ``<prefix><owner pid>-<random>``."""


def _child_setup() -> None:
    """In the connector's process, before exec: die when dativo dies, create private files."""
    os.umask(0o077)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the sweep and close() still clean up
        return


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphaned_inputs(temp_dir: Path | None = None) -> list[Path]:
    """Delete connector input directories whose owning dativo process is gone (killed with SIGKILL).

    Returns:
        The directories removed.
    """
    import shutil

    base = Path(temp_dir or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(base.glob(f"{INPUT_DIR_PREFIX}*"))
    except OSError:
        return removed
    for directory in candidates:
        owner = directory.name[len(INPUT_DIR_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
            continue  # its owner still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # another user's process
        try:
            if directory.stat().st_uid != os.getuid():
                continue
            shutil.rmtree(directory)
            removed.append(directory)
        except OSError as exc:
            log.warning("connector_inputs_not_removed", directory=directory.name, reason=str(exc))
    return removed


_LONG_NUMBER = re.compile(rb"[:\[,]\s*-?[0-9][0-9.eE+-]{15,}")
"""A JSON number token of 16 characters or more: a float may not hold it exactly (a match inside a
string only costs the exact, slower parse)."""


def _exact_loads(line: bytes) -> Any:
    """``line`` parsed with every number exact: fractions as Decimal, integers as int."""
    import decimal
    import json

    return json.loads(line, parse_float=decimal.Decimal)
