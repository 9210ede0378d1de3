"""Cutting an image file into fixed, aligned chunks, and finding the ones that hold data.

A volume image is sparse: a 100 GiB volume with 2 GiB written maps about 2 GiB. `SEEK_DATA` /
`SEEK_HOLE` list the mapped ranges without reading anything; a chunk that overlaps no mapped
range is a *hole* and is never read. A chunk that holds data but reads as all zero bytes (a
file that was written with zeros, or an unwritten preallocated extent) is a *zero* chunk: it is
recognised after reading and stored as nothing. Both restore as holes.

The chunk size comes from the repository (256 KiB by default for new repositories, 1 MiB before);
chunk `i` covers `[i * size, min((i + 1) * size, image size))`, so every backup of a volume cuts it
the same way and equal chunks deduplicate by position as well as by content.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from amber.domain.errors import SystemFailure


@dataclass(frozen=True)
class ChunkGrid:
    """The chunks of an image of `size` bytes."""

    size: int
    chunk_size: int

    @property
    def count(self) -> int:
        """How many chunks cover the image (the last may be short)."""
        return math.ceil(self.size / self.chunk_size)

    def range(self, index: int) -> tuple[int, int]:
        """`[start, end)` of chunk `index`."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def length(self, index: int) -> int:
        """Bytes in chunk `index`."""
        start, end = self.range(index)
        return end - start


def data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The mapped `[start, end)` ranges of an open file, by SEEK_DATA/SEEK_HOLE.

    A filesystem without hole support reports the whole file as one data range, which is
    still correct (every chunk is then read, and zero chunks are found by content).
    """
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after offset
                return
            raise SystemFailure(f"SEEK_DATA failed: {e.strerror}") from e
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            yield start, end
        offset = max(end, start + 1)


def chunks_with_data(fd: int, grid: ChunkGrid) -> bytearray:
    """One byte per chunk: 1 where the chunk overlaps a mapped range, 0 for a hole."""
    flags = bytearray(grid.count)
    for start, end in data_ranges(fd, grid.size):
        first, last = start // grid.chunk_size, (end - 1) // grid.chunk_size
        flags[first : last + 1] = b"\x01" * (last - first + 1)
    return flags


_ZEROS = bytes(1 << 20)


def is_zero(data: bytes) -> bool:
    """Whether `data` is all zero bytes (a memcmp, not a Python loop)."""
    if len(data) == len(_ZEROS):
        return data == _ZEROS
    if len(data) < len(_ZEROS):
        return data == _ZEROS[: len(data)]
    return data.count(0) == len(data)


def read_exactly(fd: int, length: int, offset: int) -> bytes:
    """`length` bytes at `offset` (pread until complete); SystemFailure on a short file."""
    data = os.pread(fd, length, offset)
    if len(data) == length:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = os.pread(fd, length - got, offset + got)
        if not more:
            raise SystemFailure(
                f"the image ended at byte {offset + got} while reading {length} bytes at {offset}"
            )
        parts.append(more)
        got += len(more)
    return b"".join(parts)
