"""``dativo verify`` on the demo tenant: clean after a run, and every kind of damage found and named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from dativo_dagster.cli import main
from dativo_dagster.iceberg.integrity import PROP_INTEGRITY, live_files, verify_table
from dativo_dagster.iceberg.writer import IcebergWriter
from tests.integration.test_writer_guarantees import _compact as compact
from tests.integration.test_writer_guarantees import make_obj, write
from tests.servers import Moto

CREATED = "2024-01-01T03:00:00+00:00"


def _catalog(project: Path) -> SqlCatalog:
    home = project / ".dativo"
    return SqlCatalog("dativo", uri=f"sqlite:///{home}/catalog.db", warehouse=f"file://{home}/warehouse")


def _table(project: Path, name: str) -> Table:
    return _catalog(project).load_table(("demo", name))


def _local(path: str) -> Path:
    return Path(path.removeprefix("file://"))


def _verify(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main(["verify", "demo/shop", "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def _problems(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every failure of the report (unverified files are listed but are not failures)."""
    found = [p for table in report["tables"] for p in table["problems"] + table["manifest_problems"]]
    return [p for p in found if p["status"] != "unverified"]


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_is_clean_after_a_run_and_names_an_altered_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "demo/shop"]) == 0
    code, report = _verify(capsys)
    assert code == 0 and report["ok"]
    assert {t["table"] for t in report["tables"]} == {"demo.orders", "demo.customers"}
    assert all(t["verified"] == t["files"] >= 1 and not t["unverified"] for t in report["tables"])

    orders = _table(project, "orders")
    (data_file,) = live_files(orders)
    _flip_byte(_local(data_file.path), 100)  # same size, one byte different
    code, report = _verify(capsys)
    assert code == 1 and not report["ok"]
    (problem,) = _problems(report)
    assert problem["status"] == "altered" and problem["path"] == data_file.path
    assert problem["snapshot_id"] == orders.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert problem["run_id"] == orders.current_snapshot().summary.additional_properties["dativo.run-id"]  # type: ignore[union-attr]

    # The human report names the file and its snapshot too, and exits the same way.
    capsys.readouterr()
    assert main(["verify", "demo/shop", "--object", "orders"]) == 1
    out = capsys.readouterr()
    text = out.out + out.err
    assert "altered" in text and _local(data_file.path).name[:20] in text
    assert str(data_file.snapshot_id)[:10] in text
    assert main(["verify", "demo/shop", "--object", "customers"]) == 0


def test_truncated_missing_and_tampered_manifest_are_reported(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "demo/shop"]) == 0
    (orders_file,) = live_files(_table(project, "orders"))
    (customers_file,) = live_files(_table(project, "customers"))
    path = _local(orders_file.path)
    path.write_bytes(path.read_bytes()[:-10])
    _local(customers_file.path).unlink()
    code, report = _verify(capsys)
    assert code == 1
    statuses = {p["path"]: p["status"] for p in _problems(report)}
    assert statuses == {orders_file.path: "truncated", customers_file.path: "missing"}


def test_a_tampered_manifest_is_reported(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "demo/shop", "--object", "orders"]) == 0
    snapshot = _table(project, "orders").current_snapshot()
    assert snapshot is not None
    manifest = _local(snapshot.summary.additional_properties[PROP_INTEGRITY])  # type: ignore[union-attr]
    document = json.loads(manifest.read_text())
    document["files"][0]["sha256"] = "0" * 64  # hide an edit of the data file
    manifest.write_text(json.dumps(document, sort_keys=True, separators=(",", ":")))
    code, report = _verify(capsys, "--object", "orders")
    assert code == 1
    (problem,) = _problems(report)
    assert problem["status"] == "manifest tampered" and problem["snapshot_id"] == snapshot.snapshot_id
    # The manifest's digests are not trusted, so its file is only unverified, not reported clean.
    (orders,) = report["tables"]
    assert orders["unverified"] == 1 and orders["verified"] == 0


def test_a_merge_with_position_deletes_and_quarantined_rows_verifies_clean(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "demo/shop", "--object", "customers"]) == 0
    with (project / "tenants/demo/data/customers.csv").open("a") as handle:
        # 30 of 500 customers change (sparse: position deletes); one new row is invalid (quarantined,
        # below the object's 5% threshold).
        for i in range(1, 31):
            handle.write(f"{i},new{i}@example.com,Customer {i},DE,{CREATED},2024-04-01T00:00:00+00:00\n")
        handle.write("501,bad@example.com,Customer 501,FR,not a time,2024-04-01T00:00:00+00:00\n")
    # 1: committed, with the asset checks warning of the quarantined row and the small volume.
    assert main(["run", "demo/shop", "--object", "customers"]) == 1
    code, report = _verify(capsys, "--object", "customers")
    assert code == 0, report
    tables = {t["kind"]: t for t in report["tables"]}
    contents = {f.content for f in live_files(_table(project, "customers"))}
    assert "position_deletes" in contents
    assert tables["table"]["verified"] == tables["table"]["files"] == len(live_files(_table(project, "customers")))
    assert tables["quarantine"]["verified"] == tables["quarantine"]["files"] >= 1


