"""Change detection by extent maps: which chunks of a new snapshot are the base's, unread.

A snapshot is a reflink copy of its volume: it shares the volume's physical blocks, and a write
to the volume afterwards goes to *new* blocks (copy on write). So two snapshots of one volume
map a byte range to the same physical blocks exactly when nothing wrote to that range between
them. FIEMAP reports each file's mapping; comparing the two maps chunk by chunk finds the
unchanged chunks without reading them, and their chunk ids come from the base backup's
manifest.

A chunk's *signature* is the list of its pieces: `(offset in the chunk, physical address,
length, flags)`, after clipping every extent to the chunk and merging pieces that are contiguous
both in the file and on disk (one file may report as two extents what the other reports as
one). Two chunks with equal signatures read the same bytes, provided

- both files exist while they are compared (the caller holds both open, so no block of either
  can be freed and reused in between), and neither is written to (snapshot images are
  read-only);
- every extent is *trustworthy*: not delayed-allocation, unknown, encoded (compressed or
  encrypted, e.g. btrfs) or inline/tail data, whose "physical address" is not a stable block
  number. A chunk touching such an extent is always read;
- the flags that change the meaning of the blocks agree: an *unwritten* (preallocated, reads as
  zero) extent that is later written keeps its physical address but changes its flag.

A chunk with no extent in either file is a hole in both, and equal as well. Everything not
proven equal is read and hashed, so the worst a wrong FIEMAP can cost is time, never data —
except a filesystem that reuses physical addresses for different data in two files that are
both alive, which no filesystem does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from amber.backup.chunker import ChunkGrid
from amber.system.ioctl import FIEMAP_EXTENT_LAST, FIEMAP_EXTENT_SHARED, Extent

FIEMAP_EXTENT_NOT_ALIGNED = 0x100
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_DATA_TAIL = 0x400
# Flags that say nothing about the content: whether the blocks are shared, and which extent is
# the file's last.
_IGNORED_FLAGS = FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_SHARED
_UNSTABLE = FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL

Piece = tuple[int, int, int, int]
"""(offset in the chunk, physical address, length, flags that matter)."""

_UNTRUSTED: tuple[Piece, ...] = ((-1, -1, -1, -1),)


def stable(extent: Extent) -> bool:
    """Whether the extent's physical address identifies its blocks for good."""
    return extent.trustworthy and not extent.flags & _UNSTABLE


def signatures(extents: Iterable[Extent], grid: ChunkGrid) -> dict[int, tuple[Piece, ...]]:
    """Chunk index -> its pieces, for every chunk that some extent touches.

    A chunk touched by an untrustworthy extent gets a signature that equals nothing.
    """
    pieces: dict[int, list[Piece]] = {}
    untrusted: set[int] = set()
    for extent in extents:
        start = extent.logical
        end = min(extent.logical + extent.length, grid.size)
        flags = extent.flags & ~_IGNORED_FLAGS
        index = start // grid.chunk_size
        while start < end:
            chunk_start, chunk_end = grid.range(index)
            piece_end = min(end, chunk_end)
            if not stable(extent):
                untrusted.add(index)
            else:
                physical = extent.physical + (start - extent.logical)
                piece = (start - chunk_start, physical, piece_end - start, flags)
                _append(pieces.setdefault(index, []), piece)
            start = piece_end
            index += 1
    result = {index: tuple(found) for index, found in pieces.items()}
    result.update(dict.fromkeys(untrusted, _UNTRUSTED))
    return result


def _append(pieces: list[Piece], piece: Piece) -> None:
    """Add a piece, merging it into the previous one when both are contiguous in the file and
    on disk with the same flags (filesystems split extents differently in different files)."""
    if pieces:
        offset, physical, length, flags = pieces[-1]
        if offset + length == piece[0] and physical + length == piece[1] and flags == piece[3]:
            pieces[-1] = (offset, physical, length + piece[2], flags)
            return
    pieces.append(piece)


def unchanged_chunks(
    base: Sequence[Extent], new: Sequence[Extent], grid: ChunkGrid, comparable: int
) -> bytearray:
    """One byte per chunk of `grid`: 1 where the new image provably holds the base's bytes.

    Only the first `comparable` chunks are compared (the chunks both images cover with the
    same byte range); the rest are 0.
    """
    base_sigs = signatures(base, grid)
    new_sigs = signatures(new, grid)
    same = bytearray(grid.count)
    for index in range(min(comparable, grid.count)):
        signature = new_sigs.get(index, ())
        if signature is not _UNTRUSTED and signature == base_sigs.get(index, ()):
            same[index] = 1
    return same
