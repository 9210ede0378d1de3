"""The CSI Node service: stage, publish, measure and grow volumes on this node.

Staging attaches the volume's image to a loop device. A filesystem volume is checked (ext4) and
mounted at the staging path; a block volume's device is bound onto a file inside the staging
directory (`STAGED_DEVICE`), so that "staged here" is visible in the mount table and survives
a restart of the plugin. Publishing binds the staged filesystem onto the target directory, or
the device onto the target file; read-only publications are read-only bind mounts. A block
volume's staged device is a read-only attachment, so that the pool makes the loop device itself
read-only while every publication is read-only and writable while one is read-write (which is
why one block volume cannot be published read-only and read-write at the same time).

Every RPC is idempotent: it looks at what is already mounted where and only does what is
missing, so repeated calls -- also after a plugin restart or a node reboot, once the pool's
recovery has dropped the attachments whose mounts are gone -- converge to the requested state.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import grpc

from amber.csi import access as caps
from amber.csi import health, params
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.capabilities import DriverMode, node_capabilities
from amber.csi.errors import rpc_errors
from amber.csi.objects import LocalObjects
from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from amber.domain.models import Attachment, AttachmentKind, Volume, VolumeMode
from amber.ops.locks import KeyedLocks
from amber.system import mount

__all__ = ["STAGED_DEVICE", "NodeServicer", "ResizerNodeServicer"]

Code = grpc.StatusCode
STAGED_DEVICE: Final = "amber-device"
"""The file in a block volume's staging directory onto which its device is bound."""
PUBLISH_FLAGS: Final = frozenset(
    {
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "nodiratime",
        "diratime",
        "relatime",
        "strictatime",
        "nosymfollow",
    }
)
"""Mount flags that apply to a bind mount (per-mount flags); the others apply at staging."""


