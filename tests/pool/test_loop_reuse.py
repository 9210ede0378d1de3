"""A volume's loop device on its way out is never reused (real pool, loop devices, ext4).

Releasing a volume detaches its loop device; if something else holds the device open at that
moment (udev's blkid probe after the unmount's change event, on a real node), the kernel only
marks it for autoclear and frees it at that holder's last close. The device still shows the
volume's image as its backing file. The next mount must not take it as "the volume's live loop
device": the holder's close, landing between the mount's e2fsck and its mount, would free it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest
from amber.system import loopdev, mount
from tests.pool.helpers import read_only_flag, read_only_while_free


@pytest.fixture
def holder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Open descriptors of loop devices, as another process (a prober) would hold them; a
    release waits only briefly for them to let go (they do not until the test says)."""
    monkeypatch.setattr(loopdev, "RELEASE_WAIT", 0.05)
    fds: list[int] = []
    yield fds
    for fd in fds:
        os.close(fd)


def test_a_loop_device_detached_while_held_open_is_not_reused(
    pool_dir: Path, work_dir: Path, holder: list[int]
) -> None:
    def probe_ends(name: str) -> None:
        if name == "attach.loop-attached" and holder:
            os.close(holder.pop())

    pool = Pool.open(pool_dir, failpoint=probe_ends)
    try:
        volume = pool.volumes.create(VolumeRequest("v", 32 * MiB))
        first = pool.attachments.mount("volume", "v", work_dir / "a", create_target=True)
        (work_dir / "a" / "kept").write_text("data")
        holder.append(os.open(first.loop_device, os.O_RDONLY))
        pool.attachments.release("volume", "v")
        (leftover,) = loopdev.find_loops(volume.image)
        assert leftover.autoclear  # detached, but held open: still backed by the image
        assert pool.check() == [
            f"loop device {leftover.device} for {volume.image} is detached but still held "
            "open by another process"
        ]

        again = pool.attachments.mount("volume", "v", work_dir / "b", create_target=True)

        assert not holder, "the failpoint did not run"
        assert again.loop_device != first.loop_device
        assert mount.is_mounted(work_dir / "b")
        assert (work_dir / "b" / "kept").read_text() == "data"
        assert {loop.device for loop in loopdev.find_loops(volume.image)} == {again.loop_device}
        pool.attachments.release("volume", "v")
        assert loopdev.find_loops(volume.image) == []
    finally:
        pool.close()


def test_a_loop_device_on_its_way_out_is_left_alone(
    pool: Pool, work_dir: Path, holder: list[int]
) -> None:
    volume = pool.volumes.create(VolumeRequest("v", 32 * MiB))
    first = pool.attachments.mount("volume", "v", work_dir / "a", create_target=True)
    holder.append(os.open(first.loop_device, os.O_RDONLY))
    pool.attachments.release("volume", "v")

    # A read-only attachment makes the volume's loop device read-only: only its own device.
    again = pool.attachments.expose("volume", "v", read_only=True)
    assert again.loop_device != first.loop_device
    assert read_only_flag(again.loop_device)
    assert not read_only_flag(first.loop_device)
    pool.volumes.expand("v", 64 * MiB)  # refreshes the capacity of its own device only

    os.close(holder.pop())  # the holder goes: the kernel frees the old device, flags and all
    assert {loop.device for loop in loopdev.find_loops(volume.image)} == {again.loop_device}
    assert not read_only_while_free(first.loop_device)
    pool.attachments.release("volume", "v")
