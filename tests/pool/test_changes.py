"""Change tracking on a real reflink pool: allocated ranges and the delta of two snapshots.

The property test writes random patterns into ext4, xfs and Block volumes (real loop devices
and mounts), takes a snapshot before and after, and checks the delta against the two images
compared byte by byte. "Truly differs" is measured at the pool filesystem's block size (the
granularity the delta reports in, 4 KiB here): a block truly differs when at least one of its
bytes differs between the two images. The delta must cover every such block and report at most
10% more bytes than they hold.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from amber.domain.errors import FailedPrecondition, InvalidArgument
from amber.domain.models import VolumeMode
from amber.domain.units import KiB, MiB
from amber.pool import Pool, VolumeRequest
from amber.pool.changes import ByteRange, Delta, allocated, changed_ranges, delta
from amber.system.ioctl import FIEMAP_EXTENT_DELALLOC, FIEMAP_EXTENT_SHARED, Extent
from tests.pool.helpers import differing_blocks

SIZE = 320 * MiB  # xfs needs 300 MiB


# -- pure logic ---------------------------------------------------------------------------


def test_shared_extents_are_unchanged_and_the_rest_is_reported() -> None:
    base = [Extent(0, 100_000, 16 * KiB, 0), Extent(32 * KiB, 900_000, 8 * KiB, 0)]
    target = [
        Extent(0, 100_000, 4 * KiB, FIEMAP_EXTENT_SHARED),  # shared
        Extent(4 * KiB, 500_000, 4 * KiB, 0),  # rewritten
        Extent(8 * KiB, 100_000 + 8 * KiB, 8 * KiB, FIEMAP_EXTENT_SHARED),  # shared, split
        Extent(20 * KiB, 600_000, 4 * KiB, 0),  # new data where base had a hole
        # 32..40 KiB: punched in the target (base had data)
    ]
    assert changed_ranges(base, target, 64 * KiB) == [
        (4 * KiB, 4 * KiB),
        (20 * KiB, 4 * KiB),
        (32 * KiB, 8 * KiB),
    ]


def test_untrusted_extents_and_flag_changes_count_as_changed() -> None:
    base = [Extent(0, 10_000, 8 * KiB, 0x800), Extent(8 * KiB, 20_000, 4 * KiB, 0)]
    target = [
        Extent(0, 10_000, 8 * KiB, 0),
        Extent(8 * KiB, 20_000, 4 * KiB, FIEMAP_EXTENT_DELALLOC),
    ]
    assert changed_ranges(base, target, 16 * KiB) == [(0, 12 * KiB)]


def test_identical_maps_have_no_delta() -> None:
    extents = [Extent(0, 10_000, 8 * KiB, 0), Extent(64 * KiB, 40_000, 8 * KiB, 0)]
    assert changed_ranges(extents, extents, 128 * KiB) == []


# -- real pool ----------------------------------------------------------------------------


def _write_pattern(rng: random.Random, write: _Writer, span: int, count: int) -> None:
    for _ in range(count):
        length = rng.randrange(1, 192 * KiB)
        offset = rng.randrange(0, span - length)
        write(offset, rng.randbytes(length))


class _Writer:
    def __init__(self, path: Path, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.fd = os.open(path, flags, 0o644)

    def __call__(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    def close(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


def _blocks(ranges: list[ByteRange], block: int) -> set[int]:
    return {
        i for start, length in ranges for i in range(start // block, -(-(start + length) // block))
    }


def _check(found: Delta, base: Path, target: Path) -> None:
    truth = differing_blocks(base, target, found.block_size)
    assert truth, "the pattern changed nothing: the test proves nothing"
    reported = _blocks(found.ranges, found.block_size)
    missed = truth - reported
    assert not missed, f"{len(missed)} changed blocks not reported, e.g. {sorted(missed)[:5]}"
    assert found.changed_bytes <= 1.10 * len(truth) * found.block_size, (
        f"delta {found.changed_bytes} bytes, truly differ {len(truth) * found.block_size}"
    )


def _fs_round(pool: Pool, work: Path, name: str, rng: random.Random) -> None:
    mnt = work / name
    pool.attachments.mount("volume", name, mnt, create_target=True)
    try:
        for file_no in range(3):
            writer = _Writer(mnt / f"f{file_no}", create=True)
            _write_pattern(rng, writer, 24 * MiB, rng.randrange(5, 40))
            writer.close()
    finally:
        pool.attachments.release("volume", name)


def _block_round(pool: Pool, name: str, rng: random.Random) -> None:
    device = pool.attachments.expose("volume", name).loop_device
    try:
        writer = _Writer(device, create=False)
        _write_pattern(rng, writer, SIZE, rng.randrange(5, 60))
        writer.close()
    finally:
        pool.attachments.release("volume", name)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("kind", ["ext4", "xfs", "block"])
def test_delta_covers_every_changed_byte_and_little_more(
    pool: Pool, work_dir: Path, kind: str, seed: int
) -> None:
    rng = random.Random(f"{kind}-{seed}")
    name = f"v-{kind}-{seed}"
    if kind == "block":
        pool.volumes.create(VolumeRequest(name, SIZE, mode=VolumeMode.BLOCK, fs_type=None))
        step = lambda: _block_round(pool, name, rng)  # noqa: E731
    else:
        pool.volumes.create(VolumeRequest(name, SIZE, fs_type=kind))
        step = lambda: _fs_round(pool, work_dir, name, rng)  # noqa: E731
    step()
    base = pool.snapshots.create(name, f"{name}-a")
    step()
    target = pool.snapshots.create(name, f"{name}-b")
    _check(delta(base, target), base.image, target.image)
    # nothing changed between two snapshots of the same moment
    again = pool.snapshots.create(name, f"{name}-c")
    assert delta(target, again).ranges == []


def test_allocated_ranges_cover_every_nonzero_byte(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("blk", SIZE, mode=VolumeMode.BLOCK, fs_type=None))
    device = pool.attachments.expose("volume", "blk").loop_device
    writer = _Writer(device, create=False)
    writer(10 * MiB, b"\x01" * 8 * KiB)
    writer(100 * MiB + 4 * KiB, b"\x02" * 4 * KiB)
    writer.close()
    pool.attachments.release("volume", "blk")
    snap = pool.snapshots.create("blk", "blk-s")
    found = allocated(snap)
    assert found.capacity == SIZE
    assert (10 * MiB, 8 * KiB) in found.ranges
    assert (100 * MiB + 4 * KiB, 4 * KiB) in found.ranges
    assert found.changed_bytes == 12 * KiB


def test_snapshots_of_different_volumes_have_no_delta(pool: Pool) -> None:
    for name in ("one", "two"):
        pool.volumes.create(VolumeRequest(name, 64 * MiB, mode=VolumeMode.BLOCK, fs_type=None))
        pool.snapshots.create(name, f"{name}-s")
    with pytest.raises(InvalidArgument, match="not snapshots of the same volume"):
        delta(pool.snapshots.get("one-s"), pool.snapshots.get("two-s"))
    old = pool.snapshots.get("one-s")
    pool.volumes.delete("one")
    pool.volumes.create(VolumeRequest("one", 64 * MiB, mode=VolumeMode.BLOCK, fs_type=None))
    with pytest.raises(InvalidArgument, match="not snapshots of the same volume"):
        delta(old, pool.snapshots.create("one", "one-again"))
    with pytest.raises(FailedPrecondition, match="change tracking is off"):
        delta(pool.snapshots.get("one-s"), pool.snapshots.get("one-s"), reflink=False)


def test_a_grown_volume_reports_new_data_past_the_base_end(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("g", 64 * MiB, mode=VolumeMode.BLOCK, fs_type=None))
    base = pool.snapshots.create("g", "g-a")
    pool.volumes.expand("g", 128 * MiB)
    device = pool.attachments.expose("volume", "g").loop_device
    writer = _Writer(device, create=False)
    writer(100 * MiB, b"\x07" * 4 * KiB)
    writer.close()
    pool.attachments.release("volume", "g")
    target = pool.snapshots.create("g", "g-b")
    found = delta(base, target)
    assert found.capacity == 128 * MiB
    assert found.ranges == [(100 * MiB, 4 * KiB)]