def _required(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required")
    return value


def _capability(request: Any) -> caps.Access:
    if not request.HasField("volume_capability"):
        raise InvalidArgument("volume_capability is required")
    access = caps.parse_capability(request.volume_capability)
    if (reason := caps.unsupported_reason(access)) is not None:
        raise FailedPrecondition(reason)
    return access


def _fits(access: caps.Access, volume: Volume) -> None:
    if (reason := caps.mismatch(access, volume)) is not None:
        raise FailedPrecondition(reason)


def _staged_path(volume: Volume, staging: Path) -> Path:
    return staging / STAGED_DEVICE if volume.mode is VolumeMode.BLOCK else staging


def _occupied(path: Path, what: str) -> AlreadyExists:
    return AlreadyExists(
        f"{path} is already in use: something else is mounted there; choose another {what}"
    )


class NodeServicer(csi_pb2_grpc.NodeServicer):  # type: ignore[misc]  # generated, untyped
    """Node RPCs over this node's pool."""

    def __init__(
        self, objects: LocalObjects, *, max_volumes: int = 0, lock_timeout: float = 60.0
    ) -> None:
        self._objects = objects
        self._pool = objects.pool
        self._max_volumes = max_volumes
        self._locks = KeyedLocks(lock_timeout)

    def _lock(self, volume: Volume) -> Any:
        return self._locks.hold(volume.name, f"volume {volume.name!r}")

    def _attachments(self, volume: Volume) -> list[Attachment]:
        return self._pool.attachments.list("volume", volume.name)

    def _attachment_at(self, volume: Volume, path: Path) -> Attachment | None:
        found = next((a for a in self._attachments(volume) if a.path == path), None)
        return found if found is not None and mount.is_mounted(path) else None

    # -- stage ----------------------------------------------------------------------------

    @rpc_errors()
    def NodeStageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        staging = params.validate_path("staging_target_path", request.staging_target_path)
        access = _capability(request)
        volume = self._objects.volume(request.volume_id)
        _fits(access, volume)
        with _path_errors("staging_target_path", staging):
            is_dir = staging.is_dir()
        if not is_dir:
            raise FailedPrecondition(
                f"staging_target_path {staging} is not a directory: the CO creates it"
            )
        with self._lock(volume):
            self._stage_locked(volume, staging, access)
        return csi_pb2.NodeStageVolumeResponse()

    def _stage_locked(self, volume: Volume, staging: Path, access: caps.Access) -> None:
        target = _staged_path(volume, staging)
        existing = self._attachment_at(volume, target)
        if existing is not None:
            _check_staged_use(volume, existing)
            return  # already staged here: idempotent
        if mount.is_mounted(target) or mount.is_mounted(staging):
            raise _occupied(staging, "staging_target_path")
        _check_empty(staging, "staging_target_path", allowed=STAGED_DEVICE)
        if volume.mode is VolumeMode.BLOCK:
            # Read-only: the staged device is never written through; a read-write publication
            # makes the shared loop device writable (see `amber.pool.attach`).
            self._pool.attachments.expose("volume", volume.name, target, read_only=True)
        else:
            self._pool.attachments.mount("volume", volume.name, staging, options=access.mount_flags)

    @rpc_errors()
    def NodeUnstageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        staging = params.validate_path("staging_target_path", request.staging_target_path)
        volume = self._objects.volume(request.volume_id)
        with self._lock(volume):
            target = _staged_path(volume, staging)
            if any(a.path == target for a in self._attachments(volume)):
                self._pool.attachments.release("volume", volume.name, target)
            if volume.mode is VolumeMode.BLOCK:
                _remove_created(target, directory=False)
        return csi_pb2.NodeUnstageVolumeResponse()

    # -- publish --------------------------------------------------------------------------

    @rpc_errors()
    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        target = params.validate_path("target_path", request.target_path)
        access = _capability(request)
        if not request.staging_target_path:
            raise FailedPrecondition(
                "staging_target_path is required: call NodeStageVolume first "
                "(this plugin has STAGE_UNSTAGE_VOLUME)"
            )
        staging = params.validate_path("staging_target_path", request.staging_target_path)
        _check_apart(target, staging)
        volume = self._objects.volume(request.volume_id)
        _fits(access, volume)
        read_only = request.readonly or access.read_only or "ro" in access.mount_flags
        with self._lock(volume):
            self._publish_locked(volume, staging, target, access, read_only)
        return csi_pb2.NodePublishVolumeResponse()

    def _publish_locked(
        self, volume: Volume, staging: Path, target: Path, access: caps.Access, read_only: bool
    ) -> None:
        staged = _staged_path(volume, staging)
        attachments = self._attachments(volume)
        if not any(a.path == staged for a in attachments) or not mount.is_mounted(staged):
            raise FailedPrecondition(
                f"volume {volume.name!r} is not staged at {staging}: call NodeStageVolume first"
            )
        current = self._attachment_at(volume, target)
        if current is not None:
            if current.read_only != read_only:
                raise AlreadyExists(
                    f"volume {volume.name!r} is already published at {target} "
                    f"{'read-only' if current.read_only else 'read-write'}"
                )
            return  # already published here: idempotent
        if mount.is_mounted(target):
            raise _occupied(target, "target_path")
        others = [a for a in attachments if a.path not in (staged, target)]
        _check_other_publications(volume, access, read_only, others)
        self._publish_new(volume, target, access, read_only)

    def _publish_new(
        self, volume: Volume, target: Path, access: caps.Access, read_only: bool
    ) -> None:
        created = _create_target(target, directory=volume.mode is VolumeMode.FILESYSTEM)
        try:
            if volume.mode is VolumeMode.BLOCK:
                self._pool.attachments.expose("volume", volume.name, target, read_only=read_only)
            else:
                flags = [f for f in access.mount_flags if f in PUBLISH_FLAGS]
                self._pool.attachments.mount(
                    "volume", volume.name, target, read_only=read_only, options=flags
                )
        except BaseException:
            if created:
                _remove_created(target, directory=volume.mode is VolumeMode.FILESYSTEM)
            raise

    @rpc_errors()
    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        target = params.validate_path("target_path", request.target_path)
        volume = self._objects.volume(request.volume_id)
        with self._lock(volume):
            if any(a.path == target for a in self._attachments(volume)):
                self._pool.attachments.release("volume", volume.name, target)
            _remove_created(target, directory=volume.mode is VolumeMode.FILESYSTEM)
        return csi_pb2.NodeUnpublishVolumeResponse()

    # -- stats and expansion --------------------------------------------------------------

    @rpc_errors()
    def NodeGetVolumeStats(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        path_text = _required(request.volume_path, "volume_path")
        volume = self._objects.volume(request.volume_id)
        attachment = self._find_use(volume, path_text)
        condition = health.attachment_condition(volume, attachment, self._pool.space_problem())
        usage: list[Any] = []
        try:
            if attachment.kind is AttachmentKind.DEVICE:
                usage = health.device_usage(attachment.loop_device)
            else:
                usage = health.mount_usage(attachment.path)
        except OSError:
            if not condition.abnormal:
                raise
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=usage, volume_condition=health.to_proto(condition)
        )

    def _find_use(self, volume: Volume, path_text: str) -> Attachment:
        """The staged or published use of `volume` at a path (NOT_FOUND when there is none)."""
        try:
            path = params.validate_path("volume_path", path_text)
        except InvalidArgument as e:
            raise NotFound(f"volume {volume.name!r} is not available at {path_text!r}") from e
        for candidate in (path, path / STAGED_DEVICE):
            found = next((a for a in self._attachments(volume) if a.path == candidate), None)
            if found is not None:
                return found
        raise NotFound(f"volume {volume.name!r} is not staged or published at {path}")

    @rpc_errors()  # no room in the pool: RESOURCE_EXHAUSTED, as ControllerExpandVolume says why
    def NodeExpandVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        _required(request.volume_id, "volume_id")
        path_text = _required(request.volume_path, "volume_path")
        volume = self._objects.volume(request.volume_id)
        params.validate_path("volume_path", path_text)
        if request.HasField("volume_capability"):
            access = caps.parse_capability(request.volume_capability)
            if (reason := caps.mismatch(access, volume)) is not None:
                raise InvalidArgument(reason)
        required, limit = params.parse_range(
            request.capacity_range, present=request.HasField("capacity_range")
        )
        target = params.expansion_target(required, limit, volume.size) if required or limit else 0
        with self._lock(volume):
            grown = self._pool.volumes.expand(volume.name, max(target, volume.size))
            self._check_grown(grown)
        return csi_pb2.NodeExpandVolumeResponse(capacity_bytes=grown.size)

    def _check_grown(self, volume: Volume) -> None:
        """FAILED_PRECONDITION when the mounted filesystem could not grow online."""
        mounted = any(a.kind is AttachmentKind.MOUNT for a in self._attachments(volume))
        if volume.mode is VolumeMode.FILESYSTEM and volume.fs_resize_pending and mounted:
            raise FailedPrecondition(
                f"volume {volume.name!r} grew to {volume.size} bytes, but the kernel refused to "
                f"grow its mounted {volume.fs_type} filesystem (online ext4 resize needs "
                "CAP_SYS_RESOURCE); the filesystem grows when the volume is next staged"
            )

    # -- info -----------------------------------------------------------------------------

    @rpc_errors()
    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=node_capabilities(DriverMode.NODE))

    @rpc_errors()
    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetInfoResponse(
            node_id=self._objects.node_id,
            max_volumes_per_node=self._max_volumes,
            accessible_topology=csi_pb2.Topology(
                segments=params.node_topology(self._objects.node_id)
            ),
        )


