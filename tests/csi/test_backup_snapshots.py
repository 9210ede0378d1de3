"""Backup snapshots end to end: two real `amber node` processes (two pools, as two nodes or two
clusters), a real moto S3 server behind a TCP proxy that can cut the network; the server's
request log shows what the nodes asked of the target."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from amber.cli.main import app
from amber.cli.state import CRASH_ENV
from amber.csi._proto import csi_pb2
from amber.domain.errors import NotFound
from amber.domain.units import MiB
from amber.ops.handles import LABEL_KEY, key_backup_id
from amber.ops.jobs import JOBS_DB
from amber.pool.bases import BasesUsage, bases_usage
from tests.blobstore.conftest import MotoServer, _run_moto
from tests.csi.backup_env import (
    PASSWORD,
    TcpProxy,
    listings,
    pool_names,
    repository,
    restore_locks,
    volume_image,
    write_targets,
)
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import (
    RPC_TIMEOUT,
    Code,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    snapshot_source,
    start_driver,
)

TARGET = "s3t"
BACKUP = {"type": "backup", "target": TARGET}


@dataclass
class Env:
    moto: MotoServer
    proxy: TcpProxy
    prefix: str
    targets: Path
    pools: list[Path]
    drivers: list[DriverProcess]
    moto_log: Path
    """Every request the S3 server answered, one line each."""

    @property
    def keys(self) -> tuple[str, str]:
        return self.moto.access_key, self.moto.secret_key

    def repo(self, prefix: str | None = None) -> Any:
        return repository(self.moto.endpoint, prefix or self.prefix, self.keys)

    def start(self, pool: Path, node: str) -> DriverProcess:
        driver = start_driver(pool, node_id=node, extra=self.driver_args)
        self.drivers.append(driver)
        return driver

    @property
    def driver_args(self) -> list[str]:
        return [f"--targets-config={self.targets}", "--upload-retry=0.3", "--upload-attempts=60"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, xfs_root: Path) -> Iterator[Env]:
    moto_dir = tmp_path_factory.mktemp("moto")
    with _run_moto(moto_dir, auth=False) as moto:
        proxy = TcpProxy(int(moto.endpoint.rsplit(":", 1)[1]))
        prefix = f"csi-{uuid.uuid4().hex[:8]}"
        targets = write_targets(
            tmp_path_factory.mktemp("targets"),
            TARGET,
            proxy.endpoint,
            prefix,
            (moto.access_key, moto.secret_key),
        )
        pools = [make_pool(xfs_root), make_pool(xfs_root)]
        env = Env(moto, proxy, prefix, targets, pools, [], moto_dir / "server.log")
        env.start(env.pools[0], "node-a")
        env.start(env.pools[1], "node-b")
        try:
            yield env
            for driver in env.drivers:
                driver.stop()
        finally:
            for driver in env.drivers:
                driver.cleanup()
            proxy.close()
            for pool in env.pools:
                remove_pool(pool)


def client(env: Env, index: int) -> Csi:
    return env.drivers[index].client()


def until(call: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = call()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out: last {value}"
        time.sleep(0.1)


def failed_attempts(driver: DriverProcess) -> int:
    """How many upload attempts the driver logged as failed and to be retried."""
    return driver.log.read_text(errors="replace").count("failed, retrying in")


def restore(
    csi: Csi, name: str, snapshot_id: str, secrets: dict[str, str] | None = None
) -> tuple[Any, list[str]]:
    """CreateVolume until it succeeds; the ABORTED messages seen on the way."""
    pending: list[str] = []
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        volume_capabilities=[block_cap()],
        volume_content_source=snapshot_source(snapshot_id),
        secrets=secrets or {},
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            return csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT).volume, pending
        except grpc.RpcError as e:
            if e.code() is not Code.ABORTED:
                raise
            pending.append(str(e.details()))
        assert time.monotonic() < deadline
        time.sleep(0.1)


def write(pool: Path, volume_id: str, offset: int, data: bytes) -> None:
    fd = os.open(volume_image(pool, volume_id), os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def read(pool: Path, volume_id: str, size: int) -> bytes:
    with volume_image(pool, volume_id).open("rb") as f:
        return f.read(size)


def ready_snapshot(
    csi: Csi,
    volume_id: str,
    name: str,
    params: dict[str, str],
    secrets: dict[str, str] | None = None,
) -> Any:
    request = csi_pb2.CreateSnapshotRequest(
        name=name, source_volume_id=volume_id, parameters=params, secrets=secrets or {}
    )
    first = csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot
    final = until(
        lambda: csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot,
        lambda s: s.ready_to_use,
    )
    assert final.snapshot_id == first.snapshot_id
    assert final.creation_time == first.creation_time
    return first, final


def test_read_write_snapshot_story(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-story", 64 * MiB, cap=block_cap())
    moment = os.urandom(8 * MiB)
    write(env.pools[0], volume.volume_id, 0, moment)
    first, snap = ready_snapshot(a, volume.volume_id, "snapshot-story-1", BACKUP)
    assert snap.snapshot_id == f"amber:v1:bak:{TARGET}:snapshot-story-1"
    assert not first.ready_to_use or first == snap
    assert snap.source_volume_id == volume.volume_id
    assert snap.size_bytes == 64 * MiB
    write(env.pools[0], volume.volume_id, 0, b"changed after the snapshot" * 1000)

    restored, _ = restore(b, "pvc-story-restored", snap.snapshot_id)
    assert restored.volume_id.startswith("amber:v1:vol:node-b:")
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    assert read(env.pools[1], restored.volume_id, 8 * MiB) == moment
    again, _ = restore(b, "pvc-story-restored", snap.snapshot_id)
    assert again == restored

    # The second snapshot is incremental: only the changed chunk is read and uploaded.
    _, snap2 = ready_snapshot(a, volume.volume_id, "snapshot-story-2", BACKUP)
    manifests = {
        m.labels.get("amber.csi.dev/snapshot-name"): m for m in env.repo().load_manifests()
    }
    one, two = manifests["snapshot-story-1"], manifests["snapshot-story-2"]
    assert two.parent_id == one.backup_id
    assert two.stats.bytes_read <= 1 * MiB
    assert two.stats.bytes_new <= 1 * MiB
    assert one.stats.bytes_new >= 8 * MiB
    # The local snapshots are gone once uploaded (the engine keeps its own base).
    listed = a.list_snapshots().entries
    assert {e.snapshot.snapshot_id for e in listed} >= {snap.snapshot_id, snap2.snapshot_id}
    assert not any(e.snapshot.snapshot_id.startswith("amber:v1:snap:") for e in listed)

    # Node B finds A's snapshot on the target; the engine's handle names it too.
    found = b.list_snapshots(snapshot_id=snap.snapshot_id).entries
    assert [e.snapshot.ready_to_use for e in found] == [True]
    assert found[0].snapshot.source_volume_id == volume.volume_id
    handle = f"amber:v1:backup:{TARGET}:{one.backup_id}"
    assert len(b.list_snapshots(snapshot_id=handle).entries) == 1

    a.delete_snapshot(snap.snapshot_id)
    assert one.backup_id not in env.repo().list_backups()
    assert two.backup_id in env.repo().list_backups()
    a.delete_snapshot(snap.snapshot_id)
    b.delete_snapshot(snap.snapshot_id)
    assert b.list_snapshots(snapshot_id=snap.snapshot_id).entries == []
    assert a.list_snapshots(snapshot_id=snap.snapshot_id).entries == []

    # DeleteVolume drops the engine's base of the volume (issue 16, item 5), as the CLI does.
    assert bases_usage(env.pools[0]).count == 1
    a.delete(volume.volume_id)
    assert bases_usage(env.pools[0]) == BasesUsage(0, 0)


def test_restore_progress_and_delete_cancels(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-slow", 64 * MiB, cap=block_cap())
    data = os.urandom(24 * MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-slow", BACKUP)
    env.proxy.delay = 0.01
    try:
        request = csi_pb2.CreateVolumeRequest(
            name="pvc-slow-restore",
            volume_capabilities=[block_cap()],
            volume_content_source=snapshot_source(snap.snapshot_id),
        )
        message = expect_code(
            Code.ABORTED, lambda: b.controller.CreateVolume(request, timeout=RPC_TIMEOUT)
        )
        assert "being restored" in message
        expect_code(Code.ABORTED, lambda: b.controller.CreateVolume(request, timeout=RPC_TIMEOUT))
        b.delete("amber:v1:vol:node-b:pvc-slow-restore")  # the PVC was deleted: cancel
        assert b.list_volumes().entries == [] or all(
            "pvc-slow-restore" not in e.volume.volume_id for e in b.list_volumes().entries
        )
    finally:
        env.proxy.delay = 0.0
    restored, pending = restore(b, "pvc-slow-restore", snap.snapshot_id)
    assert read(env.pools[1], restored.volume_id, len(data)) == data
    assert all("being restored" in m for m in pending)


def test_s3_outage_during_upload_and_restart(env: Env) -> None:
    a = client(env, 0)
    volume = a.create("pvc-outage", 32 * MiB, cap=block_cap())
    data = os.urandom(4 * MiB)
    write(env.pools[0], volume.volume_id, MiB, data)
    env.proxy.block()
    try:
        failed_before = failed_attempts(env.drivers[0])
        snap = a.snapshot(volume.volume_id, "snapshot-outage", BACKUP)
        assert not snap.ready_to_use
        # two attempts of the upload failed on the unreachable target, and it is still pending
        until(lambda: failed_attempts(env.drivers[0]), lambda n: n >= failed_before + 2)
        assert not a.snapshot(volume.volume_id, "snapshot-outage", BACKUP).ready_to_use
        # The node restarts while the target is unreachable: the job is in the pool.
        env.drivers[0].stop()
        env.drivers[0].cleanup()
        env.drivers[0] = start_driver(
            env.pools[0],
            node_id="node-a",
            extra=env.driver_args,
        )
        a = client(env, 0)
        assert not a.list_snapshots(snapshot_id=snap.snapshot_id).entries[0].snapshot.ready_to_use
    finally:
        env.proxy.unblock()
    _, final = ready_snapshot(a, volume.volume_id, "snapshot-outage", BACKUP)
    assert final.snapshot_id == snap.snapshot_id
    log = env.drivers[0].log.read_text()
    assert "retrying" in log or "resuming" in log
    # A restore while the target is down fails with UNAVAILABLE, then works.
    b = client(env, 1)
    env.proxy.block()
    try:
        expect_code(
            Code.UNAVAILABLE,
            lambda: b.create(
                "pvc-outage-r", 0, cap=block_cap(), source=snapshot_source(snap.snapshot_id)
            ),
        )
    finally:
        env.proxy.unblock()
    restored, _ = restore(b, "pvc-outage-r", snap.snapshot_id)
    assert read(env.pools[1], restored.volume_id, 5 * MiB)[MiB:] == data


def test_open_local_secret_and_no_credentials_in_logs(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    secrets = {
        "s3URL": f"127.0.0.1:{env.proxy.port}",
        "s3AK": env.moto.access_key,
        "s3SK": env.moto.secret_key,
        "s3ForcePathStyle": "true",
        "s3DisableSSL": "true",
        "s3Bucket": "amber-test",
        "s3Prefix": "openlocal",
        "repositoryPassword": PASSWORD,
    }
    volume = a.create("pvc-openlocal-rw", 32 * MiB, cap=block_cap())
    data = os.urandom(2 * MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    params = {"csi.storage.k8s.io/snapshotter-secret-name": "s3-config"}
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-openlocal", params, secrets)
    target = f"s3-127-0-0-1-{env.proxy.port}-amber-test-openlocal"
    assert snap.snapshot_id == f"amber:v1:bak:{target}:snapshot-openlocal"
    no_secret = csi_pb2.CreateVolumeRequest(
        name="pvc-ol-r",
        volume_capabilities=[block_cap()],
        volume_content_source=snapshot_source(snap.snapshot_id),
    )
    expect_code(
        Code.FAILED_PRECONDITION, lambda: b.controller.CreateVolume(no_secret, timeout=RPC_TIMEOUT)
    )
    restored, _ = restore(b, "pvc-ol-r", snap.snapshot_id, secrets)
    assert read(env.pools[1], restored.volume_id, len(data)) == data
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id, secrets=secrets)
    a.controller.DeleteSnapshot(request, timeout=RPC_TIMEOUT)
    assert env.repo("openlocal").list_backups() == []
    wrong = {**secrets, "repositoryPassword": "not-the-password-x"}
    bad = csi_pb2.CreateSnapshotRequest(
        name="snapshot-ol-bad", source_volume_id=volume.volume_id, secrets=wrong
    )
    error = until(
        lambda: _code_of(lambda: a.controller.CreateSnapshot(bad, timeout=RPC_TIMEOUT)),
        lambda c: c is not None,
    )
    assert error[0] is Code.PERMISSION_DENIED, error
    for driver in env.drivers:
        text = driver.log.read_text()
        for value in (env.moto.secret_key, PASSWORD, "not-the-password-x"):
            assert value not in text


def _code_of(call: Callable[[], Any]) -> tuple[Code, str] | None:
    try:
        snap = call().snapshot
    except grpc.RpcError as e:
        return e.code(), str(e.details())
    assert not snap.ready_to_use
    return None


# -- import: the printed objects validate against the snapshot CRDs' schemas -----------------

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
}
CONTENT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshotContent"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "required": ["deletionPolicy", "driver", "source", "volumeSnapshotRef"],
            "additionalProperties": False,
            "properties": {
                "deletionPolicy": {"enum": ["Delete", "Retain"]},
                "driver": {"type": "string", "minLength": 1},
                "source": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "snapshotHandle": {"type": "string", "minLength": 1},
                        "volumeHandle": {"type": "string", "minLength": 1},
                    },
                    "oneOf": [{"required": ["snapshotHandle"]}, {"required": ["volumeHandle"]}],
                },
                "sourceVolumeMode": {"enum": ["Block", "Filesystem"]},
                "volumeSnapshotClassName": {"type": "string"},
                "volumeSnapshotRef": {
                    "type": "object",
                    "required": ["name", "namespace"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"const": "VolumeSnapshot"},
                        "name": {"type": "string", "minLength": 1},
                        "namespace": {"type": "string", "minLength": 1},
                    },
                },
            },
        },
    },
}
SNAPSHOT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "snapshot.storage.k8s.io/v1"},
        "kind": {"const": "VolumeSnapshot"},
        "metadata": {**_META, "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["source"],
            "additionalProperties": False,
            "properties": {
                "source": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "persistentVolumeClaimName": {"type": "string"},
                        "volumeSnapshotContentName": {"type": "string"},
                    },
                    "oneOf": [
                        {"required": ["persistentVolumeClaimName"]},
                        {"required": ["volumeSnapshotContentName"]},
                    ],
                },
                "volumeSnapshotClassName": {"type": "string"},
            },
        },
    },
}


def test_import_prints_valid_objects_usable_by_another_cluster(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-import", 16 * MiB, cap=block_cap())
    data = os.urandom(MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    ready_snapshot(a, volume.volume_id, "snapshot-import", BACKUP)
    manifest = next(
        m
        for m in env.repo().load_manifests()
        if m.labels.get("amber.csi.dev/snapshot-name") == "snapshot-import"
    )
    result = CliRunner().invoke(
        app,
        [
            "backup",
            "--config",
            str(env.targets),
            "import",
            manifest.backup_id,
            "--target",
            TARGET,
            "--namespace",
            "new-cluster",
            "--name",
            "restored-snap",
            "--node",
            "node-b",
        ],
    )
    assert result.exit_code == 0, result.output
    content, snapshot = yaml.safe_load_all(result.stdout)
    jsonschema.validate(content, CONTENT_SCHEMA)
    jsonschema.validate(snapshot, SNAPSHOT_SCHEMA)
    assert content["spec"]["deletionPolicy"] == "Retain"
    assert snapshot["spec"]["source"]["volumeSnapshotContentName"] == content["metadata"]["name"]
    handle = content["spec"]["source"]["snapshotHandle"]
    assert handle == f"amber:v1:backup:{TARGET}:{manifest.backup_id}"
    # The other cluster restores from the handle of the static VolumeSnapshotContent.
    restored, _ = restore(b, "pvc-imported", handle)
    assert read(env.pools[1], restored.volume_id, MiB) == data
    assert restored.content_source.snapshot.snapshot_id == handle
    bad = CliRunner().invoke(
        app,
        [
            "backup",
            "--config",
            str(env.targets),
            "import",
            "0" * 32,
            "--target",
            TARGET,
            "--namespace",
            "n",
            "--name",
            "x",
        ],
    )
    assert bad.exit_code != 0


# -- keepLocalSnapshot, and a target outage while a restore downloads -------------------------


def _restart(env: Env, index: int, node: str) -> Csi:
    env.drivers[index].stop()
    env.drivers[index].cleanup()
    env.drivers[index] = start_driver(
        env.pools[index],
        node_id=node,
        extra=env.driver_args,
    )
    return client(env, index)


def test_keep_local_snapshot_policy(env: Env) -> None:
    a = client(env, 0)
    volume = a.create("pvc-keep", 16 * MiB, cap=block_cap())
    pool_volume = volume.volume_id.rsplit(":", 1)[1]
    data = os.urandom(MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    keep = {**BACKUP, "keepLocalSnapshot": "true"}
    bad = csi_pb2.CreateSnapshotRequest(
        name="snapshot-keep-bad",
        source_volume_id=volume.volume_id,
        parameters={**BACKUP, "keepLocalSnapshot": "yes"},
    )
    message = expect_code(
        Code.INVALID_ARGUMENT, lambda: a.controller.CreateSnapshot(bad, timeout=RPC_TIMEOUT)
    )
    assert "keepLocalSnapshot" in message
    assert pool_names(env.pools[0], "snapshots", pool_volume) == set()

    # The default drops the local snapshot after the upload.
    _, dropped = ready_snapshot(a, volume.volume_id, "snapshot-keep-default", BACKUP)
    assert pool_names(env.pools[0], "snapshots", pool_volume) == set()

    # keepLocalSnapshot is stored with the job: a restart before the upload honours it.
    env.proxy.block()
    try:
        snap = a.snapshot(volume.volume_id, "snapshot-keep", keep)
        assert not snap.ready_to_use
        a = _restart(env, 0, "node-a")
    finally:
        env.proxy.unblock()
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-keep", keep)
    kept = pool_names(env.pools[0], "snapshots", pool_volume)
    assert len(kept) == 1
    # It belongs to the backup snapshot: not listed as a local snapshot of its own.
    listed = {e.snapshot.snapshot_id for e in a.list_snapshots().entries}
    assert snap.snapshot_id in listed
    assert not any(i.startswith("amber:v1:snap:") for i in listed)
    manifest = next(
        m
        for m in env.repo().load_manifests()
        if m.labels.get("amber.csi.dev/snapshot-name") == "snapshot-keep"
    )

    a.delete_snapshot(snap.snapshot_id)
    assert pool_names(env.pools[0], "snapshots", pool_volume) == set()
    assert manifest.backup_id not in env.repo().list_backups()
    a.delete_snapshot(snap.snapshot_id)
    a.delete_snapshot(dropped.snapshot_id)


def test_s3_outage_during_restore_download(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-dl", 64 * MiB, cap=block_cap())
    data = os.urandom(24 * MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-dl", BACKUP)
    write(env.pools[0], volume.volume_id, 0, b"after the snapshot" * 1000)
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-dl-restore",
        volume_capabilities=[block_cap()],
        volume_content_source=snapshot_source(snap.snapshot_id),
    )

    def create() -> tuple[Code, str] | None:
        try:
            b.controller.CreateVolume(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            return e.code(), str(e.details())
        return None

    env.proxy.delay = 0.01
    try:
        message = expect_code(
            Code.ABORTED, lambda: b.controller.CreateVolume(request, timeout=RPC_TIMEOUT)
        )
        assert "being restored" in message
        env.proxy.block()  # the target goes away while the restore downloads
        failure = until(create, lambda r: r is None or r[0] is not Code.ABORTED, timeout=90)
        assert failure is not None, "the restore completed with the target blocked"
        assert failure[0] is Code.UNAVAILABLE, failure
        # No half volume is left, and repeats fail cleanly while the target is down.
        assert "pvc-dl-restore" not in pool_names(env.pools[1], "volumes")
        assert not any("pvc-dl-restore" in e.volume.volume_id for e in b.list_volumes().entries)
        assert create() is not None
        assert "pvc-dl-restore" not in pool_names(env.pools[1], "volumes")
    finally:
        env.proxy.delay = 0.0
        env.proxy.unblock()
    restored, pending = restore(b, "pvc-dl-restore", snap.snapshot_id)
    assert all("being restored" in m for m in pending)
    assert read(env.pools[1], restored.volume_id, len(data)) == data
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id


# -- a backup is found by its key with one read; a crashed upload is finished, not redone ------


def test_another_node_finds_a_backup_by_key_without_listing(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-bykey", 16 * MiB, cap=block_cap())
    data = os.urandom(MiB)
    write(env.pools[0], volume.volume_id, 0, data)
    mark = env.moto_log.stat().st_size
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-bykey", BACKUP)
    assert snap.snapshot_id == f"amber:v1:bak:{TARGET}:snapshot-bykey"
    # The upload committed under the id derived from the key, and labelled it with the key.
    backup_id = key_backup_id("snapshot-bykey")
    assert env.repo().load_manifest(backup_id).labels[LABEL_KEY] == "snapshot-bykey"

    # Node B has no job for it: it reads the one manifest the key names on the target.
    found = b.list_snapshots(snapshot_id=snap.snapshot_id).entries
    assert [e.snapshot.ready_to_use for e in found] == [True]
    assert found[0].snapshot.source_volume_id == volume.volume_id
    restored, _ = restore(b, "pvc-bykey-r", snap.snapshot_id)
    assert read(env.pools[1], restored.volume_id, MiB) == data
    b.delete_snapshot(snap.snapshot_id)
    assert b.list_snapshots(snapshot_id=snap.snapshot_id).entries == []

    # None of that listed the manifests. A listing made now shows up in moto's log: the check
    # sees listings when there are any.
    env.repo().list_backups()
    seen = until(lambda: listings(env.moto_log, mark, env.prefix), lambda lines: lines != [])
    assert len(seen) == 1, seen
    with pytest.raises(NotFound):
        env.repo().load_manifest(backup_id)
    a.delete_snapshot(snap.snapshot_id)  # the job of node A goes; the backup is already gone
    assert a.list_snapshots(snapshot_id=snap.snapshot_id).entries == []


def _crash_during_upload(env: Env, request: Any, crash_at: str) -> None:
    """Node A restarts with a failpoint, takes the snapshot and kills itself at `crash_at`; it
    stays down (`_start_node_a` brings it back)."""
    env.drivers[0].stop()
    env.drivers[0].cleanup()
    env.drivers[0] = start_driver(
        env.pools[0], node_id="node-a", extra=env.driver_args, env={CRASH_ENV: crash_at}
    )
    csi = env.drivers[0].client()
    assert not csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot.ready_to_use
    until(env.drivers[0].proc.poll, lambda code: code is not None)
    assert env.drivers[0].proc.returncode == -9, env.drivers[0].log.read_text()[-2000:]
    env.drivers[0].cleanup()


def _start_node_a(env: Env) -> Csi:
    env.drivers[0] = start_driver(env.pools[0], node_id="node-a", extra=env.driver_args)
    return client(env, 0)


def _backups_labelled(env: Env, key: str) -> list[str]:
    return [m.backup_id for m in env.repo().load_manifests() if m.labels.get(LABEL_KEY) == key]


def _forget_upload_started(pool: Path, name: str) -> None:
    with contextlib.closing(sqlite3.connect(pool / JOBS_DB)) as db, db:
        assert db.execute("UPDATE uploads SET started = 0 WHERE name = ?", (name,)).rowcount == 1


def test_upload_committed_before_a_crash_is_found_not_redone(env: Env) -> None:
    a = client(env, 0)
    volume = a.create("pvc-crash", 16 * MiB, cap=block_cap())
    pool_volume = volume.volume_id.rsplit(":", 1)[1]
    write(env.pools[0], volume.volume_id, 0, os.urandom(MiB))

    # The node dies after the commit and after dropping the local snapshot, before the job
    # reads as ready: after the restart the job reads its manifest and is done, without
    # uploading again (it could not: the local snapshot is gone).
    dropped = csi_pb2.CreateSnapshotRequest(
        name="snapshot-crash-dropped", source_volume_id=volume.volume_id, parameters=BACKUP
    )
    _crash_during_upload(env, dropped, "backup-snapshot.local-dropped")
    assert pool_names(env.pools[0], "snapshots", pool_volume) == set()
    a = _start_node_a(env)
    _, snap = ready_snapshot(a, volume.volume_id, dropped.name, BACKUP)
    assert _backups_labelled(env, dropped.name) == [key_backup_id(dropped.name)]
    assert f"backup snapshot {dropped.name} committed" not in env.drivers[0].log.read_text()

    # The node dies right after the commit, and the job does not know it had started (as if
    # the commit landed only after the next attempt had looked for it): the next attempt
    # uploads again, its commit finds the id taken by this very snapshot, and that is success.
    late = csi_pb2.CreateSnapshotRequest(
        name="snapshot-crash-late", source_volume_id=volume.volume_id, parameters=BACKUP
    )
    _crash_during_upload(env, late, "backup.committed")
    assert _backups_labelled(env, late.name) == [key_backup_id(late.name)]
    _forget_upload_started(env.pools[0], late.name)
    a = _start_node_a(env)
    _, snap2 = ready_snapshot(a, volume.volume_id, late.name, BACKUP)
    assert _backups_labelled(env, late.name) == [key_backup_id(late.name)]
    log = env.drivers[0].log.read_text()
    assert f"an earlier attempt already committed backup {key_backup_id(late.name)}" in log
    assert pool_names(env.pools[0], "snapshots", pool_volume) == set()

    # Another volume's snapshot of the same name on the same target (another cluster's, say)
    # finds the id taken by a backup that is not its own: ALREADY_EXISTS, and deleting it
    # leaves the other backup alone.
    b = client(env, 1)
    other = b.create("pvc-crash-other", 16 * MiB, cap=block_cap())
    clash = csi_pb2.CreateSnapshotRequest(
        name=late.name, source_volume_id=other.volume_id, parameters=BACKUP
    )
    error = until(
        lambda: _code_of(lambda: b.controller.CreateSnapshot(clash, timeout=RPC_TIMEOUT)),
        lambda c: c is not None,
    )
    assert error[0] is Code.ALREADY_EXISTS, error
    assert "another snapshot or volume" in error[1]
    b.delete_snapshot(snap2.snapshot_id)
    until(lambda: _job_names(env.pools[1]), lambda names: late.name not in names)
    assert _backups_labelled(env, late.name) == [key_backup_id(late.name)]
    a.delete_snapshot(snap.snapshot_id)
    a.delete_snapshot(snap2.snapshot_id)
    assert _backups_labelled(env, dropped.name) == _backups_labelled(env, late.name) == []


def _job_names(pool: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(pool / JOBS_DB)) as db:
        return {str(row[0]) for row in db.execute("SELECT name FROM uploads")}


# -- a restore cut off by an outage leaves no lock that blocks DeleteSnapshot -----------------


def _delete_code(csi: Csi, snapshot_id: str) -> Code | None:
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id)
    try:
        csi.controller.DeleteSnapshot(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return e.code()
    return None


def test_restore_cut_off_by_an_outage_does_not_block_delete_snapshot(env: Env) -> None:
    a, b = client(env, 0), client(env, 1)
    volume = a.create("pvc-lock", 64 * MiB, cap=block_cap())
    write(env.pools[0], volume.volume_id, 0, os.urandom(24 * MiB))
    _, snap = ready_snapshot(a, volume.volume_id, "snapshot-lock", BACKUP)
    backup_id = key_backup_id("snapshot-lock")
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-lock-r",
        volume_capabilities=[block_cap()],
        volume_content_source=snapshot_source(snap.snapshot_id),
    )
    delete = csi_pb2.DeleteSnapshotRequest(snapshot_id=snap.snapshot_id)
    env.proxy.delay = 0.01
    try:
        expect_code(Code.ABORTED, lambda: b.controller.CreateVolume(request, timeout=RPC_TIMEOUT))
        # A restore that runs blocks DeleteSnapshot, on its own node and on any other.
        for csi in (b, a):
            message = expect_code(
                Code.FAILED_PRECONDITION,
                lambda csi=csi: csi.controller.DeleteSnapshot(delete, timeout=RPC_TIMEOUT),
            )
            assert "being restored" in message
        env.proxy.block()  # the target goes away while the restore downloads
        failure = until(
            lambda: _code_of_create(b, request),
            lambda r: r is None or r[0] is not Code.ABORTED,
            timeout=90,
        )
        assert failure is not None, "the restore completed with the target blocked"
        assert failure[0] is Code.UNAVAILABLE, failure
        # The restore has ended, but it could not delete its lock from the target.
        assert len(restore_locks(env.repo(), backup_id)) == 1
    finally:
        env.proxy.delay = 0.0
        env.proxy.unblock()
    # The target is back: node B removes its ended restore's lock within seconds (not when it
    # expires, 30 minutes on), so DeleteSnapshot on node A goes through.
    codes: list[Code | None] = []

    def delete_once() -> Code | None:
        codes.append(_delete_code(a, snap.snapshot_id))
        return codes[-1]

    until(delete_once, lambda code: code is None, timeout=30)
    assert set(codes) <= {Code.FAILED_PRECONDITION, None}, codes
    assert restore_locks(env.repo(), backup_id) == []
    assert backup_id not in env.repo().list_backups()
    assert "pvc-lock-r" not in pool_names(env.pools[1], "volumes")


def _code_of_create(csi: Csi, request: Any) -> tuple[Code, str] | None:
    try:
        csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT)
    except grpc.RpcError as e:
        return e.code(), str(e.details())
    return None