def test_unknown_object_is_a_config_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "demo/shop", "--object", "nope"]) == 2
    assert "CFG001" in capsys.readouterr().err
    assert main(["verify", "demo/nope"]) == 2


S3_TARGET = """\
name: s3_test
type: iceberg
catalog_name: dativo
catalog:
  type: sql
  uri: "sqlite:///${DATIVO_HOME:-.dativo}/catalog.db"
  properties:
    s3.endpoint: "${AWS_ENDPOINT_URL}"
    s3.access-key-id: "${AWS_ACCESS_KEY_ID}"
    s3.secret-access-key: "${AWS_SECRET_ACCESS_KEY}"
    s3.region: "${AWS_REGION}"
warehouse: "s3://BUCKET/warehouse"
"""


def test_a_byte_flipped_in_a_data_file_on_s3_is_found(
    project: Path, s3_bucket: str, aws: Moto, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "connectors/targets/s3_test.yaml").write_text(S3_TARGET.replace("BUCKET", s3_bucket))
    job = project / "tenants/demo/jobs/shop.yaml"
    job.write_text(job.read_text().replace("recipe: local", "recipe: s3_test"))
    assert main(["run", "demo/shop", "--object", "orders"]) == 0
    code, report = _verify(capsys, "--object", "orders")
    assert code == 0 and report["tables"][0]["verified"] == 1

    s3 = aws.client("s3")
    (key,) = [
        item["Key"] for item in s3.list_objects_v2(Bucket=s3_bucket, Prefix="warehouse/demo/orders/data/")["Contents"]
    ]
    data = bytearray(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    code, report = _verify(capsys, "--object", "orders")
    assert code == 1
    (problem,) = _problems(report)
    assert problem["status"] == "altered" and problem["path"] == f"s3://{s3_bucket}/{key}"
    assert isinstance(problem["snapshot_id"], int) and problem["run_id"]


def test_a_replayed_commit_records_its_replanned_files_and_drops_the_superseded_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/wh")
    writer = IcebergWriter(catalog)
    obj = make_obj(strategy="updated")
    write(writer, obj, [1, 2, 3])
    original = IcebergWriter._commit_once
    manifests: list[str] = []

    def conflict_once(self: IcebergWriter, table: Any, txn: Any, staged: Any) -> Any:
        if not manifests:
            compact(catalog)  # another writer commits first: the merge is planned again
        try:
            return original(self, table, txn, staged)
        finally:
            manifests.append(staged.integrity[PROP_INTEGRITY])

    monkeypatch.setattr(IcebergWriter, "_commit_once", conflict_once)
    result = write(writer, obj, [2, 4], previous=3, amounts=["20.00", "40.00"])
    assert result.commit_attempts == 2 and result.rows_replaced == 1
    superseded, committed = manifests
    assert not _local(superseded).exists()
    table = catalog.load_table(("acme", "items"))
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary.additional_properties[PROP_INTEGRITY] == committed  # type: ignore[union-attr]
    assert result.integrity_manifest == committed
    added = {f.path for f in live_files(table) if f.snapshot_id == snapshot.snapshot_id}
    recorded = {item["path"] for item in json.loads(_local(committed).read_text())["files"]}
    # The new rows' file and the position-delete file planned on the compacted table.
    assert recorded == added and len(added) == result.integrity_files == 2
    verification = verify_table(table)
    # The compacted file was written by another writer: unverified, which is no failure.
    assert not verification.failed
    assert (verification.count("ok"), verification.count("unverified")) == (2, 1)


def test_a_missing_data_bucket_is_a_config_error_not_missing_files(s3_bucket: str, aws: Moto) -> None:
    from pyiceberg.catalog.sql import SqlCatalog as Catalog

    from dativo_dagster.errors import ConfigError
    from tests.unit.test_integrity import SCHEMA, _commit

    data_bucket = aws.new_bucket()
    env = aws.environ()
    catalog = Catalog(
        "s3",
        uri="sqlite:///:memory:",
        warehouse=f"s3://{s3_bucket}/wh",
        **{
            "s3.endpoint": env["AWS_ENDPOINT_URL"],
            "s3.access-key-id": env["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": env["AWS_SECRET_ACCESS_KEY"],
            "s3.region": env["AWS_REGION"],
        },
    )
    catalog.create_namespace("n")
    # Data files in a bucket of their own: the table's metadata stays readable when it goes.
    table = catalog.create_table(("n", "t"), schema=SCHEMA, properties={"write.data.path": f"s3://{data_bucket}/d"})
    _commit(table, 0, 10)
    assert verify_table(table).count("ok") == 1
    s3 = aws.client("s3")
    for item in s3.list_objects_v2(Bucket=data_bucket).get("Contents", []):
        s3.delete_object(Bucket=data_bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=data_bucket)
    with pytest.raises(ConfigError, match=data_bucket):
        verify_table(table)