class ResizerNodeServicer(csi_pb2_grpc.NodeServicer):  # type: ignore[misc]
    """The controller-mode Node service: it only tells csi-resizer that nodes grow volumes."""

    @rpc_errors()
    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=node_capabilities(DriverMode.CONTROLLER)
        )


def _check_other_publications(
    volume: Volume, access: caps.Access, read_only: bool, others: list[Attachment]
) -> None:
    """The spec's table for a second NodePublishVolume at another target path."""
    if not others:
        return
    where = ", ".join(str(a.path) for a in others)
    if not access.multi_writer:
        raise FailedPrecondition(
            f"volume {volume.name!r} is already published at {where}; access mode "
            f"{access.mode_name} allows one publication (SINGLE_NODE_MULTI_WRITER allows more)"
        )
    if volume.mode is VolumeMode.BLOCK and any(a.read_only != read_only for a in others):
        raise FailedPrecondition(
            f"block volume {volume.name!r} is published at {where} "
            f"{'read-write' if read_only else 'read-only'}; Amber cannot publish one block "
            "volume read-only and read-write at the same time"
        )


def _check_staged_use(volume: Volume, existing: Attachment) -> None:
    """The spec's ALREADY_EXISTS row of NodeStageVolume ("published at the staging path but
    incompatible"): a staged filesystem is always mounted read-write (read-only access is a
    matter of its publications), so a read-only mount of the volume there is a publication, not
    a staging; Amber cannot tell a read-write publication from a staging, and takes it as one."""
    if volume.mode is VolumeMode.FILESYSTEM and existing.read_only:
        raise AlreadyExists(
            f"volume {volume.name!r} is published read-only at {existing.path}, not staged "
            "there: stage it at a staging path of its own"
        )


