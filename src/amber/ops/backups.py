"""The backup operations, each with its locking and refusal rule, for every edge.

The CLI (`amber backup ...`), the CSI driver, the recurring-job scheduler and the dashboard run
the same operations by the same rules; the rules live here, once:

- **create**: the engine takes a shared repository lock for the whole backup (waiting while a
  prune or repair holds the exclusive one) and keeps it fresh.
- **restore**: a shared *reader* lock whose purpose names the backup
  (`LockPurpose.restore`): that is how every node, and every cluster that shares the target,
  sees that the backup is being read.
- **delete**: refused (FailedPrecondition) while a live restore lock of that backup is on the
  target; otherwise the manifest goes (its data at the next prune) and this pool's incremental
  base of the volume is dropped when it was that backup. It takes no lock: removing a manifest
  only makes data unreferenced, which prune alone reclaims under its exclusive lock.
- **check**: a shared reader lock (a prune waits for it, and it for a prune).
- **prune** and **repair**: the exclusive lock.
- **sweep** (a prune job's garbage collection): prune's exclusive lock and sweep, with no
  retention decision: every backup stays, only packs no backup uses go (by prune's grace rules).

Module functions take an open `Repository` (what the CSI driver has, from a call's secrets);
`Operations` opens targets by name (what the CLI, the scheduler and the dashboard have) and
calls them. Every operation is synchronous: an edge that must not block runs it in a thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from amber.backup.backuper import BackupOptions, BackupReport, backup_snapshot, no_failpoint
from amber.backup.keeper import DEFAULT_LOCK_WAIT, held
from amber.backup.layout import Clock
from amber.backup.locks import CHECK, DEFAULT_GRACE_SECONDS, PRUNE, REPAIR, LockKind
from amber.backup.manifest import Manifest
from amber.backup.progress import Progress
from amber.backup.repository import Repository
from amber.backup.state import BackupState
from amber.backup.targets import DEFAULT_CONFIG, Target, TargetRuntime
from amber.domain.errors import Busy, FailedPrecondition, InvalidArgument, NotFound
from amber.ops.targets import open_target
from amber.ops.watch import Cancelled
from amber.pool import Pool

if TYPE_CHECKING:  # imported by the operations that run them (the CLI pays per import)
    from amber.backup.check import CheckResult
    from amber.backup.gc import PruneResult
    from amber.backup.repair import RepairResult
    from amber.backup.restorer import RestoreReport
    from amber.backup.retention import RetentionPolicy

__all__ = [
    "Operations",
    "RepositoryOpener",
    "check_policy",
    "check_repository",
    "prune_repository_locked",
    "remove_backup",
    "restores_from",
    "snapshot_to_back_up",
    "sweep_repository_locked",
]


class RepositoryOpener(Protocol):
    """Opens the repository of a target by name (`amber.ops.targets`)."""

    def __call__(self, target: str, *, create: bool = False) -> Repository: ...


# -- the rules, over an open repository ----------------------------------------------------------


def restores_from(repo: Repository, backup_id: str, clock: Clock = time.time) -> list[str]:
    """Holders of live repository locks restoring `backup_id` (on any node or cluster)."""
    now = clock()
    return [
        info.holder
        for info in repo.active_locks()
        if info.restores(backup_id) and info.is_live(now)
    ]


def remove_backup(
    pool: Pool | None, repo: Repository, manifest: Manifest, target: str, clock: Clock = time.time
) -> None:
    """Delete the backup's manifest (FailedPrecondition while a restore reads it) and drop
    `pool`'s incremental base of its volume when the base was this backup."""
    readers = restores_from(repo, manifest.backup_id, clock)
    if readers:
        raise FailedPrecondition(
            f"backup {manifest.backup_id} is being restored ({readers[0]}); delete it again "
            "when the restore has finished"
        )
    with contextlib.suppress(NotFound):
        repo.delete_backup(manifest.backup_id)
    if pool is not None:
        _forget_base(pool, manifest, target, clock)


def _forget_base(pool: Pool, manifest: Manifest, target: str, clock: Clock) -> None:
    with BackupState(pool, clock) as state:
        record = state.get(manifest.volume_name, target)
        if record is None or record.backup_id != manifest.backup_id:
            return
        with contextlib.suppress(Busy), state.hold(manifest.volume_name, target):
            state.forget(manifest.volume_name, target)


