"""The core story on a real reflink pool: write, snapshot, change, restore, clone, expand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amber.domain.errors import FailedPrecondition, NotFound
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import GiB, MiB
from amber.pool import Pool, VolumeRequest
from amber.system import mount
from tests.conftest import HAS_CAP_SYS_RESOURCE
from tests.pool.helpers import sha256, tree_digest, write_random


def _fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


@pytest.mark.parametrize("fs_type", ["ext4", "xfs"])
def test_restore_is_byte_identical_to_the_snapshot_moment(
    pool: Pool, work_dir: Path, fs_type: str
) -> None:
    pool.volumes.create(VolumeRequest("app", 512 * MiB, fs_type=fs_type))
    live = work_dir / "app"
    pool.attachments.mount("volume", "app", live, create_target=True)
    write_random(live / "a.bin", 40 * MiB, seed=1)
    (live / "dir").mkdir()
    (live / "dir" / "note.txt").write_text("before")
    at_snapshot = tree_digest(live)

    pool.snapshots.create("app", "snap")  # taken while mounted: the filesystem is frozen
    write_random(live / "a.bin", 8 * MiB, seed=2)
    (live / "dir" / "note.txt").write_text("after")
    assert tree_digest(live) != at_snapshot

    pool.volumes.create(
        VolumeRequest("restored", 512 * MiB, source_kind=SourceKind.SNAPSHOT, source_name="snap")
    )
    restored = work_dir / "restored"
    pool.attachments.mount("volume", "restored", restored, create_target=True)
    assert tree_digest(restored) == at_snapshot
    assert pool.volumes.get("restored").fs_type == fs_type


def test_restore_into_a_larger_volume_grows_its_filesystem(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("small", 256 * MiB))
    live = work_dir / "small"
    pool.attachments.mount("volume", "small", live, create_target=True)
    digest = write_random(live / "data", 16 * MiB, seed=3)
    pool.snapshots.create("small", "s")
    pool.volumes.create(
        VolumeRequest("big", 1 * GiB, source_kind=SourceKind.SNAPSHOT, source_name="s")
    )
    assert pool.volumes.get("big").size == 1 * GiB
    big = work_dir / "big"
    pool.attachments.mount("volume", "big", big, create_target=True)
    assert sha256(big / "data") == digest
    assert _fs_bytes(big) > 900 * MiB
    assert not pool.volumes.get("big").fs_resize_pending


def test_clones_are_independent_both_ways(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("src", 256 * MiB))
    src = work_dir / "src"
    pool.attachments.mount("volume", "src", src, create_target=True)
    original = write_random(src / "f", 8 * MiB, seed=4)
    pool.volumes.create(
        VolumeRequest("dst", 256 * MiB, source_kind=SourceKind.VOLUME, source_name="src")
    )
    dst = work_dir / "dst"
    pool.attachments.mount("volume", "dst", dst, create_target=True)
    assert sha256(dst / "f") == original

    changed_src = write_random(src / "f", 8 * MiB, seed=5)
    assert sha256(dst / "f") == original
    changed_dst = write_random(dst / "f", 8 * MiB, seed=6)
    assert sha256(src / "f") == changed_src
    assert sha256(dst / "f") == changed_dst
    (dst / "only-in-clone").write_text("x")
    assert not (src / "only-in-clone").exists()


def test_deleting_a_volume_keeps_its_snapshots_usable(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("gone", 256 * MiB))
    live = work_dir / "gone"
    pool.attachments.mount("volume", "gone", live, create_target=True)
    digest = write_random(live / "f", 4 * MiB, seed=7)
    pool.snapshots.create("gone", "keep")
    pool.attachments.release("volume", "gone")
    pool.volumes.delete("gone")
    with pytest.raises(NotFound):
        pool.volumes.get("gone")

    snap_dir = work_dir / "snap"
    pool.attachments.mount("snapshot", "keep", snap_dir, create_target=True)
    assert sha256(snap_dir / "f") == digest
    with pytest.raises(OSError, match="Read-only"):
        (snap_dir / "new").write_text("no")
    pool.attachments.release("snapshot", "keep")
    pool.volumes.create(
        VolumeRequest("reborn", 256 * MiB, source_kind=SourceKind.SNAPSHOT, source_name="keep")
    )
    reborn = work_dir / "reborn"
    pool.attachments.mount("volume", "reborn", reborn, create_target=True)
    assert sha256(reborn / "f") == digest
    assert pool.check() == []


def test_snapshots_are_reflinks_not_copies(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("v", 1 * GiB))
    live = work_dir / "v"
    pool.attachments.mount("volume", "v", live, create_target=True)
    write_random(live / "f", 64 * MiB, seed=8)
    before = pool.status().used
    for i in range(5):
        pool.snapshots.create("v", f"s{i}")
    after = pool.status().used
    # Five full copies would take >320 MiB; reflinks share the blocks.
    assert after - before < 16 * MiB
    assert [s.name for s in pool.snapshots.list("v")] == [f"s{i}" for i in range(5)]


def test_online_expansion_of_mounted_xfs_keeps_data_and_grows(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("grow", 512 * MiB, fs_type="xfs"))
    live = work_dir / "grow"
    pool.attachments.mount("volume", "grow", live, create_target=True)
    digest = write_random(live / "f", 16 * MiB, seed=9)
    before = _fs_bytes(live)
    grown = pool.volumes.expand("grow", 2 * GiB)
    assert grown.size == 2 * GiB
    assert not grown.fs_resize_pending
    assert _fs_bytes(live) > before + 1 * GiB  # grew while mounted, no remount
    assert mount.is_mounted(live)
    assert sha256(live / "f") == digest
    write_random(live / "big", 700 * MiB, seed=10)  # more than the old size allowed


def test_expansion_of_mounted_ext4(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("e", 256 * MiB))
    live = work_dir / "e"
    pool.attachments.mount("volume", "e", live, create_target=True)
    digest = write_random(live / "f", 8 * MiB, seed=11)
    grown = pool.volumes.expand("e", 1 * GiB)
    if HAS_CAP_SYS_RESOURCE:
        assert not grown.fs_resize_pending
        assert _fs_bytes(live) > 900 * MiB
    else:
        # The kernel refuses online ext4 resize without CAP_SYS_RESOURCE: grown at next mount.
        assert grown.fs_resize_pending
        pool.attachments.release("volume", "e")
        pool.attachments.mount("volume", "e", live)
        assert _fs_bytes(live) > 900 * MiB
        assert not pool.volumes.get("e").fs_resize_pending
    assert sha256(live / "f") == digest


def test_expanding_an_unmounted_volume_grows_at_next_mount(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("cold", 320 * MiB, fs_type="xfs"))
    assert pool.volumes.expand("cold", 1 * GiB).fs_resize_pending
    live = work_dir / "cold"
    pool.attachments.mount("volume", "cold", live, create_target=True)
    assert _fs_bytes(live) > 900 * MiB
    assert not pool.volumes.get("cold").fs_resize_pending


def test_block_volume_snapshot_restore_and_expand(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("raw", 64 * MiB, mode=VolumeMode.BLOCK))
    att = pool.attachments.expose("volume", "raw")
    pattern = os.urandom(MiB)
    fd = os.open(att.loop_device, os.O_RDWR)
    try:
        os.pwrite(fd, pattern, 10 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    pool.snapshots.create("raw", "raw-snap")
    fd = os.open(att.loop_device, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xff" * MiB, 10 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    pool.volumes.create(
        VolumeRequest(
            "raw2",
            128 * MiB,
            mode=VolumeMode.BLOCK,
            source_kind=SourceKind.SNAPSHOT,
            source_name="raw-snap",
        )
    )
    with open(pool.volumes.get("raw2").image, "rb") as f:
        f.seek(10 * MiB)
        assert f.read(MiB) == pattern
    with pytest.raises(FailedPrecondition, match="block volume"):
        pool.attachments.mount("volume", "raw", Path("/tmp/never"), create_target=False)
    pool.volumes.expand("raw", 96 * MiB)
    from amber.system.ioctl import block_device_size

    assert block_device_size(att.loop_device) == 96 * MiB  # the loop device saw the growth


def test_read_only_mount_refuses_writes(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("ro", 256 * MiB))
    target = work_dir / "ro"
    pool.attachments.mount("volume", "ro", target, read_only=True, create_target=True)
    with pytest.raises(OSError, match="Read-only"):
        (target / "x").write_text("no")


def test_second_mount_of_a_volume_shares_the_filesystem(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("twice", 256 * MiB))
    a, b = work_dir / "a", work_dir / "b"
    pool.attachments.mount("volume", "twice", a, create_target=True)
    pool.attachments.mount("volume", "twice", b, read_only=True, create_target=True)
    (a / "shared").write_text("hello")
    assert (b / "shared").read_text() == "hello"
    with pytest.raises(OSError, match="Read-only"):
        (b / "x").write_text("no")
    # Mounting again at the same place is idempotent.
    again = pool.attachments.mount("volume", "twice", a)
    assert again.path == a
    assert len(pool.attachments.list("volume", "twice")) == 2
    pool.attachments.release("volume", "twice", b)
    assert mount.is_mounted(a)
    assert not mount.is_mounted(b)
    pool.attachments.release("volume", "twice")
    assert not mount.is_mounted(a)
    assert pool.check() == []


def test_volume_filled_by_a_writer_and_grown(pool: Pool, work_dir: Path) -> None:
    """The path a backup restore takes: an image written by the caller, then grown."""
    pool.volumes.create(VolumeRequest("orig", 256 * MiB))
    live = work_dir / "orig"
    pool.attachments.mount("volume", "orig", live, create_target=True)
    digest = write_random(live / "f", 4 * MiB, seed=12)
    pool.attachments.release("volume", "orig")
    source = pool.volumes.get("orig").image

    def writer(path: Path) -> None:
        with open(source, "rb") as src, open(path, "r+b") as dst:
            while block := src.read(4 * MiB):
                dst.write(block)

    request = VolumeRequest(
        "from-backup",
        512 * MiB,
        source_kind=SourceKind.BACKUP,
        source_name="b1",
        source_size=256 * MiB,
    )
    made = pool.volumes.create(request, writer=writer)
    assert made.fs_resize_pending
    assert made.fs_type == "ext4"
    pool.attachments.mount("volume", "from-backup", work_dir / "fb", create_target=True)
    assert sha256(work_dir / "fb" / "f") == digest
    assert _fs_bytes(work_dir / "fb") > 400 * MiB

    def failing(path: Path) -> None:
        raise OSError("target went away")

    with pytest.raises(OSError, match="went away"):
        pool.volumes.create(
            VolumeRequest(
                "broken",
                256 * MiB,
                source_kind=SourceKind.BACKUP,
                source_name="b1",
                source_size=256 * MiB,
            ),
            writer=failing,
        )
    assert pool.volumes.find("broken") is None
    assert pool.check() == []
