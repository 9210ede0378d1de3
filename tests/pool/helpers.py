"""Helpers for pool tests: write and compare data inside mounted volumes."""

from __future__ import annotations

import hashlib
import os
import random
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
