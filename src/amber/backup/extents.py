"""Change detection for backups: which chunks of a new snapshot hold the base's bytes, unread.

The pool's change tracking (`amber.pool.changes`) compares the extent maps of the base image
and the new snapshot and returns the byte ranges that may differ. Here those ranges are laid on
the backup's chunk grid: a chunk that no changed range touches is unchanged, and its chunk id
comes from the base backup's manifest without reading a byte. Everything not proven equal is
read and hashed, so the worst a wrong extent map can cost is time, never data.
"""

from __future__ import annotations

from collections.abc import Sequence

from amber.backup.chunker import ChunkGrid
from amber.pool.changes import changed_ranges
from amber.system.ioctl import Extent


def unchanged_chunks(
    base: Sequence[Extent], new: Sequence[Extent], grid: ChunkGrid, comparable: int
) -> bytearray:
    """One byte per chunk of `grid`: 1 where the new image provably holds the base's bytes.

    Only the first `comparable` chunks are compared (the chunks both images cover with the
    same byte range); the rest are 0.
    """
    limit = min(comparable, grid.count)
    same = bytearray(grid.count)
    if limit == 0:
        return same
    same[:limit] = b"\x01" * limit
    for start, length in changed_ranges(base, new, grid.range(limit - 1)[1]):
        first, last = start // grid.chunk_size, (start + length - 1) // grid.chunk_size
        same[first : last + 1] = bytes(last - first + 1)
    return same
