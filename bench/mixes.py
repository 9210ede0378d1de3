"""Deterministic data mixes for the backup benchmarks (`mix_bench.py`).

Each mix fills a mounted ext4 volume with one kind of data that node-local volumes hold, from a
seed, so two runs (and two tools in one run) see the same bytes; and changes about 1% of it the
way that kind of data changes, for the incremental. Sizes (data and volume) scale with `scale`
(1.0 = the sizes docs/benchmarks.md cites; 0.05 makes a quick run).

| mix | volume | data at scale 1 | what changes for the incremental |
|---|---|---|---|
| database | 4 GiB | 1 GiB of 8 KiB pages (rows, 5-30% free) | 1% of pages rewritten |
| logs | 4 GiB | 1 GiB of log lines (timestamps, levels, ids) | one log grows by 1% |
| media | 4 GiB | 1 GiB of compressed files (incompressible) | one new file, 1% |
| small-files | 4 GiB | 60,000 files of 1-16 KiB, text and binary | 1% of the files rewritten |
| sparse | 16 GiB | 160 MiB written in scattered 4 MiB pieces | 1% of that data rewritten |
| vm-image | 4 GiB | 1 GiB disk image, files repeated at 4 KiB offsets | 4 KiB writes |
| mixed | 4 GiB | 1.1 GiB: a share of each of the above | each share changes as above |

Random bytes come from BLAKE3's extendable output (fast, seeded); text from a fixed vocabulary
and the seeded `random.Random`. Nothing here reads the clock or `os.urandom`.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
from backup_bench import WORDS as BENCH_WORDS
from backup_bench import write_file

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# The log/text vocabulary of backup_bench.py's volume, and a few database words after it (the
# same seeded choices as before: only the tail is new).
WORDS = (
    *BENCH_WORDS,
    "select",
    "update",
    "insert",
    "delete",
    "vacuum",
    "checkpoint",
    "replica",
    "primary",
    "leader",
    "follower",
    "shard",
)
LEVELS = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


class Data:
    """Seeded byte sources for one mix."""

    def __init__(self, seed: int, name: str) -> None:
        self.rng = random.Random(f"{seed}/{name}")
        self._counter = 0
        self._key = blake3.blake3(f"{seed}/{name}".encode()).digest()

    def random(self, nbytes: int) -> bytes:
        """Incompressible bytes (BLAKE3 XOF of a fresh counter)."""
        self._counter += 1
        hasher = blake3.blake3(struct.pack("<Q", self._counter), key=self._key)
        return hasher.digest(length=nbytes)

    def log(self, nbytes: int, start_ts: int) -> bytes:
        """Log lines: an increasing timestamp, a level, a service, words, ids, timings."""
        rng, parts, size, ts = self.rng, [], 0, start_ts
        services = [f"{w}-svc" for w in WORDS[:12]]
        while size < nbytes:
            ts += rng.randrange(1, 40)
            line = (
                f"2026-11-{1 + ts // 86400 % 28:02d}T{ts // 3600 % 24:02d}:{ts // 60 % 60:02d}:"
                f"{ts % 60:02d}.{ts % 997:03d}Z {rng.choice(LEVELS)} {rng.choice(services)}"
                f"[{rng.randrange(1, 40000)}]: {rng.choice(WORDS)} {rng.choice(WORDS)} "
                f"id={rng.getrandbits(40):010x} user={rng.randrange(10**6)} "
                f"took={rng.randrange(1, 5000)}ms status={rng.choice((200, 200, 200, 404, 500))}\n"
            )
            parts.append(line)
            size += len(line)
        return "".join(parts).encode()[:nbytes]

    def rows(self, nbytes: int) -> bytes:
        """Table rows as a database stores them: binary ids and numbers, short text fields."""
        rng, parts, size = self.rng, [], 0
        row_id = rng.randrange(10**9)
        while size < nbytes:
            row_id += 1
            text = f"{rng.choice(WORDS)} {rng.choice(WORDS)} C{rng.randrange(10**6):07d}".encode()
            row = (
                struct.pack(
                    "<QIIqH",
                    row_id,
                    rng.randrange(2**20),
                    rng.randrange(5000),
                    rng.randrange(10**8),
                    len(text),
                )
                + text
            )
            parts.append(row)
            size += len(row)
        return b"".join(parts)[:nbytes]


PAGE = 8 * KiB


def db_page(data: Data, page_no: int, lsn: int) -> bytes:
    """One 8 KiB page: header, row area, free space (zeros) at the end."""
    rng = data.rng
    used = PAGE - rng.randrange(PAGE // 20, PAGE * 3 // 10)
    header = struct.pack("<QQI", lsn, page_no, rng.getrandbits(32))
    body = data.random(256) + data.rows(used - len(header) - 256)
    return header + body + bytes(PAGE - used)


def overwrite(path: Path, offset: int, content: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(content)


# -- the mixes --------------------------------------------------------------------------------


def database_fill(root: Path, data: Data, nbytes: int) -> int:
    """Data files of 64 MiB (the last shorter) of 8 KiB pages."""
    pages = max(1, nbytes // PAGE)
    per_file = 64 * MiB // PAGE
    written = 0
    for first in range(0, pages, per_file):
        count = min(per_file, pages - first)
        content = b"".join(db_page(data, first + i, 1000 + i) for i in range(count))
        write_file(root / "db" / f"base-{first // per_file:04d}.dat", content)
        written += len(content)
    return written


def database_change(root: Path, data: Data, round_no: int) -> int:
    """Update 1% of the pages in place (a page rewritten whole, as a database does)."""
    files = sorted((root / "db").iterdir())
    total_pages = sum(f.stat().st_size for f in files) // PAGE
    changed = 0
    for _ in range(max(1, total_pages // 100)):
        path = data.rng.choice(files)
        page_no = data.rng.randrange(path.stat().st_size // PAGE)
        overwrite(path, page_no * PAGE, db_page(data, page_no, 10**6 * round_no + page_no))
        changed += PAGE
    return changed


def logs_fill(root: Path, data: Data, nbytes: int) -> int:
    files = max(1, nbytes // (64 * MiB))
    written = 0
    for i in range(files):
        content = data.log(nbytes // files, 1_700_000_000 + i * 10**6)
        write_file(root / "logs" / f"app-{i:03d}.log", content)
        written += len(content)
    return written


def logs_change(root: Path, data: Data, round_no: int) -> int:
    files = sorted((root / "logs").iterdir())
    total = sum(f.stat().st_size for f in files)
    content = data.log(max(4096, total // 100), 1_800_000_000 + round_no * 10**6)
    with open(files[round_no % len(files)], "ab") as f:
        f.write(content)
    return len(content)


def media_fill(root: Path, data: Data, nbytes: int) -> int:
    written = 0
    i = 0
    while written < nbytes:
        size = min(nbytes - written, data.rng.randrange(2 * MiB, 24 * MiB))
        write_file(root / "media" / f"clip-{i:04d}.mp4", data.random(size))
        written += size
        i += 1
    return written


def media_change(root: Path, data: Data, round_no: int) -> int:
    total = sum(f.stat().st_size for f in (root / "media").iterdir())
    size = max(4096, total // 100)
    write_file(root / "media" / f"new-{round_no:02d}.mp4", data.random(size))
    return size


def small_fill(root: Path, data: Data, nbytes: int) -> int:
    written = 0
    i = 0
    while written < nbytes:
        size = data.rng.randrange(1 * KiB, 16 * KiB)
        content = data.random(size) if i % 3 == 0 else data.log(size, i * 1000)
        write_file(root / "small" / f"d{i // 500:04d}" / f"f{i:06d}", content)
        written += size
        i += 1
    return written


def small_change(root: Path, data: Data, _round_no: int) -> int:
    files = sorted(p for d in sorted((root / "small").iterdir()) for p in d.iterdir())
    changed = 0
    for path in data.rng.sample(files, max(1, len(files) // 100)):
        size = path.stat().st_size
        write_file(path, data.random(size))
        changed += size
    return changed


SPARSE_PIECE = 4 * MiB


def sparse_fill(root: Path, data: Data, nbytes: int) -> int:
    """Pieces of mixed data at scattered offsets of one large, mostly unwritten file."""
    pieces = max(1, nbytes // SPARSE_PIECE)
    path = root / "sparse" / "volume.bin"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as f:
        f.truncate(pieces * 50 * SPARSE_PIECE)
        for i in range(pieces):
            f.seek(i * 50 * SPARSE_PIECE + data.rng.randrange(40) * SPARSE_PIECE)
            kind = i % 3
            if kind == 0:
                f.write(data.random(SPARSE_PIECE))
            elif kind == 1:
                f.write(data.log(SPARSE_PIECE, i * 10**5))
            else:
                f.write(data.rows(SPARSE_PIECE))
    return pieces * SPARSE_PIECE


def sparse_change(root: Path, data: Data, _round_no: int) -> int:
    path = root / "sparse" / "volume.bin"
    fd = os.open(path, os.O_RDWR)
    try:
        pieces = [o for o in range(0, os.fstat(fd).st_size, SPARSE_PIECE) if _mapped(fd, o)]
        changed = 0
        for _ in range(max(1, len(pieces) * SPARSE_PIECE // 100 // (64 * KiB))):
            offset = data.rng.choice(pieces) + data.rng.randrange(64) * 64 * KiB
            os.pwrite(fd, data.random(64 * KiB), offset)
            changed += 64 * KiB
    finally:
        os.close(fd)
    return changed


def _mapped(fd: int, offset: int) -> bool:
    try:
        return os.lseek(fd, offset, os.SEEK_DATA) == offset
    except OSError:
        return False


def vm_fill(root: Path, data: Data, nbytes: int) -> int:
    """A raw disk image: 'system files' (binaries, text) copied several times at 4 KiB
    offsets (package caches, snapshots of a guest's files, a second kernel), free space as
    zeros, and a share of unique data."""
    library = [data.random(data.rng.randrange(64 * KiB, 4 * MiB)) for _ in range(24)]
    library += [data.log(data.rng.randrange(16 * KiB, 1 * MiB), i * 10**4) for i in range(24)]
    path = root / "vm" / "disk.img"
    path.parent.mkdir(parents=True)
    written = 0
    with open(path, "wb") as f:
        while f.tell() < nbytes:
            roll = data.rng.random()
            if roll < 0.45:
                piece = data.rng.choice(library)
            elif roll < 0.65:
                piece = data.random(data.rng.randrange(4 * KiB, 2 * MiB))
            elif roll < 0.85:
                piece = data.log(data.rng.randrange(4 * KiB, 512 * KiB), f.tell())
            else:
                piece = bytes(data.rng.randrange(4 * KiB, 4 * MiB))
            piece += bytes(-len(piece) % (4 * KiB))  # guest blocks are 4 KiB
            f.write(piece)
            written += len(piece)
    return written


def vm_change(root: Path, data: Data, _round_no: int) -> int:
    path = root / "vm" / "disk.img"
    blocks = path.stat().st_size // (4 * KiB)
    fd = os.open(path, os.O_RDWR)
    try:
        changed = 0
        for _ in range(max(1, blocks // 100)):
            os.pwrite(fd, data.random(4 * KiB), data.rng.randrange(blocks) * 4 * KiB)
            changed += 4 * KiB
    finally:
        os.close(fd)
    return changed


Fill = Callable[[Path, Data, int], int]
Change = Callable[[Path, Data, int], int]


@dataclass(frozen=True)
class Part:
    fill: Fill
    change: Change
    share: float
    """Fraction of the mix's data."""


@dataclass(frozen=True)
class Mix:
    name: str
    volume_gib: int
    data_mib: int
    """Bytes of data at scale 1."""
    parts: tuple[Part, ...]

    def volume_bytes(self, scale: float) -> int:
        """The volume's size: scaled with the data (the peers read every byte of the image,
        holes included, so a quick run needs a small volume), never below 256 MiB."""
        return max(256 * MiB, round(self.volume_gib * GiB * scale / MiB) * MiB)

    def fill(self, root: Path, seed: int, scale: float) -> int:
        """Write the mix into `root` (a mounted, empty volume); return the bytes written."""
        data = Data(seed, self.name)
        nbytes = int(self.data_mib * MiB * scale)
        total = sum(
            part.fill(root, data, max(64 * KiB, int(nbytes * part.share))) for part in self.parts
        )
        os.sync()
        return total

    def change(self, root: Path, seed: int, round_no: int) -> int:
        """Change about 1% of the data; return the bytes written."""
        data = Data(seed + 1000 * round_no, self.name)
        total = sum(part.change(root, data, round_no) for part in self.parts)
        os.sync()
        return total


DATABASE = Part(database_fill, database_change, 1.0)
LOGS = Part(logs_fill, logs_change, 1.0)
MEDIA = Part(media_fill, media_change, 1.0)
SMALL = Part(small_fill, small_change, 1.0)
VM = Part(vm_fill, vm_change, 1.0)

MIXES = {
    mix.name: mix
    for mix in (
        Mix("database", 4, 1024, (DATABASE,)),
        Mix("logs", 4, 1024, (LOGS,)),
        Mix("media", 4, 1024, (MEDIA,)),
        Mix("small-files", 4, 512, (SMALL,)),
        Mix("sparse", 16, 160, (Part(sparse_fill, sparse_change, 1.0),)),
        Mix("vm-image", 4, 1024, (VM,)),
        Mix(
            "mixed",
            4,
            1126,
            (
                Part(database_fill, database_change, 0.25),
                Part(logs_fill, logs_change, 0.25),
                Part(media_fill, media_change, 0.2),
                Part(small_fill, small_change, 0.1),
                Part(vm_fill, vm_change, 0.2),
            ),
        ),
    )
}