def check_repository(
    repo: Repository,
    *,
    read_data: bool = False,
    subset: float = 100.0,
    progress: Progress | None = None,
    wait: float = DEFAULT_LOCK_WAIT,
) -> CheckResult:
    """Check under a shared reader lock (past unreadable locks, which check reports)."""
    from amber.backup.check import check

    with held(repo, CHECK, reader=True, wait=wait):
        return check(repo, read_data=read_data, subset_pct=subset, progress=progress)


def prune_repository_locked(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE_SECONDS,
    progress: Progress | None = None,
    wait: float = DEFAULT_LOCK_WAIT,
) -> PruneResult:
    """Prune under the exclusive lock, held fresh for as long as the prune runs."""
    from amber.backup.gc import prune as prune_repository

    check_policy(policy)
    with held(repo, PRUNE, LockKind.EXCLUSIVE, wait=wait) as keeper:
        return prune_repository(
            repo, policy, dry_run=dry_run, grace_seconds=grace, lock=keeper.lock, progress=progress
        )


_EVERY_BACKUP = 2**31
"""The policy of a sweep is `keep_last=_EVERY_BACKUP`: prune keeps the N newest backups of each
volume, and no volume has 2**31 of them, so every backup is kept and only data none of them uses
is deleted."""


def sweep_repository_locked(
    repo: Repository,
    *,
    grace: float = DEFAULT_GRACE_SECONDS,
    progress: Progress | None = None,
    wait: float = DEFAULT_LOCK_WAIT,
) -> PruneResult:
    """Delete the packs no backup uses, removing no backup, under prune's exclusive lock (held
    fresh for as long as the sweep runs): a sweep is a prune that decides no retention."""
    from amber.backup.gc import prune as prune_repository
    from amber.backup.retention import RetentionPolicy

    with held(repo, PRUNE, LockKind.EXCLUSIVE, wait=wait) as keeper:
        return prune_repository(
            repo,
            RetentionPolicy(keep_last=_EVERY_BACKUP),
            grace_seconds=grace,
            lock=keeper.lock,
            progress=progress,
        )


def check_policy(policy: RetentionPolicy) -> None:
    """InvalidArgument for a policy that keeps nothing: prune never removes every backup."""
    if policy.is_empty():
        raise InvalidArgument(
            "a prune needs at least one keep rule (--keep-last, --keep-daily, ...): it never "
            "removes every backup"
        )


# -- operations on targets by name ---------------------------------------------------------------


