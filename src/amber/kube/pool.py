"""The node's pool, as the operator needs it: skip-unchanged and trim, by pool names.

Both answers are `amber.jobs.tasks`' (what `amber.jobs.local.LocalExecutor` uses too), so a
RecurringJob and a job of `amber schedule` decide alike (one rule): the volume's image is
compared with the reference's extent maps -- the pool snapshot behind the job's newest
VolumeSnapshot, or for a backup job without one the target's incremental base image -- after
flushing a mounted volume; trim is fstrim of the volume's mount. The only difference is where
the job's newest snapshot comes from: the operator names it (from the Kubernetes objects)
instead of the local job records.
"""

from __future__ import annotations

from amber.jobs.executor import Outcome
from amber.jobs.spec import JobSpec
from amber.jobs.tasks import changed_since, trim_volume
from amber.pool import Pool

__all__ = ["PoolChanges"]


class PoolChanges:
    """Skip-unchanged and trim on `pool`, by pool volume and snapshot names."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def changed(self, job: JobSpec, volume: str, snapshot: str | None) -> bool | None:
        """Whether `volume` changed since pool snapshot `snapshot` (None: since the target's
        base of a backup job); None when that cannot be told."""
        return changed_since(self.pool, job, volume, snapshot)

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        return trim_volume(self.pool, volume)
