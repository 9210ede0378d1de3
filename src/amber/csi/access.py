"""Volume capabilities: how the CO wants to use a volume, checked against what Amber offers.

Amber volumes are node-local, so only the single-node access modes are supported:
SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, and (with the SINGLE_NODE_MULTI_WRITER capability)
SINGLE_NODE_SINGLE_WRITER and SINGLE_NODE_MULTI_WRITER. A volume is either a filesystem
(`mount`, ext4 or xfs) or a raw block device (`block`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from amber.csi._proto import csi_pb2
from amber.domain.errors import InvalidArgument
from amber.domain.models import Volume, VolumeMode
from amber.system import fs

__all__ = [
    "Access",
    "mismatch",
    "parse_capabilities",
    "parse_capability",
    "unsupported_reason",
]

_Mode = csi_pb2.VolumeCapability.AccessMode
SINGLE_NODE_MODES: Final = frozenset(
    {
        _Mode.SINGLE_NODE_WRITER,
        _Mode.SINGLE_NODE_READER_ONLY,
        _Mode.SINGLE_NODE_SINGLE_WRITER,
        _Mode.SINGLE_NODE_MULTI_WRITER,
    }
)
READ_ONLY_MODES: Final = frozenset({_Mode.SINGLE_NODE_READER_ONLY, _Mode.MULTI_NODE_READER_ONLY})
_REFUSED_FLAGS: Final = frozenset({"bind", "rbind", "remount", "move", "make-shared"})


@dataclass(frozen=True)
class Access:
    """One VolumeCapability, understood."""

    mode: VolumeMode
    fs_type: str | None
    """The filesystem the CO named (mount.fs_type), or None when it left it empty."""
    mount_flags: tuple[str, ...]
    access_mode: int

    @property
    def read_only(self) -> bool:
        """The access mode only allows reading."""
        return self.access_mode in READ_ONLY_MODES

    @property
    def multi_writer(self) -> bool:
        """Several publications on this node may coexist (SINGLE_NODE_MULTI_WRITER)."""
        return bool(self.access_mode == _Mode.SINGLE_NODE_MULTI_WRITER)

    @property
    def mode_name(self) -> str:
        return str(_Mode.Mode.Name(self.access_mode))


def parse_capability(cap: Any, field: str = "volume_capability") -> Access:
    """Parse one VolumeCapability; INVALID_ARGUMENT when it is incomplete or malformed."""
    kind = cap.WhichOneof("access_type")
    if kind is None:
        raise InvalidArgument(f"{field} needs an access type (mount or block)")
    if not cap.HasField("access_mode") or cap.access_mode.mode == _Mode.UNKNOWN:
        raise InvalidArgument(f"{field} needs an access mode")
    if cap.access_mode.mode not in _Mode.Mode.values():
        raise InvalidArgument(f"{field} has an unknown access mode {cap.access_mode.mode}")
    if kind == "block":
        return Access(VolumeMode.BLOCK, None, (), cap.access_mode.mode)
    fs_type = cap.mount.fs_type.strip().lower() or None
    if fs_type is not None:
        fs.check_fstype(fs_type)
    flags = tuple(cap.mount.mount_flags)
    for flag in flags:
        if not flag or any(c in flag for c in ", \t\n\0") or flag.startswith("-"):
            raise InvalidArgument(f"{field} has an invalid mount flag {flag!r}")
        if flag in _REFUSED_FLAGS:
            raise InvalidArgument(f"{field}: mount flag {flag!r} is not allowed")
    return Access(VolumeMode.FILESYSTEM, fs_type, flags, cap.access_mode.mode)


def parse_capabilities(caps: Sequence[Any]) -> list[Access]:
    """Parse the `volume_capabilities` list of CreateVolume/ValidateVolumeCapabilities."""
    if not caps:
        raise InvalidArgument("volume_capabilities is required")
    return [parse_capability(c, f"volume_capabilities[{i}]") for i, c in enumerate(caps)]


def unsupported_reason(access: Access) -> str | None:
    """Why Amber cannot offer this access mode (None when it can)."""
    if access.access_mode in SINGLE_NODE_MODES:
        return None
    return (
        f"access mode {access.mode_name} is not supported: Amber volumes live on one node; "
        "use a single-node mode (ReadWriteOnce or ReadWriteOncePod)"
    )


def mismatch(access: Access, volume: Volume) -> str | None:
    """Why this capability does not fit an existing volume (None when it fits)."""
    if access.mode is not volume.mode:
        return (
            f"volume {volume.name!r} is a {volume.mode.value} volume; it cannot be used as "
            f"{'a block device' if access.mode is VolumeMode.BLOCK else 'a filesystem'}"
        )
    if access.fs_type is not None and access.fs_type != volume.fs_type:
        return f"volume {volume.name!r} holds {volume.fs_type}, not the requested {access.fs_type}"
    return None
