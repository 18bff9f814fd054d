"""Compute logs in S3, configured as docs/deploy.md says, through Dagster's own CLI (moto S3)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.conftest import REPO
from tests.deploy_docs import compute_logs_block
from tests.servers import Moto

pytestmark = pytest.mark.slow


def _read(moto: Moto, bucket: str, key: str) -> str:
    return moto.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8", "replace")


def test_compute_logs_of_a_run_land_in_s3(
    project: Path, aws: Moto, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = compute_logs_block()
    config = block["compute_logs"]["config"]
    assert config["bucket"] == {"env": "DATIVO_COMPUTE_LOGS_BUCKET"}
    prefix = config["prefix"]
    # The guide's block, pointed at the emulator: production takes S3's own endpoint.
    config["endpoint_url"] = aws.endpoint
    home = project / ".dagster_home"
    home.mkdir()
    instance_config = yaml.safe_load((REPO / "dagster.yaml").read_text()) | block
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    # A secret the run holds in its environment (moto accepts any key): it must not reach the logs.
    secret = "sk-" + uuid.uuid4().hex
    env = {
        **os.environ,
        **aws.environ(),
        "AWS_SECRET_ACCESS_KEY": secret,
        "DAGSTER_HOME": str(home),
        "DATIVO_COMPUTE_LOGS_BUCKET": s3_bucket,
        "DATIVO_PROJECT_DIR": str(project),
        "DATIVO_HOME": str(project / ".dativo"),
    }
    env.pop("DATIVO_FAULT_INJECT", None)
    command = ["dagster", "asset", "materialize", "-m", "dativo_dagster.definitions", "--select", "demo/csv/orders"]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DATIVO_COMPUTE_LOGS_BUCKET", s3_bucket)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
    listed = aws.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix=f"{prefix}/storage/{run.run_id}/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    out = [key for key in keys if key.endswith(".out")]
    err = [key for key in keys if key.endswith(".err")]
    assert len(out) == 1 and len(err) == 1, keys
    assert out[0].startswith(f"{prefix}/storage/{run.run_id}/compute_logs/")

    logs = _read(aws, s3_bucket, out[0]) + _read(aws, s3_bucket, err[0])
    # The structured line dativo writes when the object is committed, naming this run.
    finished = [line for line in logs.splitlines() if line.startswith("event='object_finished'")]
    assert finished, logs[-3000:]
    assert f"run_id='{run.run_id}'" in finished[0] and "object='orders'" in finished[0] and "rows=3000" in finished[0]
    assert secret not in logs
