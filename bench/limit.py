"""The limit of a full backup on this machine: read an image's data and compress it with zstd
level 1 on two threads, nothing else (no hashing, encryption, packing or writing).

Usage: limit.py IMAGE [--threads 2]. Reads the mapped ranges (SEEK_DATA/SEEK_HOLE) in 4 MiB
reads and compresses each 1 MiB piece; `mix_bench.py` times it as a process of its own with the
page cache dropped, beside the tools.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Iterator

import zstandard

MiB = 1024 * 1024
READ = 4 * MiB


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


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
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
                compressor.compress(data[start : start + MiB])

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
