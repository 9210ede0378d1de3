"""The few ioctls Amber needs: FICLONE (reflink), FIFREEZE/FITHAW, FIEMAP, BLKGETSIZE64,
BLKROSET/BLKROGET, LOOP_CLR_FD."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import FailedPrecondition, OutOfSpace, SystemFailure

FICLONE = 0x40049409
FIFREEZE = 0xC0045877
FITHAW = 0xC0045878
FS_IOC_FIEMAP = 0xC020660B
BLKGETSIZE64 = 0x80081272
BLKROSET = 0x125D
BLKROGET = 0x125E
LOOP_CLR_FD = 0x4C01

FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_SHARED = 0x2000

_FIEMAP_HEAD = struct.Struct("=QQIIII")  # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct(
    "=QQQQQIIII"
)  # logical, physical, length, 2 reserved, flags, 3 reserved
_FIEMAP_BATCH = 512


def reflink(source: Path, target: Path) -> None:
    """Create `target` as a copy-on-write clone of `source` (fails if reflink is unsupported)."""
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                raise FailedPrecondition(
                    f"the pool filesystem does not support reflink copies ({e.strerror})"
                ) from e
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(f"no space left in the pool to clone {source.name}") from e
            raise SystemFailure(f"reflink of {source.name} failed: {e.strerror}") from e
        os.fsync(dst.fileno())


def sparse_copy(source: Path, target: Path, chunk: int = 4 << 20) -> None:
    """Copy `source` to `target` skipping holes (the fallback where reflink is unavailable)."""
    size = source.stat().st_size
    with open(source, "rb") as src, open(target, "xb") as dst:
        os.ftruncate(dst.fileno(), size)
        offset = 0
        while offset < size:
            try:
                offset = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            end = os.lseek(src.fileno(), offset, os.SEEK_HOLE)
            while offset < end:
                data = os.pread(src.fileno(), min(chunk, end - offset), offset)
                if data.count(0) != len(data):
                    os.pwrite(dst.fileno(), data, offset)
                offset += len(data)
        os.fsync(dst.fileno())


def _freeze_ioctl(mountpoint: Path, request: int) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def thaw(mountpoint: Path) -> bool:
    """Thaw a frozen filesystem; return False if it was not frozen (or is gone)."""
    try:
        _freeze_ioctl(mountpoint, FITHAW)
    except OSError as e:
        if e.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            return False
        raise SystemFailure(f"cannot thaw {mountpoint}: {e.strerror}") from e
    return True


@dataclass(frozen=True)
class Extent:
    """One mapped extent of a file (bytes)."""

    logical: int
    physical: int
    length: int
    flags: int

    @property
    def trustworthy(self) -> bool:
        """False for extents whose physical location is not final (delalloc, unknown, encoded)."""
        bad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED
        return not self.flags & bad


def fiemap(fd: int, start: int = 0, length: int = 2**63 - 1) -> list[Extent]:
    """Return the extent map of an open file (synced first, so delayed allocations settle)."""
    extents: list[Extent] = []
    position, end = start, start + length if length < 2**63 - 1 - start else 2**63 - 1
    while position < end:
        buf = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEAD.pack_into(
            buf, 0, position, end - position, FIEMAP_FLAG_SYNC, 0, _FIEMAP_BATCH, 0
        )
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        except OSError as e:
            raise SystemFailure(f"FIEMAP failed: {e.strerror}") from e
        mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
        if mapped == 0:
            break
        last = False
        for i in range(mapped):
            fields = _FIEMAP_EXTENT.unpack_from(buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
            extent = Extent(fields[0], fields[1], fields[2], fields[5])
            extents.append(extent)
            last = bool(extent.flags & FIEMAP_EXTENT_LAST)
            position = extent.logical + extent.length
        if last:
            break
    return extents


def block_device_size(path: Path) -> int:
    """Size in bytes of a block device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
    finally:
        os.close(fd)
    return int(struct.unpack("=Q", buf)[0])


def set_read_only(device: Path, read_only: bool) -> None:
    """Make a block device refuse (or accept again) writes from every opener (BLKROSET).

    A read-only bind mount of a device node does not stop writes to the device: the flag must
    be set on the device itself.
    """
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        set_read_only_fd(fd, read_only)
    except OSError as e:
        raise SystemFailure(f"cannot set {device} read-only={read_only}: {e.strerror}") from e
    finally:
        os.close(fd)


def set_read_only_fd(fd: int, read_only: bool) -> None:
    """BLKROSET on an open block device (OSError as the kernel says it)."""
    fcntl.ioctl(fd, BLKROSET, struct.pack("=i", int(read_only)))


def is_read_only(device: Path) -> bool:
    """Whether a block device refuses writes (BLKROGET)."""
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return is_read_only_fd(fd)
    finally:
        os.close(fd)


def is_read_only_fd(fd: int) -> bool:
    """BLKROGET on an open block device."""
    buf = fcntl.ioctl(fd, BLKROGET, b"\0" * 4)
    return bool(struct.unpack("=i", buf)[0])


def loop_clear(fd: int) -> None:
    """LOOP_CLR_FD on an open loop device: the kernel frees it at its last close (so at the
    caller's own close, unless someone else still holds it open). OSError ENXIO: not bound."""
    fcntl.ioctl(fd, LOOP_CLR_FD, 0)
