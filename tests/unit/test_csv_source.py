"""The CSV source's pure parts: option checks, header matching, file cursors, the file cut, globbing."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from pydantic import ValidationError

from dativo_dagster.errors import ConfigError
from dativo_dagster.sources.csv import (
    CsvOptions,
    _FileCut,
    _last_newline_end,
    _Matcher,
    file_cursor,
    files_after,
    match_header,
)
from dativo_dagster.sources.csv.file_cut import (
    PLACEHOLDER_MARK,
    SENTINEL_RE,
    CutPlan,
    FileCut,
    decode_text,
    plan_cut,
)
from dativo_dagster.sources.csv.malformed import split_fields
from dativo_dagster.sources.csv.options import MULTIBYTE_ASCII_FROM


@pytest.mark.parametrize(
    "path",
    ["../x.csv", "a/../../x.csv", "a/..", "/etc/passwd", "\\\\host\\share\\x.csv", "C:/data/x.csv", "~/x.csv", " "],
)
def test_path_must_be_relative_without_dotdot(path: str) -> None:
    with pytest.raises(ValidationError) as info:
        CsvOptions(path=path)
    assert info.value.errors()[0]["loc"] == ("path",)


@pytest.mark.parametrize("path", ["orders.csv", "drops/*.csv", "**/*.csv", "a..b.csv", "./x/[ab]?.csv"])
def test_relative_paths_and_globs_are_accepted(path: str) -> None:
    assert CsvOptions(path=path).path == path


def test_encoding_must_be_known_and_ascii_compatible() -> None:
    for encoding in ("utf8", "UTF-8", "latin1", "cp1252", "utf-8-sig", "iso-8859-15", "ascii", "cp437", "mac_roman"):
        CsvOptions(path="x.csv", encoding=encoding)
    for encoding in ("koi8_r", "cp1251", "gbk", "gb18030", "big5", "shift_jis", "cp932", "euc_jp", "euc_kr", "cp949"):
        CsvOptions(path="x.csv", encoding=encoding)
    for encoding in ("utf-16", "utf-32", "rot13", "no-such-codec"):
        with pytest.raises(ValidationError):
            CsvOptions(path="x.csv", encoding=encoding)


@pytest.mark.parametrize(
    "encoding",
    [
        "utf_7",  # '+' starts base64
        "iso2022_jp",  # shift sequences: a byte's meaning depends on what came before
        "iso2022_kr",
        "hz",
        "unicode_escape",  # rewrites backslash sequences
        "raw_unicode_escape",
        "punycode",
        "idna",
        "rot13",
        "base64",
        "hex",
        "zlib",
        "bz2",
        "uu",
        "quopri",
        "utf-16-le",
        "utf-32-be",
        "cp037",  # EBCDIC: bytes below 0x80 are not ASCII
        "cp864",  # maps '%' elsewhere
    ],
)
def test_encodings_not_safe_row_by_row_are_refused(encoding: str) -> None:
    with pytest.raises(ValidationError) as info:
        CsvOptions(path="x.csv", encoding=encoding)
    assert info.value.errors()[0]["loc"] == ("encoding",)
    assert "row by row" in str(info.value) or "unknown encoding" in str(info.value)


def test_multibyte_table_and_row_by_row_decoding() -> None:
    """Every accepted multibyte encoding: ASCII bytes below its bound never sit inside a character,
    and an invalid sequence before a line end (or anywhere) never joins two lines or raises."""
    chars = [chr(c) for c in range(0x80, 0x10000) if not 0xD800 <= c < 0xE000]
    data = b"".join(bytes([a, b]) + b"\n" for a in range(0x80, 0x100) for b in range(0x100))
    for encoding, lowest in MULTIBYTE_ASCII_FROM.items():
        inside = {b for ch in chars for b in _encoded(ch, encoding) if b < 0x80}
        assert min(inside, default=0x80) >= lowest, encoding
        text = decode_text(data, encoding)
        assert text.count("\n") == data.count(b"\n"), encoding
        assert "\n".join(decode_text(line, encoding) for line in data.split(b"\n")) == text, encoding
        assert text.count("\r") == data.count(b"\r"), encoding
        assert len(SENTINEL_RE.findall(text)) > 0, encoding


def _encoded(ch: str, encoding: str) -> bytes:
    try:
        data = ch.encode(encoding)
    except UnicodeEncodeError:
        return b""
    return data if len(data) > 1 else b""


def test_quote_char_must_not_be_part_of_a_multibyte_character() -> None:
    CsvOptions(path="x.csv", encoding="shift_jis", quote_char="'")
    CsvOptions(path="x.csv", encoding="euc_jp", quote_char="|")  # EUC never uses ASCII bytes inside a character
    with pytest.raises(ValidationError) as info:
        CsvOptions(path="x.csv", encoding="shift_jis", quote_char="|")
    assert "multibyte" in str(info.value)


def test_settle_seconds_default_and_bounds() -> None:
    assert CsvOptions(path="x.csv").settle_seconds == 60
    assert CsvOptions(path="x.csv", settle_seconds=0).settle_seconds == 0
    with pytest.raises(ValidationError):
        CsvOptions(path="x.csv", settle_seconds=-1)


def test_missing_columns_null_from_yaml_and_separators() -> None:
    assert CsvOptions(path="x.csv").missing_columns == "error"
    assert CsvOptions.model_validate({"path": "x.csv", "missing_columns": None}).missing_columns == "null"
    with pytest.raises(ValidationError):
        CsvOptions(path="x.csv", missing_columns="drop")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        CsvOptions(path="x.csv", delimiter='"')
    with pytest.raises(ValidationError):
        CsvOptions(path="x.csv", delimiter="\n")


def test_header_matches_exactly_then_loosely() -> None:
    match = match_header(["\ufeff ID ", "name", "Amount", "note"], ["id", "name", "amount"], where="o: f.csv")
    assert match.columns == {"id": "\ufeff ID ", "name": "name", "amount": "Amount"}
    assert match.respelled == [("\ufeff ID ", "id"), ("Amount", "amount")]
    assert match.ignored == ["note"] and match.missing == []
    # a header name spelled exactly like another contract column belongs to that column
    both = match_header(["Email", "email"], ["Email", "email"], where="o: f.csv")
    assert both.columns == {"Email": "Email", "email": "email"} and not both.respelled


@pytest.mark.parametrize(
    "header, wanted, expected",
    [
        (["id", "id"], ["id"], "'id', 'id'"),
        (["id", "ID"], ["id"], "'id', 'ID'"),
        (["Id ", " iD"], ["id"], "'Id ', ' iD'"),
        (["EMAIL"], ["Email", "email"], "'EMAIL' matches contract columns 'Email', 'email'"),
    ],
)
def test_ambiguous_headers_are_cfg001(header: list[str], wanted: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        match_header(header, wanted, where="acme/job/obj: data/f.csv")
    assert expected in info.value.message and "data/f.csv" in info.value.message


def test_missing_columns_are_reported() -> None:
    assert match_header(["id"], ["id", "name"], where="w").missing == ["name"]


def test_file_cursor_keeps_pending_files_and_sizes() -> None:
    cursor = file_cursor([(10, "a.csv"), (20, "b.csv")], None, sizes={"a.csv": 5, "b.csv": 7}, pending=["c.csv"])
    assert cursor == {"mtime_ns": 20, "paths": ["b.csv"], "sizes": {"b.csv": 7}, "pending": ["c.csv"]}
    listed = [(10, "a.csv"), (20, "b.csv"), (5, "c.csv")]
    # a pending file is read again whatever its mtime; a file at the cursor's mtime that grew is too
    assert files_after(listed, cursor, sizes={"a.csv": 5, "b.csv": 7, "c.csv": 3}) == [(5, "c.csv")]
    assert files_after(listed, cursor, sizes={"a.csv": 5, "b.csv": 9, "c.csv": 3}) == [(20, "b.csv"), (5, "c.csv")]
    # reading the pending file (older than the cursor) clears it and keeps the cursor's mtime
    after = file_cursor([(5, "c.csv")], cursor, sizes={"c.csv": 3})
    assert after == {"mtime_ns": 20, "paths": ["b.csv"], "sizes": {"b.csv": 7}}
    # nothing read: only the pending list can change
    assert file_cursor([], after) is after
    assert file_cursor([], after, pending=["d.csv"]) == {**after, "pending": ["d.csv"]}
    assert file_cursor([], None, pending=["d.csv"]) is None


def _fd(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


def test_last_newline_end(tmp_path: Path) -> None:
    for data, end in [
        (b"", 0),
        (b"abc", 0),
        (b"a\nb", 2),
        (b"a\nb\n", 4),
        (b"a\r\nb\r", 5),
        (b"x" * 70000 + b"\nyy", 70001),
    ]:
        fd = _fd(tmp_path, data)
        try:
            assert _last_newline_end(fd, len(data)) == end, data[:10]
        finally:
            os.close(fd)


def test_file_cut_stops_at_the_cut_and_escapes_bad_bytes(tmp_path: Path) -> None:
    fd = _fd(
        tmp_path, "id,name\n1,café\n2,x\xe9y\n3,tail".encode("utf-8", "surrogateescape").replace(b"\xc3\xa9y", b"\xe9y")
    )
    try:
        cut = _FileCut(fd, 20, "utf8", label="f.csv")
        data = b"".join(iter(lambda: cut.read(3), b""))
        assert data.decode("utf-8") == "id,name\n1,café\n2,x\U0010ffe9"
        assert cut.dirty
    finally:
        os.close(fd)


def test_file_cut_transcodes_and_arrow_reads_it(tmp_path: Path) -> None:
    raw = "id,name\n1,café\n2,naïve\n".encode("cp1252") + b"3,bad\x81\n"
    fd = _fd(tmp_path, raw)
    try:
        cut = _FileCut(fd, len(raw), "cp1252", label="f.csv")
        table = pacsv.read_csv(cut, convert_options=pacsv.ConvertOptions(column_types={"name": pa.string()}))
        assert table.column("name").to_pylist() == ["café", "naïve", "bad\U0010ff81"]
        assert cut.dirty
    finally:
        os.close(fd)


def test_matcher_follows_links_inside_once_and_refuses_links_out(tmp_path: Path) -> None:
    base = tmp_path / "data"
    (base / "a/b").mkdir(parents=True)
    (base / "a/b/x.csv").write_text("x")
    (base / "a/.hidden.csv").write_text("x")
    (base / "a/loop").symlink_to(base, target_is_directory=True)
    (base / "a/b/loop").symlink_to(base / "a", target_is_directory=True)
    matcher = _Matcher(base, (base,), label="o", pattern="**/*.csv", project_dir=tmp_path)
    assert matcher.expand() == ["a/b/x.csv"]
    assert _Matcher(base, (base,), label="o", pattern="a/.*.csv", project_dir=tmp_path).expand() == ["a/.hidden.csv"]
    assert _Matcher(base, (base,), label="o", pattern="**/x.csv", project_dir=tmp_path).expand() == ["a/b/x.csv"]
    (tmp_path / "out").mkdir()
    (base / "a/b/out").symlink_to(tmp_path / "out", target_is_directory=True)
    with pytest.raises(ConfigError) as info:
        _Matcher(base, (base,), label="o", pattern="**/*.csv", project_dir=tmp_path).expand()
    assert "'a/b/out'" in info.value.message
    # a pattern that never lists the linked directory does not touch it
    assert _Matcher(base, (base,), label="o", pattern="a/b/*.csv", project_dir=tmp_path).expand() == ["a/b/x.csv"]


# --------------------------------------------------------------------------- the cut: open quotes, long records


def _plan(tmp_path: Path, data: bytes, *, settled: bool = False, limit: int = 1 << 20, chunk: int = 1 << 16) -> CutPlan:
    fd = _fd(tmp_path, data)
    try:
        return plan_cut(fd, len(data), quote='"', delimiter=",", settled=settled, limit=limit, chunk=chunk)
    finally:
        os.close(fd)


def test_plan_leaves_a_record_whose_quoted_value_is_open(tmp_path: Path) -> None:
    head = b"id,s\n1,a\n"
    for tail in (b'2,"first line\n', b'2,"a ""b""\r\nc\r\n', b'2,x,"\n\n', b'2,"a"\n3,"b\n'):
        plan = _plan(tmp_path, head + tail)
        opened = len(head) + (tail.index(b"3,") if tail.startswith(b'2,"a"') else 0)
        assert (plan.end, plan.left, plan.skips) == (opened, "quote", []), tail
    # complete values, quotes doubled or not: nothing is left
    for data in (b'id,s\n1,"a\nb"\n', b'id,s\n1,"a""\n"""\n', b"id,s\n1,a\n"):
        plan = _plan(tmp_path, data)
        assert (plan.end, plan.left) == (len(data), None), data


