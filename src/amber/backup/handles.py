"""Names of a backup that a person may paste: a bare id, the engine's handle, a CSI snapshot ID.

    <32 hex digits>                       a backup id (its target given separately)
    amber:v1:backup:<target>:<id>         the engine's handle (`amber backup list`, `import`)
    amber:v1:bak:<target>:<key or id>     a backup VolumeSnapshot's ID, as CreateSnapshot
                                          returns it and a cluster's VolumeSnapshotContent holds

Where a backup id is taken, a person may also write a unique prefix of it (`3fa9c`, restic's
rule) or `latest` (the newest backup, of one volume when one is named): `resolve_backup_id`
turns those into the whole id, for the CLI and any other edge alike.

The CSI driver commits the backup of snapshot key `key` under the id `key_backup_id(key)` and
labels its manifest with the key (`LABEL_KEY`), so a key names one manifest: no listing is
needed to find it, on any node or cluster. A manifest under that id that does not carry the key
is not the snapshot's backup (`check_key`). The rule lives here, below the CLI and the CSI
driver, so both read the same IDs the same way.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from amber.backup.layout import is_valid_id
from amber.backup.manifest import Manifest
from amber.backup.targets import HANDLE_PREFIX, validate_target_name
from amber.domain.errors import InvalidArgument, NotFound
from amber.domain.names import validate_name

__all__ = [
    "BAK_PREFIX",
    "LABEL_KEY",
    "LATEST",
    "BackupLister",
    "BackupName",
    "check_key",
    "key_backup_id",
    "parse_backup_name",
    "resolve_backup_id",
]

BAK_PREFIX: Final = "amber:v1:bak:"
LABEL_KEY: Final = "amber.csi.dev/snapshot-key"
"""Manifest label holding the key of the CSI snapshot a backup was made for."""
_KEY_ID_DOMAIN: Final = b"amber.csi.dev/backup-id-of-key/v1\n"
LATEST: Final = "latest"
"""The newest backup (of one volume, when a volume is named) in place of an id."""
_PREFIX_RE: Final = re.compile(r"[0-9a-f]{1,31}")


def key_backup_id(key: str) -> str:
    """The id the backup of snapshot key `key` is committed under (32 lowercase hex digits).

    It is derived, not drawn at random, so that whoever holds the key -- this node after a
    restart, another node, another cluster -- finds the backup by reading one manifest
    instead of listing and opening all of them. It depends on the key alone, not on the
    target's name: one repository may be known by several names (a targets file entry here,
    a name derived from a Secret there), and a backup id only has to be unique within its
    repository. The key is unique per CSI snapshot name (`snapshot-<uid>`), and 128 bits of
    SHA-256 make two keys sharing an id as unlikely as two random ids colliding; readers still
    check the manifest's key label, so a foreign backup under the id is never taken for ours.
    The fixed prefix keeps these ids apart from every other SHA-256 of the same text (pool
    names hash CSI names with plain SHA-256), and lets a later scheme choose a prefix of its
    own.
    """
    return hashlib.sha256(_KEY_ID_DOMAIN + key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class BackupName:
    """What a pasted name says: the target (None: not said), the backup id, and for a CSI
    snapshot ID by key, the key the manifest must carry."""

    target: str | None
    backup_id: str
    key: str | None = None


def _split(text: str, prefix: str) -> tuple[str, str]:
    target, sep, rest = text.removeprefix(prefix).partition(":")
    if not sep or not rest:
        raise InvalidArgument(
            f"invalid backup handle {text[:140]!r}: expected {prefix}TARGET:"
            + ("ID" if prefix == HANDLE_PREFIX else "KEY")
        )
    validate_target_name(target)
    return target, rest


def parse_backup_name(text: str, target: str | None = None) -> BackupName:
    """Read a backup id, handle or CSI snapshot ID (`target`: the --target given with it; a
    handle naming another target is InvalidArgument)."""
    if text.startswith(BAK_PREFIX):
        named, rest = _split(text, BAK_PREFIX)
        if is_valid_id(rest):
            name = BackupName(named, rest)
        else:
            validate_name("snapshot key", rest)
            name = BackupName(named, key_backup_id(rest), rest)
    elif text.startswith(HANDLE_PREFIX):
        named, rest = _split(text, HANDLE_PREFIX)
        name = BackupName(named, rest)
    else:
        return BackupName(target, text)
    if target is not None and target != name.target:
        raise InvalidArgument(f"backup {text[:140]!r} names target {name.target!r}, not {target!r}")
    return name


def check_key(manifest: Manifest, name: BackupName) -> Manifest:
    """`manifest`, when it is the backup `name` means (NotFound when a key does not match)."""
    if name.key is not None and manifest.labels.get(LABEL_KEY) != name.key:
        raise NotFound(f"no backup of snapshot key {name.key!r} in target {name.target!r}")
    return manifest


class BackupLister(Protocol):
    """What resolving a prefix or `latest` needs of a repository."""

    def list_backups(self) -> list[str]: ...

    def load_manifests(self) -> list[Manifest]: ...


def resolve_backup_id(
    repo: BackupLister, text: str, *, volume: str | None = None, where: str = "the target"
) -> str:
    """The whole id `text` means: itself when it is one, the one backup id it is a prefix of,
    or with `latest` the newest backup (of `volume`, if given). `where` names the repository
    in messages. An ambiguous prefix is InvalidArgument (exit 2), no match NotFound."""
    if text == LATEST:
        return _latest(repo.load_manifests(), volume, where)
    if is_valid_id(text):
        return text
    if not _PREFIX_RE.fullmatch(text):
        shown = text.encode("unicode_escape").decode("ascii")[:80]
        raise InvalidArgument(
            f"invalid backup id {shown!r}: give its 32 hex digits, a prefix of them, "
            f"{LATEST!r}, or a handle"
        )
    return _by_prefix(repo.list_backups(), text, where)


def _by_prefix(ids: Sequence[str], prefix: str, where: str) -> str:
    found = [backup_id for backup_id in ids if backup_id.startswith(prefix)]
    if not found:
        raise NotFound(f"no backup id starts with {prefix!r} in {where}")
    if len(found) > 1:
        raise InvalidArgument(
            f"backup id prefix {prefix!r} is ambiguous: {len(found)} backups in {where} start "
            "with it; give more digits"
        )
    return found[0]


def _latest(manifests: Sequence[Manifest], volume: str | None, where: str) -> str:
    chosen = [m for m in manifests if volume in (None, m.volume_name)]
    if not chosen:
        of = f" of volume {volume!r}" if volume is not None else ""
        raise NotFound(f"no backup{of} in {where}")
    return max(chosen, key=lambda m: (m.created, m.backup_id)).backup_id
