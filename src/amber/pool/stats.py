"""The pool's and its volumes' state for the metrics (`amber.metrics.stats` records).

Read at scrape time by every process that serves metrics of a pool (`amber node`'s metrics
server, the dashboard's `/metrics`): the pool as `amber pool status` sees it, and each volume's
size, allocated bytes, condition (`amber.pool.health`, the checks of NodeGetVolumeStats) and,
while it is mounted on this node, its filesystem's usage.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from amber.domain.models import Attachment, AttachmentKind, Volume, VolumeMode
from amber.metrics.stats import PoolStats, VolumeStats
from amber.pool import health
from amber.pool.pool import Pool
from amber.system import fs

__all__ = ["pool_stats", "volume_stats"]


def pool_stats(pool: Pool) -> PoolStats:
    """The pool as `amber pool status` sees it, plus the bytes its snapshots hold."""
    status = pool.status()
    return PoolStats(
        size_bytes=status.size,
        free_bytes=status.free,
        capacity_bytes=status.capacity,
        provisioned_bytes=status.provisioned,
        overprovisioning_ratio=status.overprovisioning,
        volumes=status.volumes,
        snapshots=status.snapshots,
        snapshots_bytes=pool.snapshots.allocated_bytes(),
        backup_bases=status.backup_bases,
        backup_bases_bytes=status.backup_bases_bytes,
        full=status.full,
    )


def volume_stats(pool: Pool) -> list[VolumeStats]:
    """Every volume: size, bytes allocated, usage while mounted here, condition."""
    problem = pool.space_problem()
    uses: dict[str, list[Attachment]] = defaultdict(list)
    for attachment in pool.attachments.list():
        uses[attachment.object_uid].append(attachment)
    return [_volume(v, uses.get(v.uid, []), problem) for v in pool.volumes.list()]


def _volume(volume: Volume, uses: list[Attachment], problem: str | None) -> VolumeStats:
    conditions = [health.attachment_condition(volume, use, problem) for use in uses]
    abnormal = any(c.abnormal for c in conditions) or (
        not uses and health.image_condition(volume, problem).abnormal
    )
    allocated = fs.allocated_bytes(volume.image) or 0
    stats = VolumeStats(
        name=volume.name,
        mode=volume.mode.value,
        capacity_bytes=volume.size,
        allocated_bytes=allocated,
        abnormal=abnormal,
    )
    mounted = [
        use.path
        for use, condition in zip(uses, conditions, strict=True)
        if use.kind is AttachmentKind.MOUNT and not condition.abnormal
    ]
    if volume.mode is VolumeMode.FILESYSTEM and mounted:
        return _with_usage(stats, mounted[0])
    return stats


def _with_usage(stats: VolumeStats, path: Path) -> VolumeStats:
    """`stats` with the bytes and inodes used in the filesystem mounted at `path` (as
    NodeGetVolumeStats reports them)."""
    try:
        usage = fs.usage(path)
    except OSError:
        return stats
    return dataclasses.replace(
        stats,
        used_bytes=max(usage.total - usage.free, 0),
        inodes=usage.inodes_total,
        inodes_used=max(usage.inodes_total - usage.inodes_free, 0),
    )
