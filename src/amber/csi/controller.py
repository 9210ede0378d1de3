"""The CSI Controller service of a node: volumes and snapshots in this node's pool.

In Kubernetes this service is reached through `csi-provisioner --node-deployment` and
`csi-snapshotter --node-deployment`: every node provisions its own volumes. CreateVolume maps a
content source to an instant reflink copy (clone or restore). Local volumes need no
ControllerPublish: they are used where they live.

Each RPC is validate -> call the pool -> build the reply; domain errors become the spec's codes
through `@rpc_errors`, with per-RPC overrides where the spec names another code for the case.
The pool's per-object locks serialize concurrent calls on one volume or snapshot, across threads
and processes, so repeated calls with one name converge to one object.

Backup snapshots (`type: backup` classes, IDs `amber:v1:bak:...`/`amber:v1:backup:...`) are
handed to `amber.ops.BackupSnapshots`: CreateSnapshot answers `ready_to_use=false`
until the upload is committed, and CreateVolume from one answers ABORTED ("operation pending")
while the restore runs in the background.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import timestamp_pb2, wrappers_pb2

from amber.csi import access as caps
from amber.csi import health, params
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.capabilities import DriverMode, controller_capabilities
from amber.csi.errors import rpc_errors
from amber.csi.ids import ForeignObject
from amber.csi.objects import LocalObjects
from amber.csi.paging import BadToken, page
from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from amber.domain.models import Snapshot, SourceKind, Volume, VolumeMode
from amber.domain.units import format_size
from amber.ops import sizes
from amber.ops.handles import parse_backup_id
from amber.ops.restores import RestoreWanted
from amber.ops.snapshots import BackupSnapshots, SnapshotInfo
from amber.ops.targets import TargetUnknown
from amber.pool import VolumeRequest

__all__ = ["ControllerServicer", "ResizerControllerServicer"]

Code = grpc.StatusCode
CONTEXT_MODE = "amber.csi.dev/mode"
CONTEXT_FSTYPE = "amber.csi.dev/fsType"


@dataclass(frozen=True)
class CreatePlan:
    """A CreateVolume request, checked: what to make, before the pool is touched."""

    name: str
    mode: VolumeMode
    fs_type: str | None
    """The filesystem the request names explicitly (capability or parameter), if any."""
    required: int
    limit: int
    source_kind: SourceKind
    source_name: str | None

    @property
    def effective_fs(self) -> str | None:
        """The filesystem the new volume gets when it has no source."""
        if self.mode is VolumeMode.BLOCK:
            return None
        return self.fs_type or "ext4"


class ControllerServicer(csi_pb2_grpc.ControllerServicer):  # type: ignore[misc]  # generated
    """Controller RPCs over this node's pool."""

    def __init__(self, objects: LocalObjects, backups: BackupSnapshots) -> None:
        self._objects = objects
        self._pool = objects.pool
        self._backups = backups

    # -- messages -------------------------------------------------------------------------

    def _topology(self) -> Any:
        return csi_pb2.Topology(segments=params.node_topology(self._objects.node_id))

    def _content_source(self, volume: Volume) -> Any:
        source = csi_pb2.VolumeContentSource
        if volume.source_kind is SourceKind.BACKUP:
            snapshot_id = self._backups.restored_from(volume.name)
            if snapshot_id is None:
                return None
            return source(snapshot=source.SnapshotSource(snapshot_id=snapshot_id))
        if volume.source_kind is SourceKind.SNAPSHOT and volume.source_name:
            snapshot_id = self._objects.snapshot_id(volume.source_name)
            return source(snapshot=source.SnapshotSource(snapshot_id=snapshot_id))
        if volume.source_kind is SourceKind.VOLUME and volume.source_name:
            volume_id = self._objects.volume_id(volume.source_name)
            return source(volume=source.VolumeSource(volume_id=volume_id))
        return None

    def _volume_message(self, volume: Volume) -> Any:
        context = {CONTEXT_MODE: volume.mode.value}
        if volume.fs_type:
            context[CONTEXT_FSTYPE] = volume.fs_type
        return csi_pb2.Volume(
            volume_id=self._objects.volume_id(volume.name),
            capacity_bytes=volume.size,
            volume_context=context,
            content_source=self._content_source(volume),
            accessible_topology=[self._topology()],
        )

    def _backup_message(self, info: SnapshotInfo) -> Any:
        created = timestamp_pb2.Timestamp()
        created.FromNanoseconds(int(info.created * 1e9))
        return csi_pb2.Snapshot(
            size_bytes=info.size,
            snapshot_id=info.snapshot_id,
            source_volume_id=info.source_volume_id,
            creation_time=created,
            ready_to_use=info.ready,
            group_snapshot_id="" if info.group is None else self._objects.group_id(info.group),
        )

    def _snapshot_message(self, snapshot: Snapshot) -> Any:
        return self._objects.snapshot_message(snapshot)

    # -- CreateVolume ---------------------------------------------------------------------

    @rpc_errors({ForeignObject: Code.INVALID_ARGUMENT})
    def CreateVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        plan = self._plan_create(request)
        volume = self._pool.volumes.find(plan.name)
        if volume is None and plan.source_kind is SourceKind.BACKUP:
            volume = self._restore(plan, request.secrets)
        volume = volume or self._create(plan)
        self._check_repeat(volume, plan, self._backups.restored_from(volume.name))
        return csi_pb2.CreateVolumeResponse(volume=self._volume_message(volume))

    def _plan_create(self, request: Any) -> CreatePlan:
        name = self._objects.volume_name(request.name)
        if request.mutable_parameters:
            raise InvalidArgument(
                "mutable_parameters are not supported (no MODIFY_VOLUME capability)"
            )
        accesses = caps.parse_capabilities(request.volume_capabilities)
        for access in accesses:
            if (reason := caps.unsupported_reason(access)) is not None:
                raise InvalidArgument(reason)
        mode = _single_mode(accesses)
        parameter_fs = params.parse_volume_parameters(request.parameters).fs_type
        fs_type = None if mode is VolumeMode.BLOCK else _single_fs(parameter_fs, accesses)
        params.check_accessibility(
            request.accessibility_requirements,
            request.HasField("accessibility_requirements"),
            self._objects.node_id,
        )
        required, limit = params.parse_range(
            request.capacity_range, present=request.HasField("capacity_range")
        )
        kind, source = self._source_of(request)
        return CreatePlan(name, mode, fs_type, required, limit, kind, source)

    def _source_of(self, request: Any) -> tuple[SourceKind, str | None]:
        if not request.HasField("volume_content_source"):
            return SourceKind.NONE, None
        source = request.volume_content_source
        kind = source.WhichOneof("type")
        if kind == "snapshot":
            snapshot_id = source.snapshot.snapshot_id
            if parse_backup_id(snapshot_id) is not None:
                return SourceKind.BACKUP, snapshot_id
            name = self._objects.snapshot_name_of(snapshot_id)
            if name is None:
                raise NotFound(f"source snapshot {snapshot_id[:140]!r} does not exist")
            return SourceKind.SNAPSHOT, name
        if kind == "volume":
            volume_id = source.volume.volume_id
            name = self._objects.volume_name_of(volume_id)
            if name is None:
                raise NotFound(f"source volume {volume_id[:140]!r} does not exist")
            return SourceKind.VOLUME, name
        raise InvalidArgument("volume_content_source names neither a snapshot nor a volume")

    def _source(self, plan: CreatePlan) -> Volume | Snapshot | None:
        """The content source, which must exist now (NOT_FOUND) and fit the plan."""
        if plan.source_name is None:
            return None
        source: Volume | Snapshot | None
        if plan.source_kind is SourceKind.SNAPSHOT:
            source = self._pool.snapshots.find(plan.source_name)
        else:
            source = self._pool.volumes.find(plan.source_name)
        if source is None:
            raise NotFound(
                f"source {plan.source_kind.value} {plan.source_name!r} does not exist on node "
                f"{self._objects.node_id!r}"
            )
        _check_source(plan, source)
        return source

    def _restore(self, plan: CreatePlan, secrets: Any) -> Volume:
        assert plan.source_name is not None
        wanted = RestoreWanted(
            plan.name, plan.source_name, plan.mode, plan.fs_type, plan.required, plan.limit
        )
        return self._backups.restore(wanted, dict(secrets))

    def _create(self, plan: CreatePlan) -> Volume:
        source = self._source(plan)
        fs_type = source.fs_type if source is not None else plan.effective_fs
        size = sizes.choose_size(
            plan.required,
            plan.limit,
            minimum=sizes.minimum_size(fs_type),
            source_size=source.size if source is not None else 0,
        )
        request = VolumeRequest(
            plan.name, size, plan.mode, fs_type or "ext4", plan.source_kind, plan.source_name
        )
        return self._pool.volumes.create(request, exist_ok=True)

    @staticmethod
    def _check_repeat(volume: Volume, plan: CreatePlan, restored_from: str | None) -> None:
        """ALREADY_EXISTS when the volume with this name does not fit the request."""
        problems = []
        if volume.mode is not plan.mode:
            problems.append(f"it is a {volume.mode.value} volume")
        source = volume.source_name
        if volume.source_kind is SourceKind.BACKUP:
            source = restored_from
        if (volume.source_kind, source) != (plan.source_kind, plan.source_name):
            problems.append("it was made from another content source")
        wanted_fs = plan.fs_type if plan.source_kind is not SourceKind.NONE else plan.effective_fs
        if wanted_fs is not None and volume.fs_type != wanted_fs:
            problems.append(f"it holds {volume.fs_type}")
        if volume.size < plan.required or (plan.limit and volume.size > plan.limit):
            problems.append(f"it is {format_size(volume.size)} ({volume.size} bytes)")
        if problems:
            raise AlreadyExists(
                f"a volume named {plan.name!r} already exists and does not match the request: "
                f"{'; '.join(problems)}"
            )

    # -- DeleteVolume, ValidateVolumeCapabilities ------------------------------------------

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION})
    def DeleteVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        name = self._objects.volume_name_of(request.volume_id)
        if name is not None:
            self._backups.cancel_restore(name)
        volume = self._objects.find_volume(request.volume_id)
        if volume is not None:
            self._delete_volume(volume)
        if name is not None:
            self._backups.forget_volume(name)
        return csi_pb2.DeleteVolumeResponse()

    def _delete_volume(self, volume: Volume) -> None:
        try:
            self._pool.volumes.delete(volume.name)
        except NotFound:
            pass  # deleted concurrently: what the caller wants
        except FailedPrecondition as e:
            uses = self._pool.attachments.list("volume", volume.name)
            where = ", ".join(str(a.path) for a in uses) or "a path on this node"
            raise FailedPrecondition(
                f"volume {volume.name!r} is in use (staged or published at {where}): "
                "unpublish and unstage it before deleting it"
            ) from e

    @rpc_errors()
    def ValidateVolumeCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        accesses = caps.parse_capabilities(request.volume_capabilities)
        volume = self._objects.volume(request.volume_id)
        reason = _first_problem(accesses, volume, request.parameters)
        if reason is not None:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=reason)
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_context=request.volume_context,
            volume_capabilities=request.volume_capabilities,
            parameters=request.parameters,
            mutable_parameters=request.mutable_parameters,
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)

    # -- ListVolumes, ControllerGetVolume, GetCapacity -------------------------------------

    def _condition(self, volume: Volume, pool_problem: str | None) -> Any:
        return health.to_proto(health.image_condition(volume, pool_problem))

    @rpc_errors({BadToken: Code.ABORTED})
    def ListVolumes(self, request: Any, context: grpc.ServicerContext) -> Any:
        volumes, next_token = page(
            self._pool.volumes.list(),
            lambda v: v.name,
            request.starting_token,
            request.max_entries,
        )
        status = csi_pb2.ListVolumesResponse.VolumeStatus
        problem = self._pool.space_problem()
        entries = [
            csi_pb2.ListVolumesResponse.Entry(
                volume=self._volume_message(v),
                status=status(volume_condition=self._condition(v, problem)),
            )
            for v in volumes
        ]
        return csi_pb2.ListVolumesResponse(entries=entries, next_token=next_token)

    @rpc_errors()
    def ControllerGetVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        volume = self._objects.volume(request.volume_id)
        status = csi_pb2.ControllerGetVolumeResponse.VolumeStatus(
            volume_condition=self._condition(volume, self._pool.space_problem())
        )
        return csi_pb2.ControllerGetVolumeResponse(
            volume=self._volume_message(volume), status=status
        )

    @rpc_errors()
    def GetCapacity(self, request: Any, context: grpc.ServicerContext) -> Any:
        fs_type = params.parse_volume_parameters(request.parameters).fs_type
        accesses = [
            caps.parse_capability(c, f"volume_capabilities[{i}]")
            for i, c in enumerate(request.volume_capabilities)
        ]
        block = any(a.mode is VolumeMode.BLOCK for a in accesses)
        fs_type = next((a.fs_type for a in accesses if a.fs_type), fs_type) or "ext4"
        minimum = sizes.minimum_size(None if block else fs_type)
        here = not request.HasField("accessible_topology") or params.topology_matches(
            request.accessible_topology.segments, self._objects.node_id
        )
        supported = all(caps.unsupported_reason(a) is None for a in accesses)
        status = self._pool.status()
        available = max(status.capacity - status.provisioned, 0) if here and supported else 0
        return csi_pb2.GetCapacityResponse(
            available_capacity=available,
            maximum_volume_size=wrappers_pb2.Int64Value(value=available),
            minimum_volume_size=wrappers_pb2.Int64Value(value=minimum),
        )

    # -- snapshots ------------------------------------------------------------------------

    @rpc_errors({TargetUnknown: Code.INVALID_ARGUMENT})
    def CreateSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        name = self._objects.snapshot_name(request.name)
        if not request.source_volume_id:
            raise InvalidArgument("source_volume_id is required")
        secrets = dict(request.secrets)
        wanted = params.parse_snapshot_parameters(request.parameters, secrets)
        volume_name = self._objects.volume_name_of(request.source_volume_id)
        if volume_name is None:
            raise NotFound(f"source volume {request.source_volume_id[:140]!r} does not exist")
        if wanted.backup:
            if self._pool.volumes.find(volume_name) is None:
                raise NotFound(f"source volume {request.source_volume_id[:140]!r} does not exist")
            target = self._backups.target_of(wanted.target, secrets)
            info = self._backups.create(
                request.name,
                target,
                volume_name,
                request.source_volume_id,
                keep_local=wanted.keep_local,
            )
            return csi_pb2.CreateSnapshotResponse(snapshot=self._backup_message(info))
        snapshot = self._pool.snapshots.create(volume_name, name, exist_ok=True)
        return csi_pb2.CreateSnapshotResponse(snapshot=self._snapshot_message(snapshot))

    @rpc_errors({ForeignObject: Code.FAILED_PRECONDITION})
    def DeleteSnapshot(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        ref = parse_backup_id(request.snapshot_id)
        if ref is not None:
            self._backups.delete(ref, dict(request.secrets))
            return csi_pb2.DeleteSnapshotResponse()
        snapshot = self._objects.find_snapshot(request.snapshot_id)
        if snapshot is not None:
            with contextlib.suppress(NotFound):  # deleted concurrently
                self._pool.snapshots.delete(snapshot.name)
        return csi_pb2.DeleteSnapshotResponse()

    @rpc_errors({BadToken: Code.ABORTED})
    def ListSnapshots(self, request: Any, context: grpc.ServicerContext) -> Any:
        listed: list[tuple[str, Any]] = [
            (s.name, self._snapshot_message(s))
            for s in self._filtered_snapshots(request.snapshot_id, request.source_volume_id)
        ]
        listed += [
            (info.sort_key, self._backup_message(info)) for info in self._filtered_backups(request)
        ]
        chosen, next_token = page(
            listed, lambda item: item[0], request.starting_token, request.max_entries
        )
        entries = [csi_pb2.ListSnapshotsResponse.Entry(snapshot=m) for _, m in chosen]
        return csi_pb2.ListSnapshotsResponse(entries=entries, next_token=next_token)

    def _filtered_backups(self, request: Any) -> list[SnapshotInfo]:
        """Backup snapshots matching the filters: this node's, or the one an ID names."""
        if request.snapshot_id:
            found = self._backups.lookup(request.snapshot_id, dict(request.secrets))
            chosen = [found] if found is not None else []
        else:
            chosen = self._backups.local(dict(request.secrets))
        if request.source_volume_id:
            chosen = [i for i in chosen if i.source_volume_id == request.source_volume_id]
        return chosen

    def _filtered_snapshots(self, snapshot_id: str, source_volume_id: str) -> list[Snapshot]:
        """Snapshots matching the filters; none for IDs that are unknown or on another node."""
        try:
            if snapshot_id and parse_backup_id(snapshot_id) is not None:
                return []
            if snapshot_id:
                found = self._objects.find_snapshot(snapshot_id)
                chosen = [found] if found is not None else []
            else:
                hidden = self._backups.local_snapshot_names()
                chosen = [s for s in self._pool.snapshots.list() if s.name not in hidden]
            if source_volume_id:
                volume_name = self._objects.volume_name_of(source_volume_id)
                chosen = [s for s in chosen if s.volume_name == volume_name]
        except ForeignObject:
            return []
        return chosen

    # -- ControllerExpandVolume, capabilities ---------------------------------------------

    # A pool without room is RESOURCE_EXHAUSTED, as for CreateVolume (the default table), not the
    # spec's OUT_OF_RANGE ("the capacity range is not allowed"; the caller must change it): the
    # size is allowed and fits once space is freed, and csi-resizer retries RESOURCE_EXHAUSTED
    # with back-off where it would mark OUT_OF_RANGE infeasible. Sizes over `limit_bytes` or
    # 1 PiB stay OUT_OF_RANGE (OutOfRange).
    @rpc_errors()
    def ControllerExpandVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.volume_id:
            raise InvalidArgument("volume_id is required")
        if not request.HasField("capacity_range"):
            raise InvalidArgument("capacity_range is required")
        volume = self._objects.volume(request.volume_id)
        if request.HasField("volume_capability"):
            access = caps.parse_capability(request.volume_capability)
            if (reason := caps.mismatch(access, volume)) is not None:
                raise InvalidArgument(reason)
        required, limit = params.parse_range(request.capacity_range, present=True)
        target = params.expansion_target(required, limit, volume.size)
        if target > volume.size or volume.fs_resize_pending:
            volume = self._pool.volumes.expand(volume.name, target)
        return csi_pb2.ControllerExpandVolumeResponse(
            capacity_bytes=volume.size,
            node_expansion_required=volume.mode is VolumeMode.FILESYSTEM
            and volume.fs_resize_pending,
        )

    @rpc_errors()
    def ControllerGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=controller_capabilities(DriverMode.NODE)
        )


