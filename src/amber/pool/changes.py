"""Change tracking: what a snapshot maps, and which byte ranges differ between two snapshots.

A snapshot is a reflink copy of its volume: it shares the volume's physical blocks, and a write
to the volume afterwards goes to *new* blocks (copy on write). So two snapshots of one volume
map a byte range to the same physical blocks exactly when nothing wrote to that range between
them. FIEMAP (`amber.system.ioctl.fiemap`) reports each image's mapping; walking both maps side
by side finds the ranges that differ without reading a byte of data:

- a range that is a hole in both images reads as zeros in both: unchanged;
- a range mapped in both to the same physical address (offset for offset) with the same
  meaningful flags is shared by reflink: unchanged by construction;
- everything else -- mapped in one only, mapped to different blocks, or touching an extent
  whose address is not stable (delayed allocation, unknown, encoded, inline or tail data) -- is
  reported as changed.

The comparison is exact at the pool filesystem's block size (FIEMAP extents are whole blocks):
a reported range is block-aligned (the last one may end at the image's end), and a block is
reported only if it was rewritten (or its mapping cannot be trusted). A block rewritten with the
bytes it already held is reported, which is the only way the delta can be larger than what truly
differs. Nothing is ever missed, provided

- both images stay open while they are compared (the caller holds both, so no block of either
  can be freed and reused in between) and neither is written to (snapshot images are
  read-only);
- the flags that change the meaning of the blocks agree: an *unwritten* (preallocated, reads as
  zero) extent that is later written keeps its physical address but changes its flag.

The backup engine (`amber.backup.extents`) and the CSI SnapshotMetadata service both use this
module, so a backup reads exactly the chunks the service would report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from amber.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from amber.domain.models import Snapshot
from amber.system.ioctl import (
    FIEMAP_EXTENT_LAST,
    FIEMAP_EXTENT_SHARED,
    Extent,
    fiemap,
)

__all__ = [
    "ByteRange",
    "Delta",
    "allocated",
    "allocated_ranges",
    "changed_ranges",
    "delta",
    "stable",
]

FIEMAP_EXTENT_NOT_ALIGNED = 0x100
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_DATA_TAIL = 0x400
# Flags that say nothing about the content: whether the blocks are shared, and which extent is
# the file's last.
_IGNORED_FLAGS = FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_SHARED
_UNSTABLE = FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL

ByteRange = tuple[int, int]
"""`(offset, length)` in bytes."""

_Mapping = tuple[int, int] | None
"""What a segment of an image reads: None for a hole, (physical address, flags) when mapped."""
_UNTRUSTED: _Mapping = (-1, -1)


def stable(extent: Extent) -> bool:
    """Whether the extent's physical address identifies its blocks for good."""
    return extent.trustworthy and not extent.flags & _UNSTABLE


def _segments(extents: Sequence[Extent], size: int) -> Iterator[tuple[int, int, _Mapping]]:
    """`(start, end, mapping at start)` covering `[0, size)` in order; holes included."""
    position = 0
    for extent in extents:
        start, end = max(extent.logical, position), min(extent.logical + extent.length, size)
        if end <= start:
            continue
        if start > position:
            yield position, start, None
        if stable(extent):
            flags = extent.flags & ~_IGNORED_FLAGS
            yield start, end, (extent.physical + (start - extent.logical), flags)
        else:
            yield start, end, _UNTRUSTED
        position = end
    if position < size:
        yield position, size, None


def _at(mapping: _Mapping, skip: int) -> _Mapping:
    """The mapping `skip` bytes into a segment that starts with `mapping`."""
    if mapping is None or mapping is _UNTRUSTED:
        return mapping
    return mapping[0] + skip, mapping[1]


def changed_ranges(base: Sequence[Extent], target: Sequence[Extent], size: int) -> list[ByteRange]:
    """The ranges of `[0, size)` where the two extent maps do not prove the bytes equal."""
    result: list[ByteRange] = []
    left, right = _segments(base, size), _segments(target, size)
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        start = max(a[0], b[0])
        end = min(a[1], b[1])
        mine, theirs = _at(a[2], start - a[0]), _at(b[2], start - b[0])
        if mine is _UNTRUSTED or theirs is _UNTRUSTED or mine != theirs:
            _add(result, start, end)
        if a[1] == end:
            a = next(left, None)
        if b[1] == end:
            b = next(right, None)
    return result


