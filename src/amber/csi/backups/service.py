"""Backup snapshots for the Controller service: one object the servicer calls.

`BackupSnapshots` ties the job table, the upload worker, the restore jobs and target
resolution together and answers in domain terms (`SnapshotInfo`, `Volume`, domain errors);
the servicer turns that into CSI messages and codes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from amber.backup.layout import Clock
from amber.backup.manifest import Manifest
from amber.backup.targets import DEFAULT_CONFIG, TargetRuntime
from amber.csi.backups.handles import BackupRef, format_bak_id, parse_backup_id, snapshot_key
from amber.csi.backups.jobs import JobStore, UploadJob, UploadState
from amber.csi.backups.lookup import find_backup, remove_backup
from amber.csi.backups.restores import Restores, RestoreWanted
from amber.csi.backups.targets import TargetAccess, TargetResolver, TargetUnknown
from amber.csi.backups.uploads import LABEL_SOURCE_VOLUME, Uploads, UploadSettings
from amber.csi.locks import KeyedLocks
from amber.domain.errors import (
    AlreadyExists,
    AmberError,
    Busy,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfSpace,
    PermissionDenied,
    SystemFailure,
    Unavailable,
)
from amber.domain.models import Volume
from amber.pool import Pool

__all__ = ["BackupSettings", "BackupSnapshots", "SnapshotInfo", "parse_backup_id"]

_FAILURE_KINDS: dict[str, type[AmberError]] = {
    cls.__name__: cls
    for cls in (
        AlreadyExists,
        Unavailable,
        PermissionDenied,
        InvalidArgument,
        Corrupt,
        FailedPrecondition,
        OutOfSpace,
        SystemFailure,
    )
}
_FAILURE_KINDS["Busy"] = Unavailable


@dataclass(frozen=True)
class BackupSettings:
    """Backup snapshot settings of a node (read once at start-up)."""

    targets_config: Path = DEFAULT_CONFIG
    """The targets file (mounted from a Kubernetes Secret)."""
    runtime: TargetRuntime = field(default_factory=TargetRuntime)
    """How hard each remote call tries."""
    uploads: UploadSettings = field(default_factory=UploadSettings)
    """How failed uploads are retried."""


@dataclass(frozen=True)
class SnapshotInfo:
    """A backup snapshot as ListSnapshots/CreateSnapshot report it."""

    snapshot_id: str
    source_volume_id: str
    size: int
    created: float
    ready: bool
    sort_key: str


class BackupSnapshots:
    """Backup snapshots of one node."""

    def __init__(
        self,
        pool: Pool,
        node_id: str,
        settings: BackupSettings | None = None,
        clock: Clock = time.time,
    ) -> None:
        settings = settings or BackupSettings()
        self._pool = pool
        self._clock = clock
        self._store = JobStore(pool.root)
        self._resolver = TargetResolver(settings.targets_config, settings.runtime, clock)
        self._uploads = Uploads(
            pool,
            self._store,
            self._resolver.resolve,
            node_id,
            settings=settings.uploads,
            clock=clock,
        )
        self._restores = Restores(pool, self._store, clock)
        self._names = KeyedLocks()

    def start(self) -> None:
        self._uploads.start()
        self._restores.start()

    def close(self) -> None:
        """Stop the worker and cancel restores (they resume or restart after a restart)."""
        self._uploads.stop()
        self._restores.close()
        self._store.close()

    # -- CreateSnapshot ----------------------------------------------------------------------

    def target_of(self, parameter: str | None, secrets: Mapping[str, str]) -> TargetAccess:
        """The target a backup class names (parameter `target`, or the snapshotter secret)."""
        defined = self._resolver.learn(secrets)
        if parameter is None:
            if defined is None:
                raise InvalidArgument("a backup snapshot class needs the parameter 'target'")
            return defined
        return self._resolver.resolve(parameter, secrets)

    def create(
        self,
        name: str,
        target: TargetAccess,
        volume: str,
        volume_id: str,
        *,
        keep_local: bool = False,
    ) -> SnapshotInfo:
        """Take the local snapshot now and queue its upload; repeats report the job.

        `keep_local`: the local snapshot stays after the upload (until DeleteSnapshot)."""
        key = snapshot_key(name, target.name)
        with self._names.hold(name, f"snapshot {name!r}"):
            job = self._store.get(name)
            if job is None:
                job = self._new_job(
                    name, key, target.name, volume, volume_id, keep_local=keep_local
                )
            elif (job.volume, job.target, job.keep_local) != (volume, target.name, keep_local):
                raise AlreadyExists(
                    f"snapshot {name!r} already exists for another volume, target or "
                    "keepLocalSnapshot setting"
                )
        if job.state is UploadState.FAILED:
            raise _failure(job)
        if job.state is UploadState.UPLOADING:
            self._uploads.wake()
        return self._info(job)

    def _new_job(
        self, name: str, key: str, target: str, volume: str, volume_id: str, *, keep_local: bool
    ) -> UploadJob:
        snapshot = self._pool.snapshots.create(volume, key, exist_ok=True)
        job = UploadJob(
            name=name,
            target=target,
            key=key,
            volume=volume,
            volume_id=volume_id,
            snapshot=snapshot.name,
            size=snapshot.size,
            created=snapshot.created,
            state=UploadState.UPLOADING,
            keep_local=keep_local,
        )
        return self._store.put(job)

    @staticmethod
    def _info(job: UploadJob, snapshot_id: str | None = None) -> SnapshotInfo:
        return SnapshotInfo(
            snapshot_id=snapshot_id or format_bak_id(job.target, job.key),
            source_volume_id=job.volume_id,
            size=job.size,
            created=job.created,
            ready=job.state is UploadState.READY,
            sort_key=f"~{job.name}",
        )

    # -- DeleteSnapshot ----------------------------------------------------------------------

    def _job_of(self, ref: BackupRef) -> UploadJob | None:
        if ref.key is not None:
            return self._store.by_key(ref.target, ref.key)
        assert ref.backup_id is not None
        return self._store.by_backup(ref.target, ref.backup_id)

    def delete(self, ref: BackupRef, secrets: Mapping[str, str]) -> None:
        """Remove the backup and its local snapshot; OK when already gone."""
        job = self._job_of(ref)
        if job is not None and job.state is not UploadState.READY:
            self._store.update(job, state=UploadState.DELETING, next_try=0.0)
            self._uploads.cancel_current(job.name)
            self._uploads.wake()
            return  # the worker removes what the upload left (see uploads.py)
        access = self._resolver.resolve(ref.target, secrets)
        if job is not None:
            self._refuse_if_restoring(job.backup_id)
            self._uploads.remove(job, access)
            return
        try:
            repo = access.open()
        except NotFound:
            return
        manifest = find_backup(repo, ref)
        if manifest is not None:
            self._refuse_if_restoring(manifest.backup_id)
            remove_backup(self._pool, repo, manifest, ref.target, self._clock)

    def _refuse_if_restoring(self, backup_id: str | None) -> None:
        """FAILED_PRECONDITION while a restore of the backup runs on this node. The locks that
        ended restores of it left on the target are removed first: they would make the
        deletion look at a restore that no longer runs."""
        if backup_id is None:
            return
        if self._restores.running_from(backup_id):
            raise FailedPrecondition(
                f"backup {backup_id} is being restored on this node; delete the snapshot again "
                "when the restore has finished"
            )
        self._restores.release_ended(backup_id)

    # -- ListSnapshots -----------------------------------------------------------------------

    def local(self) -> list[SnapshotInfo]:
        """This node's backup snapshots (those being deleted excluded)."""
        return [self._info(j) for j in self._store.jobs() if j.state is not UploadState.DELETING]

    def local_snapshot_names(self) -> set[str]:
        """Pool snapshots that belong to backup snapshots (uploads in progress, and local
        snapshots kept by `keepLocalSnapshot`): not local snapshots of their own."""
        return {
            j.snapshot
            for j in self._store.jobs()
            if j.state is not UploadState.READY or j.keep_local
        }

    def lookup(self, snapshot_id: str, secrets: Mapping[str, str]) -> SnapshotInfo | None:
        """The snapshot an ID names: from this node's jobs, else from the target."""
        ref = parse_backup_id(snapshot_id)
        if ref is None:
            return None
        job = self._job_of(ref)
        if job is not None:
            return None if job.state is UploadState.DELETING else self._info(job, snapshot_id)
        try:
            repo = self._resolver.resolve(ref.target, secrets).open()
        except (TargetUnknown, NotFound):
            return None
        manifest = find_backup(repo, ref)
        return None if manifest is None else _manifest_info(manifest, snapshot_id)

    # -- CreateVolume / DeleteVolume ---------------------------------------------------------

    def restore(self, wanted: RestoreWanted, secrets: Mapping[str, str]) -> Volume:
        """The volume restored from the backup (Busy while the restore runs)."""
        ref = parse_backup_id(wanted.snapshot_id)
        if ref is None:
            raise NotFound(f"source snapshot {wanted.snapshot_id[:140]!r} does not exist")
        job = self._job_of(ref)
        if job is not None and job.state is UploadState.UPLOADING:
            raise Busy(f"snapshot {job.name!r} is still uploading; it is not ready to use")
        known = job.backup_id if job is not None else None
        access = self._resolver.resolve(ref.target, secrets)
        return self._restores.start_or_poll(wanted, ref, access, known)

    def restored_from(self, volume: str) -> str | None:
        """The backup snapshot ID a volume was restored from."""
        return self._store.restored_from(volume)

    def cancel_restore(self, volume: str) -> None:
        """Stop a restore into `volume` (DeleteVolume) and forget where it came from."""
        self._restores.cancel(volume)

    def forget_volume(self, volume: str) -> None:
        self._store.forget_restore(volume)

    def upload_progress(self, name: str) -> str | None:
        return self._uploads.progress(name)


def _failure(job: UploadJob) -> AmberError:
    cls = _FAILURE_KINDS.get(job.error_kind or "", FailedPrecondition)
    return cls(
        f"backup snapshot {job.name!r} could not be uploaded to target {job.target!r}: "
        f"{job.error}; delete the VolumeSnapshot and create it again once this is fixed"
    )


def _manifest_info(manifest: Manifest, snapshot_id: str) -> SnapshotInfo:
    return SnapshotInfo(
        snapshot_id=snapshot_id,
        source_volume_id=manifest.labels.get(LABEL_SOURCE_VOLUME, ""),
        size=manifest.volume_size,
        created=manifest.created,
        ready=True,
        sort_key=f"~{snapshot_id}",
    )
