"""kill -9 of `amber` anywhere in the freeze window never leaves the filesystem frozen.

The command (a snapshot, or a clone of a mounted volume) SIGKILLs itself at a named point of the
freeze window. Without running any amber command, the source filesystem must take a write and
an fsync within the freeze limit (the guard process thaws it when its parent's pipe closes), and
no guard process may be left. Then the next command recovers the pool to a consistent state.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import grpc
import pytest

from amber.cli.state import CRASH_ENV
from amber.domain.units import MiB
from amber.pool import Pool
from amber.pool.locks import LockTable
from amber.system import ioctl
from tests.cli.runner import amber, amber_json
from tests.csi.driver import rpc_error, running_driver, start_driver
from tests.pool.frozen import FREEZE_LIMIT, no_guard_left, start_write, writable_within

WINDOW = ["freeze.guard-started", "copy.frozen", "copy.copied", "freeze.thaw-requested"]
COMMANDS = {
    "snapshot": ["snapshot", "create", "v", "s"],
    "clone": ["volume", "create", "c", "--from-volume", "v"],
}


@pytest.mark.parametrize("failpoint", WINDOW)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_kill_during_freeze_leaves_the_filesystem_writable(
    pool_dir: Path, work_dir: Path, command: str, failpoint: str
) -> None:
    mnt = work_dir / "v"
    amber_json(pool_dir, "volume", "create", "v", "--size", "128Mi")
    amber_json(pool_dir, "volume", "mount", "v", str(mnt))
    (mnt / "data").write_text("payload")

    crashed = amber(pool_dir, *COMMANDS[command], crash_at=failpoint)

    assert crashed.returncode == -9, f"failpoint {failpoint} was not reached: {crashed.stderr}"
    assert writable_within(mnt), f"{mnt} stayed frozen after kill -9 at {failpoint}"
    assert no_guard_left(mnt), "a freeze guard outlived its parent"

    checked = amber(pool_dir, "--output", "json", "pool", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []
    assert [s["name"] for s in amber_json(pool_dir, "snapshot", "list")] == []
    assert [v["name"] for v in amber_json(pool_dir, "volume", "list")] == ["v"]
    assert (mnt / "data").read_text() == "payload"


def test_snapshot_after_a_killed_one_succeeds_and_the_guard_is_gone(
    pool_dir: Path, work_dir: Path
) -> None:
    mnt = work_dir / "v"
    amber_json(pool_dir, "volume", "create", "v", "--size", "128Mi")
    amber_json(pool_dir, "volume", "mount", "v", str(mnt))
    assert amber(pool_dir, "snapshot", "create", "v", "s", crash_at="copy.frozen").returncode == -9
    assert writable_within(mnt)

    amber_json(pool_dir, "snapshot", "create", "v", "s")

    assert no_guard_left(mnt)
    assert writable_within(mnt)


@pytest.mark.parametrize("failpoint", WINDOW)
def test_kill_of_the_node_plugin_during_freeze_leaves_the_filesystem_writable(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    """CreateSnapshot over gRPC to `amber node`, which is killed -9 inside the freeze window."""
    staging = work_dir / "staging"
    staging.mkdir()
    driver = start_driver(pool_dir, env={CRASH_ENV: failpoint})
    try:
        csi = driver.client()
        volume = csi.create("pvc-frozen", 64 * MiB).volume_id
        csi.stage(volume, staging)
        (staging / "data").write_text("payload")

        error = rpc_error(lambda: csi.snapshot(volume, "snap-frozen"))

        assert error.code() is grpc.StatusCode.UNAVAILABLE, error.details()
        assert driver.proc.wait(timeout=60) == -9, "the plugin did not die at the failpoint"
        assert writable_within(staging), f"{staging} stayed frozen after kill -9 at {failpoint}"
        assert no_guard_left(staging)
    finally:
        driver.cleanup()
    with running_driver(pool_dir) as restarted:
        csi = restarted.client()
        assert [e.snapshot.snapshot_id for e in csi.list_snapshots().entries] == []
        assert (staging / "data").read_text() == "payload"
        csi.unstage(volume, staging)


def _freeze(mountpoint: Path) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, ioctl.FIFREEZE, 0)
    finally:
        os.close(fd)


def test_pool_open_thaws_what_a_killed_guard_left(pool_dir: Path, work_dir: Path) -> None:
    """A whole container killed at once takes the guard with it: the journal still names the
    frozen mount, and the next pool open thaws it."""
    mnt = _killed_snapshot(pool_dir, work_dir)
    _freeze(mnt)  # as if the guard had died with its parent before it could thaw

    Pool.open(pool_dir).close()

    assert writable_within(mnt)


def test_pool_open_leaves_the_freeze_of_a_live_operation_alone(
    pool_dir: Path, work_dir: Path
) -> None:
    """While a live operation holds the source volume, a freeze may be its own: recovery keeps
    the stale entry and thaws at a later open, once the source is free."""
    mnt = _killed_snapshot(pool_dir, work_dir)
    _freeze(mnt)
    holder = LockTable(pool_dir / "locks")
    fd = holder.try_acquire("volume:v")
    assert fd is not None
    writer = start_write(mnt)
    try:
        Pool.open(pool_dir).close()
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(timeout=2)  # still frozen: the live holder's freeze was left alone
    finally:
        holder.release(fd)

    Pool.open(pool_dir).close()

    assert writer.wait(timeout=FREEZE_LIMIT) == 0
    assert writable_within(mnt)


def _killed_snapshot(pool_dir: Path, work_dir: Path) -> Path:
    mnt = work_dir / "v"
    amber_json(pool_dir, "volume", "create", "v", "--size", "128Mi")
    amber_json(pool_dir, "volume", "mount", "v", str(mnt))
    assert amber(pool_dir, "snapshot", "create", "v", "s", crash_at="copy.frozen").returncode == -9
    assert no_guard_left(mnt)
    return mnt
