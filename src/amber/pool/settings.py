"""Changing an existing pool: grow its loopback image, change its overprovisioning ratio.

Both hold the pool lock, so that no create, clone or expansion checks capacity while the
capacity changes. Shrinking a pool is refused: XFS cannot shrink, and a smaller image would
cut off blocks its volumes use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import FailedPrecondition, OutOfRange
from amber.domain.numbers import check_finite, check_range
from amber.domain.units import format_size
from amber.pool.context import POOL_LOCK
from amber.pool.pool import DEFAULT_IMAGE_OVERPROVISIONING, Pool
from amber.system import fs, loopdev, mount

__all__ = [
    "DEFAULT_IMAGE_OVERPROVISIONING",
    "MAX_OVERPROVISIONING",
    "Resized",
    "resize_pool",
    "set_overprovisioning",
]

MAX_OVERPROVISIONING = 100.0


@dataclass(frozen=True)
class Resized:
    """What `resize_pool` did."""

    image: Path
    old_size: int
    new_size: int
    filesystem_size: int
    """The pool filesystem's size afterwards (a little less than the image)."""

    @property
    def changed(self) -> bool:
        return self.new_size != self.old_size


def resize_pool(pool: Pool, size: int) -> Resized:
    """Grow the pool's loopback image to `size` bytes and its mounted XFS online."""
    image = _image_of(pool)
    ctx = pool.ctx
    with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
        old = image.stat().st_size
        if size < old:
            raise OutOfRange(
                f"the pool image {image} is {format_size(old)}: it cannot shrink to "
                f"{format_size(size)} (XFS does not shrink)"
            )
        # Run even when the image already has the size: it finishes a grow that was
        # interrupted between the image and its filesystem (xfs_growfs is idempotent).
        _grow_image(image, size, pool.root)
        return Resized(image, old, size, fs.usage(pool.root).total)


def _image_of(pool: Pool) -> Path:
    store = pool.ctx.store
    if store.get_meta("device"):
        raise FailedPrecondition(
            f"the pool at {pool.root} is on the block device {store.get_meta('device')}: grow "
            f"the device, then run `xfs_growfs {pool.root}`"
        )
    image = store.get_meta("image") or ""
    if not image:
        raise FailedPrecondition(
            f"the pool at {pool.root} is a directory, not an image Amber made: grow the "
            "filesystem that holds it with that filesystem's own tools"
        )
    return Path(image)


def _grow_image(image: Path, size: int, root: Path) -> None:
    if not mount.is_mounted(root):
        raise FailedPrecondition(f"the pool image {image} is not mounted at {root}")
    loops = loopdev.find_loops(image)
    if not loops:
        raise FailedPrecondition(f"no loop device holds the pool image {image}")
    if image.stat().st_size < size:
        with open(image, "r+b") as f:
            os.ftruncate(f.fileno(), size)
            os.fsync(f.fileno())
    for loop in loops:
        loopdev.refresh_capacity(loop.device)
    fs.grow("xfs", loops[0].device, root)


def set_overprovisioning(pool: Pool, ratio: float) -> float:
    """Set the pool's overprovisioning ratio; return the old one.

    Refused when the ratio is not a finite number in [1, 100], or when the volumes already
    provisioned would exceed the new capacity.
    """
    check_finite("overprovisioning", ratio)
    check_range("overprovisioning", ratio, 1.0, MAX_OVERPROVISIONING)
    ctx = pool.ctx
    with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
        committed = ctx.store.provisioned() + ctx.reserved()
        capacity = int(fs.usage(pool.root).total * ratio)
        if committed > capacity:
            raise FailedPrecondition(
                f"volumes already provision {format_size(committed)}, more than the "
                f"{format_size(capacity)} overprovisioning {ratio:g} allows: delete volumes "
                "or grow the pool first (amber pool resize)"
            )
        old = ctx.overprovisioning
        ctx.store.set_meta("overprovisioning", repr(ratio))
        ctx.overprovisioning = ratio
        return old
