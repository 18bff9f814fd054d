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
    for encoding in ("utf8", "UTF-8", "latin1", "cp1252", "utf-8-sig", "iso-8859-15"):
        CsvOptions(path="x.csv", encoding=encoding)
    for encoding in ("utf-16", "utf-32", "rot13", "no-such-codec"):
        with pytest.raises(ValidationError):
            CsvOptions(path="x.csv", encoding=encoding)


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
