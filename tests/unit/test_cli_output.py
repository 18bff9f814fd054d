"""CLI output: user text is printed literally (never read as console markup), bugs say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from dativo_dagster.cli import main
from tests.conftest import copy_demo_project


def test_markup_like_text_in_config_is_printed_literally(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_demo_project(tmp_path / "p")
    runner = root / "runner.yaml"
    runner.write_text(runner.read_text().replace('cron: "0 * * * *"', 'cron: "[/x] [bold]0 * * *"'))
    assert main(["--project", str(root), "validate", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "[/x] [bold]0 * * *" in err
    assert "Traceback" not in err


def test_the_identifier_rule_keeps_its_brackets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_demo_project(tmp_path / "p")
    job = root / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("name: orders", "name: '[red]orders[/]'"))
    assert main(["--project", str(root), "validate", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "'[red]orders[/]' is not a safe identifier" in err


def test_a_path_with_markup_in_an_unknown_job_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_demo_project(tmp_path / "p")
    assert main(["--project", str(root), "run", "[/x]/job"]) == 2
    assert "job '[/x]/job' is not in runner.yaml" in capsys.readouterr().err


def test_an_unexpected_exception_is_reported_as_a_bug_with_its_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dativo_dagster.cli as cli

    root = copy_demo_project(tmp_path / "p")

    def broken_list(args: object) -> int:
        raise ZeroDivisionError("[/boom]")

    monkeypatch.setattr(cli, "cmd_list", broken_list)
    monkeypatch.setattr(cli.build_parser().__class__, "parse_args", lambda self, argv=None: _Args(broken_list, root))
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert "unexpected error (a bug in dativo" in err
    assert "ZeroDivisionError: [/boom]" in err
    assert "Traceback" in err


class _Args:
    def __init__(self, func: object, root: Path) -> None:
        self.func = func
        self.project = root
        self.verbose = False
        self.command = "list"


def test_control_characters_in_quoted_text_are_shown_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from dativo_dagster.cli import say_error

    say_error('column "\x1b]0;PWNED\x07\x1b[2J" \u202eevil')
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    assert "\\x1b]0;PWNED\\x07" in err and "\\u202e" in err
