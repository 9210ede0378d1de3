"""The metadata on a filesystem with no space left: OutOfSpace naming the pool, never sqlite3."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.domain.errors import OutOfSpace
from amber.domain.models import VolumeMode
from amber.domain.units import MiB
from amber.pool import Pool, PoolSettings, VolumeRequest
from amber.pool.context import BALLAST
from amber.pool.store import MetadataStore
from tests.conftest import make_xfs, release_xfs


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    image, mnt = make_xfs(tmp_path, "300M")
    yield mnt
    release_xfs(image, mnt)


def fill_up(directory: Path) -> None:
    """Allocate every free block of the filesystem holding `directory`."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        offset = 0
        for step in (1 << 20, 1 << 12):
            while True:
                try:
                    os.posix_fallocate(fd, offset, step)
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
                offset += step
    finally:
        os.close(fd)


def test_writing_metadata_on_a_full_filesystem_is_out_of_space(tiny_fs: Path) -> None:
    db = tiny_fs / "amber.db"
    MetadataStore(db).close()
    fill_up(tiny_fs)

    with pytest.raises(OutOfSpace, match=rf"pool filesystem at {tiny_fs} is full") as caught:
        open_and_write(db)
    assert "fstrim" in caught.value.message


def open_and_write(db: Path) -> None:
    store = MetadataStore(db)
    try:
        store.set_meta("big", "x" * (4 << 20))
    finally:
        store.close()


def test_opening_a_full_pool_gives_its_reserve_back_first(tiny_fs: Path) -> None:
    root = tiny_fs / "pool"
    Pool.init_dir(root)
    settings = PoolSettings(ballast_bytes=16 << 20)
    Pool.open(root, settings=settings).close()
    assert (root / BALLAST).exists()
    fill_up(tiny_fs)

    pool = Pool.open(root, settings=settings)
    try:
        assert not (root / BALLAST).exists()
        status = pool.status()
        assert status.full
        assert status.space_problem is not None
        assert "nearly full" in status.space_problem
        pool.ctx.store.set_meta("after", "written")  # metadata writes have room again
    finally:
        pool.close()


def test_a_full_pool_without_its_reserve_opens_read_only(tiny_fs: Path) -> None:
    """The reserve was given back and eaten too: the pool still opens to be seen (read-only,
    recovery skipped); what would write answers OutOfSpace; once space is freed it is normal."""
    root = tiny_fs / "pool"
    Pool.init_dir(root)
    with_reserve = Pool.open(root)
    with_reserve.volumes.create(VolumeRequest("v", 16 * MiB, mode=VolumeMode.BLOCK))
    with_reserve.close()
    fill_up(tiny_fs)
    Pool.open(root).close()  # gives the reserve back...
    fill_up(tiny_fs)  # ...and the writers eat it too

    pool = Pool.open(root)
    try:
        assert pool.ctx.store.read_only
        assert pool.status().full
        assert [v.name for v in pool.volumes.list()] == ["v"]
        assert pool.check() == []
        with pytest.raises(OutOfSpace, match="is full"):
            pool.volumes.delete("v")
        assert [v.name for v in pool.volumes.list()] == ["v"]
    finally:
        pool.close()

    (tiny_fs / "filler").unlink()
    pool = Pool.open(root)
    try:
        assert not pool.ctx.store.read_only
        pool.volumes.delete("v")
        assert pool.volumes.list() == []
    finally:
        pool.close()
