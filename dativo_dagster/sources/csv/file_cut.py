"""A consistent cut of one file, handed to Arrow as UTF-8 whatever the file's encoding.

:func:`plan_cut` decides, before a read, which bytes of a file Arrow may see (a :class:`CutPlan`):

* **Up to the last line end** the file had when the read started (:func:`last_newline_end`), so a
  line still being written is never read half. A last line without a line end is read once the
  file has *settled* (not modified for ``settle_seconds``); until then it is left for a later run.
* **Never into a record whose quoted value is still open** at that line end (a writer half-way
  through a multi-line value). Quote parity, counted at C speed (``bytes.count``), says whether a
  quoted value is open there and where its record starts (the last line end at even parity). A
  young file's open record is left for a later run like a half-written line; once the file has
  settled the quote will never close: the record's first line is quarantined (unterminated quote)
  and the lines after it are read as records.
* **Parity is Arrow's.** Quotes are read in pairs, the first of each opening a field
  (:func:`_pairs_pattern`); a first quote that does not stand at the start of a field (``5'11"``,
  or text after a closing quote) is one Arrow reads as an ordinary character and would put parity
  out of step. The records around it are read with Arrow's own rules (:func:`_records_pattern`),
  handed to Arrow in one piece, and parity starts again after them: a stray quote never defers
  anything, nor hides a value that is open.
* **No record longer than** :data:`MAX_RECORD_BYTES` (or the configured block, if larger): such a
  record is quarantined whole, unread. A quote that opens a value and never closes (no record end
  for more than that many bytes, up to the end of the cut) is an unterminated quote rather than a
  record: its first line is quarantined, and parity starts again after it. So nothing is deferred
  for ever: a young file's open tail waits at most until the file settles or grows past the limit.

:class:`FileCut` then streams the plan's bytes to Arrow, decoded from the file's encoding and
encoded again as UTF-8, each read ending at a record end (a line end at even quote parity), so a
quoted value is never split between Arrow's blocks and a record longer than a block arrives whole
(the reader also sizes the block to the plan's longest record). A quarantined line reaches Arrow
as a placeholder row with one field too many, so it is numbered like every other malformed row;
the reader swaps in the real line (:data:`PLACEHOLDER_MARK`). Bytes that are not valid text pass
as private-use *sentinel* characters, which :data:`SENTINEL_PATTERN` finds in Arrow's columns and
:func:`printable` shows as ``\\xNN``. Encodings other than UTF-8 are decoded whole, line by line,
with :data:`ERRORS`, so no decoder state crosses a line end.
"""

from __future__ import annotations

import codecs
import os
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from dativo_dagster.errors import ExtractError

_SENTINEL_BASE = 0x10FF00
"""Bytes that are not valid text become U+10FF00 + byte (private use) on the way into Arrow: the
reader then only sees valid UTF-8 (its malformed-row handler cannot take anything else), and the
rows holding such a character are rejected with the column named."""
_ESCAPE_SURROGATES = {0xDC00 + b: _SENTINEL_BASE + b for b in range(0x80, 0x100)}
_SHOW_SENTINELS = {_SENTINEL_BASE + b: f"\\x{b:02x}" for b in range(0x100)}

SENTINEL_PATTERN = "[\U0010ff00-\U0010ffff]"
"""Regular expression matching a sentinel character (for Arrow's ``match_substring_regex``)."""
SENTINEL_RE = re.compile(SENTINEL_PATTERN)
""":data:`SENTINEL_PATTERN`, compiled for Python strings."""

ERRORS = "dativo-csv-bytes"
"""Codec error handler: each byte a codec cannot decode becomes its sentinel, and decoding goes on
at the next byte (so a bad lead byte never swallows the line end after it)."""

MAX_RECORD_BYTES = 64 << 20
"""The longest record read (a larger ``block_size_bytes`` raises it): a longer one is quarantined."""
PLAN_CHUNK_BYTES = 1 << 20
"""Bytes :func:`plan_cut` reads at a time."""
HEAD_BYTES = 1 << 16
"""Bytes of a quarantined line kept for its reason and cursor value."""

