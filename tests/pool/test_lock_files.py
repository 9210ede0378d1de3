"""Lock files go away with their objects, without letting two lockers in at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amber.domain.errors import NotFound
from amber.domain.models import SourceKind
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest
from amber.pool.context import LOCKS_DIR
from amber.pool.locks import LockTable


def lock_files(pool: Pool) -> list[str]:
    return sorted(p.name for p in (pool.root / LOCKS_DIR).iterdir())


def test_deleting_volumes_and_snapshots_leaves_no_lock_files(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("v", 16 * MiB))
    pool.attachments.mount("volume", "v", work_dir / "v", create_target=True)
    pool.snapshots.create("v", "s")
    pool.volumes.create(
        VolumeRequest("c", 16 * MiB, source_kind=SourceKind.SNAPSHOT, source_name="s")
    )
    assert {"volume-v.lock", "snapshot-s.lock", "volume-c.lock"} <= set(lock_files(pool))

    pool.attachments.release("volume", "v")
    pool.snapshots.delete("s")
    pool.volumes.delete("v")
    pool.volumes.delete("c")

    assert lock_files(pool) == ["pool.lock"]


def test_a_failed_operation_on_a_missing_object_leaves_no_lock_file(
    pool: Pool, work_dir: Path
) -> None:
    with pytest.raises(NotFound):
        pool.volumes.create(
            VolumeRequest("n", 16 * MiB, source_kind=SourceKind.VOLUME, source_name="missing")
        )
    with pytest.raises(NotFound):
        pool.attachments.mount("volume", "ghost", work_dir / "g", create_target=True)
    with pytest.raises(NotFound):
        pool.snapshots.delete("ghost")
    assert [f for f in lock_files(pool) if f != "pool.lock"] == []


def test_a_locker_that_opened_a_removed_lock_file_starts_over(tmp_path: Path) -> None:
    """B opens the lock file; A (the deleter, holding the lock) removes it and lets go; B's
    flock then succeeds on the removed file. B must notice and lock the file at the path, so
    that a third locker C cannot hold the same key at the same time."""
    deleter = LockTable(tmp_path)
    fd_a = deleter.try_acquire("volume:v")
    assert fd_a is not None
    steps: list[str] = []

    def between_open_and_flock(name: str) -> None:
        if not steps:  # the first time only: the deleter finishes right there
            deleter.discard("volume:v", fd_a)
            deleter.release(fd_a)
        steps.append(name)

    fd_b = LockTable(tmp_path, failpoint=between_open_and_flock).try_acquire("volume:v")

    assert fd_b is not None
    assert len(steps) == 2, "B did not start over after locking a removed file"
    path = tmp_path / "volume-v.lock"
    assert os.stat(path).st_ino == os.fstat(fd_b).st_ino
    assert LockTable(tmp_path).try_acquire("volume:v") is None
    LockTable.release(fd_b)


CHURN = """
import sys
from amber.domain.errors import AlreadyExists, NotFound
from amber.domain.models import VolumeMode
from amber.pool import Pool, VolumeRequest
pool = Pool.open(sys.argv[1])
created = deleted = 0
for _ in range(40):
    try:
        pool.volumes.create(VolumeRequest("v", 8 << 20, mode=VolumeMode.BLOCK))
        created += 1
    except AlreadyExists:
        pass
    try:
        pool.volumes.delete("v")
        deleted += 1
    except NotFound:
        pass
print(created, deleted)
"""


def test_concurrent_create_and_delete_of_one_name_stay_consistent(pool: Pool) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHURN, str(pool.root)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    totals = [0, 0]
    for worker in workers:
        out, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0
        created, deleted = map(int, out.split())
        totals[0] += created
        totals[1] += deleted

    exists = pool.volumes.find("v") is not None
    assert totals[0] - totals[1] == int(exists)  # every create was deleted once, at most
    assert pool.check() == []
    images = list((pool.root / "volumes").iterdir())
    assert len(images) == int(exists)
    expected = ["pool.lock", "volume-v.lock"] if exists else ["pool.lock"]
    assert lock_files(pool) == expected


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_is_held_sees_a_lock_of_any_process_without_taking_it(tmp_path: Path) -> None:
    table = LockTable(tmp_path / "locks")
    other = LockTable(tmp_path / "other")
    assert not table.is_held("job")  # no lock file yet
    fd = table.try_acquire("job")
    assert fd is not None
    assert table.is_held("job")
    assert not table.is_held("other-job")
    assert not other.is_held("job")  # same name, another file
    table.release(fd)
    assert not table.is_held("job")

    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "locks" / "job.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        assert child.stdout.readline() == b"held\n"
        assert table.is_held("job")
        assert table.try_acquire("job") is None  # probing did not take it, and it is held
    finally:
        child.stdin.close()
        child.wait()
    assert not table.is_held("job")
    fd = table.try_acquire("job")
    assert fd is not None
    table.release(fd)
