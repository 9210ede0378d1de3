"""Point-in-time copies of images: the heart of snapshots, clones and restores.

A copy is a reflink (`FICLONE`): O(1) in the size of the image, sharing every block with its
source until either side writes. If the source is mounted, its filesystem is frozen for the
duration of the clone so that the copy is consistent (what a crash at that instant would leave,
with the journal flushed). The freeze is held by a guard process that thaws it when this process
asks, when the freeze limit passes, or when this process dies (`amber.system.freeze`); the frozen
mount point is also written to the journal first, so the next pool open thaws it should the
guard die too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from amber.domain.errors import SystemFailure
from amber.domain.models import AttachmentKind
from amber.pool.context import PoolContext
from amber.system import freeze, ioctl


def copy_image(ctx: PoolContext, source: Path, target: Path) -> None:
    """Reflink `source` to `target`, or make a sparse full copy on a pool without reflink."""
    if ctx.reflink:
        ioctl.reflink(source, target)
    else:
        ioctl.sparse_copy(source, target)


def flush_devices(devices: list[Path]) -> None:
    for device in devices:
        fd = os.open(device, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def consistent_copy(
    ctx: PoolContext,
    *,
    source_uid: str,
    source: Path,
    target: Path,
    journal_id: int,
    payload: dict[str, Any],
) -> None:
    """Copy `source` to `target` at one instant, freezing the source's filesystem if mounted."""
    attachments = ctx.store.attachments(source_uid)
    mounts = [a.path for a in attachments if a.kind is AttachmentKind.MOUNT and not a.read_only]
    if not mounts:
        flush_devices(sorted({a.loop_device for a in attachments}))
        copy_image(ctx, source, target)
        return
    frozen_at = mounts[0]
    source_volume = ctx.store.volume_by_uid(source_uid)
    frozen_by = f"volume:{source_volume.name}" if source_volume else ""
    # Recovery thaws `frozen` only if it can take `frozen_by`: a live snapshot of the same
    # volume, whose freeze this must not cut short, holds that lock.
    ctx.store.journal_update(
        journal_id, {**payload, "frozen": str(frozen_at), "frozen_by": frozen_by}
    )
    with freeze.frozen(frozen_at, ctx.settings.freeze_limit, ctx.failpoint) as held:
        ctx.failpoint("copy.frozen")
        copy_image(ctx, source, target)
        ctx.failpoint("copy.copied")
    if held.expired:
        raise SystemFailure(
            f"copying took longer than the freeze limit of {ctx.settings.freeze_limit:g}s; "
            f"{frozen_at} was thawed and the copy discarded — retry"
        )