class ResizerControllerServicer(csi_pb2_grpc.ControllerServicer):  # type: ignore[misc]
    """The controller-mode Controller service: capabilities only (see `amber.csi.capabilities`)."""

    @rpc_errors()
    def ControllerGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=controller_capabilities(DriverMode.CONTROLLER)
        )


def _single_mode(accesses: list[caps.Access]) -> VolumeMode:
    modes = {a.mode for a in accesses}
    if len(modes) > 1:
        raise InvalidArgument(
            "volume_capabilities ask for both a block device and a filesystem; "
            "a volume is one or the other"
        )
    return modes.pop()


def _single_fs(parameter: str | None, accesses: list[caps.Access]) -> str | None:
    named = {a.fs_type for a in accesses if a.fs_type}
    if parameter:
        named.add(parameter)
    if len(named) > 1:
        raise InvalidArgument(f"conflicting filesystems requested: {', '.join(sorted(named))}")
    return named.pop() if named else None


def _check_source(plan: CreatePlan, source: Volume | Snapshot) -> None:
    """INVALID_ARGUMENT when the source cannot become the requested volume."""
    what = "snapshot" if isinstance(source, Snapshot) else "volume"
    if source.mode is not plan.mode:
        raise InvalidArgument(
            f"source {what} {source.name!r} is a {source.mode.value} volume; a "
            f"{plan.mode.value} volume cannot be made from it"
        )
    if plan.fs_type is not None and source.fs_type != plan.fs_type:
        raise InvalidArgument(
            f"source {what} {source.name!r} holds {source.fs_type}, not the requested "
            f"{plan.fs_type}; a copy keeps its source's filesystem"
        )


def _first_problem(accesses: list[caps.Access], volume: Volume, parameters: Any) -> str | None:
    """Why a ValidateVolumeCapabilities request cannot be confirmed, or None."""
    for access in accesses:
        reason = caps.unsupported_reason(access) or caps.mismatch(access, volume)
        if reason is not None:
            return reason
    try:
        params.parse_volume_parameters(parameters)
    except InvalidArgument as e:
        return e.message
    return None
