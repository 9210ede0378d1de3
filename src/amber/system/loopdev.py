"""Loop devices: attach an image file, find what is attached, refresh capacity, detach.

Attachment uses util-linux `losetup` (it handles LOOP_CONFIGURE and the free-device race); the
state is read back from sysfs, which is the kernel's truth and survives our own crashes.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import Busy, SystemFailure
from amber.system import ioctl
from amber.system.run import run

_SYS_BLOCK = Path("/sys/block")


@dataclass(frozen=True)
class LoopDevice:
    """A loop device and the file behind it."""

    device: Path
    backing_file: Path
    read_only: bool


def list_loops() -> list[LoopDevice]:
    """Every configured loop device with its backing file."""
    found: list[LoopDevice] = []
    for entry in sorted(_SYS_BLOCK.glob("loop*")):
        backing = entry / "loop" / "backing_file"
        try:
            name = backing.read_text().strip()
            ro = (entry / "ro").read_text().strip() == "1"
        except OSError:
            continue
        found.append(
            LoopDevice(Path("/dev") / entry.name, Path(name.removesuffix(" (deleted)")), ro)
        )
    return found


def find_loops(image: Path) -> list[LoopDevice]:
    """Loop devices whose backing file is `image`."""
    target = os.path.realpath(image)
    return [loop for loop in list_loops() if os.path.realpath(loop.backing_file) == target]


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


def detach(device: Path, *, attempts: int = 20) -> None:
    """Detach a loop device, retrying briefly while the kernel still holds it (udev, umount).

    A read-only flag set with BLKROSET is cleared first: it would outlive the detach and make
    the next user of this device number read-only.
    """
    with contextlib.suppress(OSError, SystemFailure):
        if ioctl.is_read_only(device):
            ioctl.set_read_only(device, False)
    for attempt in range(attempts):
        try:
            run(["losetup", "--detach", str(device)], timeout=30)
        except SystemFailure as e:
            if "No such device" in str(e) or "No such device or address" in str(e):
                return
            if attempt == attempts - 1:
                raise Busy(f"loop device {device} is still in use: {e}") from e
            time.sleep(0.05 * (attempt + 1))
            continue
        return


def refresh_capacity(device: Path) -> None:
    """Tell the loop driver that the backing file grew."""
    run(["losetup", "--set-capacity", str(device)], timeout=30)
