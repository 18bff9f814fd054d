"""Runs that ``dativo run`` starts in its own process, and what is left of them if that process dies.

A ``dativo run`` executes in-process (``dg.materialize``) against the configured Dagster instance.
If the process is killed (SIGKILL, OOM, a closed laptop) its run stays STARTED for ever, and the
step keeps the tenant's pool slot (``dativo-tenant-<tenant>``): after as many crashes as the pool
has slots, every later run of that tenant waits for a slot that nothing will free. No daemon
watches these runs, so the next ``dativo run`` of the job does: each CLI run is tagged with the
host and process that executes it, and a run whose process is gone is marked failed and its
slots are freed before the new run starts. The data needs no repair: a killed run never committed
anything that the next run does not account for (the cursor lives in the Iceberg snapshot).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from dativo_dagster.compat.dagster import free_concurrency_slots
from dativo_dagster.translator import TAG_JOB, TAG_TENANT

TAG_HOST = "dativo/host"
TAG_PROCESS = "dativo/process"

_UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _start_ticks(pid: int) -> str | None:
    """When ``pid`` started, in clock ticks since boot (Linux); None where /proc is unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may hold spaces, so count from its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def process_token(pid: int | None = None) -> str:
    """``<pid>:<start>`` identifying a process even after its pid is reused."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_ticks(pid) or ''}"


def process_alive(token: str) -> bool:
    """Whether the process a token names still runs (on this host)."""
    pid_text, _, start = token.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return True  # not ours to judge
    current = _start_ticks(pid)
    if current is not None:
        return not start or current == start
    if start and Path("/proc/self/stat").exists():
        return False  # /proc works here and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def cli_run_tags() -> dict[str, str]:
    """Tags that let a later ``dativo run`` recognise this process's run if it dies."""
    return {TAG_HOST: socket.gethostname(), TAG_PROCESS: process_token()}


def release_dead_runs(instance: dg.DagsterInstance, job_tags: Mapping[str, str]) -> list[str]:
    """Mark failed this host's unfinished CLI runs of a job whose process is gone; free their slots.

    Args:
        instance: The Dagster instance the runs are recorded in.
        job_tags: The job's run tags (tenant and job identify it).

    Returns:
        The ids of the runs released.
    """
    host = socket.gethostname()
    tags = {TAG_TENANT: job_tags[TAG_TENANT], TAG_JOB: job_tags[TAG_JOB], TAG_HOST: host}
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(tags=tags, statuses=_UNFINISHED)):
        token = run.tags.get(TAG_PROCESS)
        if token is None or process_alive(token):
            continue
        pid = token.partition(":")[0]
        instance.report_run_failed(run, message=f"the dativo run process {pid} on {host} is gone (killed or crashed)")
        free_concurrency_slots(instance, run.run_id)
        released.append(run.run_id)
    return released
