"""Block devices a pool may be made on: is it one, and does it hold anything?

A device is "empty" for Amber only when `wipefs` (util-linux; it lists what it would erase
and, without --all, erases nothing) finds no filesystem, RAID, LVM or partition-table
signature on it, and the kernel lets us open it exclusively (nothing mounts or holds it).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from amber.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from amber.system.run import run


def signatures(device: Path) -> list[str]:
    """The signature types (`ext4`, `xfs`, `dos`, `gpt`, `LVM2_member`, ...) on `device`."""
    out = run(["wipefs", "--noheadings", "--output", "TYPE", str(device)], timeout=60)
    return [line.strip() for line in out.splitlines() if line.strip()]


def check_block_device(device: Path) -> None:
    """Refuse (InvalidArgument/NotFound) a path that is not a block device."""
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError as e:
        raise NotFound(f"no device {device}") from e
    if not stat.S_ISBLK(mode):
        raise InvalidArgument(f"{device} is not a block device")


def check_unused(device: Path) -> None:
    """Refuse (FailedPrecondition) a device that is mounted or held (open with O_EXCL)."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise FailedPrecondition(
                f"{device} is in use (mounted, or held by another device)"
            ) from e
        raise
    os.close(fd)


def check_empty(device: Path) -> None:
    """Refuse any device that is not an unused block device free of signatures."""
    check_block_device(device)
    check_unused(device)
    found = signatures(device)
    if found:
        raise FailedPrecondition(
            f"{device} is not empty (it holds {', '.join(sorted(set(found)))}): Amber formats "
            "only a device without any filesystem or partition signature; wipe it yourself "
            "(wipefs --all) if its data is not needed"
        )