def allocated_ranges(extents: Sequence[Extent], size: int) -> list[ByteRange]:
    """The mapped ranges of `[0, size)`, adjacent extents merged."""
    result: list[ByteRange] = []
    for start, end, mapping in _segments(extents, size):
        if mapping is not None:
            _add(result, start, end)
    return result


def _add(ranges: list[ByteRange], start: int, end: int) -> None:
    if ranges and sum(ranges[-1]) == start:
        ranges[-1] = (ranges[-1][0], end - ranges[-1][0])
    else:
        ranges.append((start, end - start))


@dataclass(frozen=True)
class Delta:
    """Byte ranges of a snapshot image, at the pool filesystem's block granularity."""

    capacity: int
    """The size of the (target) snapshot in bytes."""
    block_size: int
    """The pool filesystem's block size: every range starts on a multiple of it."""
    ranges: list[ByteRange]
    """Sorted, non-overlapping, adjacent ranges merged."""

    @property
    def changed_bytes(self) -> int:
        """The bytes the ranges cover."""
        return sum(length for _, length in self.ranges)

    def aligned(self, offset: int) -> int:
        """`offset` rounded down to a block boundary (where a resumed listing starts)."""
        return offset - offset % self.block_size

    def extents_from(self, offset: int) -> Iterator[ByteRange]:
        """The ranges from the block holding `offset` on, the first one clipped to start there."""
        start = self.aligned(offset)
        for first, length in self.ranges:
            end = first + length
            if end > start:
                yield max(first, start), end - max(first, start)

    def blocks_from(self, offset: int) -> Iterator[ByteRange]:
        """The same bytes as `extents_from`, as `(offset, block_size)` blocks in order."""
        size = self.block_size
        for first, length in self.extents_from(offset):
            yield from ((block, size) for block in range(first, first + length, size))


def allocated(snapshot: Snapshot) -> Delta:
    """The ranges of a snapshot's image that hold data (everything else reads as zeros)."""
    with _open(snapshot.image, snapshot.name) as image:
        ranges = allocated_ranges(fiemap(image.fileno()), snapshot.size)
        return Delta(snapshot.size, _block_size(image.fileno()), ranges)


def delta(base: Snapshot, target: Snapshot, *, reflink: bool = True) -> Delta:
    """The ranges of `target` whose bytes may differ from `base` (two snapshots of one volume).

    Bytes past the end of a smaller base count as changed where the target maps them.
    InvalidArgument when the snapshots are of different volumes; FailedPrecondition on a pool
    without reflink (snapshots share no blocks there, so nothing could be proven unchanged).
    """
    if base.volume_uid != target.volume_uid:
        raise InvalidArgument(
            f"snapshots {base.name!r} (of volume {base.volume_name!r}) and {target.name!r} "
            f"(of volume {target.volume_name!r}) are not snapshots of the same volume"
        )
    if not reflink:
        raise FailedPrecondition(
            "change tracking is off: the pool filesystem has no reflink, so snapshots share "
            "no blocks; read the whole snapshot instead"
        )
    with _open(base.image, base.name) as old, _open(target.image, target.name) as new:
        return _delta(old.fileno(), new.fileno(), base.size, target.size)


def _delta(old: int, new: int, base_size: int, target_size: int) -> Delta:
    """`delta` of two open image files (held open while their maps are read)."""
    old_map, new_map = fiemap(old), fiemap(new)
    ranges = changed_ranges(old_map, new_map, min(base_size, target_size))
    if target_size > base_size:
        for start, length in allocated_ranges(new_map, target_size):
            end = start + length
            if end > base_size:
                _add(ranges, max(start, base_size), end)
    return Delta(target_size, _block_size(new), ranges)


def _open(image: Path, name: str) -> BinaryIO:
    try:
        return open(image, "rb")  # the caller closes it
    except FileNotFoundError as e:
        raise NotFound(f"snapshot {name!r} was deleted while its blocks were listed") from e


def _block_size(fd: int) -> int:
    return os.fstatvfs(fd).f_bsize
