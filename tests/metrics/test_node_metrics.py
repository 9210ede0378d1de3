"""`/metrics` of a real `amber node` process on a real XFS pool, scraped over HTTP.

The driver serves three targets: a file target that works, a file target whose directory is
missing (every upload to it fails), and an S3 target on a real moto server (probed only; its
secret key must never show). Tests drive the node over gRPC as Kubernetes would, then read the
values back with prometheus_client's parser and compare them with what the pool and the
repository say.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.backup.keys import Password
from amber.backup.repository import Repository, open_repository
from amber.blobstore.filestore import FileStore
from amber.csi._proto import csi_pb2
from amber.domain.units import MiB
from tests.blobstore.conftest import MotoServer, _run_moto
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import (
    RPC_TIMEOUT,
    Code,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    mount_cap,
    snapshot_source,
    start_driver,
)
from tests.metrics.helpers import samples, total, value

PASSWORD = "metrics-repo-passw0rd-never-shown"
SECRET_PASSWORD = "secret-given-passw0rd-never-shown"
GOOD, BROKEN, S3 = "good", "broken", "s3"


@dataclass
class Node:
    driver: DriverProcess
    csi: Csi
    pool: Path
    url: str
    repo_dir: Path
    moto: MotoServer

    def scrape(self) -> str:
        with urllib.request.urlopen(self.url, timeout=30) as reply:
            assert reply.status == 200
            return str(reply.read().decode())

    def repository(self) -> Repository:
        return open_repository(FileStore(self.repo_dir), Password(PASSWORD))


def write_targets(directory: Path, repo_dir: Path, moto: MotoServer) -> Path:
    (directory / "password").write_text(PASSWORD)
    (directory / "s3.secret-key").write_text(moto.secret_key)
    aes = {"encryption": "aes-256-gcm", "password_file": str(directory / "password")}
    document = {
        "version": 1,
        "targets": {
            GOOD: {"url": f"file://{repo_dir}", "options": {}, **aes},
            BROKEN: {"url": f"file://{directory / 'not-there'}", "options": {}, **aes},
            S3: {
                "url": "s3://amber-test/metrics",
                "options": {
                    "endpoint": moto.endpoint,
                    "access-key": moto.access_key,
                    "path-style": "true",
                },
                "secret_key_file": str(directory / "s3.secret-key"),
                **aes,
            },
        },
    }
    path = directory / "targets.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


def metrics_url(driver: DriverProcess) -> str:
    """The address the driver logged (it was started on port 0: any free one)."""
    pattern = re.compile(r"metrics served on (http://127\.0\.0\.1:\d+/metrics)")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = pattern.search(driver.log.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no metrics address in the log:\n{driver.log.read_text()}")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, xfs_root: Path) -> Iterator[Node]:
    moto_dir = tmp_path_factory.mktemp("moto")
    with _run_moto(moto_dir, auth=False) as moto:
        secrets_dir = tmp_path_factory.mktemp("targets")
        repo_dir = secrets_dir / "repo"
        repo_dir.mkdir()
        targets = write_targets(secrets_dir, repo_dir, moto)
        pool = make_pool(xfs_root)
        extra = [
            "--metrics-address=127.0.0.1:0",
            f"--targets-config={targets}",
            "--upload-attempts=1",
        ]
        driver = start_driver(pool, extra=extra)
        try:
            yield Node(driver, driver.client(), pool, metrics_url(driver), repo_dir, moto)
            driver.stop()
        finally:
            driver.cleanup()
            remove_pool(pool)


def until(call: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = call()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"timed out: last {result!r}"
        time.sleep(0.1)


def calls(text: str, method: str, code: str) -> float:
    return value(text, "amber_csi_calls_total", method=method, code=code) or 0.0


def test_csi_calls_by_method_and_code(node: Node) -> None:
    before = node.scrape()
    for _ in range(2):
        node.csi.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    node.csi.create("pvc-calls-1", 64 * MiB)
    node.csi.create("pvc-calls-2", 64 * MiB, cap=block_cap())
    node.csi.create("pvc-calls-1", 64 * MiB)  # idempotent repeat: OK again
    no_name = csi_pb2.CreateVolumeRequest(name="", volume_capabilities=[mount_cap()])
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: node.csi.controller.CreateVolume(no_name, timeout=RPC_TIMEOUT),
    )
    after = node.scrape()
    assert calls(after, "CreateVolume", "OK") - calls(before, "CreateVolume", "OK") == 3
    invalid = "INVALID_ARGUMENT"
    assert calls(after, "CreateVolume", invalid) - calls(before, "CreateVolume", invalid) == 1
    assert calls(after, "Probe", "OK") - calls(before, "Probe", "OK") == 2
    seen = total(after, "amber_csi_call_duration_seconds_count", method="CreateVolume")
    assert seen == calls(after, "CreateVolume", "OK") + calls(after, "CreateVolume", invalid)


def pool_count(pool: Path, table: str) -> int:
    assert table in ("volumes", "snapshots")
    with closing(sqlite3.connect(f"file:{pool / 'amber.db'}?mode=ro", uri=True)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_pool_and_volume_values_are_the_pools(node: Node, tmp_path: Path) -> None:
    volume = node.csi.create("pvc-pool", 128 * MiB)
    node.csi.snapshot(volume.volume_id, "snapshot-pool-1")
    staging = tmp_path / "staging"
    staging.mkdir()
    node.csi.stage(volume.volume_id, staging)
    try:
        text = node.scrape()
        assert value(text, "amber_scrape_collector_success", collector="pool") == 1
        assert value(text, "amber_scrape_collector_success", collector="volumes") == 1
        assert value(text, "amber_pool_volumes") == pool_count(node.pool, "volumes")
        assert value(text, "amber_pool_snapshots") == pool_count(node.pool, "snapshots")
        assert value(text, "amber_pool_snapshots") >= 1
        assert value(text, "amber_pool_overprovisioning_ratio") == 4.0
        size = value(text, "amber_pool_size_bytes")
        assert size is not None
        assert value(text, "amber_pool_capacity_bytes") == pytest.approx(4 * size)
        labels = {"volume": volume.volume_id.rsplit(":", 1)[1], "mode": "filesystem"}
        assert value(text, "amber_volume_capacity_bytes", **labels) == 128 * MiB
        assert value(text, "amber_volume_condition_abnormal", **labels) == 0
        # Staged: its filesystem is mounted here, so usage and inodes are known.
        used = value(text, "amber_volume_used_bytes", **labels)
        inodes = value(text, "amber_volume_inodes", **labels)
        assert used is not None
        assert 0 < used < 128 * MiB
        assert inodes is not None
        assert inodes > 0
        assert 0 < (value(text, "amber_volume_inodes_used", **labels) or 0) < inodes
    finally:
        node.csi.unstage(volume.volume_id, staging)
    text = node.scrape()
    assert value(text, "amber_volume_used_bytes", **labels) is None
    assert value(text, "amber_volume_capacity_bytes", **labels) == 128 * MiB


def test_targets_are_probed_in_the_background(node: Node) -> None:
    def probed(text: str) -> bool:
        return all(
            value(text, "amber_target_up", target=name) is not None for name in (GOOD, BROKEN, S3)
        )

    text = until(node.scrape, probed)
    assert value(text, "amber_target_up", target=GOOD) == 1
    assert value(text, "amber_target_up", target=S3) == 1
    assert value(text, "amber_target_up", target=BROKEN) == 0
    assert (value(text, "amber_target_probe_latency_seconds", target=S3) or 0) > 0
    assert value(text, "amber_target_probe_latency_seconds", target=BROKEN) is None
    checked = value(text, "amber_target_last_check_timestamp_seconds", target=GOOD)
    assert checked is not None
    assert abs(checked - time.time()) < 3600


def backup_snapshot(csi: Csi, volume_id: str, name: str, target: str) -> Any:
    """CreateSnapshot of a backup class until ready (the snapshot) or failed (the error)."""
    request = csi_pb2.CreateSnapshotRequest(
        name=name, source_volume_id=volume_id, parameters={"type": "backup", "target": target}
    )

    def attempt() -> Any:
        try:
            return csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot
        except grpc.RpcError as e:
            return e

    return until(attempt, lambda r: isinstance(r, grpc.RpcError) or r.ready_to_use)


def restore(csi: Csi, name: str, snapshot_id: str) -> Any:
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        volume_capabilities=[mount_cap()],
        volume_content_source=snapshot_source(snapshot_id),
    )

    def attempt() -> Any:
        try:
            return csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT).volume
        except grpc.RpcError as e:
            if e.code() is not Code.ABORTED:  # ABORTED: the restore is still running
                raise
            return None

    return until(attempt, lambda v: v is not None)


def test_backups_and_restores_by_outcome(node: Node) -> None:
    before = node.scrape()
    volume = node.csi.create("pvc-backed-up", 64 * MiB)
    good = backup_snapshot(node.csi, volume.volume_id, "snapshot-good", GOOD)
    assert not isinstance(good, grpc.RpcError), good
    failed = backup_snapshot(node.csi, volume.volume_id, "snapshot-broken", BROKEN)
    assert isinstance(failed, grpc.RpcError)
    restored = restore(node.csi, "pvc-restored", good.snapshot_id)
    assert restored.content_source.snapshot.snapshot_id == good.snapshot_id

    text = node.scrape()

    def grew(name: str, **labels: str) -> float:
        return total(text, name, **labels) - total(before, name, **labels)

    assert grew("amber_backups_total", outcome="success") == 1
    assert grew("amber_backups_total", outcome="failure") == 1
    assert grew("amber_restores_total", outcome="success") == 1
    assert grew("amber_restores_total", outcome="failure") == 0
    assert grew("amber_backup_duration_seconds_count", outcome="success") == 1
    assert grew("amber_restore_duration_seconds_count", outcome="success") == 1
    # The bytes are the backup's own, as its manifest records them.
    (manifest,) = node.repository().load_manifests()
    assert manifest.stats.bytes_read > 0
    assert grew("amber_backup_read_bytes_total") == manifest.stats.bytes_read
    assert grew("amber_backup_new_bytes_total") == manifest.stats.bytes_new
    assert grew("amber_backup_stored_bytes_total") == manifest.stats.bytes_stored
    assert 0 < grew("amber_restore_downloaded_bytes_total") <= manifest.stats.bytes_stored
    for kind in ("backup", "restore"):
        assert value(text, "amber_operations_in_flight", kind=kind) == 0


def test_no_secret_in_the_scrape(node: Node) -> None:
    # A call that brings a target in its secrets: the node learns it (in memory only).
    secrets = {
        "url": f"file://{node.repo_dir}",
        "repositoryPassword": SECRET_PASSWORD,
        "target": "from-secret",
    }
    request = csi_pb2.ListSnapshotsRequest(secrets=secrets)
    node.csi.controller.ListSnapshots(request, timeout=RPC_TIMEOUT)
    text = until(node.scrape, lambda t: value(t, "amber_target_up", target=S3) is not None)
    for secret in (PASSWORD, SECRET_PASSWORD, node.moto.secret_key, node.moto.access_key):
        assert secret not in text
    # Labels name objects, never ids of snapshots or backups.
    label_values = {v for s in samples(text) for v in s.labels.values()}
    assert not [v for v in label_values if v.startswith("amber:v1:")]


def test_a_bad_metrics_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for command in (
        ["node", "--node-id=node-a", "--metrics-address=localhost"],
        ["controller", "--metrics-address=127.0.0.1:99999"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "amber", "--pool", str(tmp_path), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: metrics address ")


def test_the_controller_serves_its_calls() -> None:
    driver = start_driver(None, mode="controller", extra=["--metrics-address=127.0.0.1:0"])
    try:
        url = metrics_url(driver)
        csi = driver.client()
        csi.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
        with urllib.request.urlopen(url, timeout=30) as reply:
            text = reply.read().decode()
        assert (value(text, "amber_csi_calls_total", method="GetPluginInfo", code="OK") or 0) >= 1
        # No pool in controller mode: no pool samples, no failing source either.
        assert value(text, "amber_pool_size_bytes") is None
        assert value(text, "amber_scrape_collector_success", collector="pool") is None
        driver.stop()
    finally:
        driver.cleanup()
