"""The node plugin on a pool filled by writes to its thin volumes.

Calls that need room answer RESOURCE_EXHAUSTED (never INTERNAL), the volume condition turns
abnormal with a message saying the pool filesystem is nearly full, and the volumes can still be
unstaged and deleted, after which the pool has room again.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from amber.domain.units import MiB
from amber.pool import Pool
from amber.pool.store import FULL_BYTES
from amber.system import fs
from tests.conftest import make_xfs, release_xfs, teardown_mounts_under
from tests.csi.driver import Csi, expect_code, running_driver

Code = grpc.StatusCode


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[Path]:
    image, mnt = make_xfs(tmp_path, "400M")
    pool = mnt / "pool"
    Pool.init_dir(pool, overprovisioning=4.0)
    yield pool
    teardown_mounts_under(tmp_path / "work")
    release_xfs(image, mnt)


def fill(csi: Csi, volume_id: str, staging: Path) -> None:
    staging.mkdir(parents=True)
    csi.stage(volume_id, staging)
    subprocess.run(
        ["dd", "if=/dev/urandom", f"of={staging / 'fill'}", "bs=1M", "count=290", "conv=fsync"],
        capture_output=True,
        check=False,
        timeout=300,
    )


def test_a_full_pool_answers_resource_exhausted_and_still_lets_go(
    small_pool: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    with running_driver(small_pool) as driver:
        csi = driver.client()
        volumes = [csi.create(f"pvc-full-{i}", 300 * MiB).volume_id for i in range(2)]
        for i, volume in enumerate(volumes):
            fill(csi, volume, work / f"staging-{i}")
        assert fs.usage(small_pool).available < FULL_BYTES, "the test did not fill the pool"

        expect_code(Code.RESOURCE_EXHAUSTED, lambda: csi.create("pvc-more", 64 * MiB))
        expect_code(Code.RESOURCE_EXHAUSTED, lambda: csi.snapshot(volumes[0], "snap-full"))
        condition = csi.stats(volumes[0], work / "staging-0").volume_condition
        assert condition.abnormal
        assert "nearly full" in condition.message
        condition = csi.get_volume(volumes[1]).status.volume_condition
        assert condition.abnormal
        assert "nearly full" in condition.message

        csi.unstage(volumes[0], work / "staging-0")
        csi.delete(volumes[0])

        assert not csi.get_volume(volumes[1]).status.volume_condition.abnormal
        csi.snapshot(volumes[1], "snap-after")
        csi.unstage(volumes[1], work / "staging-1")
