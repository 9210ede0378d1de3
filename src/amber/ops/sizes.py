"""The size of a new volume: what a request asks, the filesystem's minimum, the source's size.

One rule for every edge that makes volumes (CSI CreateVolume, a restore from a backup).
"""

from __future__ import annotations

from typing import Final

from amber.domain.errors import OutOfRange
from amber.domain.units import GiB, MiB, check_size_limit, format_size, round_up
from amber.system import fs

__all__ = ["ALIGNMENT", "BLOCK_MIN_SIZE", "DEFAULT_SIZE", "choose_size", "minimum_size"]

DEFAULT_SIZE: Final = 1 * GiB
"""Size of a volume created without a capacity range (and without a content source)."""
ALIGNMENT: Final = MiB
"""Volume sizes are whole MiB (the pool rounds up to this)."""
BLOCK_MIN_SIZE: Final = MiB
"""Smallest raw block volume."""


def choose_size(required: int, limit: int, *, minimum: int, source_size: int = 0) -> int:
    """The size of a new volume: at least `required`, the minimum and the source, at most
    `limit`, in whole MiB; DEFAULT_SIZE (or the source's size) when nothing is asked."""
    floor = max(required, minimum, source_size)
    wanted = required or source_size or DEFAULT_SIZE
    if limit and not required:
        wanted = min(wanted, limit // ALIGNMENT * ALIGNMENT)
    size = check_size_limit(round_up(max(wanted, floor), ALIGNMENT))
    if limit and size > limit:
        raise OutOfRange(
            f"no volume of at most {limit} bytes can be made here: it needs at least "
            f"{format_size(size)} (minimum size, source size and 1 MiB steps)"
        )
    return size


def minimum_size(fs_type: str | None) -> int:
    """Smallest volume of a filesystem (or raw block when None)."""
    return fs.MIN_SIZE[fs_type] if fs_type else BLOCK_MIN_SIZE
