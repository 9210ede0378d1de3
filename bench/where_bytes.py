"""Where a backup's bytes go: one image cut and compressed several ways (issue 17).

For a snapshot image this prints what a repository would store (deduplicated, compressed,
before encryption and packing overhead) under:

- Amber's format: aligned chunks of a new repository's chunk size (the engine's
  `DEFAULT_CHUNK_SIZE`, or `--chunk-size`), all-zero ones dropped, zstd level 1 with Amber's
  parameters (128 KiB window), raw when that does not shrink;
- the same chunks with zstd 1 at its default parameters, and with zstd 3 (what a per-chunk
  level would buy);
- borg 1.2's content-defined chunks (buzhash, 512 KiB-8 MiB, ~2 MiB average), zstd 1, as
  `borg create --compression zstd,1` cuts them; and content-defined chunks of ~64 KiB;
- aligned 64 KiB sub-chunks of those chunks, deduplicated among themselves.

and the compressibility of those chunks (how many are stored raw, the ratio's spread). The
labels name the chunk size used.
borg's chunker comes from Debian's borgbackup (`scripts/install.sh --bench`).

Usage (as root, on an image a benchmark left, or any file):
    .venv/bin/python bench/where_bytes.py IMAGE [--chunk-size 1Mi]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import blake3
import zstandard

from amber.backup.chunker import ChunkGrid, chunks_with_data
from amber.backup.config import DEFAULT_CHUNK_SIZE
from amber.domain.units import format_size, parse_size

MiB = 1024 * 1024
SUB_CHUNK = 64 * 1024
DEBIAN_PYTHON = "/usr/lib/python3/dist-packages"


@dataclass
class Tally:
    """Stored bytes for one way of cutting and compressing."""

    label: str
    seen: set[bytes] = field(default_factory=set)
    pieces: int = 0
    unique: int = 0
    raw: int = 0
    stored: int = 0

    def add(self, piece: bytes, compress: Callable[[bytes], bytes]) -> None:
        self.pieces += 1
        if piece.count(0) == len(piece):
            return
        digest = blake3.blake3(piece).digest()
        if digest in self.seen:
            return
        self.seen.add(digest)
        self.unique += 1
        self.raw += len(piece)
        self.stored += min(len(piece), len(compress(piece)))


def chunks(fd: int, size: int, chunk: int) -> Iterator[bytes]:
    """The `chunk`-byte aligned chunks that hold data, as Amber's backup cuts them (its
    `chunks_with_data`: holes are skipped)."""
    grid = ChunkGrid(size, chunk)
    for index, mapped in enumerate(chunks_with_data(fd, grid)):
        if mapped:
            start, end = grid.range(index)
            yield os.pread(fd, end - start, start)


def cdc(path: str, params: tuple[int, int, int, int]) -> Iterable[bytes]:
    """Content-defined chunks of the whole file by borg's buzhash chunker."""
    sys.path.append(DEBIAN_PYTHON)
    from borg.chunker import Chunker  # Debian's borgbackup: C code, same Python ABI

    with open(path, "rb") as f:
        for chunk in Chunker(0, *params).chunkify(f):
            if chunk.data is not None:
                yield bytes(chunk.data)


def compressors() -> dict[str, Callable[[bytes], bytes]]:
    amber = zstandard.ZstdCompressionParameters.from_level(1, window_log=17, hash_log=12)
    return {
        "amber": zstandard.ZstdCompressor(compression_params=amber).compress,
        "zstd1": zstandard.ZstdCompressor(level=1).compress,
        "zstd3": zstandard.ZstdCompressor(level=3).compress,
    }


def fixed(path: str, size: int) -> tuple[list[Tally], list[float]]:
    z = compressors()
    shown = format_size(size)
    tallies = [
        Tally(f"Amber v1: {shown} chunks, zstd 1 (128 KiB window)"),
        Tally(f"{shown} chunks, zstd 1 default parameters"),
        Tally(f"{shown} chunks, zstd 3"),
        Tally(f"{format_size(SUB_CHUNK)} aligned sub-chunks, zstd 1"),
    ]
    ratios: list[float] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for chunk in chunks(fd, os.fstat(fd).st_size, size):
            tallies[0].add(chunk, z["amber"])
            tallies[1].add(chunk, z["zstd1"])
            tallies[2].add(chunk, z["zstd3"])
            for sub in range(0, len(chunk), SUB_CHUNK):
                tallies[3].add(chunk[sub : sub + SUB_CHUNK], z["zstd1"])
            if chunk.count(0) != len(chunk):
                ratios.append(min(1.0, len(z["amber"](chunk)) / len(chunk)))
    finally:
        os.close(fd)
    return tallies, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("image")
    parser.add_argument(
        "--chunk-size",
        type=parse_size,
        default=DEFAULT_CHUNK_SIZE,
        help="Amber's chunk size to cut with (default: a new repository's, "
        f"{format_size(DEFAULT_CHUNK_SIZE)}); as `amber target add --chunk-size` takes it",
    )
    args = parser.parse_args()
    tallies, ratios = fixed(args.image, args.chunk_size)
    z = compressors()
    for label, params in (
        ("borg CDC (2^19-2^23, ~2 MiB), zstd 1", (19, 23, 21, 4095)),
        ("CDC ~64 KiB (2^14-2^18), zstd 1", (14, 18, 16, 4095)),
    ):
        tally = Tally(label)
        for piece in cdc(args.image, params):
            tally.add(piece, z["zstd1"])
        tallies.append(tally)
    base = tallies[0].stored
    print("| cut, compression | pieces | unique, non-zero | raw MiB | stored MiB | vs Amber v1 |")
    print("|---|---|---|---|---|---|")
    for t in tallies:
        print(
            f"| {t.label} | {t.pieces} | {t.unique} | {t.raw / MiB:.0f} | {t.stored / MiB:.1f} | "
            f"{t.stored / base:.3f} |"
        )
    ratios.sort()
    raw = sum(r >= 1.0 for r in ratios)
    marks = ", ".join(f"p{q}: {ratios[len(ratios) * q // 100]:.2f}" for q in (10, 25, 50, 75, 90))
    print(
        f"\n{format_size(args.chunk_size)} data chunks: {len(ratios)}; "
        f"stored raw (zstd does not shrink them): {raw}; compressed/raw {marks}"
    )


if __name__ == "__main__":
    main()
