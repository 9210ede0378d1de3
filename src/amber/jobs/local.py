"""The local-pool executor: recurring jobs on this node's pool, without Kubernetes.

Every call into the engines is in this file: pool snapshots and fstrim directly, backups,
deletions, prune and check through `amber.ops.backups` (the locking and refusal rules every edge
follows: a backup being restored is not deleted, check and prune take their locks).

- A job's snapshot of a volume is named `<job>-<volume>-<UTC time of the slot>` (snapshot names
  are unique in a pool; a name too long gets a short hash instead of the volume's tail). What a
  job creates is recorded in the job database (`records.Records.items`), and retention only
  ever lists and deletes what its job recorded: never a hand-made snapshot or backup, nor
  another job's. A recorded item that is gone (deleted by hand) drops out of the records.
- A backup job snapshots the volume and backs that snapshot up through the same engine call as
  `amber backup create` (`amber.ops.backups.Operations.create_backup`), with the job's labels on the
  backup; if the backup fails, the snapshot it took is deleted again.
- **Skip unchanged** compares extent maps (FIEMAP), as change tracking does
  (`amber.pool.changes`): the volume's image against the job's newest snapshot of it, or for a
  backup job whose snapshots are gone, against the target's incremental base image (a reflink
  copy of what the last backup read). Equal maps mean no block was written since; dirty data of
  a mounted volume is flushed first, blocks not yet allocated count as changed, and preallocated
  (unwritten) extents count as holes (both read as zeros; a reflink copy has holes there). Without
  reflink, or with nothing to compare against, the answer is "cannot tell" (run).
- Trim runs `fstrim` on the volume's mount point as the pool recorded it; a volume that is not
  mounted (or a block volume) is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from amber.backup.state import BackupState
from amber.domain.errors import Corrupt, FailedPrecondition, NotFound
from amber.domain.labels import groups_of
from amber.domain.models import AttachmentKind, Snapshot, Volume, VolumeMode
from amber.domain.names import NAME_MAX
from amber.domain.units import format_size
from amber.jobs.executor import Candidate, ItemKind, Outcome
from amber.jobs.records import OwnedItem, Records
from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec, Task
from amber.ops.backups import Operations, RepositoryOpener
from amber.pool import Pool
from amber.pool.changes import changed_ranges
from amber.system import fs
from amber.system.ioctl import FIEMAP_EXTENT_UNWRITTEN, Extent, fiemap

__all__ = ["LocalExecutor", "snapshot_name"]

log = logging.getLogger(__name__)


def snapshot_name(job: str, volume: str, when: datetime) -> str:
    """`<job>-<volume>-<YYYYmmdd-HHMMSS>` (UTC) within the name limit."""
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"{job}-{volume}-{stamp}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.blake2b(volume.encode(), digest_size=4).hexdigest()
    room = NAME_MAX - len(job) - len(stamp) - len(digest) - 3
    return f"{job}-{volume[: max(room, 0)]}{digest}-{stamp}"


class LocalExecutor:
    """`Executor` over a pool; see the module docstring."""

    def __init__(
        self, pool: Pool, records: Records, open_repository: RepositoryOpener | None = None
    ) -> None:
        self.pool = pool
        self.records = records
        self._open_repository = open_repository

    def _ops(self, job: JobSpec) -> tuple[Operations, str]:
        """The backup operations (`amber.ops.backups`: the rules every edge follows) for one
        call, and the job's target. One per call: the repository is not shared by threads."""
        if self._open_repository is None or job.target is None:
            raise FailedPrecondition(f"job {job.name!r} needs a backup target, and none is open")
        return Operations(self.pool, self._open_repository), job.target

    # -- selection and change -----------------------------------------------------------------

    def candidates(self) -> Sequence[Candidate]:
        labels = self.pool.volumes.labels()
        return [Candidate(name, found, groups_of(found)) for name, found in sorted(labels.items())]

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        found = self.pool.volumes.find(volume)
        if found is None or not self.pool.ctx.reflink:
            return None
        reference = self._reference(job, found)
        if reference is None:
            return None
        for path in self._mounts(found):
            fs.flush(path)
        image, size = reference
        if size != found.size:
            return True
        return _differs(image, found.image, size)

    def _reference(self, job: JobSpec, volume: Volume) -> tuple[Path, int] | None:
        """The image the volume is compared with: the job's newest snapshot of it, or the
        target's incremental base for a backup job."""
        for item in reversed(self._local(job, volume.name)):
            snap = self.pool.snapshots.find(item.item_id)
            if snap is not None and snap.volume_uid == volume.uid:
                return snap.image, snap.size
        if job.task is Task.BACKUP and job.target is not None:
            with BackupState(self.pool) as state:
                base = state.get(volume.name, job.target)
            if base is not None and base.volume_uid == volume.uid and Path(base.image).exists():
                return Path(base.image), base.size
        return None

    def _mounts(self, volume: Volume) -> list[Path]:
        return [
            a.path
            for a in self.pool.attachments.list("volume", volume.name)
            if a.kind is AttachmentKind.MOUNT
        ]

    # -- snapshots and backups ----------------------------------------------------------------

    def snapshot(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        snap = self._take(job, volume, when)
        return Outcome(created=(snap.name,))

    def _take(self, job: JobSpec, volume: str, when: datetime) -> Snapshot:
        snap = self.pool.snapshots.create(volume, snapshot_name(job.name, volume, when))
        self.records.add_item(
            OwnedItem(job.name, volume, ItemKind.LOCAL.value, snap.name, when.timestamp())
        )
        return snap

    def backup(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        ops, target = self._ops(job)
        ops.repository(target, create=True)  # a target that cannot be opened: no snapshot
        snap = self._take(job, volume, when)
        try:
            report = ops.create_backup(snap.name, target, labels=dict(job.labels))
        except BaseException:
            self._drop_snapshot(snap.name)
            raise
        self.records.add_item(
            OwnedItem(
                job.name,
                volume,
                ItemKind.REMOTE.value,
                report.backup_id,
                when.timestamp(),
                target,
            )
        )
        return Outcome(
            created=(snap.name, report.backup_id),
            bytes=report.bytes_stored,
            detail=f"backup {report.backup_id} of {snap.name} to {target}: "
            f"{format_size(report.bytes_read)} read, {format_size(report.bytes_new)} new",
        )

    def _drop_snapshot(self, name: str) -> None:
        with contextlib.suppress(NotFound):
            self.pool.snapshots.delete(name)
        self.records.remove_item(ItemKind.LOCAL.value, name)

    # -- retention ------------------------------------------------------------------------------

    def _local(self, job: JobSpec, volume: str) -> list[OwnedItem]:
        """The job's snapshots of `volume` that still exist (any job's, for snapshot-cleanup)."""
        owner = None if job.task is Task.SNAPSHOT_CLEANUP else job.name
        found = []
        for item in self.records.items(owner, volume, ItemKind.LOCAL.value):
            if self.pool.snapshots.find(item.item_id) is None:
                self.records.remove_item(item.kind, item.item_id)
            else:
                found.append(item)
        return found

    def _remote(self, job: JobSpec, volume: str) -> list[OwnedItem]:
        """The job's backups of `volume` still in its target."""
        owned = self.records.items(job.name, volume, ItemKind.REMOTE.value, job.target)
        if not owned:
            return []
        ops, target = self._ops(job)
        present = set(ops.repository(target).list_backups())
        for item in owned:
            if item.item_id not in present:
                self.records.remove_item(item.kind, item.item_id, item.target)
        return [item for item in owned if item.item_id in present]

    def items(self, job: JobSpec, volume: str, kind: ItemKind) -> Sequence[Item]:
        owned = self._local(job, volume) if kind is ItemKind.LOCAL else self._remote(job, volume)
        return [Item(item.item_id, item.created) for item in owned]

    def delete(self, job: JobSpec, volume: str, kind: ItemKind, item: Item) -> Outcome:
        if kind is ItemKind.LOCAL:
            self._drop_snapshot(item.item_id)
        else:
            ops, target = self._ops(job)
            with contextlib.suppress(NotFound):  # already gone
                ops.delete_backup(target, item.item_id)  # refused while a restore reads it
            self.records.remove_item(kind.value, item.item_id, target)
        return Outcome(deleted=(item.item_id,))

    # -- targets ----------------------------------------------------------------------------------

    def prune(self, job: JobSpec) -> Outcome:
        ops, target = self._ops(job)
        result = ops.sweep(target)  # which backups go, their backup job's retention decides
        return Outcome(
            bytes=result.freed_bytes,
            detail=f"{len(result.deleted_packs)} pack(s) deleted, "
            f"{format_size(result.freed_bytes)} freed",
        )

    def check(self, job: JobSpec) -> Outcome:
        ops, target = self._ops(job)
        result = ops.check(target, job.read_data)
        summary = (
            f"{result.backups_checked} backup(s), {result.packs_checked} pack(s) checked, "
            f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)"
        )
        if not result.ok:
            first = result.errors[0].message if result.errors else "errors found"
            raise Corrupt(f"check of target {target!r} failed: {summary}; first: {first}")
        return Outcome(detail=summary)

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        found = self.pool.volumes.get(volume)
        if found.mode is VolumeMode.BLOCK:
            return Outcome(skipped=f"volume {volume!r} is a block volume (no filesystem to trim)")
        mounts = self._mounts(found)
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