PLACEHOLDER_MARK = "\U0010fe00"
"""Starts (and ends the number of) a placeholder row standing for a quarantined line."""

_escaped = threading.local()


def _escape_bytes(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    _escaped.count = getattr(_escaped, "count", 0) + 1
    return chr(_SENTINEL_BASE + exc.object[exc.start]), exc.start + 1


codecs.register_error(ERRORS, _escape_bytes)


def _escapes() -> int:
    return int(getattr(_escaped, "count", 0))


def _is_utf8(encoding: str) -> bool:
    # Arrow skips a UTF-8 BOM itself, so utf-8-sig reads as utf-8.
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def decode_text(data: bytes, encoding: str) -> str:
    """``data`` as text, bytes that are not valid in ``encoding`` as sentinels (see :func:`printable`)."""
    return codecs.decode(data, "utf-8" if _is_utf8(encoding) else encoding, ERRORS)


# --------------------------------------------------------------------------- line ends and quote parity


def last_newline_end(fd: int, size: int) -> int:
    """Offset just past the last line end (``\\n`` or ``\\r``) in the first ``size`` bytes; 0 if there is none."""
    position = size
    step = 1 << 16
    while position > 0:
        start = max(0, position - step)
        chunk = os.pread(fd, position - start, start)
        index = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if index >= 0:
            return start + index + 1
        position = start
    return 0


def _last_line_end(data: bytes, lo: int, hi: int) -> int:
    """Offset just past the last line end in ``data[lo:hi]``, or -1.

    A ``\\r`` at ``hi - 1`` does not count if a ``\\n`` follows it or ``data`` ends there (one may follow).
    """
    n = data.rfind(b"\n", lo, hi)
    r = data.rfind(b"\r", max(lo, n + 1), hi)
    if r >= 0 and r + 1 == hi and (hi == len(data) or data[hi] == 0x0A):
        r = data.rfind(b"\r", max(lo, n + 1), r)
    if r >= 0:
        return r + 1
    return n + 1 if n >= 0 else -1


def _first_line_end(data: bytes, lo: int, hi: int) -> int:
    """Offset just past the first line end in ``data[lo:hi]``, or -1 (a final ``\\r`` does not count)."""
    n = data.find(b"\n", lo, hi)
    r = data.find(b"\r", lo, n if n >= 0 else hi)
    if r >= 0:
        if r + 1 < len(data):
            return r + 2 if data[r + 1] == 0x0A else r + 1
        return -1
    return n + 1 if n >= 0 else -1


def _last_record_end(
    data: bytes, quote: bytes, parity: int = 0, hi: int | None = None, total: int | None = None
) -> int:
    """Offset just past the last line end in ``data[:hi]`` at which quote parity is even, or -1.

    Args:
        data: Bytes starting at a point of known parity.
        quote: The quote byte.
        parity: Parity (0 or 1) of the quotes before ``data``.
        hi: Where to stop looking (the end of ``data`` by default).
        total: The number of quotes in ``data``, if already counted.
    """
    cut = _last_line_end(data, 0, len(data) if hi is None else hi)
    if cut < 0:
        return -1
    if data.find(quote, 0, cut) < 0:
        return -1 if parity else cut
    before = data.count(quote, 0, cut) if total is None else total - data.count(quote, cut)
    par = parity ^ (before & 1)
    if not par:
        return cut
    top = cut
    while True:
        q = data.rfind(quote, 0, top)
        if q < 0:
            return -1
        par ^= 1  # the parity of the line ends at or before this quote
        top = q
        if not par:
            end = _last_line_end(data, data.rfind(quote, 0, top) + 1, top)
            if end >= 0:
                return end


def _first_record_end(data: bytes, quote: bytes, parity: int = 0) -> int:
    """Offset just past the first line end in ``data`` at which quote parity is even, or -1."""
    lo, par = 0, parity
    while True:
        q = data.find(quote, lo)
        if not par:
            end = _first_line_end(data, lo, q if q >= 0 else len(data))
            if end >= 0:
                return end
        if q < 0:
            return -1
        par ^= 1
        lo = q + 1


@lru_cache(maxsize=64)
def _records_pattern(quote: bytes, delimiter: bytes) -> re.Pattern[bytes]:
    """Complete records as Arrow reads them: ``match(data).end()`` is where the first open record starts.

    A field is quoted only if it starts with the quote; inside, a doubled quote is a quote and a
    lone one closes it, after which anything up to the delimiter is part of the field. A quote
    anywhere else is an ordinary character. A quoted field that never closes fails its record.
    """
    q, d = re.escape(quote), re.escape(delimiter)
    field = b"(?>" + q + b"(?:[^" + q + b"]|" + q + q + b")*+" + q + b"[^" + d + b"\\r\\n]*+|(?!" + q + b")[^"
    field += d + b"\\r\\n]*+)"
    return re.compile(b"(?:" + field + b"(?:" + d + field + b")*+(?:\\r\\n|\\n|\\r|\\Z))*+")


@lru_cache(maxsize=64)
def _tokens_pattern(quote: bytes, delimiter: bytes) -> re.Pattern[bytes]:
    """Arrow's quoting token by token (faster than :func:`_records_pattern`, which also splits fields).

    Tokens: a run without quotes, a quoted field that closes, or a quote that does not start a
    field (Arrow reads it as an ordinary character). The match stops at a quoted field that does
    not close, so it ends where the data does unless a quoted value is open there.
    """
    q, d = re.escape(quote), re.escape(delimiter)
    opening = b"(?<![^" + d + b"\\r\\n])" + q
    ordinary = b"(?<=[^" + d + b"\\r\\n])" + q
    quoted = opening + b"(?:[^" + q + b"]|" + q + q + b")*+" + q
    return re.compile(b"(?:[^" + q + b"]++|" + quoted + b"|" + ordinary + b")*+")


def _exact_end(data: bytes, quote: bytes, delimiter: bytes, *, final: bool) -> tuple[int, bool]:
    """Where the complete records of ``data`` (from a record start) end, by Arrow's rules.

    Returns:
        That offset, and whether a quoted value is open at the end of ``data`` (then the offset
        is where its record starts). Unless ``final``, ``data`` ends at a line end that is not
        yet known to end a record, so a record end is only taken before it.
    """
    top = _match_end(_tokens_pattern(quote, delimiter), data)
    opened = top < len(data)
    if final and not opened:
        return len(data), False
    # After the last quote before `top` (a closing quote, or an ordinary one), nothing is quoted.
    bottom = data.rfind(quote, 0, top) + 1
    end = _last_line_end(data, bottom, top)
    if end < 0 and bottom > 0:
        # No line end since the last quote: that quote's record began further back, which the
        # field-by-field pattern finds.
        end = _match_end(_records_pattern(quote, delimiter), data)
    return max(end, 0), opened


def _match_end(pattern: re.Pattern[bytes], data: bytes, pos: int = 0, endpos: int | None = None) -> int:
    """Where a match of ``pattern`` (which matches the empty string too) from ``pos`` ends."""
    match = pattern.match(data, pos, len(data) if endpos is None else endpos)
    return pos if match is None else match.end()


def line_is_complete(line: bytes, quote: bytes, delimiter: bytes) -> bool:
    """Whether every quoted field of ``line`` (one line, with its line end) closes on it."""
    return _match_end(_records_pattern(quote, delimiter), line) == len(line)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class SkippedLine:
    """A line Arrow does not see: a placeholder row stands for it, quarantined with a reason."""

    start: int
    stop: int
    kind: str
    """``unterminated`` (a quote that does not close) or ``too_long`` (longer than the record limit)."""
    head: bytes
    """Its first :data:`HEAD_BYTES` bytes."""


@dataclass
class CutPlan:
    """What of a file a read hands Arrow (see :func:`plan_cut`)."""

    size: int
    """The file's size when the read started."""
    end: int
    """Arrow reads the bytes before this (less :attr:`skips`)."""
    skips: list[SkippedLine] = field(default_factory=list)
    whole: list[tuple[int, int]] = field(default_factory=list)
    """Stretches of complete records around a quote Arrow reads as an ordinary character (a stray
    quote in an unquoted field), where quote parity is not Arrow's: each goes to Arrow in one piece,
    and parity starts again after it."""
    longest: int = 0
    """The longest stretch Arrow must see whole, in bytes (its block must hold it)."""
    left: str | None = None
    """Why ``[end, size)`` is left for a later run: ``line`` (the last line has no line end yet) or
    ``quote`` (a quoted value is still open at the last line end); None if nothing is."""

    @classmethod
    def whole_file(cls, end: int) -> CutPlan:
        """A plan that hands Arrow ``[0, end)`` with nothing skipped."""
        return cls(size=end, end=end)


@dataclass
class _Scan:
    last: int
    """The last record end found (a line end at even parity since the scan's start)."""
    odd: bool = False
    stray: int = -1
    """Where a quote that Arrow reads as an ordinary character was found (parity is wrong from there)."""
    overlong: bool = False
    """The record at ``last`` is longer than the limit."""
    overlong_end: int | None = None
    """Where that record ends (None if its quote never closes before the end, or parity went wrong)."""
    longest: int = 0


@lru_cache(maxsize=64)
def _pairs_pattern(quote: bytes, delimiter: bytes) -> re.Pattern[bytes]:
    """Pairs of quotes whose first quote opens a field: where the match stops, parity stops being Arrow's.

    Read in pairs, the first quote of each pair opens a quoted field and the second closes it (a
    doubled quote inside a field is a pair of its own, right after a quote). A first quote that is
    neither at the start of a field nor right after a quote is one Arrow reads as an ordinary
    character (``5'11"``, or text after a closing quote): counting it would put parity out of step.
    """
    q, d = re.escape(quote), re.escape(delimiter)
    return re.compile(b"(?:[^" + q + b"]*+(?<![^" + d + b"\\r\\n" + q + b"])" + q + b"[^" + q + b"]*+" + q + b")*+")


def _pread(fd: int, count: int, offset: int, label: str) -> bytes:
    data = os.pread(fd, count, offset)
    if count and not data:
        raise ExtractError(f"{label}: the file was truncated while it was being read")
    return data


def _scan(fd: int, start: int, stop: int, quote: bytes, delimiter: bytes, limit: int, chunk: int, label: str) -> _Scan:
    """Quote parity from ``start`` (a record start) to ``stop``, tracking the last record end.

    Reads ``chunk`` bytes at a time; a record longer than that spans two reads, so the distance
    from the last record end of one read to the first of a later one measures it. Stops at the
    first quote Arrow reads as an ordinary character (``stray``: from there, parity is not Arrow's),
    and at the end of a record longer than ``limit`` (``overlong``).
    """
    pairs = _pairs_pattern(quote, delimiter)
    parity, last, longest, position, before, overlong = 0, start, 0, start, b"\n", False
    while position < stop:
        data = _pread(fd, min(chunk, stop - position), position, label)
        complete = position + len(data) >= stop
        if data.find(quote) < 0:
            first = -1 if parity else _first_line_end(data, 0, len(data))
            final = -1 if parity else _last_line_end(data, 0, len(data))
        else:
            context = before + data  # the byte before the chunk decides whether its first quote opens a field
            pending = context.find(quote, 1) + 1 if parity else 1
            stray = context.find(quote, _match_end(pairs, context, pending))
            if stray >= 0 and context[stray - 1 : stray] not in (delimiter, b"\r", b"\n", quote):
                if overlong:
                    return _Scan(last, overlong=True, longest=longest)
                end = _last_record_end(data, quote, parity, hi=stray - 1)
                return _Scan(last if end < 0 else position + end, stray=position + stray - 1, longest=longest)
            total = data.count(quote)
            first = _first_record_end(data, quote, parity)
            final = _last_record_end(data, quote, parity, total=total) if first >= 0 else -1
            parity ^= total & 1
        if complete and not parity:
            final = len(data)  # the end of the cut is a record end
            first = len(data) if first < 0 else first
        overlong = overlong or position + (first if first >= 0 else len(data)) - last > limit
        if overlong and first >= 0:
            return _Scan(last, overlong=True, overlong_end=position + first, longest=longest)
        if first >= 0:
            longest = max(longest, position + first - last)
            last = position + final
        position += len(data)
        before = data[-1:]
    return _Scan(last, odd=bool(parity), overlong=overlong, longest=longest)


def _line_stop(fd: int, start: int, stop: int, label: str) -> int:
    """Offset just past the first line end at or after ``start`` (``stop`` if there is none before it)."""
    position = start
    while position < stop:
        data = _pread(fd, min(PLAN_CHUNK_BYTES, stop - position), position, label)
        end = _first_line_end(data, 0, len(data))
        if end >= 0:
            return position + end
        position += len(data)
    return stop


def _complete_records(
    fd: int, start: int, stop: int, past: int, quote: bytes, delimiter: bytes, limit: int, label: str
) -> int | None:
    """The end of the complete records (Arrow's rules) from ``start``, at least past ``past``.

    Returns ``stop`` if every record up to ``stop`` is complete, the start of the record still open
    at ``stop`` if one is, and None if no record end past ``past`` lies within ``limit`` bytes.
    """
    piece = max(past - start, 1 << 21) * 2
    while True:
        data = _pread(fd, min(piece, stop - start), start, label)
        final = start + len(data) >= stop
        if not final:
            data = data[: max(_last_line_end(data, 0, len(data)), 0)]
        end, _ = _exact_end(data, quote, delimiter, final=final)
        if final or start + end > past:
            return start + end
        if len(data) > limit:
            return None
        piece *= 2


def plan_cut(
    fd: int,
    size: int,
    *,
    quote: str,
    delimiter: str,
    settled: bool,
    limit: int = MAX_RECORD_BYTES,
    chunk: int = PLAN_CHUNK_BYTES,
    label: str = "",
) -> CutPlan:
    """Which bytes of an open file a read hands Arrow (see the module docstring).

    Args:
        fd: The open file.
        size: Its size when the read started.
        quote: The quote character.
        delimiter: The field delimiter.
        settled: Whether the file has not been modified for ``settle_seconds``: then a last line
            without a line end is read, and a quoted value still open at the end is quarantined
            instead of left for a later run.
        limit: The longest record read.
        chunk: Bytes to read at a time, at most the parse block (so that every record longer
            than the block spans two reads and is measured in :attr:`CutPlan.longest`; every
            record longer than ``limit`` likewise).
        label: ``object: file`` for messages.
    """
    stop = last_newline_end(fd, size)
    left = None
    if stop < size:
        if settled:
            stop = size
        else:
            left = "line"
    q, d = quote.encode("ascii"), delimiter.encode("ascii")
    plan = CutPlan(size=size, end=stop, left=left)
    start = 0
    while start < stop:
        scan = _scan(fd, start, stop, q, d, limit, min(chunk, limit, PLAN_CHUNK_BYTES), label)
        plan.longest = max(plan.longest, scan.longest)
        opened: int | None = None
        if scan.stray >= 0:
            # A quote Arrow reads as an ordinary character: read the records around it with Arrow's
            # rules, hand them to Arrow in one piece, and count parity afresh after them.
            end = _complete_records(fd, scan.last, stop, scan.stray, q, d, limit, label)
            if end is not None and end > scan.stray:
                plan.whole.append((scan.last, end))
                plan.longest = max(plan.longest, end - scan.last)
                start = end
                continue
            if end is None:
                scan.overlong = True
            else:
                opened = end  # the record open at the end starts before the stray quote
        if scan.overlong and scan.overlong_end is not None:
            # A record longer than the limit whose end is known: quarantined whole, unread.
            head = _pread(fd, min(scan.overlong_end - scan.last, HEAD_BYTES), scan.last, label)
            plan.skips.append(SkippedLine(scan.last, scan.overlong_end, "too_long", head))
            start = scan.overlong_end
            continue
        if scan.overlong:
            # More than `limit` bytes without a record end, to the end of the file: a quote that never
            # closes (or a record too long to be read). Quarantine the first line, read on after it.
            line_stop = _line_stop(fd, scan.last, stop, label)
            length = line_stop - scan.last
            head = _pread(fd, min(length, HEAD_BYTES), scan.last, label)
            if length <= limit and line_is_complete(_pread(fd, length, scan.last, label), q, d):
                plan.whole.append((scan.last, line_stop))
                plan.longest = max(plan.longest, length)
            else:
                plan.skips.append(
                    SkippedLine(scan.last, line_stop, "too_long" if length > limit else "unterminated", head)
                )
            start = line_stop
            continue
        if opened is None:
            if not scan.odd:
                break
            # A quoted value is open at the end: its record starts at the last record end. (Parity is
            # Arrow's here, as every quote since the last stray opened a field; a short tail is
            # checked against Arrow's rules all the same.)
            opened = scan.last
            if stop - scan.last <= PLAN_CHUNK_BYTES:
                exact = _complete_records(fd, scan.last, stop, stop - 1, q, d, limit, label)
                opened = scan.last if exact is None else exact
            if opened >= stop:
                plan.longest = max(plan.longest, stop - scan.last)
                break
        plan.longest = max(plan.longest, opened - scan.last)
        if not settled:
            # A writer is half-way through a quoted value: leave that record for a later run.
            plan.end, plan.left = opened, "quote"
            break
        # The file has settled: the open quote will never close. Quarantine its line, read on after it.
        line_stop = _line_stop(fd, opened, stop, label)
        head = _pread(fd, min(line_stop - opened, HEAD_BYTES), opened, label)
        plan.skips.append(SkippedLine(opened, line_stop, "unterminated", head))
        start = line_stop
    return plan


# --------------------------------------------------------------------------- the stream


class FileCut:
    """The bytes a :class:`CutPlan` hands Arrow, as UTF-8, for ``pyarrow.csv.open_csv``.

    Reads with ``os.pread`` (so several readers can share the descriptor), never past the plan's
    end, in about the size Arrow asks for: memory stays one block (or one record, if larger)
    however large the file. Every read ends at a record end, so a read may return less than was
    asked, and more when one record is longer than the request. Text that is not valid in
    ``encoding`` passes as private-use characters (see ``_SENTINEL_BASE``); ``dirty`` tells
    whether any did.

    Args:
        fd: The open file.
        end: Where the bytes end (the plan's end, if a plan is given).
        encoding: The file's encoding.
        label: ``object: file`` for messages.
        quote: The quote character (record ends are line ends at even quote parity).
        plan: What to skip and where quote parity starts again (default: nothing, from 0 to ``end``).
        columns: The number of fields a row has (a placeholder row has one more).
        delimiter: The field delimiter (for placeholder rows).
        limit: How far to look for a record end before cutting at any line end (quote parity
            cannot be trusted there; a plan never lets it come to that). Default: the record limit.
    """

    def __init__(
        self,
        fd: int,
        end: int,
        encoding: str,
        *,
        label: str,
        quote: str = '"',
        plan: CutPlan | None = None,
        columns: int = 1,
        delimiter: str = ",",
        limit: int | None = None,
    ) -> None:
        self._fd = fd
        self._limit = MAX_RECORD_BYTES if limit is None else limit
        self._label = label
        self._quote = quote.encode("ascii")
        self._utf8 = _is_utf8(encoding)
        self._decode = codecs.lookup(encoding).decode
        self._placeholder_tail = delimiter.encode("ascii") * max(columns, 1) + b"\n"
        plan = plan or CutPlan.whole_file(end)
        self.skipped: list[SkippedLine] = list(plan.skips)
        # Segments, each (start, stop, skipped line after it or -1, whether Arrow gets it in one piece):
        # split at every skipped line and around every stretch read by Arrow's rules.
        marks = sorted(
            [(s.start, s.stop, i, False) for i, s in enumerate(plan.skips)] + [(a, b, -1, True) for a, b in plan.whole]
        )
        self._segments: list[tuple[int, int, int, bool]] = []
        position = 0
        for start, stop, index, whole in marks:
            if whole:
                self._segments += [(position, start, -1, False), (start, stop, -1, True)]
            else:
                self._segments.append((position, start, index, False))
            position = stop
        self._segments.append((position, end, -1, False))
        self._segment = 0
        self._position, self._stop, _, self._whole = self._segments[0]
        self._carry = b""
        self._out = b""
        self._identity = False  # _out is exactly the file's bytes just before _position
        self._pending = b""
        self.closed = False
        self.dirty = False

    def readable(self) -> bool:
        """Arrow checks this."""
        return True

    def seekable(self) -> bool:
        """A forward-only stream."""
        return False

    def close(self) -> None:
        """The descriptor belongs to the caller; only this view closes."""
        self.closed = True

    def tell(self) -> int:
        """Bytes of the file consumed so far."""
        return self._position

    def read(self, size: int = -1) -> bytes | memoryview:
        """UTF-8 up to a record end: about ``size`` bytes (all that is left for a negative size)."""
        want = (1 << 62) if size is None or size < 0 else max(size, 1)
        data: bytes | memoryview
        while True:
            if self._pending:
                data, self._pending = self._pending, b""
                return data
            if self._segment >= len(self._segments):
                return b""
            data = self._next(want)
            if data:
                return data
            index = self._segments[self._segment][2]
            self._segment += 1
            if index >= 0:
                self._pending = f"{PLACEHOLDER_MARK}{index}{PLACEHOLDER_MARK}".encode() + self._placeholder_tail
            if self._segment < len(self._segments):
                self._position, self._stop, _, self._whole = self._segments[self._segment]

    def _fill(self, want: int) -> None:
        while len(self._out) < want and self._position < self._stop:
            count = min(max(want - len(self._out), 1 << 16), self._stop - self._position)
            raw = _pread(self._fd, count, self._position, self._label)
            self._position += len(raw)
            converted = self._convert(raw, final=self._position >= self._stop)
            self._identity = converted is raw and (self._identity or not self._out)
            self._out = converted if not self._out else self._out + converted

    def _next(self, want: int) -> bytes | memoryview:
        """The next piece of the current segment, ending at a record end; empty once it is read."""
        if self._whole:
            want = 1 << 62  # records whose quote parity is not Arrow's: one piece, never cut
        while True:
            self._fill(want)
            out = self._out
            if self._position >= self._stop and len(out) <= want:
                self._out, self._identity = b"", False
                return out
            cut = _last_record_end(out, self._quote, hi=min(want, len(out)))
            if cut <= 0:
                cut = _first_record_end(out, self._quote)  # one record longer than asked for
            if cut <= 0 and len(out) >= self._limit:
                cut = _last_line_end(out, 0, len(out))  # no record end within the limit: any line end
            if cut <= 0:
                want = max(want, len(out)) * 2
                continue
            if self._identity:
                # The bytes after the cut are read again next time: no copy of a whole block.
                self._position -= len(out) - cut
                self._out, self._identity = b"", False
                return memoryview(out)[:cut]
            data, self._out = out[:cut], out[cut:]
            return data

    def _convert(self, raw: bytes, *, final: bool) -> bytes:
        if self._utf8:
            data = self._carry + raw if self._carry else raw
            self._carry = b""
            if data.isascii():
                return data
            try:
                _, consumed = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError:
                # UTF-8 reports only bytes 0x80 and above as invalid, which surrogateescape takes.
                text, consumed = codecs.utf_8_decode(data, "surrogateescape", final)
                self._carry = data[consumed:]
                self.dirty = True
                return text.translate(_ESCAPE_SURROGATES).encode("utf-8")
            self._carry = data[consumed:]
            return data if consumed == len(data) else data[:consumed]
        # Other encodings are decoded whole line by line: no decoder state crosses a line end.
        data = self._carry + raw if self._carry else raw
        if final:
            self._carry = b""
        else:
            cut = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
            data, self._carry = data[:cut], data[cut:]
        if not data:
            return b""
        before = _escapes()
        text, _ = self._decode(data, ERRORS)
        if _escapes() != before:
            self.dirty = True
        return text.encode("utf-8")


def printable(text: str) -> str:
    """Text as a person should see it: invalid bytes written as ``\\xNN``."""
    return text.translate(_SHOW_SENTINELS)