@dataclass
class Operations:
    """Backup operations on targets by name, over a pool (None: operations that need no pool).

    Repositories are opened once per target and kept for the object's life (an edge makes one
    per command or per job run)."""

    pool: Pool | None
    open_repository: RepositoryOpener
    clock: Clock = time.time
    failpoint: Callable[[str], None] = no_failpoint
    _repos: dict[str, Repository] = field(default_factory=dict, repr=False)

    @classmethod
    def on_targets_file(
        cls,
        pool: Pool | None,
        config_path: Path = DEFAULT_CONFIG,
        *,
        runtime_for: Callable[[Target], TargetRuntime] | None = None,
        clock: Clock = time.time,
        failpoint: Callable[[str], None] = no_failpoint,
    ) -> Operations:
        """Operations on the targets of a targets file, opened as every edge opens them
        (`amber.ops.targets.open_target`; `runtime_for` adds an edge's password and retry
        notices): what the CLI, the recurring jobs and the dashboard use."""

        def open_repository(target: str, *, create: bool = False) -> Repository:
            return open_target(
                target, config_path=config_path, runtime_for=runtime_for, create=create, clock=clock
            )

        return cls(pool, open_repository, clock=clock, failpoint=failpoint)

    def repository(self, target: str, *, create: bool = False) -> Repository:
        """The target's repository (with `create`, initialized when there is none)."""
        repo = self._repos.get(target)
        if repo is None:
            repo = self.open_repository(target, create=create)
            self._repos[target] = repo
        return repo

    def _pool(self) -> Pool:
        if self.pool is None:
            raise FailedPrecondition("this operation needs a pool")
        return self.pool

    def create_backup(
        self,
        source: str,
        target: str,
        *,
        take_snapshot: bool = False,
        labels: Mapping[str, str] | None = None,
        tags: Sequence[str] = (),
        full: bool = False,
        progress: Progress | None = None,
    ) -> BackupReport:
        """Back up the pool snapshot `source` (with `take_snapshot`: a new snapshot of the volume
        `source`, kept in the pool). Locking: the engine's shared lock, kept fresh."""
        from amber.metrics import backup_run  # not at import: most commands record nothing

        with backup_run(cancelled=(Cancelled,)) as run:  # the metrics
            pool = self._pool()
            snapshot = snapshot_to_back_up(pool, source, take=take_snapshot)
            repo = self.repository(target, create=True)
            options = BackupOptions(
                labels=dict(labels or {}), tags=tuple(tags), use_extent_map=not full
            )
            report = backup_snapshot(
                pool,
                repo,
                target,
                snapshot,
                options=options,
                progress=progress,
                clock=self.clock,
                failpoint=self.failpoint,
            )
            run.ended(
                report.duration_seconds, report.bytes_read, report.bytes_new, report.bytes_stored
            )
        return report

    def restore_backup(
        self,
        target: str,
        backup_id: str,
        new_volume: str,
        *,
        size: int | None = None,
        allow_partial: bool = False,
        progress: Progress | None = None,
    ) -> RestoreReport:
        """Restore into a new volume. Locking: a shared reader lock whose purpose names the
        backup, so that no node deletes the backup meanwhile."""
        from amber.backup.restorer import RestoreOptions, restore_backup
        from amber.metrics import restore_run

        with restore_run(cancelled=(Cancelled,)) as run:  # the metrics
            report = restore_backup(
                self._pool(),
                self.repository(target),
                backup_id,
                new_volume,
                size=size,
                options=RestoreOptions(allow_partial=allow_partial),
                progress=progress,
                clock=self.clock,
            )
            run.ended(report.duration_seconds, report.bytes_downloaded)
        return report

    def delete_backup(self, target: str, backup_id: str) -> Manifest:
        """Delete one backup; FailedPrecondition while a restore of it runs anywhere (a live
        restore lock); NotFound when there is no such backup. No lock is taken."""
        repo = self.repository(target)
        manifest = repo.load_manifest(backup_id)  # NotFound names the backup
        remove_backup(self.pool, repo, manifest, target, self.clock)
        return manifest

    def check(
        self,
        target: str,
        read_data: bool = False,
        *,
        subset: float = 100.0,
        progress: Progress | None = None,
    ) -> CheckResult:
        """Verify the repository (and with `read_data` its bytes) under a shared lock."""
        return check_repository(
            self.repository(target), read_data=read_data, subset=subset, progress=progress
        )

    def prune(
        self,
        target: str,
        policy: RetentionPolicy,
        *,
        dry_run: bool = False,
        grace: float = DEFAULT_GRACE_SECONDS,
        progress: Progress | None = None,
    ) -> PruneResult:
        """Forget backups by `policy` (per volume) and sweep unused data, under the exclusive
        lock."""
        check_policy(policy)  # before the target is opened
        return prune_repository_locked(
            self.repository(target), policy, dry_run=dry_run, grace=grace, progress=progress
        )

    def sweep(
        self,
        target: str,
        *,
        grace: float = DEFAULT_GRACE_SECONDS,
        progress: Progress | None = None,
    ) -> PruneResult:
        """Delete the data no backup uses, and no backup, under prune's exclusive lock (a prune
        job's garbage collection: which backups go is their backup job's retention)."""
        return sweep_repository_locked(self.repository(target), grace=grace, progress=progress)

    def repair(self, target: str, *, progress: Progress | None = None) -> RepairResult:
        """Rebuild the index and settle what killed backups left, under the exclusive lock."""
        from amber.backup.repair import repair

        repo = self.repository(target)
        with held(repo, REPAIR, LockKind.EXCLUSIVE) as keeper:
            return repair(repo, keeper.lock, progress=progress, failpoint=self.failpoint)


def snapshot_to_back_up(pool: Pool, name: str, *, take: bool) -> str:
    """The snapshot a backup of `name` reads: `name`, or with `take` a new snapshot of the
    volume `name`. A volume named without `take` is refused with what to do instead."""
    if take:
        pool.volumes.get(name)  # NotFound names the volume
        taken = f"{name[:76]}-backup-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
        return pool.snapshots.create(name, taken).name
    if pool.snapshots.find(name) is None and pool.volumes.find(name) is not None:
        raise InvalidArgument(
            f"{name!r} is a volume; a backup is made of a snapshot: run `amber snapshot create "
            f"{name} SNAPSHOT` first and back that up, or add --snapshot to do both"
        )
    return name
