"""Loop devices: attach an image file, find what is attached, refresh capacity, detach.

Attachment uses util-linux `losetup` (it handles LOOP_CONFIGURE and the free-device race); the
state is read back from sysfs, which is the kernel's truth and survives our own crashes.

A loop device's name is not its identity: once it is freed, any process on the machine may
attach another file to the same /dev/loopN. So a device is detached only after checking, on a
file descriptor held open across the check and the LOOP_CLR_FD, that it still backs the file
Amber means: while a descriptor is open the kernel cannot free the device, so it cannot be
re-attached to someone else's file in between. (Detaching a device by a name listed earlier --
`losetup -d` after an unmount that already freed it -- took another process's freshly attached
volume away between its e2fsck and its mount: the intermittent INTERNAL of NodeStageVolume.)

A device whose autoclear flag is set is on its way out: it was detached while something still
held it open (udev's blkid probe, another process looking at loop devices), and the kernel frees
it at that holder's last close. Such a device is never reused for a new attachment, and `detach`
waits a moment for it to go: until then the device keeps its backing file open, so a deleted
volume's blocks stay allocated and a consistency check sees a device nobody recorded.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import SystemFailure
from amber.system import ioctl
from amber.system.run import run

_SYS_BLOCK = Path("/sys/block")
RELEASE_WAIT = 5.0
"""Seconds `detach` waits for a device that something else held open at the detach to go."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopDevice:
    """A loop device and the file behind it."""

    device: Path
    backing_file: Path
    read_only: bool
    autoclear: bool = False
    """Detached already, but still held open: the kernel frees it at the last close."""


def _read_loop(entry: Path) -> LoopDevice | None:
    """The loop device of a /sys/block entry, or None if it is not bound to a file."""
    try:
        name = (entry / "loop" / "backing_file").read_text().strip()
        ro = (entry / "ro").read_text().strip() == "1"
        autoclear = (entry / "loop" / "autoclear").read_text().strip() == "1"
    except OSError:
        return None
    backing = Path(name.removesuffix(" (deleted)"))
    return LoopDevice(Path("/dev") / entry.name, backing, ro, autoclear)


def list_loops() -> list[LoopDevice]:
    """Every configured loop device with its backing file."""
    found = [_read_loop(entry) for entry in sorted(_SYS_BLOCK.glob("loop*"))]
    return [loop for loop in found if loop is not None]


def find_loops(image: Path) -> list[LoopDevice]:
    """Loop devices whose backing file is `image`."""
    return [loop for loop in list_loops() if _same_file(loop.backing_file, image)]


def attach(image: Path, *, read_only: bool = False) -> Path:
    """Attach `image` to a free loop device and return the device path."""
    argv = ["losetup", "--find", "--show", "--direct-io=off"]
    if read_only:
        argv.append("--read-only")
    argv.append(str(image))
    out = run(argv, timeout=60)
    device = Path(out.strip())
    if not device.name.startswith("loop"):
        raise SystemFailure(f"losetup returned an unexpected device {out.strip()!r}")
    if not read_only and ioctl.is_read_only(device):
        # The kernel keeps a BLKROSET flag across detach and reuse of a loop device: a device
        # someone left read-only must not make this writable attachment read-only.
        ioctl.set_read_only(device, False)
    return device


def detach(device: Path, *, backing: Path, wait: float | None = None) -> bool:
    """Detach `device` if it still backs the file `backing`; False if it does not (any more).

    The check and the LOOP_CLR_FD happen on one open descriptor (see the module docstring), and
    a read-only flag set with BLKROSET is cleared first: it would outlive the detach and make
    the next user of this device number read-only. The kernel frees the device when this
    function closes it, or, if something else still holds it open, at that holder's last close:
    then this function waits up to `wait` seconds (RELEASE_WAIT by default) for that close (a
    passing probe lets go within milliseconds) and logs a warning if the device is still held.
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENXIO):  # no such device, or being freed
            return False
        raise SystemFailure(f"cannot open loop device {device}: {e.strerror or e}") from e
    try:
        current = _read_loop(_SYS_BLOCK / device.name)
        if current is None or not _same_file(current.backing_file, backing):
            return False
        if ioctl.is_read_only_fd(fd):
            ioctl.set_read_only_fd(fd, False)
        ioctl.loop_clear(fd)
    except OSError as e:
        if e.errno == errno.ENXIO:  # freed meanwhile (by its autoclear): nothing to do
            return False
        raise SystemFailure(f"cannot detach loop device {device}: {e.strerror or e}") from e
    finally:
        os.close(fd)
    _wait_until_freed(device, backing, RELEASE_WAIT if wait is None else wait)
    return True


def _wait_until_freed(device: Path, backing: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    delay = 0.002
    while True:
        current = _read_loop(_SYS_BLOCK / device.name)
        if current is None or not _same_file(current.backing_file, backing):
            return
        if time.monotonic() >= deadline:
            log.warning(
                "loop device %s is detached but still held open by another process; "
                "the kernel frees it (and %s) at that holder's last close",
                device,
                backing,
            )
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def detach_image(image: Path) -> None:
    """Detach every loop device backed by `image` (each checked as `detach` does)."""
    for loop in find_loops(image):
        detach(loop.device, backing=image)


def _same_file(backing: Path, wanted: Path) -> bool:
    return os.path.realpath(backing) == os.path.realpath(wanted)


def refresh_capacity(device: Path) -> None:
    """Tell the loop driver that the backing file grew."""
    run(["losetup", "--set-capacity", str(device)], timeout=30)
