"""kill -9 of `amber snapshot create-group|delete-group` at each of their failpoints.

The next command (`amber pool check`, which recovers first) must find a consistent pool: the
whole group or nothing, no orphan image, no journal entry, and no frozen filesystem. The checks
of writability run before any `amber` command: the freeze guards alone must have thawed.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import grpc
import pytest

from amber.cli.state import CRASH_ENV
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain.units import MiB
from amber.pool import Pool
from amber.system import ioctl
from tests.cli.runner import amber, amber_json
from tests.csi.driver import rpc_error, running_driver, start_driver
from tests.pool.frozen import no_guard_left, writable_within

CREATE_POINTS = [
    "group.create.journaled",
    "freeze.guard-started",
    "group.frozen",
    "group.copied",
    "freeze.thaw-requested",
    "group.create.copied",
]
DELETE_POINTS = [
    "group.delete.journaled",
    "group.delete.rows-removed",
    "group.delete.files-removed",
]


def _two_mounted(pool: Path, work: Path) -> list[Path]:
    mounts = []
    for name in ("a", "b"):
        amber_json(pool, "volume", "create", name, "--size", "128Mi")
        amber_json(pool, "volume", "mount", name, str(work / name))
        (work / name / "data").write_text(f"payload {name}")
        mounts.append(work / name)
    return mounts


def _consistent(pool: Path) -> None:
    checked = amber(pool, "--output", "json", "pool", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []


@pytest.mark.parametrize("failpoint", CREATE_POINTS)
def test_kill_during_create_group_leaves_nothing_and_nothing_frozen(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    mounts = _two_mounted(pool_dir, work_dir)

    crashed = amber(pool_dir, "snapshot", "create-group", "g", "a", "b", crash_at=failpoint)

    assert crashed.returncode == -9, f"failpoint {failpoint} was not reached: {crashed.stderr}"
    for mnt in mounts:
        assert writable_within(mnt), f"{mnt} stayed frozen after kill -9 at {failpoint}"
        assert no_guard_left(mnt), "a freeze guard outlived its parent"
    _consistent(pool_dir)
    assert amber_json(pool_dir, "snapshot", "list-groups") == []
    assert amber_json(pool_dir, "snapshot", "list") == []
    # The pool keeps working: the same group can be taken now.
    group = amber_json(pool_dir, "snapshot", "create-group", "g", "a", "b")
    assert [m["name"] for m in group["members"]] == ["g-a", "g-b"]


@pytest.mark.parametrize("failpoint", DELETE_POINTS)
def test_kill_during_delete_group_finishes_the_delete(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    _two_mounted(pool_dir, work_dir)
    amber_json(pool_dir, "snapshot", "create-group", "g", "a", "b")

    crashed = amber(pool_dir, "snapshot", "delete-group", "g", crash_at=failpoint)

    assert crashed.returncode == -9, f"failpoint {failpoint} was not reached: {crashed.stderr}"
    _consistent(pool_dir)
    assert amber_json(pool_dir, "snapshot", "list-groups") == []
    assert amber_json(pool_dir, "snapshot", "list") == []
    assert list((pool_dir / "snapshots").iterdir()) == []


def _freeze(mountpoint: Path) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, ioctl.FIFREEZE, 0)
    finally:
        os.close(fd)


def test_pool_open_thaws_every_member_a_killed_guard_left(pool_dir: Path, work_dir: Path) -> None:
    """A whole container killed at once takes the guards with it: the journal names every
    frozen mount of the group, and the next pool open thaws them all."""
    mounts = _two_mounted(pool_dir, work_dir)
    crashed = amber(pool_dir, "snapshot", "create-group", "g", "a", "b", crash_at="group.frozen")
    assert crashed.returncode == -9
    for mnt in mounts:
        assert no_guard_left(mnt)
        _freeze(mnt)  # as if its guard had died with its parent before it could thaw

    Pool.open(pool_dir).close()

    for mnt in mounts:
        assert writable_within(mnt), f"{mnt} stayed frozen"
    _consistent(pool_dir)
    assert amber_json(pool_dir, "snapshot", "list") == []


@pytest.mark.parametrize("failpoint", ["group.frozen", "group.create.copied"])
def test_kill_of_the_node_plugin_during_a_group_snapshot_leaks_no_snapshot(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    """CreateVolumeGroupSnapshot over gRPC to `amber node`, killed -9 before the group is
    recorded: no member snapshot is left (the spec's "SP SHOULD make sure no snapshots are
    leaked"), nothing stays frozen, and after a restart the same call makes the group."""
    driver = start_driver(pool_dir, env={CRASH_ENV: failpoint})
    stagings, volumes = [], []
    try:
        csi = driver.client()
        for name in ("pvc-a", "pvc-b"):
            staging = work_dir / name
            staging.mkdir()
            volumes.append(csi.create(name, 64 * MiB).volume_id)
            csi.stage(volumes[-1], staging)
            stagings.append(staging)
        with grpc.insecure_channel(driver.endpoint) as channel:
            stub = csi_pb2_grpc.GroupControllerStub(channel)
            request = csi_pb2.CreateVolumeGroupSnapshotRequest(name="g", source_volume_ids=volumes)
            error = rpc_error(lambda: stub.CreateVolumeGroupSnapshot(request, timeout=60))
        assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
        assert driver.proc.wait(timeout=60) == -9, "the plugin did not die at the failpoint"
        for staging in stagings:
            assert writable_within(staging), f"{staging} stayed frozen after kill -9"
    finally:
        driver.cleanup()
    with running_driver(pool_dir) as restarted:
        csi = restarted.client()
        assert [e.snapshot.snapshot_id for e in csi.list_snapshots().entries] == []
        with grpc.insecure_channel(restarted.endpoint) as channel:
            stub = csi_pb2_grpc.GroupControllerStub(channel)
            group = stub.CreateVolumeGroupSnapshot(request, timeout=60).group_snapshot
        assert len(group.snapshots) == 2
        for volume, staging in zip(volumes, stagings, strict=True):
            csi.unstage(volume, staging)
