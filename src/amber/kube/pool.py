"""The node's pool, as the operator needs it: skip-unchanged and trim, by pool names.

Both answers are `amber.jobs.local.LocalExecutor`'s own, so a RecurringJob and a job of
`amber schedule` decide alike (one rule): the volume's image is compared with the reference's
extent maps -- the pool snapshot behind the job's newest VolumeSnapshot, or for a backup
VolumeSnapshot the target's incremental base image -- after flushing a mounted volume; trim is
its fstrim of the volume's mount. The only difference is where the job's newest snapshot comes
from: the operator names it (from the Kubernetes objects) instead of the local job records.
"""

from __future__ import annotations

from typing import cast

from amber.jobs.executor import ItemKind, Outcome
from amber.jobs.local import LocalExecutor
from amber.jobs.records import OwnedItem, Records
from amber.jobs.spec import JobSpec
from amber.pool import Pool

__all__ = ["PoolChanges"]


class _Named(LocalExecutor):
    """LocalExecutor whose "job's newest snapshot" is the one the operator names (or none:
    then a backup job is compared with the target's base, as locally)."""

    def __init__(self, pool: Pool, snapshot: str | None) -> None:
        # The records are not read: the only method that would, `_local`, is replaced below.
        super().__init__(pool, cast(Records, None))
        self.reference = snapshot

    def _local(self, job: JobSpec, volume: str) -> list[OwnedItem]:
        if self.reference is None:
            return []
        return [OwnedItem(job.name, volume, ItemKind.LOCAL.value, self.reference, 0.0)]


class PoolChanges:
    """Skip-unchanged and trim on `pool`, by pool volume and snapshot names."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def changed(self, job: JobSpec, volume: str, snapshot: str | None) -> bool | None:
        """Whether `volume` changed since pool snapshot `snapshot` (None: since the target's
        base of a backup job); None when that cannot be told."""
        return _Named(self.pool, snapshot).changed_since_last(job, volume)

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        return _Named(self.pool, None).trim(job, volume)
