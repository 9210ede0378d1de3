"""What a CSI request asks for, checked: parameters, capacity ranges, topology, paths.

Plain functions over plain values: each returns what the request means for Amber or raises the
domain error whose code the spec requires. The servicers call them before touching the pool, so
a bad request changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from amber.domain.errors import InvalidArgument, OutOfRange, OutOfSpace
from amber.domain.units import check_size_limit, format_size, round_up
from amber.ops.sizes import ALIGNMENT
from amber.system import fs

__all__ = [
    "FSTYPE_KEYS",
    "TOPOLOGY_KEY",
    "SnapshotParameters",
    "TopologyUnsatisfiable",
    "VolumeParameters",
    "check_accessibility",
    "expansion_target",
    "node_topology",
    "parse_range",
    "parse_snapshot_parameters",
    "parse_volume_parameters",
    "topology_matches",
    "validate_path",
]

TOPOLOGY_KEY: Final = "topology.amber.csi.dev/node"
"""The one topology segment: volumes live on exactly one node."""
RESERVED_PREFIX: Final = "csi.storage.k8s.io/"
"""Keys the Kubernetes sidecars add (`--extra-create-metadata`, secret references): ignored."""
FSTYPE_KEYS: Final = ("fsType", "csi.storage.k8s.io/fstype")
SNAPSHOT_TYPE_KEY: Final = "type"
OPEN_LOCAL_READONLY_KEY: Final = "csi.aliyun.com/readonly"
TARGET_KEY: Final = "target"
KEEP_LOCAL_KEY: Final = "keepLocalSnapshot"
OPEN_LOCAL_S3_KEYS: Final = ("s3URL", "s3AK", "s3SK", "s3ForcePathStyle", "s3DisableSSL")
SECRET_TARGET_KEYS: Final = ("url", "s3URL")
"""Secret keys that define a backup target (Amber's layout, open-local's `s3-config`)."""
MAX_PATH_BYTES: Final = 4096
MAX_COMPONENT_BYTES: Final = 255
"""NAME_MAX on Linux: no file or directory name can be longer, on any filesystem Amber uses."""


class TopologyUnsatisfiable(OutOfSpace):
    """The accessibility requirements exclude this node (RESOURCE_EXHAUSTED, per the spec)."""


# -- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeParameters:
    """A StorageClass's `parameters`, understood."""

    fs_type: str | None
    """The filesystem asked for by parameter (`fsType`, `csi.storage.k8s.io/fstype`), if any."""


def _unknown_keys(params: Mapping[str, str], known: Iterable[str]) -> list[str]:
    allowed = set(known)
    return sorted(k for k in params if k not in allowed and not k.startswith(RESERVED_PREFIX))


def parse_volume_parameters(params: Mapping[str, str]) -> VolumeParameters:
    """Check a CreateVolume/GetCapacity `parameters` map."""
    unknown = _unknown_keys(params, FSTYPE_KEYS)
    if unknown:
        raise InvalidArgument(
            f"unknown volume parameter(s) {', '.join(map(repr, unknown))}: Amber understands "
            f"{' and '.join(FSTYPE_KEYS)} (ext4 or xfs)"
        )
    values = {params[k].strip().lower() for k in FSTYPE_KEYS if params.get(k, "").strip()}
    if len(values) > 1:
        raise InvalidArgument(f"conflicting filesystem parameters: {', '.join(sorted(values))}")
    fs_type = values.pop() if values else None
    if fs_type is not None:
        fs.check_fstype(fs_type)
    return VolumeParameters(fs_type)


@dataclass(frozen=True)
class SnapshotParameters:
    """A VolumeSnapshotClass's `parameters`, understood."""

    backup: bool = False
    """`type: backup`: the snapshot is uploaded to a backup target (False: a local snapshot)."""
    target: str | None = None
    """The `target` parameter (a backup snapshot may take its target from the secret)."""
    keep_local: bool = False
    """`keepLocalSnapshot: "true"`: the local reflink snapshot stays after the upload (until
    DeleteSnapshot); by default it is dropped (the engine keeps its own incremental base)."""


