"""Finding and removing the backup a snapshot ID names, in an open repository.

Either form is one manifest read, never a listing: an id names the manifest directly, and a key
(`amber:v1:bak:<target>:<key>`) names the manifest of the id derived from it
(`handles.key_backup_id`), which counts only when its `amber.csi.dev/snapshot-key` label is
that key (anything else under the id is not the backup of that snapshot). Removing a backup
deletes its manifest (its chunks are reclaimed by the next `amber backup prune`), refused while
a restore from it holds the repository, and drops this node's incremental base when it pointed
at that backup (the base could no longer be used).
"""

from __future__ import annotations

import contextlib
import time

from amber.backup.layout import Clock
from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.backup.restorer import restores_backup
from amber.backup.state import BackupState
from amber.domain.errors import Busy, FailedPrecondition, NotFound
from amber.ops.handles import LABEL_KEY, BackupRef, key_backup_id
from amber.pool import Pool

__all__ = ["find_backup", "find_by_key", "remove_backup"]


def find_by_key(repo: Repository, key: str) -> Manifest | None:
    """The backup committed for snapshot key `key` (one manifest read), or None."""
    try:
        manifest = repo.load_manifest(key_backup_id(key))
    except NotFound:
        return None
    return manifest if manifest.labels.get(LABEL_KEY) == key else None


def find_backup(repo: Repository, ref: BackupRef, known_id: str | None = None) -> Manifest | None:
    """The backup `ref` names (`known_id`: its id when this node already knows it)."""
    backup_id = ref.backup_id or known_id
    if backup_id is None:
        assert ref.key is not None
        return find_by_key(repo, ref.key)
    try:
        return repo.load_manifest(backup_id)
    except NotFound:
        return None


def restores_from(repo: Repository, backup_id: str, clock: Clock = time.time) -> list[str]:
    """Holders of live repository locks restoring `backup_id` (on any node or cluster)."""
    now = clock()
    return [
        info.holder
        for info in repo.active_locks()
        if restores_backup(info.holder, backup_id) and info.is_live(now)
    ]


def remove_backup(
    pool: Pool, repo: Repository, manifest: Manifest, target: str, clock: Clock = time.time
) -> None:
    """Delete the backup's manifest (FAILED_PRECONDITION while a restore reads it)."""
    readers = restores_from(repo, manifest.backup_id, clock)
    if readers:
        raise FailedPrecondition(
            f"backup {manifest.backup_id} is being restored ({readers[0]}); delete the snapshot "
            "again when the restore has finished"
        )
    with contextlib.suppress(NotFound):
        repo.delete_backup(manifest.backup_id)
    _forget_base(pool, manifest, target, clock)


def _forget_base(pool: Pool, manifest: Manifest, target: str, clock: Clock) -> None:
    with BackupState(pool, clock) as state:
        record = state.get(manifest.volume_name, target)
        if record is None or record.backup_id != manifest.backup_id:
            return
        with contextlib.suppress(Busy), state.hold(manifest.volume_name, target):
            state.forget(manifest.volume_name, target)