def test_plan_reads_past_stray_quotes_with_arrows_rules(tmp_path: Path) -> None:
    data = b'id,s\n1,5\'11"\n2,b\n3,x"y\n4,"multi\nline"\n'
    plan = _plan(tmp_path, data)
    assert (plan.end, plan.left, plan.skips) == (len(data), None, [])
    assert plan.whole and plan.whole[0][0] == data.index(b"1,")
    # an odd number of stray quotes before it does not hide an open value
    plan = _plan(tmp_path, data + b'5,"open\n')
    assert (plan.end, plan.left) == (len(data), "quote")


def test_plan_settles_the_last_line_and_open_quotes(tmp_path: Path) -> None:
    data = b"id,s\n1,a\n2,b"
    assert (_plan(tmp_path, data).end, _plan(tmp_path, data).left) == (len(data) - 3, "line")
    assert (_plan(tmp_path, data, settled=True).end, _plan(tmp_path, data, settled=True).left) == (len(data), None)
    # settled: an open quote will never close; its line is quarantined and the rest read
    data = b'id,s\n1,a\n2,"never\n3,c\n'
    plan = _plan(tmp_path, data, settled=True)
    assert (plan.end, plan.left) == (len(data), None)
    (skip,) = plan.skips
    assert (skip.kind, data[skip.start : skip.stop]) == ("unterminated", b'2,"never\n')


