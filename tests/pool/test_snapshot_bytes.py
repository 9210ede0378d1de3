"""`amber_pool_snapshots_bytes` (`pool_stats`) on a real XFS pool: the bytes allocated to the
snapshots' images, exactly, while snapshots come and go, also by another open of the pool (the
CLI beside a node serving metrics). Each image is stat'ed once per open pool, so a stale entry
(a deleted snapshot still counted, a new one missed) would show as a wrong sum here."""

from __future__ import annotations

import os
from pathlib import Path

from amber.domain.models import VolumeMode
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest
from amber.pool.stats import pool_stats


def _write(pool: Pool, volume: str, offset: int, size: int) -> None:
    with open(pool.volumes.get(volume).image, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())


def _allocated_by_stat(pool: Pool) -> int:
    """Every snapshot image's allocated bytes, from a fresh `stat` of each."""
    return sum(os.stat(s.image).st_blocks * 512 for s in pool.snapshots.list())


def test_the_metric_follows_snapshots_created_and_deleted(pool: Pool, pool_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("db", 64 * MiB, VolumeMode.BLOCK, None))
    assert pool_stats(pool).snapshots_bytes == 0
    _write(pool, "db", 0, 1 * MiB)
    pool.snapshots.create("db", "s1")
    _write(pool, "db", 4 * MiB, 3 * MiB)
    pool.snapshots.create("db", "s2")
    first = pool_stats(pool).snapshots_bytes
    assert first == _allocated_by_stat(pool) == 5 * MiB  # 1 MiB in s1, 4 MiB in s2

    other = Pool.open(pool_dir)  # another process's handle: changes this one did not make
    try:
        other.snapshots.delete("s1")
        _write(other, "db", 16 * MiB, 2 * MiB)
        other.snapshots.create("db", "s3")
    finally:
        other.close()
    assert pool_stats(pool).snapshots_bytes == _allocated_by_stat(pool) == 4 * MiB + 6 * MiB

    pool.snapshots.delete("s2")
    pool.snapshots.delete("s3")
    pool.snapshots.create("db", "s1")  # the old name again, a new image: 6 MiB
    assert pool_stats(pool).snapshots_bytes == _allocated_by_stat(pool) == 6 * MiB
