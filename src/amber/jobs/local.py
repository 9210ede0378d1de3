"""The local-pool executor: recurring jobs on this node's pool, without Kubernetes.

Pool snapshots are taken directly; backups and deletions go through `amber.ops.backups` (the
locking and refusal rules every edge follows: a backup being restored is not deleted).

- A job's snapshot of a volume is named `<job>-<volume>-<UTC time of the slot>` (snapshot names
  are unique in a pool; a name too long gets a short hash instead of the volume's tail). What a
  job creates is recorded in the job database (`records.Records.items`), and retention only
  ever lists and deletes what its job recorded: never a hand-made snapshot or backup, nor
  another job's. A recorded item that is gone (deleted by hand) drops out of the records.
- A backup job snapshots the volume and backs that snapshot up through the same engine call as
  `amber backup create` (`amber.ops.backups.Operations.create_backup`), with the job's labels on the
  backup; if the backup fails, the snapshot it took is deleted again.
- Skip-unchanged, trim, prune and check are `amber.jobs.tasks`' (the operator does them alike):
  skip-unchanged compares the volume with the job's newest snapshot of it that still exists (as
  the job records name it), or for a backup job without one with the target's incremental base.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from amber.domain.errors import NotFound
from amber.domain.labels import groups_of
from amber.domain.models import Snapshot
from amber.domain.names import NAME_MAX
from amber.domain.units import format_size
from amber.jobs.executor import Candidate, ItemKind, Outcome
from amber.jobs.records import OwnedItem, Records
from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec, Task
from amber.jobs.tasks import TargetTasks, changed_since, trim_volume
from amber.ops.backups import Operations, RepositoryOpener
from amber.pool import Pool

__all__ = ["LocalExecutor", "labelled_candidates", "pool_candidates", "snapshot_name"]

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
        self.targets = TargetTasks(open_repository, pool)

    def _ops(self, job: JobSpec) -> tuple[Operations, str]:
        """The backup operations (`amber.ops.backups`: the rules every edge follows) for one
        call, and the job's target."""
        return self.targets.operations(job)

    # -- selection and change -----------------------------------------------------------------

    def candidates(self) -> Sequence[Candidate]:
        return pool_candidates(self.pool)

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        found = self.pool.volumes.find(volume)
        if found is None:
            return None
        owned = self._local(job, volume)  # oldest first, each still in the pool
        return changed_since(self.pool, job, volume, owned[-1].item_id if owned else None)

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
        return self.targets.prune(job)

    def check(self, job: JobSpec) -> Outcome:
        return self.targets.check(job)

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        return trim_volume(self.pool, volume)


def pool_candidates(pool: Pool, volume: str | None = None) -> list[Candidate]:
    """Every volume of the pool (or one) with its labels and groups, as job selections see
    them."""
    return labelled_candidates(pool.volumes.labels(volume))


def labelled_candidates(labels: Mapping[str, Mapping[str, str]]) -> list[Candidate]:
    """`volume name -> labels` as the candidates of job selections (groups from the labels)."""
    return [Candidate(name, found, groups_of(found)) for name, found in sorted(labels.items())]
