"""Finding the backup a snapshot ID names, in an open repository.

Either form is one manifest read, never a listing: an id names the manifest directly, and a key
(`amber:v1:bak:<target>:<key>`) names the manifest of the id derived from it
(`handles.key_backup_id`), which counts only when its `amber.csi.dev/snapshot-key` label is
that key (anything else under the id is not the backup of that snapshot). Removing it is
`amber.ops.backups.remove_backup`, by the rule every edge follows.
"""

from __future__ import annotations

from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.domain.errors import NotFound
from amber.ops.handles import LABEL_KEY, BackupRef, key_backup_id

__all__ = ["find_backup", "find_by_key"]


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
