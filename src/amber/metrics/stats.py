"""What the edges hand to the collectors: plain records, read at scrape time.

`amber.metrics` never imports the pool or the targets. The process that serves the metrics
gives `Metrics.watch` callables that return these records (the CSI node wires them to its pool,
`amber.ops.probes`, from `amber.pool.stats`), and the collectors turn them into samples.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStats", "ProbeOutcome", "TargetStats", "VolumeStats"]


@dataclass(frozen=True)
class PoolStats:
    """One pool, as `amber pool status` sees it."""

    size_bytes: int
    """Size of the pool filesystem."""
    free_bytes: int
    """Bytes of the pool filesystem still available (what thin volumes can still write)."""
    capacity_bytes: int
    """What volume sizes may add up to: size x overprovisioning."""
    provisioned_bytes: int
    """Sizes of all volumes added up."""
    overprovisioning_ratio: float
    volumes: int
    snapshots: int
    snapshots_bytes: int
    """Bytes allocated to snapshot images (shared with their volumes through reflink)."""
    backup_bases: int
    backup_bases_bytes: int
    """Bytes allocated to the backup engine's base images (shared through reflink too)."""
    full: bool
    """The pool filesystem is (nearly) full whatever the accounting says."""

    @property
    def capacity_free_bytes(self) -> int:
        """What the accounting still lets new volumes take."""
        return max(self.capacity_bytes - self.provisioned_bytes, 0)


@dataclass(frozen=True)
class VolumeStats:
    """One volume of the pool."""

    name: str
    mode: str
    """`filesystem` or `block`."""
    capacity_bytes: int
    """The volume's size."""
    allocated_bytes: int
    """Bytes its image holds in the pool (sparse: less than the size until written)."""
    abnormal: bool
    """The volume condition CSI reports is abnormal (see NodeGetVolumeStats)."""
    used_bytes: int | None = None
    """Bytes used in its filesystem; None unless the filesystem is mounted on this node."""
    inodes: int | None = None
    """Inodes of its filesystem; None unless mounted on this node."""
    inodes_used: int | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe of a target found (see `amber.blobstore.target.probe`)."""

    up: bool
    """The target answered a read and took, returned and deleted a small object."""
    latency_seconds: float | None
    """How long the read took; None when it failed."""


@dataclass(frozen=True)
class TargetStats:
    """The last probe of one target."""

    name: str
    up: bool
    checked_at: float
    """When the probe ended (seconds since the epoch)."""
    latency_seconds: float | None
