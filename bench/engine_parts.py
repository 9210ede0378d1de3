"""Where a backup's and a restore's time goes, measured inside one process (no CLI start-up).

On the same kind of volume as `backup_bench.py` (built the same way), this prints:

1. the wall and CPU time of `backup_snapshot` (a full backup into a fresh repository on a
   directory target) and of `restore_backup`, each repeated with the page cache dropped first;
2. the cost per GiB of each step a chunk goes through, over the snapshot's data chunks, beside
   the alternatives that were measured when choosing them: HMAC-SHA256 against keyed BLAKE3 for
   chunk ids, zstd level 1's default parameters against Amber's (sized for 1 MiB chunks),
   AES-256-GCM, zstd decompression.

Run as root:  .venv/bin/python bench/engine_parts.py [--workdir /var/tmp/amber-parts] [--reps 3]
"""

from __future__ import annotations

import argparse
import hmac
import os
import random
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import blake3
import zstandard
from backup_bench import drop_caches, populated_volume, setup, teardown
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from amber.backup.backuper import backup_snapshot
from amber.backup.keys import Password, ScryptParams
from amber.backup.repository import Repository, init_repository
from amber.backup.restorer import restore_backup
from amber.backup.state import BackupState
from amber.blobstore.filestore import FileStore
from amber.domain.units import GiB, MiB
from amber.pool import Pool


def data_chunks(image: Path, limit: int) -> Iterator[bytes]:
    """The image's non-zero 1 MiB chunks inside its mapped ranges (SEEK_DATA), up to `limit`."""
    fd = os.open(image, os.O_RDONLY)
    try:
        offset, size, count = 0, os.fstat(fd).st_size, 0
        while offset < size and count < limit:
            try:
                offset = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return
            offset -= offset % MiB
            chunk = os.pread(fd, MiB, offset)
            offset += MiB
            if chunk.count(0) != len(chunk):
                count += 1
                yield chunk
    finally:
        os.close(fd)


def per_gib(label: str, chunks: Sequence[bytes], step: Callable[[bytes], object]) -> None:
    """The fastest of three passes (this VM's speed drifts from one second to the next)."""
    compare(chunks, [(label, step)])


Step = tuple[str, Callable[[bytes], object]]


def compare(chunks: Sequence[bytes], steps: Sequence[Step]) -> None:
    """Each step's fastest of five passes, the steps' passes interleaved so that the VM's drift
    does not favour whichever runs first."""
    total = sum(map(len, chunks)) / GiB
    best = dict.fromkeys((label for label, _ in steps), float("inf"))
    for _ in range(5 if len(steps) > 1 else 3):
        for label, step in steps:
            start = time.perf_counter()
            for chunk in chunks:
                step(chunk)
            best[label] = min(best[label], time.perf_counter() - start)
    for label, seconds in best.items():
        print(f"  {label:46s} {seconds / total:6.2f} s/GiB")


def chunk_costs(image: Path) -> None:
    chunks = list(data_chunks(image, limit=4096))
    print(f"Per-chunk steps over {len(chunks)} data chunks of the snapshot:")
    key = os.urandom(32)
    compare(
        chunks,
        [
            ("chunk id: HMAC-SHA256", lambda c: hmac.digest(key, c, "sha256")),
            ("chunk id: keyed BLAKE3 (Amber)", lambda c: blake3.blake3(c, key=key).digest()),
        ],
    )
    default = zstandard.ZstdCompressor(level=1)
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=17, hash_log=12)
    sized = zstandard.ZstdCompressor(compression_params=params)
    raw = sum(map(len, chunks))
    variants = []
    for label, compressor in (("zstd 1, default parameters", default), ("zstd 1, Amber's", sized)):
        stored = sum(min(len(compressor.compress(c)), len(c)) for c in chunks)
        variants.append((f"{label} (stored {stored / raw:.3f})", compressor.compress))
    compare(chunks, variants)
    aead, nonce = AESGCM(key), os.urandom(12)
    per_gib("AES-256-GCM seal", chunks, lambda c: len(aead.encrypt(nonce, c, b"")))
    frames = [sized.compress(c) for c in chunks]
    decompressor = zstandard.ZstdDecompressor()
    per_gib_of = raw / GiB
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for frame in frames:
            decompressor.decompress(frame, max_output_size=MiB)
        best = min(best, time.perf_counter() - start)
    print(f"  {'zstd decompression':46s} {best / per_gib_of:6.2f} s/GiB")


def timed(label: str, run: Callable[[], object], reps: int) -> None:
    walls, cpus = [], []
    for _ in range(reps):
        drop_caches()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(
        f"  {label:20s} wall {statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f}),"
        f" CPU {statistics.median(cpus):.2f} s (medians of {reps})"
    )


def engine_runs(pool: Pool, mnt: Path, reps: int) -> None:
    root = mnt / "parts-repo"
    repo_box: list[Repository] = []

    def full_backup() -> None:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        repo = init_repository(FileStore(root), Password("parts"), scrypt=ScryptParams(n=2**10))
        with BackupState(pool) as state:
            state.forget("data")
        backup_snapshot(pool, repo, "parts", "s0")
        repo_box[:] = [repo]

    def restore() -> None:
        repo = repo_box[0]
        if "r" in {v.name for v in pool.volumes.list()}:
            pool.volumes.delete("r")
        restore_backup(pool, repo, repo.list_backups()[0], "r")

    print("In-process engine (page cache dropped before each run):")
    timed("full backup", full_backup, reps)
    timed("restore", restore, reps)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-parts"))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.workdir.exists():
        teardown(args.workdir)
    try:
        pool, bench = setup(args.workdir)
        populated_volume(pool, bench, random.Random(4))
        pool.attachments.release("volume", "data")
        image = pool.snapshots.create("data", "s0").image
        engine_runs(pool, bench.mnt, args.reps)  # first: its peak RSS is the engine's own
        chunk_costs(image)
        pool.close()
    finally:
        teardown(args.workdir)


if __name__ == "__main__":
    main()
