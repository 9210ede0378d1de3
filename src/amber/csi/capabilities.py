"""What each deployment mode advertises, and why.

Amber runs in two modes (see docs/csi.md):

- **node** (`amber node`, a DaemonSet): Identity + Controller + Node on one socket, beside
  `csi-provisioner --node-deployment`, `csi-snapshotter --node-deployment` and
  `node-driver-registrar`. Its controller does everything that needs the node's pool: create,
  delete, clone, restore, snapshot, list, capacity, condition -- and EXPAND_VOLUME, which only
  matters to a client talking to the node socket directly (`amber csi expand`, csi-sanity): no
  Kubernetes component calls ControllerExpandVolume on the node sockets.
- **controller** (`amber controller`, a small Deployment): the endpoint of `csi-resizer`. The
  resizer needs the CONTROLLER_SERVICE plugin capability; when ControllerGetCapabilities lacks
  EXPAND_VOLUME and NodeGetCapabilities (asked on the same socket) has it, the resizer uses its
  "trivial resizer": it records the new size on the PV and leaves all the work to kubelet's
  NodeExpandVolume, on the node that holds the volume -- the only place where an Amber volume
  can grow. If this mode announced EXPAND_VOLUME, the resizer would call ControllerExpandVolume
  here, where no pool exists, and expansion would fail. So this mode announces no controller
  RPC capability at all, and its Node service answers only NodeGetCapabilities.

Both modes announce the same plugin capabilities (CONTROLLER_SERVICE,
VOLUME_ACCESSIBILITY_CONSTRAINTS, online expansion, GROUP_CONTROLLER_SERVICE,
SNAPSHOT_METADATA_SERVICE): the spec wants every instance of one plugin version to return the
same set, whichever RPCs it serves. Group snapshots and changed-block metadata need the node's
pool, so only node mode serves the GroupController (reached through `csi-snapshotter
--node-deployment`) and SnapshotMetadata; nothing calls them on the controller endpoint.
"""

from __future__ import annotations

import enum
from typing import Any, Final

from amber.csi._proto import csi_pb2
from amber.csi.identity import PluginCapabilities, VolumeExpansion

__all__ = [
    "DriverMode",
    "controller_capabilities",
    "group_controller_capabilities",
    "node_capabilities",
    "plugin_capabilities",
]


class DriverMode(enum.Enum):
    """Which services one `amber` process serves."""

    NODE = "node"
    """Identity + Controller + Node: the per-node DaemonSet."""
    CONTROLLER = "controller"
    """Identity + a capability-only Controller/Node: the endpoint csi-resizer talks to."""


_CRPC = csi_pb2.ControllerServiceCapability.RPC
_NRPC = csi_pb2.NodeServiceCapability.RPC
_GRPC = csi_pb2.GroupControllerServiceCapability.RPC

NODE_MODE_CONTROLLER_RPCS: Final = (
    _CRPC.CREATE_DELETE_VOLUME,
    _CRPC.CREATE_DELETE_SNAPSHOT,
    _CRPC.LIST_VOLUMES,
    _CRPC.LIST_SNAPSHOTS,
    _CRPC.GET_CAPACITY,
    _CRPC.CLONE_VOLUME,
    _CRPC.EXPAND_VOLUME,
    _CRPC.GET_VOLUME,
    _CRPC.VOLUME_CONDITION,
    _CRPC.SINGLE_NODE_MULTI_WRITER,
)
NODE_RPCS: Final = (
    _NRPC.STAGE_UNSTAGE_VOLUME,
    _NRPC.GET_VOLUME_STATS,
    _NRPC.EXPAND_VOLUME,
    _NRPC.VOLUME_CONDITION,
    _NRPC.SINGLE_NODE_MULTI_WRITER,
)


def plugin_capabilities(mode: DriverMode = DriverMode.CONTROLLER) -> PluginCapabilities:
    """The same in both modes, as the spec requires of one plugin version."""
    return PluginCapabilities(
        controller_service=True,
        accessibility_constraints=True,
        volume_expansion=VolumeExpansion.ONLINE,
        group_controller_service=True,
        snapshot_metadata_service=True,
    )


def controller_capabilities(mode: DriverMode) -> list[Any]:
    """ControllerGetCapabilities for `mode`."""
    rpcs = NODE_MODE_CONTROLLER_RPCS if mode is DriverMode.NODE else ()
    return [csi_pb2.ControllerServiceCapability(rpc=_CRPC(type=rpc)) for rpc in rpcs]


def group_controller_capabilities() -> list[Any]:
    """GroupControllerGetCapabilities (node mode only)."""
    rpc = _GRPC(type=_GRPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT)
    return [csi_pb2.GroupControllerServiceCapability(rpc=rpc)]


def node_capabilities(mode: DriverMode) -> list[Any]:
    """NodeGetCapabilities for `mode`: the controller endpoint reports node expansion only."""
    rpcs = NODE_RPCS if mode is DriverMode.NODE else (_NRPC.EXPAND_VOLUME,)
    return [csi_pb2.NodeServiceCapability(rpc=_NRPC(type=rpc)) for rpc in rpcs]
