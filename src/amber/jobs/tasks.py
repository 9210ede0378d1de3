"""The work of a job that both executors do alike: skip-unchanged, trim, prune and check.

`amber.jobs.local.LocalExecutor` (`amber schedule`, `amber job`) and the Kubernetes operator
(`amber.kube`) differ only in where a job's snapshots are found (the local job records, or the
VolumeSnapshot objects); the rules below are theirs both, once.

- **Skip unchanged** (`changed_since`) compares extent maps (FIEMAP), as change tracking does
  (`amber.pool.changes`): the volume's image against a reference -- the job's newest snapshot of
  it, or for a backup job without one, the target's incremental base image (a reflink copy of
  what the last backup read). Equal maps mean no block was written since; dirty data of a
  mounted volume is flushed first, blocks not yet allocated count as changed, and preallocated
  (unwritten) extents count as holes (both read as zeros; a reflink copy has holes there).
  Without reflink, or with nothing to compare against, the answer is "cannot tell" (None: run).
- **Trim** (`trim_volume`) runs `fstrim` on the volume's mount point as the pool recorded it; a
  volume that is not mounted (or a block volume) is skipped with that reason.
- **Prune and check** of a target (`TargetTasks`) need only the repository opener: prune sweeps
  the data no backup uses and removes no backup (`amber.ops.backups.Operations.sweep`: which
  backups go, their backup jobs' retention decides); check fails the run when it finds errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amber.backup.state import BackupState
from amber.domain.errors import Corrupt, FailedPrecondition
from amber.domain.models import AttachmentKind, Volume, VolumeMode
from amber.domain.units import format_size
from amber.jobs.executor import Outcome
from amber.jobs.spec import JobSpec, Task
from amber.ops.backups import Operations, RepositoryOpener
from amber.pool import Pool
from amber.pool.changes import changed_ranges
from amber.system import fs
from amber.system.ioctl import FIEMAP_EXTENT_UNWRITTEN, Extent, fiemap

__all__ = ["TargetTasks", "changed_since", "mounts_of", "trim_volume"]


def changed_since(pool: Pool, job: JobSpec, volume: str, reference: str | None) -> bool | None:
    """Whether `volume` changed since pool snapshot `reference` (the job's newest snapshot of it;
    None, or a snapshot of an earlier volume of that name: since the target's base of a backup
    job); None when that cannot be told."""
    found = pool.volumes.find(volume)
    if found is None or not pool.ctx.reflink:
        return None
    image = _reference_image(pool, job, found, reference)
    if image is None:
        return None
    for path in mounts_of(pool, found):
        fs.flush(path)
    path, size = image
    if size != found.size:
        return True
    return _differs(path, found.image, size)


def _reference_image(
    pool: Pool, job: JobSpec, volume: Volume, reference: str | None
) -> tuple[Path, int] | None:
    snap = pool.snapshots.find(reference) if reference is not None else None
    if snap is not None and snap.volume_uid == volume.uid:
        return snap.image, snap.size
    if job.task is Task.BACKUP and job.target is not None:
        with BackupState(pool) as state:
            base = state.get(volume.name, job.target)
        if base is not None and base.volume_uid == volume.uid and Path(base.image).exists():
            return Path(base.image), base.size
    return None


def mounts_of(pool: Pool, volume: Volume) -> list[Path]:
    """Where the pool recorded `volume` mounted."""
    return [
        a.path
        for a in pool.attachments.list("volume", volume.name)
        if a.kind is AttachmentKind.MOUNT
    ]


def trim_volume(pool: Pool, volume: str) -> Outcome:
    """fstrim at the volume's mount (skipped, with the reason, when there is none)."""
    found = pool.volumes.get(volume)
    if found.mode is VolumeMode.BLOCK:
        return Outcome(skipped=f"volume {volume!r} is a block volume (no filesystem to trim)")
    mounts = mounts_of(pool, found)
    if not mounts:
        return Outcome(skipped=f"volume {volume!r} is not mounted (fstrim needs its mount)")
    trimmed = fs.trim(mounts[0])
    return Outcome(bytes=trimmed, detail=f"{format_size(trimmed)} trimmed at {mounts[0]}")


def _differs(reference: Path, image: Path, size: int) -> bool:
    """Whether the extent maps of the two images (held open together) differ in `[0, size)`."""
    with open(reference, "rb") as old, open(image, "rb") as new:
        before, after = _data(fiemap(old.fileno())), _data(fiemap(new.fileno()))
        return bool(changed_ranges(before, after, size))


def _data(extents: Sequence[Extent]) -> list[Extent]:
    """The extents that hold data. A preallocated (unwritten) extent reads as zeros, like a
    hole, and a reflink copy does not share it: the snapshot of a volume with one has a hole
    there. A write into it clears the flag, and the range then counts as changed."""
    return [e for e in extents if not (e.trustworthy and e.flags & FIEMAP_EXTENT_UNWRITTEN)]


class TargetTasks:
    """Prune and check jobs of a target, through `amber.ops.backups` (no pool needed)."""

    def __init__(self, open_repository: RepositoryOpener | None, pool: Pool | None = None) -> None:
        self._open_repository = open_repository
        self._pool = pool

    def operations(self, job: JobSpec) -> tuple[Operations, str]:
        """The backup operations for one call, and the job's target (FailedPrecondition without
        one). One per call: the repository is not shared by threads."""
        if self._open_repository is None or job.target is None:
            raise FailedPrecondition(f"job {job.name!r} needs a backup target, and none is open")
        return Operations(self._pool, self._open_repository), job.target

    def prune(self, job: JobSpec) -> Outcome:
        ops, target = self.operations(job)
        result = ops.sweep(target)  # which backups go, their backup job's retention decides
        return Outcome(
            bytes=result.freed_bytes,
            detail=f"{len(result.deleted_packs)} pack(s) deleted, "
            f"{format_size(result.freed_bytes)} freed",
        )

    def check(self, job: JobSpec) -> Outcome:
        ops, target = self.operations(job)
        result = ops.check(target, job.read_data)
        summary = (
            f"{result.backups_checked} backup(s), {result.packs_checked} pack(s) checked, "
            f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)"
        )
        if not result.ok:
            first = result.errors[0].message if result.errors else "errors found"
            raise Corrupt(f"check of target {target!r} failed: {summary}; first: {first}")
        return Outcome(detail=summary)
