"""Backup snapshot IDs: they name a target and a backup, so any node (and any cluster) that
knows the target can find the backup.

Two forms are understood:

    amber:v1:bak:<target>:<key>         what CreateSnapshot returns (on its FIRST call)
    amber:v1:backup:<target>:<id>       the engine's handle (`amber backup list`, `import`)

CreateSnapshot must answer before the upload has even started, so it names the backup by a
*key* derived from the CSI snapshot name (the name itself when short and valid, else a hashed
name, like pool names). The upload then commits the backup under an id computed from that key
(`key_backup_id`, in `amber.backup.handles`, which the CLI reads these IDs with too) and
labels its manifest with the key (`amber.csi.dev/snapshot-key`): finding
the backup of a key is one read of `backups/<id>`, on any node, never a listing. A key is
never 32 hex digits (such names are hashed), so `amber:v1:bak:<target>:<32 hex>`
unambiguously names a backup by id too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from amber.backup.handles import BAK_PREFIX, LABEL_KEY, key_backup_id, parse_backup_name
from amber.backup.layout import is_valid_id
from amber.backup.targets import HANDLE_PREFIX
from amber.domain.errors import InvalidArgument
from amber.domain.names import MAX_ID_BYTES, pool_name

__all__ = [
    "BAK_PREFIX",
    "LABEL_KEY",
    "LABEL_NAME",
    "LABEL_NODE",
    "BackupRef",
    "format_bak_id",
    "key_backup_id",
    "parse_backup_id",
    "snapshot_key",
]

LABEL_NAME: Final = "amber.csi.dev/snapshot-name"
LABEL_NODE: Final = "amber.csi.dev/node"


@dataclass(frozen=True)
class BackupRef:
    """A parsed backup snapshot ID: a target, and a key or a backup id (never both)."""

    target: str
    key: str | None = None
    backup_id: str | None = None

    def __post_init__(self) -> None:
        assert (self.key is None) != (self.backup_id is None)


def snapshot_key(csi_name: str, target: str) -> str:
    """The key of a CSI snapshot name: fits `amber:v1:bak:<target>:<key>` in 128 bytes."""
    if not csi_name:
        raise InvalidArgument("name is required")
    budget = MAX_ID_BYTES - len(BAK_PREFIX) - len(target) - 1
    key = pool_name(csi_name, budget)
    if is_valid_id(key):
        key = pool_name(csi_name, 0)  # forces the hashed form: never mistaken for an id
    return key


def format_bak_id(target: str, key: str) -> str:
    text = f"{BAK_PREFIX}{target}:{key}"
    assert len(text.encode()) <= MAX_ID_BYTES, text
    return text


def parse_backup_id(text: str) -> BackupRef | None:
    """Parse either form; None when `text` is not a backup snapshot ID.

    The forms are read by `amber.backup.handles.parse_backup_name` (one rule for the CLI and
    the CSI driver); a snapshot ID is also at most 128 bytes, and its handle form names a whole
    backup id (a person may write a prefix or `latest` in a handle, a CSI ID never does)."""
    if len(text.encode()) > MAX_ID_BYTES or not text.startswith((BAK_PREFIX, HANDLE_PREFIX)):
        return None
    try:
        name = parse_backup_name(text)
    except InvalidArgument:
        return None
    if name.target is None:  # not reached: both forms name their target
        return None
    if name.key is not None:
        return BackupRef(name.target, key=name.key)
    return BackupRef(name.target, backup_id=name.backup_id) if is_valid_id(name.backup_id) else None
