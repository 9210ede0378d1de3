"""Snapshot latency on mounted volumes vs. a full sparse copy of the same image.

For each volume size (1, 10, 100 GiB by default) the benchmark creates an ext4 volume on a
fresh XFS (reflink) loopback pool, mounts it, writes 2 GiB of incompressible data (fsynced;
768 MiB in the 1 GiB volume, which cannot hold 2 GiB),
then measures `amber`'s snapshot creation (freeze, FICLONE, thaw, metadata commit) many times,
and a full sparse copy (`cp --sparse=always --reflink=never`) of the same image a few times.

Run as root:  .venv/bin/python bench/snapshot_bench.py [--sizes 1,10,100] [--runs 50]
It prints a Markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from amber.domain.units import GiB, MiB
from amber.pool import Pool, VolumeRequest


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def write_data(directory: Path, nbytes: int) -> None:
    block = os.urandom(4 * MiB)
    with open(directory / "data.bin", "wb") as f:
        for i in range(nbytes // len(block)):
            # Vary each block so that nothing dedups or compresses.
            f.write(i.to_bytes(8, "little") + block[8:])
        f.flush()
        os.fsync(f.fileno())


def bench_size(
    pool: Pool, work: Path, size_gib: int, data: int, runs: int, copies: int
) -> dict[str, float]:
    name = f"vol{size_gib}g"
    pool.volumes.create(VolumeRequest(name, size_gib * GiB))
    mnt = work / name
    pool.attachments.mount("volume", name, mnt, create_target=True)
    # A 1 GiB volume cannot hold 2 GiB: it gets three quarters of its size instead.
    write_data(mnt, min(data, size_gib * GiB * 3 // 4))
    subprocess.run(["sync"], check=True)
    snaps: list[float] = []
    for i in range(runs):
        start = time.perf_counter()
        pool.snapshots.create(name, f"{name}-s{i}")
        snaps.append((time.perf_counter() - start) * 1000)
    image = pool.volumes.get(name).image
    copy_times: list[float] = []
    for i in range(copies):
        target = work / f"copy-{i}.img"
        start = time.perf_counter()
        subprocess.run(
            ["cp", "--sparse=always", "--reflink=never", str(image), str(target)], check=True
        )
        with open(target, "rb") as f:
            os.fsync(f.fileno())
        copy_times.append((time.perf_counter() - start) * 1000)
        target.unlink()
    for i in range(runs):
        pool.snapshots.delete(f"{name}-s{i}")
    pool.attachments.release("volume", name)
    pool.volumes.delete(name)
    return {
        "p50": statistics.median(snaps),
        "p95": percentile(snaps, 95),
        "max": max(snaps),
        "copy_p50": statistics.median(copy_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100", help="volume sizes in GiB")
    parser.add_argument("--data", type=int, default=2048, help="MiB of data written per volume")
    parser.add_argument("--runs", type=int, default=50, help="snapshots per size")
    parser.add_argument("--copies", type=int, default=3, help="full copies per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="amber-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        image, root, work = base / "pool.img", base / "pool", base / "work"
        work.mkdir()
        total = max(sizes) * GiB + 16 * GiB
        Pool.init_image(image, total, root, overprovisioning=1.0)
        pool = Pool.open(root)
        try:
            results = {
                s: bench_size(pool, work, s, args.data * MiB, args.runs, args.copies) for s in sizes
            }
        finally:
            for att in pool.attachments.list():
                pool.attachments.release("volume", att.object_name)
            pool.close()
            subprocess.run(["umount", str(root)], check=False)
    print(f"host: {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}")
    print(
        f"runs: {args.runs} snapshots, {args.copies} full copies per size, {args.data} MiB data\n"
    )
    print(
        "| volume | snapshot p50 | snapshot p95 | snapshot max | full sparse copy p50 "
        "| copy / snapshot |"
    )
    print("|---|---|---|---|---|---|")
    for size, r in results.items():
        print(
            f"| {size} GiB | {r['p50']:.1f} ms | {r['p95']:.1f} ms | {r['max']:.1f} ms | "
            f"{r['copy_p50']:.0f} ms | {r['copy_p50'] / r['p50']:.0f}x |"
        )
    first, last = results[sizes[0]], results[sizes[-1]]
    print(f"\np50 ratio {sizes[-1]} GiB / {sizes[0]} GiB: {last['p50'] / first['p50']:.2f}")


if __name__ == "__main__":
    main()
