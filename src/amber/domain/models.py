"""The objects a pool holds, as plain immutable records."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class VolumeMode(StrEnum):
    """How a volume is presented: a formatted filesystem or a raw block device."""

    FILESYSTEM = "filesystem"
    BLOCK = "block"


class SourceKind(StrEnum):
    """Where a new volume's content comes from."""

    NONE = "none"
    VOLUME = "volume"
    SNAPSHOT = "snapshot"
    BACKUP = "backup"


@dataclass(frozen=True)
class Volume:
    """A volume: one sparse image file in the pool."""

    uid: str
    name: str
    size: int
    mode: VolumeMode
    fs_type: str | None  # None for block volumes
    created: float
    source_kind: SourceKind
    source_name: str | None
    fs_resize_pending: bool  # the image grew while unmounted; the filesystem grows at next mount
    image: Path


@dataclass(frozen=True)
class Snapshot:
    """A read-only point-in-time copy of a volume, independent of it."""

    uid: str
    name: str
    volume_name: str
    volume_uid: str
    size: int
    mode: VolumeMode
    fs_type: str | None
    created: float
    image: Path
    allocated: int  # bytes the image maps (shared with its source through reflink)


@dataclass(frozen=True)
class SnapshotGroup:
    """Snapshots of several volumes taken at one instant; its members are ordinary snapshots."""

    uid: str
    name: str
    created: float
    member_uids: tuple[str, ...]  # the member snapshots, in the order their volumes were given


class AttachmentKind(StrEnum):
    """How an object is in use: a mounted filesystem or an exposed block device."""

    MOUNT = "mount"
    DEVICE = "device"


@dataclass(frozen=True)
class Attachment:
    """One use of a volume or snapshot on this machine."""

    object_uid: str
    object_name: str
    kind: AttachmentKind
    path: Path  # mount point, or the path where the device is exposed
    loop_device: Path
    read_only: bool


@dataclass(frozen=True)
class PoolStatus:
    """What `amber pool status` shows."""

    path: Path
    image: Path | None
    fs_type: str
    reflink: bool
    size: int
    used: int
    free: int
    provisioned: int
    capacity: int  # size x overprovisioning: what volumes may add up to
    overprovisioning: float
    volumes: int
    snapshots: int
    attachments: int
    full: bool = False
    """The pool filesystem itself is (nearly) full (free < the reserve), whatever the
    accounting says: thin volumes filled it."""
    space_problem: str | None = None
    """What is full and what to do, when `full`."""
    backup_bases: int = 0
    """Base images the backup engine keeps for incremental backups (reflink copies)."""
    backup_bases_bytes: int = 0
    """Bytes allocated to them (shared with snapshots and volumes while those hold the same
    blocks); `amber backup bases --forget VOLUME` frees them."""
