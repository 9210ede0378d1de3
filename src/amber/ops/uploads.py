"""The upload worker: turns local snapshots of backup snapshot classes into committed backups.

CreateSnapshot takes the reflink snapshot at once (the point in time is exact) and records an
`uploading` job; this worker (one thread in the node process) backs the snapshot up to its
target as an incremental backup against the volume's base (`amber.backup.state`), labelled with
the snapshot's key, then drops the local snapshot: the engine keeps its own reflink base image,
which is all the next incremental needs (a job with `keep_local` keeps it until DeleteSnapshot).

Failures that may heal (target unreachable, repository busy) are retried with exponential
backoff up to `max_attempts`; others (wrong password, damaged repository, snapshot gone) fail
the job at once. A job whose target is unknown after a restart (it came from a secret) waits
for the next call that brings the secret, without using up attempts.

A backup is never made twice: every upload commits under the id derived from the snapshot's
key (`handles.key_backup_id`). A job that started before (a crash, a failed attempt) first
reads the manifest under that id -- the commit may have happened, and the local snapshot may
already be gone -- and an attempt whose commit finds the id taken by an earlier attempt of the
same job (AlreadyExists: a commit that landed late) counts as done. The same id taken by a
backup of another snapshot or volume fails the job. Deleting a job cancels its upload, then
removes whatever was committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from amber.backup.backuper import BackupOptions, backup_snapshot
from amber.backup.layout import Clock
from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.domain.errors import AlreadyExists, AmberError, Busy, NotFound, Unavailable
from amber.logs import scrub
from amber.ops.backups import remove_backup
from amber.ops.handles import LABEL_KEY, LABEL_NAME, LABEL_NODE, BackupRef, key_backup_id
from amber.ops.jobs import JobStore, UploadJob, UploadState
from amber.ops.lookup import find_backup, find_by_key
from amber.ops.targets import TargetAccess, TargetUnknown
from amber.ops.watch import Cancelled, Watch
from amber.pool import Pool

__all__ = ["LABEL_SOURCE_VOLUME", "UploadSettings", "Uploads"]

_log = logging.getLogger(__name__)
LABEL_SOURCE_VOLUME = "amber.csi.dev/source-volume-id"
_TRANSIENT = (Unavailable, Busy)


@dataclass(frozen=True)
class UploadSettings:
    """How the worker retries (read once at start-up)."""

    retry_base: float = 2.0
    """First pause after a failure that may heal; doubles each time."""
    retry_max: float = 120.0
    """Longest pause between attempts."""
    max_attempts: int = 8
    """Attempts before a job fails for good."""
    idle_poll: float = 5.0
    """Seconds between looks at the job table when nothing is due."""


class Uploads:
    """The job table's worker thread."""

    def __init__(
        self,
        pool: Pool,
        store: JobStore,
        resolve: Callable[[str], TargetAccess],
        node_id: str,
        *,
        settings: UploadSettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._pool = pool
        self._store = store
        self._resolve = resolve
        self._node_id = node_id
        self._settings = settings or UploadSettings()
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: tuple[str, Watch] | None = None
        self._mutex = threading.Lock()
        self.on_ready: Callable[[UploadJob], None] | None = None
        """Called (on the worker thread) after a job became ready (group snapshots)."""

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        for job in self._store.jobs():
            if job.state in (UploadState.UPLOADING, UploadState.DELETING):
                _log.info("backup snapshot %s: resuming (%s)", job.name, job.state.value)
        self._thread = threading.Thread(target=self._loop, name="amber-uploads", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; an upload in flight is cancelled (it resumes after a restart)."""
        self._stopping.set()
        self.cancel_current()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def cancel_current(self, name: str | None = None) -> None:
        """Cancel the upload in flight (only if it is `name`'s, when given)."""
        with self._mutex:
            current = self._current
        if current is not None and name in (None, current[0]):
            current[1].cancel()

    def progress(self, name: str) -> str | None:
        with self._mutex:
            current = self._current
        return current[1].describe() if current is not None and current[0] == name else None

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            due = self._store.due(self._clock())
            if not due:
                self._wake.wait(self._idle_wait())
                self._wake.clear()
                continue
            try:
                self._run(due[0])
            except Exception:
                _log.exception("backup snapshot %s: unexpected failure", due[0].name)
                self._fail(due[0], "internal error in the upload worker; see the node log", None)

    def _idle_wait(self) -> float:
        next_try = self._store.next_due()
        if next_try is None:
            return self._settings.idle_poll
        return min(max(next_try - self._clock(), 0.05), self._settings.idle_poll)

    def _run(self, job: UploadJob) -> None:
        try:
            access = self._resolve(job.target)
        except TargetUnknown as e:
            self._store.update(job, error=e.message, next_try=self._clock() + self._wait_for(job))
            return
        if job.state is UploadState.DELETING:
            self._delete(job, access)
        else:
            self._upload(job, access)

    def _wait_for(self, job: UploadJob) -> float:
        delay = self._settings.retry_base * 2.0 ** min(job.attempts, 20)
        return float(min(delay, self._settings.retry_max))

    # -- uploading -------------------------------------------------------------------------

    def _upload(self, job: UploadJob, access: TargetAccess) -> None:
        watch = Watch()
        with self._mutex:
            self._current = (job.name, watch)
        try:
            backup_id = self._backup(job, access, watch)
        except Cancelled:
            return  # deleted (or stopping): the job's new state says what comes next
        except AmberError as e:
            self._failed_attempt(job, access, e)
            return
        finally:
            with self._mutex:
                self._current = None
        self._committed(job, backup_id)

    def _backup(self, job: UploadJob, access: TargetAccess, watch: Watch) -> str:
        repo = access.open(create=True)
        if job.started and _committed_for(repo, job) is not None:
            return key_backup_id(job.key)  # an earlier attempt committed it
        job = self._store.update(job, started=True)
        labels = {
            LABEL_KEY: job.key,
            LABEL_NAME: job.name,
            LABEL_NODE: self._node_id,
            LABEL_SOURCE_VOLUME: job.volume_id,
        }
        options = BackupOptions(labels=labels, backup_id=key_backup_id(job.key))
        try:
            report = backup_snapshot(
                self._pool,
                repo,
                job.target,
                job.snapshot,
                options=options,
                progress=watch,
                clock=self._clock,
                failpoint=self._pool.ctx.failpoint,
            )
        except AlreadyExists:
            return self._adopt(repo, job)
        _log.info(
            "backup snapshot %s committed to target %s as backup %s (%s, %d bytes read, "
            "%d bytes new)",
            job.name,
            job.target,
            report.backup_id,
            report.mode,
            report.bytes_read,
            report.bytes_new,
        )
        return report.backup_id

    def _adopt(self, repo: Repository, job: UploadJob) -> str:
        """The id of the backup an earlier attempt of `job` committed while this one ran;
        AlreadyExists when the id holds a backup of another snapshot or volume."""
        backup_id = key_backup_id(job.key)
        if _committed_for(repo, job) is None:
            raise AlreadyExists(
                f"target {job.target!r} already holds backup {backup_id} under this snapshot's "
                f"id, made for another snapshot or volume (snapshot key {job.key!r})"
            )
        _log.info(
            "backup snapshot %s: an earlier attempt already committed backup %s to target %s",
            job.name,
            backup_id,
            job.target,
        )
        return backup_id

    def _committed(self, job: UploadJob, backup_id: str) -> None:
        current = self._store.get(job.name)
        if current is None:
            return
        # Drop the local snapshot before the job reads as ready, so that a caller who sees
        # ready_to_use never finds it still there (a crash in between is resolved on restart:
        # the job reads the manifest under its key's id and finds its backup committed).
        if not current.keep_local:
            self._drop_local(current)
        self._pool.ctx.failpoint("backup-snapshot.local-dropped")
        state = UploadState.DELETING if current.state is UploadState.DELETING else UploadState.READY
        done = self._store.update(
            current, state=state, backup_id=backup_id, error=None, next_try=0.0
        )
        if state is UploadState.DELETING:
            self._wake.set()
        elif self.on_ready is not None:
            self.on_ready(done)

    def _failed_attempt(self, job: UploadJob, access: TargetAccess, error: AmberError) -> None:
        message = scrub(error.message, access.secrets)
        attempts = job.attempts + 1
        current = self._store.get(job.name) or job
        if current.state is UploadState.DELETING:
            return
        if isinstance(error, _TRANSIENT) and attempts < self._settings.max_attempts:
            delay = self._wait_for(job)
            _log.warning(
                "backup snapshot %s: attempt %d failed, retrying in %.1fs: %s",
                job.name,
                attempts,
                delay,
                message,
            )
            self._store.update(
                current, attempts=attempts, next_try=self._clock() + delay, error=message
            )
            return
        self._fail(current, message, type(error).__name__, attempts)

    def _fail(self, job: UploadJob, message: str, kind: str | None, attempts: int = 0) -> None:
        _log.error("backup snapshot %s failed: %s", job.name, message)
        self._store.update(
            job,
            state=UploadState.FAILED,
            attempts=max(attempts, job.attempts),
            error=message,
            error_kind=kind,
        )

    def _drop_local(self, job: UploadJob) -> None:
        """The local snapshot is no longer needed (the engine keeps its own base image)."""
        try:
            self._pool.snapshots.delete(job.snapshot)
        except NotFound:
            pass
        except AmberError as e:
            _log.warning("backup snapshot %s: local snapshot kept: %s", job.name, e.message)

    # -- deleting --------------------------------------------------------------------------

    def _delete(self, job: UploadJob, access: TargetAccess) -> None:
        try:
            self.remove(job, access)
        except AmberError as e:
            message = scrub(e.message, access.secrets)
            _log.warning("backup snapshot %s: deletion failed, retrying: %s", job.name, message)
            delay = self._wait_for(job)
            self._store.update(
                job, attempts=job.attempts + 1, next_try=self._clock() + delay, error=message
            )

    def remove(self, job: UploadJob, access: TargetAccess) -> None:
        """Remove the job's backup (if any was committed), its local snapshot and its row."""
        try:
            repo = access.open()
        except NotFound:  # no repository yet: nothing was ever committed there
            repo = None
        found = None if repo is None else _backup_of(repo, job)
        if repo is not None and found is not None:
            remove_backup(self._pool, repo, found, job.target, self._clock)
        with contextlib.suppress(NotFound):
            self._pool.snapshots.delete(job.snapshot)
        self._store.remove(job.name)


def _committed_for(repo: Repository, job: UploadJob) -> Manifest | None:
    """The backup committed for `job`'s key from `job`'s volume (one read), or None."""
    found = find_by_key(repo, job.key)
    if found is None or found.labels.get(LABEL_SOURCE_VOLUME) != job.volume_id:
        return None
    return found


def _backup_of(repo: Repository, job: UploadJob) -> Manifest | None:
    """The backup `job` committed: the one it recorded, else the one under its key's id made
    from its volume (never another snapshot's that took the id: a failed job must not remove
    what it did not make)."""
    if job.backup_id is not None:
        return find_backup(repo, BackupRef(job.target, key=job.key), job.backup_id)
    return _committed_for(repo, job)
