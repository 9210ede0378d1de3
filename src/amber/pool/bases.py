"""Space other engines keep in the pool: the backup engine's base images.

The backup engine (`amber.backup.state`) keeps, per volume and target, a reflink copy of the
snapshot its last backup read, in `<pool>/backup-bases/`. Such a copy holds on to the blocks of
that moment as a snapshot would, so the pool counts and shows them (`amber pool status`); the
directory's name lives here, below both the pool's report and the engine that fills it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BASES_DIR = "backup-bases"

__all__ = ["BASES_DIR", "BasesUsage", "bases_usage"]


@dataclass(frozen=True)
class BasesUsage:
    """How many base images the pool holds, and the blocks allocated to them."""

    count: int
    allocated: int
    """Bytes allocated to the images (blocks they may share with snapshots and volumes)."""


def bases_usage(root: Path) -> BasesUsage:
    """Count the base images under `root` and add up their allocated blocks."""
    count = allocated = 0
    for directory, _dirs, files in os.walk(root / BASES_DIR):
        for name in files:
            if not name.endswith(".img"):
                continue
            try:
                st = os.stat(os.path.join(directory, name))
            except FileNotFoundError:
                continue  # replaced by a backup while we looked
            count += 1
            allocated += st.st_blocks * 512
    return BasesUsage(count, allocated)
