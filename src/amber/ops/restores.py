"""Restoring a backup into a new volume, in the background, for CreateVolume.

A restore can outlast the provisioner's call timeout. The first CreateVolume finds the backup,
checks that it fits the request and starts a thread; every repeat answers `Busy` (ABORTED,
"operation pending", which external-provisioner keeps retrying without deleting anything) with
how far the restore got, until the thread ends: then the volume is returned, or the failure is
reported once (the next call starts afresh). The engine creates the volume under its lock with
the creation journaled and verifies every chunk, so a failed, cancelled or crashed restore
leaves no volume. DeleteVolume of a volume being restored cancels the restore and waits for
the cleanup.

A restore holds a repository lock, which tells every node that the backup is being read
(DeleteSnapshot is refused meanwhile). A restore that ends while the target is unreachable
cannot delete that lock; `leftovers` removes it once the target answers again, instead of
leaving it to block DeleteSnapshot until it expires.

Jobs live in memory: after a restart the pool journal has removed the half volume, and the
next CreateVolume starts the restore again.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from amber.backup.backuper import LABEL_FS_TYPE, LABEL_MODE
from amber.backup.layout import Clock
from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.backup.restorer import restore_backup, restore_holder
from amber.domain.errors import (
    AlreadyExists,
    AmberError,
    Busy,
    InvalidArgument,
    NotFound,
    SystemFailure,
)
from amber.domain.models import Volume, VolumeMode
from amber.logs import scrub
from amber.ops import sizes
from amber.ops.handles import BackupRef
from amber.ops.jobs import JobStore
from amber.ops.leftovers import LeftoverLocks
from amber.ops.locks import KeyedLocks
from amber.ops.lookup import find_backup
from amber.ops.targets import TargetAccess
from amber.ops.watch import Cancelled, Watch
from amber.pool import Pool

__all__ = ["RestoreWanted", "Restores"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreWanted:
    """What CreateVolume asks of a restore."""

    volume: str
    """The new volume's pool name."""
    snapshot_id: str
    mode: VolumeMode
    fs_type: str | None
    """The filesystem the request names explicitly, if any."""
    required: int
    limit: int


@dataclass
class _Job:
    wanted: RestoreWanted
    backup_id: str
    size: int
    watch: Watch = field(default_factory=Watch)
    thread: threading.Thread | None = None
    error: AmberError | None = None