def test_plan_quarantines_records_longer_than_the_limit(tmp_path: Path) -> None:
    long_line = b"2," + b"x" * 3000 + b"\n"
    long_record = b'3,"' + b"y\n" * 2000 + b'"\n'
    data = b"id,s\n1,a\n" + long_line + long_record + b"4,d\n"
    plan = _plan(tmp_path, data, limit=2048)
    assert [(s.kind, data[s.start : s.stop]) for s in plan.skips] == [
        ("too_long", long_line),
        ("too_long", long_record),
    ]
    assert plan.end == len(data) and plan.longest < 2048
    # without a limit in the way, a record longer than the block (here 1 KiB) is measured for Arrow's block
    assert _plan(tmp_path, data, chunk=1024).longest == len(long_record)


def test_file_cut_ends_every_read_at_a_record_end(tmp_path: Path) -> None:
    rows = [
        b'%d,"v\n%d ""q""",z\n' % (i, i) if i % 7 == 0 else b"%d,5'11\",z\n" % i if i % 11 == 0 else b"%d,v,z\n" % i
        for i in range(3000)
    ]
    data = b"a,b,c\n" + b"".join(rows)
    fd = _fd(tmp_path, data)
    try:
        plan = plan_cut(fd, len(data), quote='"', delimiter=",", settled=True)
        for size in (1, 100, 1 << 16):
            cut = FileCut(fd, plan.end, "utf8", label="f.csv", plan=plan, columns=3)
            pieces = [bytes(p) for p in iter(lambda: cut.read(size), b"")]  # noqa: B023
            assert b"".join(pieces) == data
            # every piece ends a record, so Arrow reads the same rows whatever its blocks
            assert all(p.endswith(b"\n") for p in pieces)
            read = pacsv.read_csv(
                FileCut(fd, plan.end, "utf8", label="f.csv", plan=plan, columns=3),
                read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
                convert_options=pacsv.ConvertOptions(column_types={"b": pa.string()}),
            )
            assert read.column("b").to_pylist() == pacsv.read_csv(pa.BufferReader(data)).column("b").to_pylist()
    finally:
        os.close(fd)


