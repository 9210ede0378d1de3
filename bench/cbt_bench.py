"""Changed-block tracking: the delta of a 1% change on a 100 GiB volume, vs. reading both images.

On a fresh XFS (reflink) loopback pool the benchmark creates a sparse Block volume (100 GiB by
default), writes `--data` MiB of incompressible data at its start, takes snapshot A, rewrites
`--change` percent of the volume's capacity in `--piece` KiB pieces at random aligned offsets
all over it (fsynced), and takes snapshot B. Then it times, side by side:

- amber: `amber.pool.changes.delta(A, B)` -- FIEMAP of both images and the comparison of their
  extent maps (what `amber snapshot diff` and the CSI GetMetadataDelta service run);
- read + compare: what a user without change tracking does -- read both images and compare
  them 4 KiB block by block, skipping the holes of both (SEEK_DATA), which is already kinder
  than `cmp` over 2 x 100 GiB. The page cache is not dropped (other work runs on the machine),
  so this is the warm-cache best case for the alternative.

Both must find the same changed bytes; the benchmark checks it.

Run as root:  .venv/bin/python bench/cbt_bench.py [--size 100] [--data 2048] [--change 1]
It prints a Markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from amber.domain.models import VolumeMode
from amber.domain.units import GiB, KiB, MiB
from amber.pool import Pool, VolumeRequest
from amber.pool.changes import delta

BLOCK = 4 * KiB
SLICE = 4 * MiB


def write_base(fd: int, nbytes: int) -> None:
    block = os.urandom(SLICE)
    for i in range(nbytes // SLICE):
        os.pwrite(fd, i.to_bytes(8, "little") + block[8:], i * SLICE)
    os.fsync(fd)


def write_changes(fd: int, size: int, nbytes: int, piece: int, seed: int) -> None:
    rng = random.Random(seed)
    data = os.urandom(piece)
    for i in range(nbytes // piece):
        offset = rng.randrange(size // piece) * piece
        os.pwrite(fd, i.to_bytes(8, "little") + data[8:], offset)
    os.fsync(fd)


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    ranges, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        ranges.append((start, end))
        offset = end
    return ranges


def read_and_compare(a: Path, b: Path, size: int) -> int:
    """Bytes in 4 KiB blocks that differ, by reading the data ranges of both images."""
    differ = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        ranges = sorted(data_ranges(fa.fileno(), size) + data_ranges(fb.fileno(), size))
        position = 0
        for start, end in ranges:
            offset = max(start, position)
            while offset < end:
                n = min(SLICE, end - offset)
                left, right = os.pread(fa.fileno(), n, offset), os.pread(fb.fileno(), n, offset)
                if left != right:
                    differ += BLOCK * sum(
                        left[i : i + BLOCK] != right[i : i + BLOCK] for i in range(0, n, BLOCK)
                    )
                offset += n
            position = max(position, end)
    return differ


def timed(fn: Callable[[], int], runs: int) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench(pool: Pool, size: int, data: int, change: int, piece: int, runs: int) -> dict[str, float]:
    pool.volumes.create(VolumeRequest("cbt", size, mode=VolumeMode.BLOCK, fs_type=None))
    device = pool.attachments.expose("volume", "cbt").loop_device
    fd = os.open(device, os.O_RDWR)
    try:
        write_base(fd, data)
        a = pool.snapshots.create("cbt", "a")
        write_changes(fd, size, change, piece, seed=1)
        b = pool.snapshots.create("cbt", "b")
    finally:
        os.close(fd)
        pool.attachments.release("volume", "cbt")
    amber_s, amber_bytes = timed(lambda: delta(a, b).changed_bytes, runs)
    ranges = len(delta(a, b).ranges)
    read_s, read_bytes = timed(lambda: read_and_compare(a.image, b.image, size), 1)
    # Everything that differs must be reported; anything more is a rewrite of equal bytes.
    assert amber_bytes >= read_bytes, (amber_bytes, read_bytes)
    return {
        "amber_s": amber_s,
        "read_s": read_s,
        "changed": amber_bytes,
        "differ": read_bytes,
        "ranges": ranges,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="volume size in GiB")
    parser.add_argument("--data", type=int, default=2048, help="MiB written before snapshot A")
    parser.add_argument("--change", type=float, default=1.0, help="percent of capacity rewritten")
    parser.add_argument("--piece", type=int, default=64, help="KiB per random write")
    parser.add_argument("--runs", type=int, default=5, help="timed delta runs (median)")
    args = parser.parse_args()
    size, piece = args.size * GiB, args.piece * KiB
    change = int(size * args.change / 100) // piece * piece
    with tempfile.TemporaryDirectory(prefix="amber-cbt-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        image, root = base / "pool.img", base / "pool"
        Pool.init_image(image, size + 16 * GiB, root, overprovisioning=1.0)
        pool = Pool.open(root)
        try:
            r = bench(pool, size, args.data * MiB, change, piece, args.runs)
        finally:
            pool.close()
            subprocess.run(["umount", str(root)], check=False)
    print(f"host: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}")
    print(
        f"volume {args.size} GiB (Block), {args.data} MiB written, then {change // MiB} MiB "
        f"rewritten in {args.piece} KiB pieces at random offsets\n"
    )
    print("| method | time | changed bytes found | ranges |")
    print("|---|---|---|---|")
    print(
        f"| amber delta (FIEMAP, median of {args.runs}) | {r['amber_s'] * 1000:.0f} ms "
        f"| {r['changed'] / MiB:.1f} MiB | {r['ranges']} |"
    )
    print(
        f"| read + compare both images (holes skipped) | {r['read_s']:.1f} s "
        f"| {r['changed'] / MiB:.1f} MiB | - |"
    )
    print(f"\nread + compare / amber: {r['read_s'] / r['amber_s']:.0f}x")


if __name__ == "__main__":
    main()
