"""Loop devices are detached by identity, not by name (real loop devices on the test XFS).

A /dev/loopN name is re-used as soon as the kernel frees the device: a name listed before an
unmount or a detach may be another process's device a moment later. Detaching by such a name
took a freshly staged volume away between its e2fsck and its mount (NodeStageVolume answered
INTERNAL, "can't read superblock", under parallel test workers).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.system import loopdev


@pytest.fixture
def images(xfs_root: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    directory = xfs_root / f"loopdev-{tmp_path.name}"
    directory.mkdir()
    pair = (directory / "a.img", directory / "b.img")
    for image in pair:
        subprocess.run(["truncate", "-s", "16M", str(image)], check=True)
    yield pair
    for image in pair:
        loopdev.detach_image(image)
        image.unlink()
    directory.rmdir()


def devices_of(image: Path) -> set[Path]:
    return {loop.device for loop in loopdev.find_loops(image)}


def test_a_device_is_detached_only_while_it_backs_the_file_named(
    images: tuple[Path, Path],
) -> None:
    a, b = images
    device_a, device_b = loopdev.attach(a), loopdev.attach(b)

    # A stale belief ("device_b backs a") detaches nothing.
    assert loopdev.detach(device_b, backing=a) is False
    assert devices_of(b) == {device_b}

    assert loopdev.detach(device_a, backing=a) is True
    assert devices_of(a) == set()
    assert loopdev.detach(device_a, backing=a) is False  # already free: nothing to do
    assert devices_of(b) == {device_b}


def test_a_device_held_open_is_freed_at_the_last_close_and_reported_on_its_way_out(
    images: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    a, _ = images
    device = loopdev.attach(a)
    holder = os.open(device, os.O_RDONLY)  # a holder that does not let go within the wait
    try:
        assert loopdev.detach(device, backing=a, wait=0.1) is True
        (loop,) = loopdev.find_loops(a)  # still there while held: the detach is deferred
        assert loop.autoclear
        assert "still held open" in caplog.text
    finally:
        os.close(holder)
    assert devices_of(a) == set()


def test_detach_waits_for_a_passing_holder_to_let_go(images: tuple[Path, Path]) -> None:
    """Another process probing the device at the moment of the detach (as udev's blkid, or
    another process listing loop devices, does) defers the kernel's release to its close:
    `detach` returns once the device is gone, so the caller's next look (a consistency check,
    the pool's free space after deleting the image) sees it gone."""
    a, _ = images
    device = loopdev.attach(a)
    probe = subprocess.Popen(
        [sys.executable, "-c", HOLD_THEN_CLOSE, str(device)], stdout=subprocess.PIPE
    )
    assert probe.stdout is not None
    assert probe.stdout.readline() == b"open\n"
    try:
        assert loopdev.detach(device, backing=a) is True
        assert devices_of(a) == set()
    finally:
        probe.wait()


HOLD_THEN_CLOSE = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
print("open", flush=True)
time.sleep(0.5)
os.close(fd)
"""
