"""Group snapshots of backup classes: one local group snapshot, its members uploaded as a unit.

CreateVolumeGroupSnapshot with a `type: backup` class takes the local group snapshot at one
instant (`amber.pool.groups`), then records one upload job per member (named
`<group>/<volume>`: never a CSI snapshot name, so never another CreateSnapshot's job) and a
`group_uploads` row naming them. The ordinary upload worker uploads each member; nothing here
uploads. The group, and each member, is ready only when every member is committed; a failed
member fails the group.

The member jobs never drop their local snapshots themselves (the local group owns them, and
a member cannot be deleted on its own): once every member is committed, the worker deletes the
local group (and, should it die first, the next look at the group does), unless the class
says `keepLocalSnapshot`. Deleting the group deletes the local group first (which refuses while a
member is mounted), then the members' backups (those uploading are cancelled and the worker
removes what they left), then the row: every step may be repeated after a crash.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

from amber.domain.errors import AlreadyExists, AmberError, NotFound
from amber.ops.handles import snapshot_key
from amber.ops.jobs import GroupJob, JobStore, UploadJob, UploadState
from amber.ops.targets import TargetAccess
from amber.ops.uploads import Uploads
from amber.pool import Pool

__all__ = ["GroupUploads", "is_member_job"]

_log = logging.getLogger(__name__)
_SEP = "/"


def is_member_job(job: UploadJob) -> bool:
    """Whether `job` uploads a member of a group snapshot."""
    return _SEP in job.name


def group_of_job(job: UploadJob) -> str:
    return job.name.split(_SEP, 1)[0]


class GroupUploads:
    """The group snapshots of backup classes of one node."""

    def __init__(self, pool: Pool, store: JobStore, uploads: Uploads) -> None:
        self._pool = pool
        self._store = store
        self._uploads = uploads
        uploads.on_ready = self._member_ready

    def create(
        self,
        name: str,
        target: TargetAccess,
        volumes: Sequence[tuple[str, str]],
        *,
        keep_local: bool,
        name_limit: int,
    ) -> tuple[GroupJob, list[UploadJob]]:
        """Take the local group and queue its members' uploads; a repeat reports the group.

        `volumes`: (pool name, CSI volume ID) of each source volume."""
        found = self.state(name)
        if found is not None:
            group, jobs = found
            if (
                group.target != target.name
                or group.keep_local != keep_local
                or sorted(j.volume for j in jobs) != sorted(v for v, _ in volumes)
            ):
                raise AlreadyExists(
                    f"group snapshot {name!r} already exists for other volumes, another target "
                    "or keepLocalSnapshot setting"
                )
            return group, jobs
        local = self._pool.groups.create(
            name, [v for v, _ in volumes], exist_ok=True, name_limit=name_limit
        )
        ids = dict(volumes)
        jobs = [
            self._member_job(name, target.name, m.name, m.volume_name, ids) for m in local.members
        ]
        group = GroupJob(name, target.name, local.created, tuple(j.name for j in jobs), keep_local)
        self._store.put_group(group)
        self._uploads.wake()
        return group, jobs

    def _member_job(
        self, group: str, target: str, snapshot: str, volume: str, ids: dict[str, str]
    ) -> UploadJob:
        job_name = f"{group}{_SEP}{volume}"
        existing = self._store.get(job_name)
        if existing is not None:  # recorded before a crash, or by a concurrent call
            return existing
        member = self._pool.snapshots.get(snapshot)
        return self._store.put(
            UploadJob(
                name=job_name,
                target=target,
                key=snapshot_key(job_name, target),
                volume=volume,
                volume_id=ids[volume],
                snapshot=snapshot,
                size=member.size,
                created=member.created,
                state=UploadState.UPLOADING,
                keep_local=True,  # the local group owns the member snapshots
            )
        )

    def _member_ready(self, job: UploadJob) -> None:
        """The worker committed a member: the last one lets the local group go."""
        if is_member_job(job):
            self.state(group_of_job(job))

    def state(self, name: str) -> tuple[GroupJob, list[UploadJob]] | None:
        """The group and its member jobs (None when no such group); once all are committed,
        the local group goes (unless kept)."""
        group = self._store.get_group(name)
        if group is None:
            return None
        jobs = [j for n in group.members if (j := self._store.get(n)) is not None]
        done = all(j.state is UploadState.READY for j in jobs)
        if done and not group.keep_local and self._pool.groups.find(name) is not None:
            try:
                self._pool.groups.delete(name)
            except NotFound:
                pass
            except AmberError as e:
                _log.warning("group snapshot %s: local group kept for now: %s", name, e.message)
        return group, jobs

    def exists(self, name: str) -> bool:
        return self._store.get_group(name) is not None

    def delete(self, name: str, remove_ready: Callable[[UploadJob], None]) -> bool:
        """Delete the group (False when it is not a group of a backup class)."""
        group = self._store.get_group(name)
        if group is None:
            return False
        with contextlib.suppress(NotFound):
            self._pool.groups.delete(name)  # FailedPrecondition while a member is mounted
        for job_name in group.members:
            job = self._store.get(job_name)
            if job is None:
                continue
            if job.state is UploadState.READY:
                remove_ready(job)
            else:
                self._store.update(job, state=UploadState.DELETING, next_try=0.0)
                self._uploads.cancel_current(job.name)
        self._store.remove_group(name)
        self._uploads.wake()
        return True
