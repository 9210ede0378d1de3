"""Filesystems inside volumes: make, check, grow, and measure.

ext4 is the default; xfs is optional. Both grow online. xfs refuses two mounted filesystems with
one UUID, and a clone or snapshot carries its source's UUID, so xfs is always mounted `nouuid`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import Corrupt, InvalidArgument, SystemFailure
from amber.domain.units import MiB
from amber.system.mount import mount_table
from amber.system.run import ToolFailed, run

log = logging.getLogger(__name__)

SUPPORTED = ("ext4", "xfs")
# mkfs.xfs (xfsprogs 6.x) refuses filesystems below 300 MiB.
MIN_SIZE = {"ext4": 8 * MiB, "xfs": 300 * MiB}


def check_fstype(fstype: str) -> str:
    """Return `fstype` if Amber can make it, else raise InvalidArgument."""
    if fstype not in SUPPORTED:
        raise InvalidArgument(
            f"unsupported filesystem {fstype!r}: choose one of {', '.join(SUPPORTED)}"
        )
    return fstype


def make(target: Path, fstype: str, *, label: str | None = None) -> None:
    """Create a filesystem on a file or device."""
    if fstype == "ext4":
        argv = ["mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard"]
        if label:
            argv += ["-L", label[:16]]
    else:
        argv = ["mkfs.xfs", "-f", "-q", "-K", "-m", "reflink=1"]
        if label:
            argv += ["-L", label[:12]]
    run([*argv, str(target)], timeout=600)


def mount_options(fstype: str, *, read_only: bool, snapshot: bool = False) -> list[str]:
    """Options for mounting a volume or snapshot filesystem."""
    options = ["ro" if read_only else "rw"]
    if fstype == "xfs":
        options.append("nouuid")
        if snapshot:
            options.append("norecovery")
    elif fstype == "ext4" and snapshot:
        options.append("noload")
    return options


def grow(fstype: str, device: Path, mountpoint: Path) -> bool:
    """Grow a mounted filesystem to fill its (already grown) device.

    Returns False when the kernel refuses an online ext4 resize for lack of CAP_SYS_RESOURCE
    (some sandboxes drop it); the caller then grows it offline at the next mount.
    """
    if fstype == "ext4":
        try:
            run(["resize2fs", str(device)], timeout=600)
        except SystemFailure as e:
            if "Permission denied" in str(e):
                return False
            raise
    elif fstype == "xfs":
        run(["xfs_growfs", str(mountpoint)], timeout=600)
    return True


def grow_offline(fstype: str, device: Path) -> bool:
    """Grow an unmounted filesystem; return False if this type only grows while mounted (xfs)."""
    if fstype != "ext4":
        return False
    _e2fsck(device, force=True)  # resize2fs refuses a filesystem not checked since its mount
    run(["resize2fs", str(device)], timeout=600)
    return True


def check(device: Path, fstype: str) -> None:
    """Check an unmounted filesystem and repair what is safe; raise if it is damaged."""
    if fstype == "ext4":
        _e2fsck(device, force=False)
    # xfs checks itself at mount (log recovery); xfs_repair is never run automatically.


E2FSCK_CORRECTED = 1 | 2
"""e2fsck's exit bits for "errors corrected" (2: "... reboot", which only a mounted root needs)."""
E2FSCK_UNCORRECTED = 4


def _e2fsck(device: Path, *, force: bool) -> None:
    """`e2fsck -p` (preen: repair what is safe without asking) and read its exit code.

    Errors it corrected are a success (logged); errors it left are Corrupt; anything else
    (8: an operational error, such as a device it cannot open) is a ToolFailed.
    """
    try:
        run(["e2fsck", *(["-f"] if force else []), "-p", str(device)], timeout=600)
    except ToolFailed as e:
        if e.returncode & E2FSCK_UNCORRECTED and not e.returncode & 8:
            raise Corrupt(
                f"the ext4 filesystem on {device} has errors e2fsck -p cannot repair safely "
                f"({e.message.partition(': ')[2]}): attach the volume's device "
                "(`amber volume attach`) and repair it by hand with `e2fsck -f`"
            ) from e
        if e.returncode & ~E2FSCK_CORRECTED:
            raise
        log.warning("e2fsck repaired the ext4 filesystem on %s: %s", device, e.stderr.strip())


def allocated_bytes(path: Path) -> int | None:
    """Bytes the filesystem allocated to the file at `path` (`st_blocks`, so a sparse image
    counts what it maps); None when it cannot be stat'ed (e.g. deleted meanwhile)."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return None


@dataclass(frozen=True)
class Usage:
    """Space and inode usage of a mounted filesystem."""

    total: int
    free: int
    available: int
    inodes_total: int
    inodes_free: int

    @property
    def used(self) -> int:
        return self.total - self.free


def usage(path: Path) -> Usage:
    """statvfs of the filesystem holding `path`."""
    st = os.statvfs(path)
    return Usage(
        total=st.f_blocks * st.f_frsize,
        free=st.f_bfree * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
        inodes_total=st.f_files,
        inodes_free=st.f_ffree,
    )


def fs_type_of(path: Path) -> str:
    """The filesystem type holding `path`, from the mount table."""
    best, best_len = "", -1
    real = os.path.realpath(path)
    for entry in mount_table():
        prefix = str(entry.target)
        if (real == prefix or real.startswith(prefix.rstrip("/") + "/")) and len(prefix) > best_len:
            best, best_len = entry.fstype, len(prefix)
    return best


def flush(mountpoint: Path) -> None:
    """Write the dirty data of the filesystem mounted at `mountpoint` (syncfs)."""
    run(["sync", "--file-system", str(mountpoint)], timeout=300)


_TRIMMED = re.compile(r"\((\d+) bytes\) trimmed")


def trim(mountpoint: Path) -> int:
    """Discard the unused blocks of the filesystem mounted at `mountpoint` (fstrim); the bytes
    it reports trimmed. In a volume, that punches holes in the image: the pool gets them back."""
    out = run(["fstrim", "--verbose", str(mountpoint)], timeout=600)
    match = _TRIMMED.search(out)
    return int(match.group(1)) if match else 0
