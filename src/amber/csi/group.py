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
- Group snapshot classes of `type: backup` are refused with INVALID_ARGUMENT for now.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from amber.csi import params
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.capabilities import group_controller_capabilities
from amber.csi.errors import rpc_errors
from amber.csi.ids import ForeignObject
from amber.csi.objects import LocalObjects, timestamp
from amber.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from amber.pool.groups import Group

__all__ = ["GroupControllerServicer"]

Code = grpc.StatusCode


class GroupControllerServicer(csi_pb2_grpc.GroupControllerServicer):  # type: ignore[misc]
    """CreateVolumeGroupSnapshot, GetVolumeGroupSnapshot, DeleteVolumeGroupSnapshot."""

    def __init__(self, objects: LocalObjects) -> None:
        self._objects = objects
        self._pool = objects.pool

    def _message(self, group: Group) -> Any:
        group_id = self._objects.group_id(group.name)
        return csi_pb2.VolumeGroupSnapshot(
            group_snapshot_id=group_id,
            snapshots=[self._objects.snapshot_message(m, group_id) for m in group.members],
            creation_time=timestamp(group.created),
            ready_to_use=True,
        )

    @rpc_errors()
    def GroupControllerGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GroupControllerGetCapabilitiesResponse(
            capabilities=group_controller_capabilities()
        )

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION})
    def CreateVolumeGroupSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = self._objects.group_name(request.name)
        if not request.source_volume_ids:
            raise InvalidArgument("source_volume_ids is required")
        wanted = params.parse_snapshot_parameters(request.parameters, dict(request.secrets))
        if wanted.backup:
            raise InvalidArgument(
                "group snapshot classes of type: backup are not supported yet; "
                "use type: local (the default)"
            )
        volumes = [self._volume_name(v) for v in request.source_volume_ids]
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
        group = self._find(request.group_snapshot_id)
        if group is None:
            raise NotFound(f"group snapshot {request.group_snapshot_id[:140]!r} does not exist")
        self._check_members(group, request.snapshot_ids)
        return csi_pb2.GetVolumeGroupSnapshotResponse(group_snapshot=self._message(group))

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION})
    def DeleteVolumeGroupSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
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
