"""Helpers for pool tests: write and compare data inside mounted volumes."""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

from amber.domain.units import MiB


def write_random(path: Path, nbytes: int, seed: int) -> str:
    """Write `nbytes` of seeded random data, fsync it, return its sha256."""
    rng = random.Random(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        remaining = nbytes
        while remaining:
            block = rng.randbytes(min(MiB, remaining))
            f.write(block)
            h.update(block)
            remaining -= len(block)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MiB):
            h.update(block)
    return h.hexdigest()


def tree_digest(directory: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file (lost+found excluded)."""
    return {
        str(p.relative_to(directory)): sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "lost+found" not in p.parts
    }


def differing_blocks(base: Path, target: Path, block: int) -> set[int]:
    """The ground truth of changed-block tracking: indexes of the `block`-sized blocks whose
    bytes differ between two images of the same size, read side by side."""
    blocks: set[int] = set()
    with open(base, "rb") as a, open(target, "rb") as b:
        offset = 0
        while left := a.read(4 * MiB):
            right = b.read(4 * MiB)
            if left != right:
                blocks.update(
                    (offset + i) // block
                    for i in range(0, len(left), block)
                    if left[i : i + block] != right[i : i + block]
                )
            offset += len(left)
    return blocks


def read_only_flag(device: Path) -> bool:
    """The kernel's read-only flag of a block device (BLKROSET, `losetup --read-only`)."""
    return Path(f"/sys/block/{device.name}/ro").read_text().strip() == "1"


def read_only_while_free(device: Path) -> bool:
    """The read-only flag of a freed loop device, read while no one has bound it: once freed,
    any process (another test worker attaching a snapshot read-only, say) may take the number,
    so the flag counts only if the device was unbound before and after reading it."""
    backing = Path(f"/sys/block/{device.name}/loop/backing_file")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not backing.exists():
            flag = read_only_flag(device)
            if not backing.exists():
                return flag
        time.sleep(0.02)
    raise AssertionError(f"{device} stayed bound by another process for 10 s")
