"""Change detection for backups: which chunks of a new snapshot hold the base's bytes, unread.

The pool's change tracking (`amber.pool.changes`) compares the extent maps of the base image
and the new snapshot and returns the byte ranges that may differ. Here those ranges are laid on
the backup's chunk grid: a chunk that no changed range touches is unchanged, and its chunk id
comes from the base backup's manifest without reading a byte. Everything not proven equal is
read and hashed, so the worst a wrong extent map can cost is time, never data.

`changed_chunks` also keeps the changed ranges of each changed chunk (filesystem blocks, 4 KiB
on XFS), so an incremental can read only those (`amber.backup.patches`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from amber.backup.chunker import ChunkGrid
from amber.pool.changes import changed_ranges
from amber.system.ioctl import Extent


@dataclass
class Changes:
    """The extent maps' verdict on each chunk of a grid."""

    same: bytearray
    """One byte per chunk: 1 where the new image provably holds the base's bytes."""
    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)
    """For each compared chunk that changed in part: its changed `[start, end)` byte ranges
    (sorted, clipped to the chunk). A chunk that changed whole, or past the compared ones,
    has none (so a volume rewritten whole costs no more memory than the flags)."""


def changed_chunks(
    base: Sequence[Extent], new: Sequence[Extent], grid: ChunkGrid, comparable: int
) -> Changes:
    """Which chunks of `grid` changed, and where inside them.

    Only the first `comparable` chunks are compared (the chunks both images cover with the
    same byte range); the rest count as changed, with no ranges.
    """
    limit = min(comparable, grid.count)
    changes = Changes(bytearray(grid.count))
    if limit == 0:
        return changes
    changes.same[:limit] = b"\x01" * limit
    size = grid.chunk_size
    for start, length in changed_ranges(base, new, grid.range(limit - 1)[1]):
        end = start + length
        first, last = start // size, (end - 1) // size
        changes.same[first : last + 1] = bytes(last - first + 1)
        for index in {first, last}:  # a chunk in between changed whole: no ranges to keep
            chunk_start, chunk_end = grid.range(index)
            clipped = (max(start, chunk_start), min(end, chunk_end))
            if clipped != (chunk_start, chunk_end):
                changes.ranges.setdefault(index, []).append(clipped)
    return changes