class Restores:
    """Restore jobs of this node, by new volume name."""

    def __init__(self, pool: Pool, store: JobStore, clock: Clock = time.time) -> None:
        self._pool = pool
        self._store = store
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._mutex = threading.Lock()
        self._names = KeyedLocks()
        self._leftovers = LeftoverLocks(clock)

    def start(self) -> None:
        self._leftovers.start()

    def close(self) -> None:
        """Cancel every restore and stop removing leftover locks (they expire by themselves)."""
        self.cancel_all()
        self._leftovers.stop()

    def running_from(self, backup_id: str) -> bool:
        """Whether a restore of `backup_id` runs on this node."""
        with self._mutex:
            jobs = list(self._jobs.values())
        return any(j.backup_id == backup_id and _alive(j) for j in jobs)

    def release_ended(self, backup_id: str) -> None:
        """Remove now the repository locks that ended restores of `backup_id` on this node left
        on the target (best effort: those that stay are retried in the background)."""
        self._leftovers.sweep_backup(backup_id)

    def start_or_poll(
        self, wanted: RestoreWanted, ref: BackupRef, access: TargetAccess, known_id: str | None
    ) -> Volume:
        """The restored volume, or Busy while the restore runs (the first call starts it)."""
        with self._names.hold(wanted.volume, f"volume {wanted.volume!r}"):
            with self._mutex:
                job = self._jobs.get(wanted.volume)
            if job is None:
                job = self._start(wanted, ref, access, known_id)
            elif job.wanted.snapshot_id != wanted.snapshot_id:
                raise AlreadyExists(
                    f"volume {wanted.volume!r} is being restored from another snapshot"
                )
            return self._poll(job)

    def _start(
        self, wanted: RestoreWanted, ref: BackupRef, access: TargetAccess, known_id: str | None
    ) -> _Job:
        repo = access.open()
        manifest = find_backup(repo, ref, known_id)
        if manifest is None:
            raise NotFound(
                f"snapshot {wanted.snapshot_id!r}: no such backup on target {ref.target!r}"
            )
        job = _Job(wanted, manifest.backup_id, _size(wanted, manifest))
        # The same backup into the same volume takes its lock under the same holder name: the
        # lock an earlier, ended attempt left must be gone before this one takes a new lock.
        self._leftovers.settle(restore_holder(manifest.backup_id, wanted.volume))
        self._store.record_restore(wanted.volume, wanted.snapshot_id)
        job.thread = threading.Thread(
            target=self._run,
            args=(job, repo, access),
            name=f"amber-restore-{wanted.volume}",
            daemon=True,
        )
        with self._mutex:
            self._jobs[wanted.volume] = job
        job.thread.start()
        _log.info(
            "restoring backup %s of target %s into volume %s",
            manifest.backup_id,
            ref.target,
            wanted.volume,
        )
        return job

    def _run(self, job: _Job, repo: Repository, access: TargetAccess) -> None:
        volume = job.wanted.volume
        try:
            report = restore_backup(
                self._pool, repo, job.backup_id, volume, size=job.size, progress=job.watch
            )
        except AmberError as e:
            e.message = scrub(e.message, access.secrets)
            e.args = (e.message,)
            job.error = e
        except Exception:
            _log.exception("restore of volume %s failed", volume)
            job.error = SystemFailure(f"restoring volume {volume!r} failed; see the node log")
        else:
            _log.info(
                "volume %s restored from backup %s: %d bytes downloaded in %.1fs",
                volume,
                job.backup_id,
                report.bytes_downloaded,
                report.duration_seconds,
            )
            return
        # The engine could not delete its lock if the target went away. Recorded while the
        # thread still runs, so that DeleteSnapshot on this node sees the restore either
        # running or ended with a lock to remove, never neither.
        self._leftovers.add(
            restore_holder(job.backup_id, volume), job.backup_id, repo, access.secrets
        )
        self._store.forget_restore(volume)
        if not isinstance(job.error, Cancelled):
            _log.warning("restore of volume %s failed: %s", volume, job.error.message)

    def _poll(self, job: _Job) -> Volume:
        volume = job.wanted.volume
        if _alive(job):
            raise Busy(
                f"volume {volume!r} is being restored from backup {job.backup_id} "
                f"({job.watch.describe()}); the operation is pending, call again"
            )
        with self._mutex:
            if self._jobs.get(volume) is job:
                del self._jobs[volume]
        if job.error is not None:
            raise job.error
        found = self._pool.volumes.find(volume)
        if found is None:
            raise Busy(f"volume {volume!r} vanished after its restore; call again")
        return found

    def cancel(self, volume: str, timeout: float = 60.0) -> None:
        """Cancel the restore into `volume` and wait until its half volume is gone."""
        with self._mutex:
            job = self._jobs.get(volume)
        if job is None or job.thread is None:
            return
        job.watch.cancel()
        job.thread.join(timeout)
        if job.thread.is_alive():
            raise Busy(f"the restore into volume {volume!r} is still stopping; call again")
        with self._mutex:
            if self._jobs.get(volume) is job:
                del self._jobs[volume]

    def cancel_all(self, timeout: float = 30.0) -> None:
        """Cancel every restore (shutdown); their half volumes are removed by the engine."""
        with self._mutex:
            names = list(self._jobs)
        for name in names:
            try:
                self.cancel(name, timeout)
            except Busy:
                _log.warning("the restore into volume %s did not stop in time", name)


def _alive(job: _Job) -> bool:
    return job.thread is not None and job.thread.is_alive()


def _size(wanted: RestoreWanted, manifest: Manifest) -> int:
    """The new volume's size; INVALID_ARGUMENT when the backup cannot become that volume."""
    mode = VolumeMode(manifest.labels.get(LABEL_MODE, VolumeMode.FILESYSTEM.value))
    fs_type = manifest.labels.get(LABEL_FS_TYPE)
    what = f"the backup behind snapshot {wanted.snapshot_id!r}"
    if mode is not wanted.mode:
        raise InvalidArgument(
            f"{what} is of a {mode.value} volume; a {wanted.mode.value} volume cannot be made "
            "from it"
        )
    if wanted.fs_type is not None and fs_type != wanted.fs_type:
        raise InvalidArgument(f"{what} holds {fs_type}, not the requested {wanted.fs_type}")
    return sizes.choose_size(
        wanted.required,
        wanted.limit,
        minimum=sizes.minimum_size(fs_type if mode is VolumeMode.FILESYSTEM else None),
        source_size=manifest.volume_size,
    )
