"""Group snapshots of backup classes end to end: two real `amber node` processes (two pools, as
two nodes) sharing a real directory target; gRPC over their unix sockets."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.backup.keys import Password
from amber.backup.repository import Repository, init_repository, open_repository
from amber.blobstore.target import open_store
from amber.cli.state import CRASH_ENV
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain.units import MiB
from amber.ops.jobs import JOBS_DB
from tests.csi.backup_env import PASSWORD, pool_names, volume_image
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import RPC_TIMEOUT, Code, Csi, DriverProcess, block_cap, start_driver
from tests.csi.test_backup_snapshots import restore

TARGET = "ft"
BACKUP = {"type": "backup", "target": TARGET}
_names = itertools.count()


@dataclass
class Env:
    repo_dir: Path
    targets: Path
    pools: list[Path]
    drivers: list[DriverProcess]

    @property
    def args(self) -> list[str]:
        return [f"--targets-config={self.targets}", "--upload-retry=0.3", "--upload-attempts=60"]

    def start(self, index: int, env: dict[str, str] | None = None) -> Csi:
        node = f"node-{'ab'[index]}"
        driver = start_driver(self.pools[index], node_id=node, extra=self.args, env=env)
        if index < len(self.drivers):
            self.drivers[index] = driver
        else:
            self.drivers.append(driver)
        return driver.client()

    def repo(self) -> Repository:
        return open_repository(open_store(f"file://{self.repo_dir}", {}), Password(PASSWORD))


def _targets(directory: Path, urls: dict[str, Path]) -> Path:
    (directory / "password").write_text(PASSWORD)
    document = {
        "version": 1,
        "targets": {
            name: {
                "url": f"file://{path}",
                "encryption": "aes-256-gcm",
                "password_file": "password",
                "key_file": None,
            }
            for name, path in urls.items()
        },
    }
    path = directory / "targets.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, xfs_root: Path) -> Iterator[Env]:
    repo_dir = tmp_path_factory.mktemp("target")
    init_repository(open_store(f"file://{repo_dir}", {}), Password(PASSWORD))
    read_only = tmp_path_factory.mktemp("read-only")  # the same repository, mounted read-only
    subprocess.run(["mount", "--bind", str(repo_dir), str(read_only)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(read_only)], check=True)
    targets = _targets(tmp_path_factory.mktemp("targets"), {TARGET: repo_dir, "ro": read_only})
    env = Env(repo_dir, targets, [make_pool(xfs_root), make_pool(xfs_root)], [])
    try:
        env.start(0)
        env.start(1)
        yield env
        for driver in env.drivers:
            driver.stop()
    finally:
        for driver in env.drivers:
            driver.cleanup()
        for pool in env.pools:
            remove_pool(pool)
        subprocess.run(["umount", str(read_only)], check=True)


def _stub(env: Env, index: int) -> Any:
    channel = grpc.insecure_channel(env.drivers[index].endpoint)
    return csi_pb2_grpc.GroupControllerStub(channel)


def _create(env: Env, name: str, volume_ids: list[str], params: dict[str, str]) -> Any:
    request = csi_pb2.CreateVolumeGroupSnapshotRequest(
        name=name, source_volume_ids=volume_ids, parameters=params
    )
    return _stub(env, 0).CreateVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT).group_snapshot


def _get(env: Env, group: Any) -> Any:
    request = csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id,
        snapshot_ids=[s.snapshot_id for s in group.snapshots],
    )
    return _stub(env, 0).GetVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT).group_snapshot


def _delete(env: Env, group: Any) -> None:
    request = csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group.group_snapshot_id,
        snapshot_ids=[s.snapshot_id for s in group.snapshots],
    )
    _stub(env, 0).DeleteVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT)


def until(call: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = call()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out: last {value}"
        time.sleep(0.1)


def _volumes(env: Env, csi: Csi) -> tuple[list[str], list[bytes]]:
    """Two block volumes holding distinct data."""
    ids, datas = [], []
    for i in range(2):
        volume = csi.create(f"gb-{next(_names)}", 16 * MiB, cap=block_cap())
        data = os.urandom(3 * MiB) + bytes([i + 1]) * MiB
        fd = os.open(volume_image(env.pools[0], volume.volume_id), os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        ids.append(volume.volume_id)
        datas.append(data)
    return ids, datas


def _read_on_b(env: Env, volume_id: str, size: int) -> bytes:
    with volume_image(env.pools[1], volume_id).open("rb") as f:
        return f.read(size)


def _member_snapshots(env: Env, volume_ids: list[str]) -> set[str]:
    names: set[str] = set()
    for volume_id in volume_ids:
        names |= pool_names(env.pools[0], "snapshots", volume_id.rsplit(":", 1)[1])
    return names


def _jobs(pool: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(pool / JOBS_DB)) as db:
        rows = db.execute("SELECT name, state FROM uploads").fetchall()
        rows += db.execute("SELECT name, 'group' FROM group_uploads").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def _code(call: Callable[[], Any]) -> tuple[Code, str] | None:
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), str(e.details())
    return None


def _check_restores_on_b(env: Env, group: Any, volume_ids: list[str], datas: list[bytes]) -> None:
    b = env.drivers[1].client()
    by_source = {s.source_volume_id: s.snapshot_id for s in group.snapshots}
    for volume_id, data in zip(volume_ids, datas, strict=True):
        restored, _ = restore(b, f"gb-restored-{next(_names)}", by_source[volume_id])
        assert _read_on_b(env, restored.volume_id, len(data)) == data


def test_members_ready_together_restore_elsewhere_and_delete(env: Env) -> None:
    a = env.drivers[0].client()
    volume_ids, datas = _volumes(env, a)

    first = _create(env, "grp-backup", volume_ids, BACKUP)
    assert {s.source_volume_id for s in first.snapshots} == set(volume_ids)
    assert all(s.snapshot_id.startswith(f"amber:v1:bak:{TARGET}:") for s in first.snapshots)
    assert all(s.group_snapshot_id == first.group_snapshot_id for s in first.snapshots)
    # once both are committed the worker drops the local group (no Get needed)
    until(lambda: _member_snapshots(env, volume_ids), lambda names: names == set())
    final = _get(env, first)
    assert final.ready_to_use
    assert all(s.ready_to_use for s in final.snapshots)
    assert [s.snapshot_id for s in final.snapshots] == [s.snapshot_id for s in first.snapshots]
    assert final.creation_time == first.creation_time
    again = _create(env, "grp-backup", volume_ids, BACKUP)  # idempotent by name
    assert again.group_snapshot_id == first.group_snapshot_id
    assert again.ready_to_use
    listed = a.list_snapshots(snapshot_id=final.snapshots[0].snapshot_id).entries
    assert [e.snapshot.group_snapshot_id for e in listed] == [final.group_snapshot_id]
    assert listed[0].snapshot.ready_to_use
    clash = _code(lambda: _create(env, "grp-backup", volume_ids, {}))  # a local class now
    assert clash is not None
    assert clash[0] is Code.ALREADY_EXISTS
    assert len(env.repo().list_backups()) == 2

    _check_restores_on_b(env, final, volume_ids, datas)
    member_alone = _code(lambda: a.delete_snapshot(final.snapshots[0].snapshot_id))
    assert member_alone is not None
    assert member_alone[0] is Code.FAILED_PRECONDITION

    _delete(env, final)
    _delete(env, final)  # idempotent
    assert env.repo().list_backups() == []
    assert _jobs(env.pools[0]) == []
    gone = _code(lambda: _get(env, final))
    assert gone is not None
    assert gone[0] is Code.NOT_FOUND


def test_a_failed_member_fails_the_group_and_delete_cleans_up(env: Env) -> None:
    a = env.drivers[0].client()
    volume_ids, _ = _volumes(env, a)
    before = env.repo().list_backups()
    # target "ro" is the repository mounted read-only: the uploads fail for good (EROFS)
    group = _create(env, "grp-bad", volume_ids, {"type": "backup", "target": "ro"})
    assert not group.ready_to_use

    failed = until(lambda: _code(lambda: _get(env, group)), lambda c: c is not None)
    assert failed[0] is Code.PERMISSION_DENIED, failed
    assert "could not be uploaded to target 'ro'" in failed[1]
    assert PASSWORD not in failed[1]

    _delete(env, group)
    assert _member_snapshots(env, volume_ids) == set()
    until(lambda: _jobs(env.pools[0]), lambda jobs: jobs == [])  # the worker drops the jobs
    assert env.repo().list_backups() == before


def test_kill_9_mid_upload_then_the_group_completes_and_nothing_leaks(env: Env) -> None:
    a = env.drivers[0].client()
    volume_ids, datas = _volumes(env, a)
    env.drivers[0].stop()
    env.drivers[0].cleanup()
    env.start(0, env={CRASH_ENV: "backup.committed"})  # dies after the first member commits
    group = _create(env, "grp-crash", volume_ids, BACKUP)
    assert not group.ready_to_use
    until(env.drivers[0].proc.poll, lambda code: code is not None)
    assert env.drivers[0].proc.returncode == -9, env.drivers[0].log.read_text()[-2000:]
    env.drivers[0].cleanup()

    env.start(0)
    final = until(lambda: _get(env, group), lambda g: g.ready_to_use)
    assert len(env.repo().list_backups()) == 2  # the first member was not uploaded twice
    _check_restores_on_b(env, final, volume_ids, datas)

    _delete(env, final)
    assert env.repo().list_backups() == []
    assert _member_snapshots(env, volume_ids) == set()
    assert _jobs(env.pools[0]) == []
