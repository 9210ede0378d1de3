"""Backup snapshots: the one object the CSI Controller and GroupController servicers call.

`BackupSnapshots` ties the job table, the upload worker, the restore jobs and target
resolution together and answers in domain terms (`SnapshotInfo`, `Volume`, domain errors);
the servicers (`amber.csi.controller`, `amber.csi.group`) turn that into CSI messages and codes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from amber.backup.layout import Clock
from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.backup.state import forget_volume_bases
from amber.backup.targets import DEFAULT_CONFIG, TargetRuntime
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
from amber.ops.backups import remove_backup
from amber.ops.groups import GroupUploads, group_of_job, is_member_job
from amber.ops.handles import BackupRef, format_bak_id, parse_backup_id, snapshot_key
from amber.ops.jobs import JobStore, UploadJob, UploadState
from amber.ops.locks import KeyedLocks
from amber.ops.lookup import find_backup
from amber.ops.restores import Restores, RestoreWanted
from amber.ops.targets import TargetAccess, TargetResolver, TargetUnknown
from amber.ops.uploads import LABEL_SOURCE_VOLUME, Uploads, UploadSettings
from amber.pool import Pool

__all__ = ["BackupSettings", "BackupSnapshots", "GroupInfo", "SnapshotInfo", "parse_backup_id"]

_log = logging.getLogger(__name__)

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
    group: str | None = None
    """The pool name of the group snapshot it is a member of (it cannot be deleted alone)."""


@dataclass(frozen=True)
class GroupInfo:
    """A group snapshot of a backup class: ready when every member is committed."""

    created: float
    ready: bool
    members: list[SnapshotInfo]
    failure: AmberError | None = None
    """The error of a member that failed (the group never becomes ready)."""


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
        self._groups = GroupUploads(pool, self._store, self._uploads)
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

    def _info(self, job: UploadJob, snapshot_id: str | None = None) -> SnapshotInfo:
        ready, group = job.state is UploadState.READY, None
        if is_member_job(job):  # ready only when the whole group is
            record = self._store.get_group(group_of_job(job))
            if record is not None:
                group = record.name
                ready = ready and all(self._member_ready(n) for n in record.members)
        return SnapshotInfo(
            snapshot_id=snapshot_id or format_bak_id(job.target, job.key),
            source_volume_id=job.volume_id,
            size=job.size,
            created=job.created,
            ready=ready,
            sort_key=f"~{job.name}",
            group=group,
        )

    def _member_ready(self, name: str) -> bool:
        job = self._store.get(name)
        return job is not None and job.state is UploadState.READY

    # -- group snapshots (CreateVolumeGroupSnapshot and friends) -----------------------------

    def create_group(
        self,
        name: str,
        target: TargetAccess,
        volumes: list[tuple[str, str]],
        *,
        keep_local: bool,
        name_limit: int,
    ) -> GroupInfo:
        """Take the local group now and queue its members' uploads; repeats report it."""
        with self._names.hold(name, f"group snapshot {name!r}"):
            self._groups.create(name, target, volumes, keep_local=keep_local, name_limit=name_limit)
        found = self.group(name)
        assert found is not None
        return found

    def is_group(self, name: str) -> bool:
        """Whether `name` is a group snapshot of a backup class."""
        return self._groups.exists(name)

    def group(self, name: str) -> GroupInfo | None:
        """The group (None when unknown), with the failure of a member when one failed."""
        found = self._groups.state(name)
        if found is None:
            return None
        group, jobs = found
        failed = next((j for j in jobs if j.state is UploadState.FAILED), None)
        ready = bool(jobs) and all(j.state is UploadState.READY for j in jobs)
        if not ready:
            self._uploads.wake()
        members = [replace(self._info(j), ready=ready) for j in jobs]
        failure = None if failed is None else _failure(failed)
        return GroupInfo(group.created, ready, members, failure)

    def delete_group(self, name: str, secrets: Mapping[str, str]) -> bool:
        """Remove the members' backups and the local group (False: not a backup group)."""

        def remove_ready(job: UploadJob) -> None:
            self._refuse_if_restoring(job.backup_id)
            self._uploads.remove(job, self._resolver.resolve(job.target, secrets))

        with self._names.hold(name, f"group snapshot {name!r}"):
            return self._groups.delete(name, remove_ready)

    # -- DeleteSnapshot ----------------------------------------------------------------------

    def _job_of(self, ref: BackupRef) -> UploadJob | None:
        if ref.key is not None:
            return self._store.by_key(ref.target, ref.key)
        assert ref.backup_id is not None
        return self._store.by_backup(ref.target, ref.backup_id)

    def delete(self, ref: BackupRef, secrets: Mapping[str, str]) -> None:
        """Remove the backup and its local snapshot; OK when already gone."""
        job = self._job_of(ref)
        if job is not None and is_member_job(job) and self._groups.exists(group_of_job(job)):
            raise FailedPrecondition(
                f"snapshot {job.name!r} is a member of a group snapshot; delete the group"
            )
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
    #
    # A committed backup snapshot is reported only while its backup is on the target: another
    # node (or `amber backup delete`/`prune`) may have removed it. This node's job for it is a
    # cache; when the target says the backup is gone, the job is dropped the way DeleteSnapshot
    # drops it (the worker removes the local snapshot kept with it). Uploads that have not
    # committed are this node's alone and are reported from the job. The target comes from
    # the call's secrets (the class's `snapshotter-list-secret-*`), else from what this node
    # knows; a target this node cannot name is not checked, and its jobs are reported as known.

    def local(self, secrets: Mapping[str, str] | None = None) -> list[SnapshotInfo]:
        """This node's backup snapshots (those being deleted, or gone from their target,
        excluded)."""
        jobs = [j for j in self._store.jobs() if j.state is not UploadState.DELETING]
        gone = self._gone_from_targets([j for j in jobs if j.state is UploadState.READY], secrets)
        return [self._info(j) for j in jobs if j.name not in gone]

    def _gone_from_targets(
        self, jobs: Iterable[UploadJob], secrets: Mapping[str, str] | None
    ) -> set[str]:
        """Names of the committed jobs whose backups are no longer on their targets (one
        listing per target); each is dropped. Targets that cannot be read are not judged."""
        by_target: dict[str, list[UploadJob]] = {}
        for job in jobs:
            by_target.setdefault(job.target, []).append(job)
        gone: set[str] = set()
        for target, members in by_target.items():
            try:
                repo = self._repository(target, secrets)
                present = set(repo.list_backups()) if repo is not None else set()
            except AmberError as e:
                _log.info("backup snapshots of target %s not checked: %s", target, e.message)
                continue
            for job in members:
                if job.backup_id is not None and job.backup_id not in present:
                    self._drop_stale(job)
                    gone.add(job.name)
        return gone

    def _repository(self, target: str, secrets: Mapping[str, str] | None) -> Repository | None:
        """The target's repository (None when it holds none); TargetUnknown when this node
        cannot name the target."""
        access = self._resolver.resolve(target, secrets)
        try:
            return access.open()
        except NotFound:
            return None

    def _drop_stale(self, job: UploadJob) -> None:
        _log.info(
            "backup snapshot %s: its backup is gone from target %s (deleted elsewhere); "
            "forgetting it",
            job.name,
            job.target,
        )
        self._store.update(job, state=UploadState.DELETING, next_try=0.0)
        self._uploads.wake()

    def local_snapshot_names(self) -> set[str]:
        """Pool snapshots that belong to backup snapshots (uploads in progress, and local
        snapshots kept by `keepLocalSnapshot`): not local snapshots of their own."""
        return {
            j.snapshot
            for j in self._store.jobs()
            if j.state is not UploadState.READY or j.keep_local
        }

    def lookup(self, snapshot_id: str, secrets: Mapping[str, str]) -> SnapshotInfo | None:
        """The snapshot an ID names, if its backup is on the target (or still uploading here)."""
        ref = parse_backup_id(snapshot_id)
        if ref is None:
            return None
        job = self._job_of(ref)
        if job is not None and job.state is not UploadState.READY:
            return None if job.state is UploadState.DELETING else self._info(job, snapshot_id)
        known = job.backup_id if job is not None else None
        try:
            repo = self._repository(ref.target, secrets)
        except TargetUnknown:
            return None if job is None else self._info(job, snapshot_id)
        manifest = None if repo is None else find_backup(repo, ref, known)
        if manifest is None:
            if job is not None:
                self._drop_stale(job)
            return None
        return (
            _manifest_info(manifest, snapshot_id) if job is None else self._info(job, snapshot_id)
        )

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
        """DeleteVolume: forget where the volume came from and drop its incremental bases."""
        self._store.forget_restore(volume)
        forget_volume_bases(self._pool, volume)

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
