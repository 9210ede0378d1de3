"""The CSI GroupController service of a node: group snapshots of volumes in this node's pool.

In Kubernetes a VolumeGroupSnapshot reaches it through `csi-snapshotter --node-deployment`
(feature gate CSIVolumeGroupSnapshot). A group snapshot is `amber.pool.groups`: every mounted
filesystem of the group frozen at once, every image reflinked, all thawed; its members are
ordinary local snapshots, so CreateVolume restores each like any other snapshot.

IDs: `amber:v1:grp:<node>:<group>` for the group, `amber:v1:snap:<node>:<member>` for its
members (see `amber.csi.ids`). The choices the spec leaves to the SP:

- All source volumes must be on this node: a volume of another node is FAILED_PRECONDITION
  ("cannot snapshot multiple volumes together"), an unknown one NOT_FOUND.
- `snapshot_ids` of Get and Delete must list exactly the group's members, in any order:
  otherwise INVALID_ARGUMENT ("snapshot list mismatch"), as Amber can detect it.
- A member cannot be deleted on its own (DeleteSnapshot answers FAILED_PRECONDITION), and it
  names its group in `group_snapshot_id`, as the spec then asks.
- Group snapshot classes of `type: backup` (with `target`, or the snapshotter secret, and
  `keepLocalSnapshot`, as for CreateSnapshot) upload every member as a backup snapshot
  (`amber.ops.groups`): the member IDs are backup snapshot IDs (restorable on any node
  that knows the target), and the group and its members are ready only when every member is
  committed. A failed member fails the group: Create and Get answer with its error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from amber.csi import params
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.capabilities import group_controller_capabilities
from amber.csi.errors import rpc_errors
from amber.csi.ids import ForeignObject
from amber.csi.objects import LocalObjects, timestamp
from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from amber.ops.snapshots import BackupSnapshots, GroupInfo
from amber.ops.targets import TargetUnknown
from amber.pool.groups import Group

__all__ = ["GroupControllerServicer"]

Code = grpc.StatusCode


class GroupControllerServicer(csi_pb2_grpc.GroupControllerServicer):  # type: ignore[misc]
    """CreateVolumeGroupSnapshot, GetVolumeGroupSnapshot, DeleteVolumeGroupSnapshot."""

    def __init__(self, objects: LocalObjects, backups: BackupSnapshots) -> None:
        self._objects = objects
        self._pool = objects.pool
        self._backups = backups

    def _message(self, group: Group) -> Any:
        group_id = self._objects.group_id(group.name)
        return csi_pb2.VolumeGroupSnapshot(
            group_snapshot_id=group_id,
            snapshots=[self._objects.snapshot_message(m, group_id) for m in group.members],
            creation_time=timestamp(group.created),
            ready_to_use=True,
        )

    def _backup_message(self, name: str, group: GroupInfo) -> Any:
        group_id = self._objects.group_id(name)
        members = []
        for info in group.members:
            created = timestamp_pb2.Timestamp()
            created.FromNanoseconds(int(info.created * 1e9))
            members.append(
                csi_pb2.Snapshot(
                    size_bytes=info.size,
                    snapshot_id=info.snapshot_id,
                    source_volume_id=info.source_volume_id,
                    creation_time=created,
                    ready_to_use=info.ready,
                    group_snapshot_id=group_id,
                )
            )
        created = timestamp_pb2.Timestamp()
        created.FromNanoseconds(int(group.created * 1e9))
        return csi_pb2.VolumeGroupSnapshot(
            group_snapshot_id=group_id,
            snapshots=members,
            creation_time=created,
            ready_to_use=group.ready,
        )

    @rpc_errors()
    def GroupControllerGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GroupControllerGetCapabilitiesResponse(
            capabilities=group_controller_capabilities()
        )

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION, TargetUnknown: Code.INVALID_ARGUMENT})
    def CreateVolumeGroupSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = self._objects.group_name(request.name)
        if not request.source_volume_ids:
            raise InvalidArgument("source_volume_ids is required")
        secrets = dict(request.secrets)
        wanted = params.parse_snapshot_parameters(request.parameters, secrets)
        volumes = [self._volume_name(v) for v in request.source_volume_ids]
        if wanted.backup:
            target = self._backups.target_of(wanted.target, secrets)
            info = self._backups.create_group(
                name,
                target,
                list(zip(volumes, request.source_volume_ids, strict=True)),
                keep_local=wanted.keep_local,
                name_limit=self._objects.member_name_limit(),
            )
            if info.failure is not None:
                raise info.failure
            message = self._backup_message(name, info)
            return csi_pb2.CreateVolumeGroupSnapshotResponse(group_snapshot=message)
        if self._backups.is_group(name):
            raise AlreadyExists(f"group snapshot {request.name!r} exists with a backup class")
        group = self._pool.groups.create(
            name, volumes, exist_ok=True, name_limit=self._objects.member_name_limit()
        )
        return csi_pb2.CreateVolumeGroupSnapshotResponse(group_snapshot=self._message(group))

    def _volume_name(self, volume_id: str) -> str:
        if not volume_id:
            raise InvalidArgument("source_volume_ids holds an empty volume ID")
        name = self._objects.volume_name_of(volume_id)
        if name is None or self._pool.volumes.find(name) is None:
            raise NotFound(f"source volume {volume_id[:140]!r} does not exist on this node")
        return name

    @rpc_errors()
    def GetVolumeGroupSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        backup = self._find_backup(request.group_snapshot_id)
        if backup is not None:
            name, info = backup
            message = self._backup_message(name, info)
            self._check_ids(message, request.snapshot_ids)
            if info.failure is not None:
                raise info.failure
            return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=message)
        group = self._find(request.group_snapshot_id)
        if group is None:
            raise NotFound(f"group snapshot {request.group_snapshot_id[:140]!r} does not exist")
        self._check_members(group, request.snapshot_ids)
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=self._message(group))

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION})
    def DeleteVolumeGroupSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        if self._delete_backup(request):
            return csi_pb2.DeleteVolumeGroupSnapshotResponse()
        group = self._find(request.group_snapshot_id, missing_ok=True)
        if group is not None:
            self._check_members(group, request.snapshot_ids)
            try:
                self._pool.groups.delete(group.name)
            except NotFound:
                pass  # deleted concurrently: what the caller wants
            except FailedPrecondition as e:
                raise FailedPrecondition(
                    f"group snapshot {request.group_snapshot_id!r} is in use: {e.message}"
                ) from e
        return csi_pb2.DeleteVolumeGroupSnapshotResponse()

    def _backup_name(self, group_id: str) -> str | None:
        if not group_id:
            raise InvalidArgument("group_snapshot_id is required")
        try:
            name = self._objects.group_name_of(group_id)
        except ForeignObject:
            return None
        return name if name is not None and self._backups.is_group(name) else None

    def _find_backup(self, group_id: str) -> tuple[str, GroupInfo] | None:
        name = self._backup_name(group_id)
        info = None if name is None else self._backups.group(name)
        return None if name is None or info is None else (name, info)

    def _delete_backup(self, request: Any) -> bool:
        """Delete a group of a backup class (False when the ID names none)."""
        name = self._backup_name(request.group_snapshot_id)
        if name is None:
            return False
        found = self._find_backup(request.group_snapshot_id)
        if found is not None:  # a failed group is deleted all the same
            self._check_ids(self._backup_message(*found), request.snapshot_ids)
        return self._backups.delete_group(name, dict(request.secrets))

    @staticmethod
    def _check_ids(message: Any, snapshot_ids: Sequence[str]) -> None:
        members = {s.snapshot_id for s in message.snapshots}
        if set(snapshot_ids) != members:
            raise InvalidArgument(
                f"snapshot_ids do not match the members of group snapshot "
                f"{message.group_snapshot_id!r}: it holds {', '.join(sorted(members))}"
            )

    def _find(self, group_id: str, *, missing_ok: bool = False) -> Group | None:
        """The group an ID names; None for an unknown ID (or one of another node, for Get)."""
        if not group_id:
            raise InvalidArgument("group_snapshot_id is required")
        try:
            name = self._objects.group_name_of(group_id)
        except ForeignObject:
            if missing_ok:
                raise  # a delete must not report success for a group it cannot reach
            return None
        return None if name is None else self._pool.groups.find(name)

    def _check_members(self, group: Group, snapshot_ids: Sequence[str]) -> None:
        members = {self._objects.snapshot_id(m.name) for m in group.members}
        given = set(snapshot_ids)
        if given != members:
            raise InvalidArgument(
                f"snapshot_ids do not match the members of group snapshot "
                f"{self._objects.group_id(group.name)!r}: it holds {', '.join(sorted(members))}"
            )
