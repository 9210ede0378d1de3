"""This node's volumes and snapshots, found from CSI IDs and named from CSI names.

`LocalObjects` is the one place that turns an ID into a pool object: an ID that does not parse
is "not found", an ID of another node raises `ForeignObject` (naming that node), and an ID of
this node is looked up in the pool.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from amber.csi._proto import csi_pb2
from amber.csi.ids import (
    ForeignObject,
    IdKind,
    format_id,
    name_budget,
    node_segment,
    parse_id,
    validate_node_id,
)
from amber.domain.errors import InvalidArgument, NotFound
from amber.domain.models import Snapshot, Volume
from amber.domain.names import pool_name
from amber.pool import Pool

__all__ = ["LocalObjects"]


class LocalObjects:
    """IDs and names of the volumes and snapshots in this node's pool."""

    def __init__(self, pool: Pool, node_id: str) -> None:
        self.pool = pool
        self.node_id = validate_node_id(node_id)
        self.segment = node_segment(node_id)

    # -- names and IDs --------------------------------------------------------------------

    def volume_id(self, name: str) -> str:
        return format_id(IdKind.VOLUME, self.segment, name)

    def snapshot_id(self, name: str) -> str:
        return format_id(IdKind.SNAPSHOT, self.segment, name)

    def group_id(self, name: str) -> str:
        return format_id(IdKind.GROUP, self.segment, name)

    def group_name(self, csi_name: str) -> str:
        """The pool name for a CreateVolumeGroupSnapshot `name`."""
        if not csi_name:
            raise InvalidArgument("name is required")
        return pool_name(csi_name, name_budget(IdKind.GROUP, self.segment))

    def member_name_limit(self) -> int:
        """Longest member snapshot name whose snapshot ID still fits."""
        return name_budget(IdKind.SNAPSHOT, self.segment)

    def group_name_of(self, group_id: str) -> str | None:
        """The pool name a group snapshot ID names on this node; None when not an ID of ours."""
        return self._local_name(group_id, IdKind.GROUP, "group snapshot")

    def volume_name(self, csi_name: str) -> str:
        """The pool name for a CreateVolume `name` (INVALID_ARGUMENT when empty or too long)."""
        if not csi_name:
            raise InvalidArgument("name is required")
        return pool_name(csi_name, name_budget(IdKind.VOLUME, self.segment))

    def snapshot_name(self, csi_name: str) -> str:
        """The pool name for a CreateSnapshot `name`."""
        if not csi_name:
            raise InvalidArgument("name is required")
        return pool_name(csi_name, name_budget(IdKind.SNAPSHOT, self.segment))

    # -- messages -------------------------------------------------------------------------

    def snapshot_message(self, snapshot: Snapshot, group_id: str | None = None) -> Any:
        """A local snapshot as `csi.v1.Snapshot`; a group member names its group, as the spec
        asks of a snapshot that cannot be deleted on its own."""
        if group_id is None:
            group = self.pool.groups.of_snapshot(snapshot)
            group_id = self.group_id(group.name) if group is not None else ""
        return csi_pb2.Snapshot(
            size_bytes=snapshot.size,
            snapshot_id=self.snapshot_id(snapshot.name),
            source_volume_id=self.volume_id(snapshot.volume_name),
            creation_time=timestamp(snapshot.created),
            ready_to_use=True,
            group_snapshot_id=group_id,
        )

    # -- resolving IDs --------------------------------------------------------------------

    def _local_name(self, object_id: str, kind: IdKind, what: str) -> str | None:
        ref = parse_id(object_id, kind)
        if ref is None:
            return None
        if ref.node != self.segment:
            raise ForeignObject(what, object_id, ref.node, self.node_id)
        return ref.name

    def volume_name_of(self, volume_id: str) -> str | None:
        """The pool name a volume ID names on this node; None when it is not an ID of ours."""
        return self._local_name(volume_id, IdKind.VOLUME, "volume")

    def snapshot_name_of(self, snapshot_id: str) -> str | None:
        """The pool name a snapshot ID names on this node; None when it is not an ID of ours."""
        return self._local_name(snapshot_id, IdKind.SNAPSHOT, "snapshot")

    def find_volume(self, volume_id: str) -> Volume | None:
        name = self.volume_name_of(volume_id)
        return None if name is None else self.pool.volumes.find(name)

    def find_snapshot(self, snapshot_id: str) -> Snapshot | None:
        name = self.snapshot_name_of(snapshot_id)
        return None if name is None else self.pool.snapshots.find(name)

    def volume(self, volume_id: str) -> Volume:
        """The volume an ID names: NOT_FOUND when unknown, ForeignObject on another node."""
        if not volume_id:
            raise InvalidArgument("volume_id is required")
        found = self.find_volume(volume_id)
        if found is None:
            raise NotFound(f"volume {_shown(volume_id)} does not exist on node {self.node_id!r}")
        return found

    def snapshot(self, snapshot_id: str) -> Snapshot:
        """The snapshot an ID names: NOT_FOUND when unknown, ForeignObject on another node."""
        if not snapshot_id:
            raise InvalidArgument("snapshot_id is required")
        found = self.find_snapshot(snapshot_id)
        if found is None:
            raise NotFound(
                f"snapshot {_shown(snapshot_id)} does not exist on node {self.node_id!r}"
            )
        return found


def timestamp(seconds: float) -> Any:
    """A `google.protobuf.Timestamp` of a Unix time."""
    created = timestamp_pb2.Timestamp()
    created.FromNanoseconds(int(seconds * 1e9))
    return created


def _shown(object_id: str) -> str:
    """An ID quoted safely for a message (hostile IDs may hold anything)."""
    return repr(object_id[:140].encode("unicode_escape").decode("ascii"))