def _snapshot_kind(params: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """`local` or `backup`: explicit `type`, else open-local's readonly flag, else whether
    the snapshotter secret defines a target (open-local's read-write snapshots), else local."""
    kind = params.get(SNAPSHOT_TYPE_KEY, "").strip().lower()
    if kind:
        return kind
    if params.get(OPEN_LOCAL_READONLY_KEY, "").strip().lower() == "true":
        return "local"
    if params.get(TARGET_KEY) or any(secrets.get(k) for k in SECRET_TARGET_KEYS):
        return "backup"
    return "local"


def parse_snapshot_parameters(
    params: Mapping[str, str], secrets: Mapping[str, str] | None = None
) -> SnapshotParameters:
    """Check a CreateSnapshot `parameters` map (and see whether its secret defines a target)."""
    unknown = _unknown_keys(
        params, (SNAPSHOT_TYPE_KEY, OPEN_LOCAL_READONLY_KEY, TARGET_KEY, KEEP_LOCAL_KEY)
    )
    if unknown:
        hint = (
            " (S3 settings and credentials go in the snapshotter secret, never in parameters)"
            if any(k in OPEN_LOCAL_S3_KEYS for k in unknown)
            else ""
        )
        raise InvalidArgument(
            f"unknown snapshot parameter(s) {', '.join(map(repr, unknown))}: Amber understands "
            f"{SNAPSHOT_TYPE_KEY!r} (local or backup), {TARGET_KEY!r}, {KEEP_LOCAL_KEY!r} and "
            f"{OPEN_LOCAL_READONLY_KEY!r}{hint}"
        )
    keep_local = _keep_local(params)
    kind = _snapshot_kind(params, secrets or {})
    readonly = params.get(OPEN_LOCAL_READONLY_KEY, "").strip().lower()
    if kind == "local":
        if readonly not in ("true", ""):
            raise InvalidArgument(
                f"{OPEN_LOCAL_READONLY_KEY}={readonly!r} with type local: local snapshots are "
                "always read-only (use type: backup for read-write snapshots)"
            )
        if params.get(TARGET_KEY):
            raise InvalidArgument(f"{TARGET_KEY!r} only applies to type: backup")
        if keep_local:
            raise InvalidArgument(f"{KEEP_LOCAL_KEY!r} only applies to type: backup")
        return SnapshotParameters()
    if kind != "backup":
        raise InvalidArgument(f"unknown snapshot type {kind!r}: use 'local' or 'backup'")
    if readonly == "true":
        raise InvalidArgument(f"{OPEN_LOCAL_READONLY_KEY}=true contradicts type: backup")
    if not params.get(TARGET_KEY) and not any((secrets or {}).get(k) for k in SECRET_TARGET_KEYS):
        raise InvalidArgument(
            "type: backup needs the parameter 'target' (a target of the node's targets file) "
            "or a snapshotter secret that defines the target"
        )
    return SnapshotParameters(
        backup=True, target=params.get(TARGET_KEY) or None, keep_local=keep_local
    )


def _keep_local(params: Mapping[str, str]) -> bool:
    """The `keepLocalSnapshot` parameter: "true" or "false" (default false)."""
    value = params.get(KEEP_LOCAL_KEY)
    if value is None:
        return False
    if value.strip().lower() not in ("true", "false"):
        raise InvalidArgument(
            f'snapshot parameter {KEEP_LOCAL_KEY!r} must be "true" or "false", not {value[:64]!r}'
        )
    return value.strip().lower() == "true"


# -- capacity -----------------------------------------------------------------------------


def parse_range(capacity_range: Any, *, present: bool) -> tuple[int, int]:
    """(required_bytes, limit_bytes) of a CapacityRange; 0 means "not set"."""
    if not present:
        return 0, 0
    required, limit = int(capacity_range.required_bytes), int(capacity_range.limit_bytes)
    if required < 0 or limit < 0:
        raise InvalidArgument(
            f"capacity range must not be negative (required {required}, limit {limit})"
        )
    if limit and required > limit:
        raise OutOfRange(
            f"required_bytes {required} is larger than limit_bytes {limit}: no size fits"
        )
    return required, limit


def expansion_target(required: int, limit: int, current: int) -> int:
    """The size to grow a volume of `current` bytes to, for an expansion request."""
    wanted = required or limit
    if wanted == 0:
        raise InvalidArgument("capacity_range needs required_bytes (or limit_bytes) to expand")
    size = check_size_limit(round_up(wanted, ALIGNMENT))
    if limit and current > limit:
        raise OutOfRange(
            f"the volume is already {format_size(current)}, more than limit_bytes {limit}; "
            "volumes cannot shrink"
        )
    if limit and size > limit:
        raise OutOfRange(f"{wanted} bytes round up to {size}, beyond limit_bytes {limit}")
    return max(size, current)


# -- topology -----------------------------------------------------------------------------


def node_topology(node_id: str) -> dict[str, str]:
    """The topology segments of this node (and of every volume on it)."""
    return {TOPOLOGY_KEY: node_id}


def topology_matches(segments: Mapping[str, str], node_id: str) -> bool:
    """Whether a Topology names this node (other keys are not Amber's and are ignored)."""
    return segments.get(TOPOLOGY_KEY) == node_id


def check_accessibility(requirements: Any, present: bool, node_id: str) -> None:
    """Refuse (RESOURCE_EXHAUSTED) when `requisite` does not include this node.

    `preferred` only orders choices; with no `requisite` any node, this one, is acceptable.
    """
    if not present or not requirements.requisite:
        return
    if any(topology_matches(t.segments, node_id) for t in requirements.requisite):
        return
    asked = sorted({t.segments.get(TOPOLOGY_KEY, "?") for t in requirements.requisite})
    raise TopologyUnsatisfiable(
        f"this node {node_id!r} is not in the requisite topology (nodes {', '.join(asked)}): "
        "an Amber volume can only be created on the node that serves the request"
    )


# -- paths --------------------------------------------------------------------------------


def validate_path(field: str, text: str) -> Path:
    """An absolute, normalized path without `..` components, NUL or newlines, whose components
    the kernel accepts (at most NAME_MAX bytes each)."""
    if not text:
        raise InvalidArgument(f"{field} is required")
    if len(text.encode()) > MAX_PATH_BYTES or "\0" in text or "\n" in text:
        raise InvalidArgument(f"{field} is not a usable path")
    if not text.startswith("/"):
        raise InvalidArgument(f"{field} {text!r} must be an absolute path")
    if ".." in text.split("/"):
        raise InvalidArgument(f"{field} {text!r} must not contain '..'")
    if any(len(part.encode()) > MAX_COMPONENT_BYTES for part in text.split("/")):
        raise InvalidArgument(
            f"{field} has a component longer than {MAX_COMPONENT_BYTES} bytes (NAME_MAX)"
        )
    return Path(os.path.normpath(text))