def _check_apart(target: Path, staging: Path) -> None:
    """A publication lives outside the staging path: on it, inside it (the staged filesystem,
    or a block volume's device file) or around it, it would hide or stack on the staged mount."""
    if target == staging or staging in target.parents or target in staging.parents:
        raise InvalidArgument(
            f"target_path {target} must not be, lie inside or contain staging_target_path "
            f"{staging}: publish the volume at a path of its own"
        )


@contextmanager
def _path_errors(field: str, path: Path) -> Iterator[None]:
    """An OS error on a path the CO chose (EACCES, EPERM, ENOTDIR, ELOOP...) is the request's
    problem, not the plugin's: FAILED_PRECONDITION naming the path, not INTERNAL."""
    try:
        yield
    except OSError as e:
        raise FailedPrecondition(f"{field} {path} cannot be used: {e.strerror or e}") from e


def _create_target(target: Path, *, directory: bool) -> bool:
    """Create the publish target (the SP's job); True if it was created here.

    An existing target is accepted only when it is what Amber would have made and still empty
    (an empty directory, or an empty file for a device): never bind over data.
    """
    with _path_errors("target_path", target):
        return _create_target_unchecked(target, directory=directory)


def _create_target_unchecked(target: Path, *, directory: bool) -> bool:
    if not target.parent.is_dir():
        raise FailedPrecondition(
            f"the parent directory of target_path {target} does not exist: the CO creates it"
        )
    try:
        if directory:
            target.mkdir(mode=0o750)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        st = os.lstat(target)
        wanted = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
        if not wanted:
            raise FailedPrecondition(
                f"target_path {target} exists and is not a "
                f"{'directory' if directory else 'regular file'}"
            ) from None
        if directory:
            _check_empty(target, "target_path")
        elif st.st_size:
            raise FailedPrecondition(
                f"target_path {target} exists and is not empty: Amber never binds over data"
            ) from None
        return False
    return True


def _check_empty(directory: Path, field: str, allowed: str = "") -> None:
    """FAILED_PRECONDITION unless `directory` is empty (but for our own `allowed` file)."""
    with _path_errors(field, directory), os.scandir(directory) as entries:
        others = [e.name for e in entries if e.name != allowed]
    if others:
        raise FailedPrecondition(
            f"{field} {directory} is not empty: Amber never mounts over existing data"
        )


def _remove_created(path: Path, *, directory: bool) -> None:
    """Remove a target the plugin creates: an empty directory (for a filesystem) or an empty
    regular file (for a device), never anything else, never a mount point."""
    if mount.is_mounted(path):
        return
    try:
        st = os.lstat(path)
        if directory and stat.S_ISDIR(st.st_mode):
            path.rmdir()
        elif not directory and stat.S_ISREG(st.st_mode) and st.st_size == 0:
            path.unlink()
    except OSError as e:
        # Gone (or never there: ENOTDIR), or not ours to remove: nothing to do.
        if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENOTEMPTY, errno.EBUSY):
            raise FailedPrecondition(f"{path} cannot be removed: {e.strerror or e}") from e