def test_file_cut_puts_a_placeholder_where_a_line_is_skipped(tmp_path: Path) -> None:
    data = b'id,s\n1,a\n2,"never\n3,c\n'
    fd = _fd(tmp_path, data)
    try:
        plan = plan_cut(fd, len(data), quote='"', delimiter=",", settled=True)
        out = b"".join(bytes(p) for p in iter(FileCut(fd, plan.end, "utf8", label="f", plan=plan, columns=2).read, b""))
        assert out == b"id,s\n1,a\n" + f"{PLACEHOLDER_MARK}0{PLACEHOLDER_MARK}".encode() + b",,\n3,c\n"
    finally:
        os.close(fd)


def test_arrow_takes_a_read_longer_than_it_asked_for() -> None:
    """FileCut hands a record longer than Arrow's block in one read; Arrow must accept it."""

    class Chunks:
        closed = False

        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            return self.chunks.pop(0) if self.chunks else b""

        def close(self) -> None:
            self.closed = True

    big = b'1,"' + b"x\n" * 100_000 + b'"\n'
    reader = pacsv.open_csv(
        Chunks([b"a,b\n", big, b"2,y\n"]),  # type: ignore[arg-type]
        read_options=pacsv.ReadOptions(block_size=1 << 16, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
    )
    table = reader.read_all()
    assert table.column("a").to_pylist() == [1, 2] and len(table.column("b")[0].as_py()) == 200_000


def test_split_fields_follows_arrows_quoting() -> None:
    assert split_fields('2,"unterminated,2.00', ",", '"') == ["2", "unterminated,2.00"]
    assert split_fields('1,"a""b"c,5\'11",,"x' + "y" * 200_000, ",", '"') == [
        "1",
        'a"bc',
        "5'11\"",
        "",
        "x" + "y" * 200_000,
    ]
