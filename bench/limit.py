"""The limit of a full backup on this machine: read an image's data and compress it with zstd
level 1 on two threads, nothing else (no hashing, encryption or packing).

Usage: limit.py IMAGE [--threads 2] [--write DIR]. Reads the mapped ranges (SEEK_DATA/SEEK_HOLE)
in 4 MiB reads and compresses each 1 MiB piece; `mix_bench.py` times it as a process of its own
with the page cache dropped, beside the tools. With `--write DIR` the compressed bytes are also
written durably, as every backup tool must write what it stores: into files of 16 MiB (a pack's
size) in DIR, each fsynced when full, then DIR fsynced -- the limit of a backup whose repository
is on this machine's disk.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import zstandard

MiB = 1024 * 1024
READ = 4 * MiB
PACK = 16 * MiB


def pieces(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of READ-sized pieces covering the mapped ranges."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no more data
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        start -= start % MiB
        for piece in range(start, end, READ):
            yield piece, min(READ, end - piece)
        offset = max(end, start + 1)


class Sink:
    """Files of `PACK` bytes in a directory, each fsynced when full (by the thread filling it),
    the directory fsynced at the end."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.lock = threading.Lock()
        self.buffer: list[bytes] = []
        self.size = 0
        self.count = 0

    def add(self, data: bytes) -> None:
        with self.lock:
            self.buffer.append(data)
            self.size += len(data)
            if self.size < PACK:
                return
            full, self.buffer, self.size = self.buffer, [], 0
            self.count += 1
            name = self.directory / f"{self.count:06d}"
        self._write(name, full)

    def close(self) -> None:
        if self.buffer:
            self.count += 1
            self._write(self.directory / f"{self.count:06d}", self.buffer)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _write(path: Path, parts: list[bytes]) -> None:
        with open(path, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=Path, help="also write the compressed bytes here")
    args = parser.parse_args()
    sink = Sink(args.write) if args.write else None
    fd = os.open(args.image, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    work = pieces(fd, os.fstat(fd).st_size)
    lock = threading.Lock()

    def worker() -> None:
        compressor = zstandard.ZstdCompressor(level=1)
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                return
            data = os.pread(fd, item[1], item[0])
            for start in range(0, len(data), MiB):
                compressed = compressor.compress(data[start : start + MiB])
                if sink is not None:
                    sink.add(compressed)

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if sink is not None:
        sink.close()


if __name__ == "__main__":
    main()
