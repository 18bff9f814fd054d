"""The CSV source's rules, each through the engine into a real Iceberg table.

* confinement: every file a path or glob reaches lies inside the tenant's data roots;
* headers: matched exactly, else trimmed and case-insensitively; ambiguous or missing is CFG001;
* partial last lines: never read half; picked up once complete;
* malformed rows and undecodable bytes: quarantined row by row, with a reason;
* ``file_mtime``: a re-read file replaces the rows it gave before.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from dativo_dagster.cli import main
from dativo_dagster.config.loader import ConfigProblems, load_plan
from dativo_dagster.config.secrets import SecretResolver
from dativo_dagster.engine import ObjectResult, ingest_object
from dativo_dagster.iceberg.catalog import build_catalog
from dativo_dagster.iceberg.writer import IcebergWriter
from dativo_dagster.sources.registry import build_source

CONTRACT = """name: t/items
version: 1
primary_key: [id]
columns:
  - {name: id, type: int64, required: true}
  - {name: name, type: string}
  - {name: amount, type: decimal, precision: 10, scale: 2}
"""
HEADER = "id,name,amount\n"


class CsvProject:
    """A one-object project for tenant ``acme`` (data root ``tenants/acme/data``)."""

    def __init__(self, root: Path, *, path: str = "items.csv", strategy: str = "append", **options: Any) -> None:
        self.root = root
        self.data = root / "tenants/acme/data"
        self.data.mkdir(parents=True, exist_ok=True)
        for folder in ("tenants/acme/jobs", "connectors/sources", "connectors/targets", "connectors/schemas/t"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / "runner.yaml").write_text("version: 1\njobs:\n  - {tenant: acme, job: files}\n")
        (root / "connectors/sources/csv.yaml").write_text("name: csv\ntype: csv\n")
        (root / "connectors/targets/local.yaml").write_text(
            "name: local\ncatalog: {type: sql, uri: 'sqlite:///.dativo/catalog.db'}\nwarehouse: .dativo/warehouse\n"
        )
        self.contract(CONTRACT)
        self.configure(path=path, strategy=strategy, **options)

    def contract(self, text: str) -> None:
        (self.root / "connectors/schemas/t/items.v1.yaml").write_text(text)

    def configure(self, *, path: str, strategy: str = "append", quality: float = 0.5, **options: Any) -> None:
        incremental: dict[str, Any] = {"strategy": strategy}
        if strategy in ("append", "updated", "created"):
            incremental["cursor_field"] = "id"
        job = {
            "tenant": "acme",
            "name": "files",
            "source": {"recipe": "csv"},
            "target": {"recipe": "local"},
            "quality": {"max_rejected_rate": quality},
            "objects": [
                {
                    "name": "items",
                    "contract": {"name": "t/items", "version": 1},
                    "options": {"path": path, **options},
                    "incremental": incremental,
                }
            ],
        }
        (self.root / "tenants/acme/jobs/files.yaml").write_text(yaml.safe_dump(job, sort_keys=False))

    def run(self) -> ObjectResult:
        (job,) = load_plan(self.root, strict=True).jobs
        resolver = SecretResolver()
        writer = IcebergWriter(build_catalog(job.target, resolver, self.root))
        with build_source(job, resolver) as source:
            return ingest_object(job.objects[0], source=source, writer=writer, run_id="test")

    def ok(self) -> ObjectResult:
        result = self.run()
        assert result.error is None, result.error
        assert result.write is not None
        return result

    def _scan(self, table: str) -> list[dict[str, Any]]:
        (job,) = load_plan(self.root, strict=True).jobs
        catalog = build_catalog(job.target, SecretResolver(), self.root)
        return list(catalog.load_table(("acme", table)).scan().to_arrow().to_pylist())

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self._scan("items"), key=lambda r: r["id"])

    def quarantine(self) -> list[dict[str, Any]]:
        return self._scan("items__quarantine")


def settle(path: Path, seconds: int = 3600) -> None:
    """Make ``path`` look last modified ``seconds`` ago (older than the default settle_seconds)."""
    stamp = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def error_of(result: ObjectResult) -> str:
    assert result.error is not None, "expected the run to fail"
    assert result.error.code == "CFG001", result.error
    assert "Traceback" not in str(result.error)
    return str(result.error)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory of another tenant (or the host) holding a CSV file with the right header."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "secret.csv").write_text(HEADER + "666,stolen,1.00\n")
    return folder


# --------------------------------------------------------------------------- confinement


def test_path_with_dotdot_or_absolute_is_refused_at_config_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = CsvProject(tmp_path / "p")
    for spelling in ("../other/data/x.csv", "sub/../../x.csv", "/etc/passwd", "..\\x.csv"):
        project.configure(path=spelling)
        with pytest.raises(ConfigProblems) as info:
            load_plan(project.root, strict=True)
        assert any("objects[0].options.path" in line for line in info.value.problems), info.value.problems
        assert info.value.code == "CFG001"
    assert main(["--project", str(project.root), "validate", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "CFG001" in err and "objects[0].options.path" in err and "Traceback" not in err


def test_symlinked_file_leading_out_is_cfg001_naming_it(tmp_path: Path, outside: Path) -> None:
    project = CsvProject(tmp_path / "p", path="*.csv")
    (project.data / "items.csv").write_text(HEADER + "1,a,1.00\n")
    (project.data / "z_link.csv").symlink_to(outside / "secret.csv")
    message = error_of(project.run())
    assert "'z_link.csv'" in message and "outside the tenant's data roots" in message
    assert str(outside) not in message


def test_symlinked_directory_reached_by_double_star_is_cfg001(tmp_path: Path, outside: Path) -> None:
    project = CsvProject(tmp_path / "p", path="**/*.csv")
    (project.data / "items.csv").write_text(HEADER + "1,a,1.00\n")
    (project.data / "more").mkdir()
    (project.data / "more/escape").symlink_to(outside, target_is_directory=True)
    message = error_of(project.run())
    assert "'more/escape'" in message and "outside the tenant's data roots" in message


def test_dangling_link_is_cfg001(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="*.csv")
    (project.data / "items.csv").write_text(HEADER + "1,a,1.00\n")
    (project.data / "gone.csv").symlink_to(project.data / "never-written.csv")
    message = error_of(project.run())
    assert "'gone.csv'" in message and "dangling" in message
    (project.data / "gone.csv").unlink()
    (project.data / "gone.csv").symlink_to("/nonexistent/elsewhere.csv")
    assert "'gone.csv'" in error_of(project.run())


def test_links_inside_the_data_roots_are_fine_and_loops_end(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="**/*.csv", strategy="full_refresh")
    (project.data / "a").mkdir()
    (project.data / "a/items.csv").write_text(HEADER + "1,a,1.00\n2,b,2.00\n")
    # two loops back to the root: a naive recursive glob would never finish
    (project.data / "a/loop").symlink_to(project.data, target_is_directory=True)
    (project.data / "a/loop2").symlink_to(project.data / "a", target_is_directory=True)
    (project.data / "b.csv").symlink_to(project.data / "a/items.csv")  # same file twice: read once
    project.ok()
    assert [r["id"] for r in project.rows()] == [1, 2]


def test_base_path_outside_the_data_roots_is_refused(tmp_path: Path, outside: Path) -> None:
    project = CsvProject(tmp_path / "p")
    job = project.root / "tenants/acme/jobs/files.yaml"
    job.write_text(job.read_text().replace("recipe: csv", f"recipe: csv\n  connection: {{base_path: {outside}}}"))
    with pytest.raises(ConfigProblems) as info:
        load_plan(project.root, strict=True)
    assert any("base_path" in line and "outside" in line for line in info.value.problems)


# --------------------------------------------------------------------------- headers


def test_header_spelling_is_matched_loosely_with_a_warning(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    (project.data / "items.csv").write_bytes(b"\xef\xbb\xbf ID , Name,AMOUNT,comment\n1,a,1.50,x\n")
    with capture_logs() as logs:
        project.ok()
    assert [(r["id"], r["name"], str(r["amount"])) for r in project.rows()] == [(1, "a", "1.50")]
    respelled = {(e["header"], e["column"]) for e in logs if e["event"] == "csv_header_respelled"}
    assert respelled == {(" ID ", "id"), (" Name", "name"), ("AMOUNT", "amount")}
    (ignored,) = [e for e in logs if e["event"] == "csv_header_columns_ignored"]
    assert ignored["columns"] == ["comment"] and ignored["file"] == "items.csv"


def test_source_name_is_the_header_name_to_match(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    project.contract(
        CONTRACT.replace("{name: name, type: string}", "{name: name, type: string, source_name: Item Name}")
    )
    (project.data / "items.csv").write_text("id,item name,amount\n1,a,1.00\n")
    project.ok()
    assert project.rows()[0]["name"] == "a"
    (project.data / "items.csv").write_text("id,name,amount\n2,b,2.00\n")  # the table's name, not the source's
    assert "'Item Name' missing from the header" in error_of(project.run())


@pytest.mark.parametrize(
    "header, expected",
    [
        ("id,name,name,amount", "'name', 'name'"),
        ("id,name,NAME,amount", "'name', 'NAME'"),
        ("id, Name ,name,amount", "' Name ', 'name'"),
    ],
)
def test_two_header_names_for_one_column_is_cfg001(tmp_path: Path, header: str, expected: str) -> None:
    project = CsvProject(tmp_path / "p")
    (project.data / "items.csv").write_text(header + "\n1,a,b,1.00\n")
    message = error_of(project.run())
    assert expected in message and "items.csv" in message and "'name'" in message


def test_missing_column_is_cfg001_unless_missing_columns_null(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    (project.data / "items.csv").write_text("id,amount\n1,1.00\n")
    message = error_of(project.run())
    assert "'name'" in message and "items.csv" in message
    # YAML `missing_columns: null` loads the nullable column as NULL
    project.configure(path="items.csv", missing_columns=None)
    assert "missing_columns: null" in (project.root / "tenants/acme/jobs/files.yaml").read_text()
    with capture_logs() as logs:
        project.ok()
    assert [e["columns"] for e in logs if e["event"] == "csv_columns_missing_loaded_as_null"] == [["name"]]
    assert project.rows() == [{"id": 1, "name": None, "amount": project.rows()[0]["amount"]}]
    # a required column is never loaded as NULL
    (project.data / "items.csv").write_text("name,amount\na,1.00\n")
    message = error_of(project.run())
    assert "required" in message and "'id'" in message


def test_without_a_header_rows_follow_the_contract_layout(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", header=False, strategy="full_refresh")
    (project.data / "items.csv").write_text("1,a,1.00\n2,b,2.00,extra\n")
    result = project.ok()
    assert [r["id"] for r in project.rows()] == [1]
    assert result.write is not None and result.write.rows_rejected == 1
    (reason,) = [r["_dativo_reason"] for r in project.quarantine()]
    assert reason.startswith("line 2: expected 3 fields, found 4: 2,b,2.00,extra")


# --------------------------------------------------------------------------- partial last lines


def test_partial_last_line_is_left_for_the_next_run(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    data = project.data / "items.csv"
    data.write_text(HEADER + "1,a,1.00\n2,b,2.0")  # the writer is in the middle of row 2
    first = project.ok()
    assert first.write is not None and first.write.rows_written == 1
    assert project.rows()[0]["id"] == 1 and len(project.rows()) == 1
    with data.open("a") as handle:
        handle.write("5\n")  # row 2 is now complete: 2.05, never 2.0
    second = project.ok()
    assert second.write is not None and second.write.rows_written == 1
    assert [str(r["amount"]) for r in project.rows()] == ["1.00", "2.05"]


def test_file_mtime_leaves_an_incomplete_file_for_a_later_run(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="drops/*.csv", strategy="file_mtime")
    drops = project.data / "drops"
    drops.mkdir()
    (drops / "a.csv").write_text(HEADER + "1,a,1.00\n")
    (drops / "b.csv").write_text(HEADER + "2,b,2.00\n3,b,3.0")
    # older than a.csv (only 'pending' brings it back), but younger than settle_seconds: still being written
    older = (drops / "a.csv").stat().st_mtime_ns - 1_000_000_000
    os.utime(drops / "b.csv", ns=(older, older))
    project.ok()
    assert [r["id"] for r in project.rows()] == [1]
    with (drops / "b.csv").open("a") as handle:
        handle.write("0\n")
    os.utime(drops / "b.csv", ns=(older, older))  # a copy that keeps an old mtime
    project.ok()
    assert [(r["id"], str(r["amount"])) for r in project.rows()] == [(1, "1.00"), (2, "2.00"), (3, "3.00")]
    again = project.ok()
    assert again.write is not None and again.write.rows_written == 0


# --------------------------------------------------------------------------- file_mtime re-reads


def test_file_mtime_rewritten_file_replaces_its_rows(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="*.csv", strategy="file_mtime")
    (project.data / "a.csv").write_text(HEADER + "1,a,1.00\n2,a,2.00\n3,a,3.00\n")
    (project.data / "b.csv").write_text(HEADER + "10,b,10.00\n")
    project.ok()
    assert len(project.rows()) == 4
    (project.data / "a.csv").write_text(HEADER + "1,changed,9.00\n4,new,4.00\n")
    stamp = (project.data / "a.csv").stat().st_mtime_ns + 5_000_000_000
    os.utime(project.data / "a.csv", ns=(stamp, stamp))
    project.ok()
    rows = project.rows()
    assert [(r["id"], r["name"], r["_dativo_file"]) for r in rows] == [
        (1, "changed", "a.csv"),
        (4, "new", "a.csv"),
        (10, "b", "b.csv"),
    ]
    # nothing changed: nothing re-read
    assert project.ok().write.rows_written == 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------- malformed rows, bad bytes


def test_malformed_rows_are_quarantined_and_good_rows_load(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", quality=0.9)
    (project.data / "items.csv").write_text(HEADER + "1,a,1.00\n2,too,many,fields\n3,short\n4,d,4.00\n5,last,is,bad\n")
    result = project.ok()
    assert [r["id"] for r in project.rows()] == [1, 4]
    reasons = sorted(r["_dativo_reason"] for r in project.quarantine())
    assert reasons[0].startswith("line 3: expected 3 fields, found 4: 2,too,many,fields")
    assert reasons[1].startswith("line 4: expected 3 fields, found 2: 3,short")
    assert reasons[2].startswith("line 6: expected 3 fields, found 4: 5,last,is,bad")
    assert result.write is not None and result.write.rows_rejected == 3
    # the next run adds a row; the quarantined rows (the last one too) are behind the cursor now
    with (project.data / "items.csv").open("a") as handle:
        handle.write("6,e,6.00\n")
    again = project.ok()
    assert again.write is not None and (again.write.rows_written, again.write.rows_rejected) == (1, 0)
    assert len(project.quarantine()) == 3


def test_unterminated_quote_does_not_swallow_the_rows_after_it(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", quality=0.9)
    data = project.data / "items.csv"
    data.write_text(HEADER + '1,a,1.00\n2,"unterminated,2.00\n3,c,3.00\n' + "x" * 300 + "\n4,d,4.00\n")
    settle(data)  # (while the file is young, an open quote at its end may be a value still being written)
    result = project.ok()
    assert [r["id"] for r in project.rows()] == [1, 3, 4]
    reasons = sorted(r["_dativo_reason"] for r in project.quarantine())
    assert reasons[0].startswith('line 3: expected 3 fields, found 2: 2,"unterminated,2.00')
    # the reason quotes the first 200 characters of the line
    assert reasons[1].startswith("line 5: expected 3 fields, found 1: " + "x" * 200)
    assert "x" * 201 not in reasons[1]
    assert result.write is not None and result.write.rows_rejected == 2
    # the open quote runs on into rows appended later: they still load, once
    with data.open("a") as handle:
        handle.write("5,e,5.00\n6,f,6.00\n")
    settle(data)
    again = project.ok()
    assert again.write is not None and (again.write.rows_written, again.write.rows_rejected) == (2, 0)
    assert [r["id"] for r in project.rows()] == [1, 3, 4, 5, 6]


def test_invalid_utf8_quarantines_only_its_rows(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    (project.data / "items.csv").write_bytes(
        HEADER.encode() + b"1,caf\xc3\xa9,1.00\n2,caf\xe9,2.00\n3,\xff,3.00,x\n4,ok,4.00\n"
    )
    result = project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "café"), (4, "ok")]
    reasons = sorted(r["_dativo_reason"] for r in project.quarantine())
    assert reasons[0].startswith("line 4: expected 3 fields, found 4: 3,\\xff,3.00,x")
    assert reasons[1] == "name: not valid utf8 text ('caf\\\\xe9')"
    assert result.write is not None and result.write.rows_rejected == 2


@pytest.mark.parametrize("encoding", ["latin1", "cp1252"])
def test_single_byte_encodings_still_load(tmp_path: Path, encoding: str) -> None:
    project = CsvProject(tmp_path / "p", encoding=encoding)
    (project.data / "items.csv").write_bytes((HEADER + "1,café,1.00\n2,Ünïcødé,2.00\n").encode(encoding))
    project.ok()
    assert [r["name"] for r in project.rows()] == ["café", "Ünïcødé"]


def test_cp1252_undefined_byte_is_quarantined(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", encoding="cp1252")
    (project.data / "items.csv").write_bytes(HEADER.encode() + b"1,\x80uro,1.00\n2,bad\x81,2.00\n")
    project.ok()
    assert [r["name"] for r in project.rows()] == ["€uro"]
    (row,) = project.quarantine()
    assert row["_dativo_reason"].startswith("name: not valid cp1252 text")


# --------------------------------------------------------------------------- records still being written


def warnings_about(logs: list[dict[str, Any]], file: str) -> list[dict[str, Any]]:
    return [e for e in logs if e.get("log_level") == "warning" and e.get("file") == file]


@pytest.mark.parametrize(
    "head, tail, value",
    [
        ('2,"first line\n', 'second line",2.00\n', "first line\nsecond line"),
        ('2,"say ""hi""\r\n', 'and go",2.00\r\n', 'say "hi"\r\nand go'),  # doubled quotes, CRLF
        ('2,"a\n\nb\n', '",2.00\n', "a\n\nb\n"),  # blank lines inside the value
    ],
)
def test_open_quoted_value_is_left_until_complete(tmp_path: Path, head: str, tail: str, value: str) -> None:
    project = CsvProject(tmp_path / "p")
    data = project.data / "items.csv"
    data.write_bytes((HEADER + "1,a,1.00\n" + head).encode())  # a writer is half-way through a quoted value
    with capture_logs() as logs:
        first = project.ok()
    assert first.write is not None and first.write.rows_written == 1
    assert [r["id"] for r in project.rows()] == [1]
    (left,) = [e for e in warnings_about(logs, "items.csv") if e["event"] == "csv_partial_last_line_left"]
    assert "quoted value" in left["reason"]
    with data.open("ab") as handle:
        handle.write((tail + "3,x,3.00\n").encode())
    second = project.ok()
    assert second.write is not None and (second.write.rows_written, second.write.rows_rejected) == (2, 0)
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "a"), (2, value), (3, "x")]


def test_full_refresh_never_commits_a_half_written_quoted_value(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", strategy="full_refresh", quote_char="'")
    data = project.data / "items.csv"
    data.write_text("id,amount,name\n1,1.00,a\n2,2.00,'first line\n")  # as many fields as the header
    project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "a")]
    data.write_text("id,amount,name\n1,1.00,a\n2,2.00,'first line\nsecond line'\n")
    project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "a"), (2, "first line\nsecond line")]


def test_file_mtime_waits_for_a_file_whose_quoted_value_is_open(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="drops/*.csv", strategy="file_mtime")
    drops = project.data / "drops"
    drops.mkdir()
    (drops / "a.csv").write_text(HEADER + '1,a,1.00\n2,"open\n')
    with capture_logs() as logs:
        project.ok()
    assert project.rows() == []
    assert [e["event"] for e in warnings_about(logs, "drops/a.csv")] == ["csv_file_incomplete_deferred"]
    with (drops / "a.csv").open("a") as handle:
        handle.write('value",2.00\n')
    project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "a"), (2, "open\nvalue")]


def test_stray_quotes_in_unquoted_fields_defer_nothing(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p")
    data = project.data / "items.csv"
    data.write_text(HEADER + '1,5\'11",1.00\n2,b,2.00\n3,x"y"z,3.00\n4,d,4.00\n')
    with capture_logs() as logs:
        result = project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "5'11\""), (2, "b"), (3, 'x"y"z'), (4, "d")]
    assert result.write is not None and result.write.rows_rejected == 0
    assert warnings_about(logs, "items.csv") == []
    # an odd number of stray quotes before it does not hide a value still being written
    with data.open("a") as handle:
        handle.write('5,"open\n')
    project.ok()
    assert [r["id"] for r in project.rows()] == [1, 2, 3, 4]
    with data.open("a") as handle:
        handle.write('value",5.00\n')
    project.ok()
    assert project.rows()[-1]["name"] == "open\nvalue"


def test_settled_file_quarantines_a_quote_that_never_closes(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", quality=0.9, strategy="full_refresh")
    data = project.data / "items.csv"
    data.write_text(HEADER + '1,a,1.00\n2,"never closed,2.00\n3,c,3.00\n')
    settle(data)
    with capture_logs() as logs:
        result = project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, "a"), (3, "c")]
    (row,) = project.quarantine()
    assert row["_dativo_reason"].startswith('line 3: expected 3 fields, found 2: 2,"never closed,2.00')
    assert result.write is not None and result.write.rows_rejected == 1
    assert [e["event"] for e in warnings_about(logs, "items.csv")] == ["csv_lines_quarantined_unread"]
    # the same with as many fields as the header: the reason says what is wrong
    data.write_text(HEADER + '1,a,1.00\n2,b,"2.00\n')
    settle(data)
    project.ok()
    (row,) = project.quarantine()
    assert row["_dativo_reason"] == 'line 3: unterminated quote: 2,b,"2.00'
    assert [r["id"] for r in project.rows()] == [1]


def test_multiline_value_across_a_block_boundary_loads_whole(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", strategy="full_refresh", block_size_bytes=1 << 16)
    value = "\n".join(f"line {i}" for i in range(2000))  # ~16 KiB, placed across the first 64 KiB boundary
    rows = [f"{i},n{i},1.00\n" for i in range(1, 5000)]
    text = HEADER + "".join(rows[:4000]) + f'9000,"{value}",2.00\n' + "".join(rows[4000:])
    (project.data / "items.csv").write_text(text)
    result = project.ok()
    assert result.write is not None and (result.write.rows_written, result.write.rows_rejected) == (5000, 0)
    assert {r["id"]: r["name"] for r in project.rows()}[9000] == value


def test_an_open_quote_far_from_the_end_of_a_young_file_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dativo_dagster.sources.csv import file_cut

    monkeypatch.setattr(file_cut, "MAX_RECORD_BYTES", 1 << 17)  # the longest record: 128 KiB here
    project = CsvProject(tmp_path / "p", quality=0.9, block_size_bytes=1 << 16)
    rows = "".join(f"{i},n{i},1.00\n" for i in range(3, 20003))  # ~300 KiB after the stray quote
    (project.data / "items.csv").write_text(HEADER + '1,a,1.00\n2,"stray,2.00\n' + rows)
    with capture_logs() as logs:
        result = project.ok()
    assert result.write is not None and (result.write.rows_written, result.write.rows_rejected) == (20001, 1)
    (row,) = project.quarantine()
    assert row["_dativo_reason"].startswith('line 3: expected 3 fields, found 2: 2,"stray,2.00')
    (warning,) = warnings_about(logs, "items.csv")
    assert warning["event"] == "csv_lines_quarantined_unread" and warning["unterminated_quote"] == 1


# --------------------------------------------------------------------------- a last line without a line end


@pytest.mark.parametrize("strategy", ["full_refresh", "append"])
def test_last_line_without_a_line_end_loads_once_the_file_settles(tmp_path: Path, strategy: str) -> None:
    project = CsvProject(tmp_path / "p", strategy=strategy)
    data = project.data / "items.csv"
    data.write_text(HEADER + "1,a,1.00\n2,b,2.00")  # complete, but no line end after the last row
    with capture_logs() as logs:
        project.ok()
    assert [r["id"] for r in project.rows()] == [1]
    (left,) = warnings_about(logs, "items.csv")
    assert left["event"] == "csv_partial_last_line_left" and "no line end" in left["reason"]
    settle(data, seconds=61)
    project.ok()
    assert [(r["id"], str(r["amount"])) for r in project.rows()] == [(1, "1.00"), (2, "2.00")]


def test_settle_seconds_zero_reads_the_last_line_at_once(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", strategy="full_refresh", settle_seconds=0)
    (project.data / "items.csv").write_text(HEADER + "1,a,1.00\n2,b,2.00")
    project.ok()
    assert [r["id"] for r in project.rows()] == [1, 2]
    project.configure(path="items.csv", strategy="full_refresh", settle_seconds=3600)
    settle(project.data / "items.csv", seconds=600)
    project.ok()
    assert [r["id"] for r in project.rows()] == [1]


def test_file_mtime_reads_a_settled_file_without_a_final_line_end(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", path="*.csv", strategy="file_mtime")
    (project.data / "a.csv").write_text(HEADER + "1,a,1.00\n2,b,2.00")
    (project.data / "b.csv").write_text(HEADER + "3,c,3.00")
    settle(project.data / "b.csv")
    with capture_logs() as logs:
        project.ok()
    assert [r["id"] for r in project.rows()] == [3]
    assert [e["event"] for e in warnings_about(logs, "a.csv")] == ["csv_file_incomplete_deferred"]
    settle(project.data / "a.csv")
    project.ok()
    assert [r["id"] for r in project.rows()] == [1, 2, 3]
    assert project.ok().write.rows_written == 0  # type: ignore[union-attr]


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["utf_7", "iso2022_jp", "unicode_escape", "raw_unicode_escape", "hz", "utf-16"])
def test_encodings_not_safe_row_by_row_are_refused_at_config_load(tmp_path: Path, encoding: str) -> None:
    project = CsvProject(tmp_path / "p", encoding=encoding)
    with pytest.raises(ConfigProblems) as info:
        load_plan(project.root, strict=True)
    assert info.value.code == "CFG001"
    assert any("objects[0].options.encoding" in line for line in info.value.problems), info.value.problems


@pytest.mark.parametrize("encoding", ["shift_jis", "cp932", "gbk", "gb18030", "big5", "euc_jp", "euc_kr", "cp949"])
def test_multibyte_encodings_quarantine_invalid_sequences_row_by_row(tmp_path: Path, encoding: str) -> None:
    project = CsvProject(tmp_path / "p", encoding=encoding, quality=0.9)
    good = "東京" if encoding not in ("euc_kr", "cp949") else "서울"
    raw = (HEADER + f"1,{good},1.00\n").encode(encoding)
    # a lead byte before a line end (twice) and before a comma: each stays in its own row
    raw += b"2,bad\x81\n3,c,3.00\n4,\x81,4.00\n5,e,5.00\n6,\x81\n7,g,7.00\n"
    (project.data / "items.csv").write_bytes(raw)
    result = project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, good), (3, "c"), (5, "e"), (7, "g")]
    reasons = sorted(r["_dativo_reason"] for r in project.quarantine())
    assert reasons[0].startswith("line 3: expected 3 fields, found 2: 2,bad\\x81")
    assert reasons[1].startswith("line 7: expected 3 fields, found 2: 6,\\x81")
    assert reasons[2].startswith(f"name: not valid {encoding} text ('\\\\x81")
    assert result.write is not None and result.write.rows_rejected == 3


# --------------------------------------------------------------------------- records larger than a block


@pytest.mark.parametrize("quoted", [False, True])
def test_a_field_larger_than_the_block_loads_exactly(tmp_path: Path, quoted: bool) -> None:
    project = CsvProject(tmp_path / "p", strategy="full_refresh", block_size_bytes=1 << 16)
    big = "x" * 300_000 if not quoted else 'y, "z"\n' * 40_000
    shown = big if not quoted else '"' + big.replace('"', '""') + '"'
    data = project.data / "items.csv"
    data.write_text(HEADER + f"1,{shown},1.00\n2,b,2.00\n" + "".join(f"{i},n,1.00\n" for i in range(3, 30000)))
    result = project.ok()
    assert result.write is not None and (result.write.rows_written, result.write.rows_rejected) == (29999, 0)
    rows = {r["id"]: r["name"] for r in project.rows()}
    assert rows[1] == big and rows[2] == "b"


def test_a_large_field_in_latin1_loads_exactly(tmp_path: Path) -> None:
    project = CsvProject(tmp_path / "p", strategy="full_refresh", block_size_bytes=1 << 16, encoding="latin1")
    big = "é" * 200_000  # twice as long once re-encoded as UTF-8
    (project.data / "items.csv").write_bytes((HEADER + f"1,{big},1.00\n2,b,2.00\n").encode("latin1"))
    project.ok()
    assert [(r["id"], r["name"]) for r in project.rows()] == [(1, big), (2, "b")]


def test_a_row_longer_than_the_limit_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dativo_dagster.sources.csv import file_cut

    monkeypatch.setattr(file_cut, "MAX_RECORD_BYTES", 1 << 18)  # 256 KiB here (64 MiB by default)
    project = CsvProject(tmp_path / "p", quality=0.9, block_size_bytes=1 << 16)
    data = project.data / "items.csv"
    data.write_text(HEADER + "1,a,1.00\n2," + "x" * 300_000 + ",2.00\n3,c,3.00\n" + '4,"' + "q\n" * 150_000 + '",4\n')
    settle(data)
    with capture_logs() as logs:
        result = project.ok()
    assert [r["id"] for r in project.rows()] == [1, 3]
    reasons = sorted((r["id"], r["_dativo_reason"]) for r in project.quarantine())
    # each quarantined whole, with its cursor value where the text shows it
    assert reasons[0][0] == "2" and reasons[0][1].startswith(
        "line 3: longer than 262,144 bytes (300,008 bytes), not read: 2,xxx"
    )
    assert reasons[1][0] == "4" and reasons[1][1].startswith(
        'line 5: longer than 262,144 bytes (300,007 bytes), not read: 4,"'
    )
    assert result.write is not None and result.write.rows_rejected == 2
    (warning,) = warnings_about(logs, "items.csv")
    assert warning["longer_than_limit"] == 2
