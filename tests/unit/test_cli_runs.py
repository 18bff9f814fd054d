"""Recognising the process behind a CLI run, even after its pid is reused."""

from __future__ import annotations

import os
import subprocess
import sys

from dativo_dagster.cli_runs import cli_run_tags, process_alive, process_token


def test_this_process_is_alive() -> None:
    assert process_alive(process_token())
    assert cli_run_tags()["dativo/process"] == process_token()


def test_a_finished_process_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    token = process_token(child.pid)
    assert process_alive(token)
    child.kill()
    child.wait()
    assert not process_alive(token)


def test_a_reused_pid_is_not_the_same_process() -> None:
    pid, _, start = process_token().partition(":")
    if not start:  # no /proc here: only the pid can be checked
        return
    assert not process_alive(f"{pid}:{int(start) + 1}")


def test_unreadable_tokens_are_left_alone() -> None:
    assert process_alive("not-a-pid")
    assert process_alive(f"{os.getpid()}:")
