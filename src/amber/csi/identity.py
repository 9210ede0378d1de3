"""The CSI Identity service: who the plugin is, what it offers, and whether it is healthy."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import grpc
from google.protobuf import wrappers_pb2

from amber import __version__
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.errors import rpc_errors
from amber.domain.errors import AmberError

__all__ = [
    "PLUGIN_NAME",
    "HealthCheck",
    "IdentityServicer",
    "PluginCapabilities",
    "VolumeExpansion",
]

PLUGIN_NAME: Final = "amber.csi.dev"
"""The driver name: `provisioner` of StorageClasses, `driver` of VolumeSnapshotClasses."""

HealthCheck = Callable[[], bool | None]
"""Raises a domain error when the plugin cannot serve (pool missing, metadata unreadable...);
returns False while it is still starting up (recovery running), None or True when ready."""


class VolumeExpansion(enum.Enum):
    """How volumes can be grown (the spec's PluginCapability.VolumeExpansion)."""

    ONLINE = csi_pb2.PluginCapability.VolumeExpansion.ONLINE
    """While published on a node (Amber's mode: image, loop device and filesystem grow live)."""
    OFFLINE = csi_pb2.PluginCapability.VolumeExpansion.OFFLINE
    """Only while not published."""


@dataclass(frozen=True)
class PluginCapabilities:
    """What `GetPluginCapabilities` announces; differs between deployment modes.

    The node DaemonSet serves Controller and Node together; the controller-only Deployment
    (for csi-resizer) serves Controller only. Every mode of one version should announce the
    same set, as the spec asks, so build it from the same configuration everywhere.
    """

    controller_service: bool = True
    """The plugin serves the Controller service (CONTROLLER_SERVICE)."""
    accessibility_constraints: bool = True
    """Volumes live on one node and report it in `accessible_topology`
    (VOLUME_ACCESSIBILITY_CONSTRAINTS)."""
    volume_expansion: VolumeExpansion | None = VolumeExpansion.ONLINE
    """How volumes can be expanded, or None when they cannot."""
    group_controller_service: bool = False
    """The plugin serves the GroupController service (GROUP_CONTROLLER_SERVICE)."""
    snapshot_metadata_service: bool = False
    """The plugin serves the SnapshotMetadata service (SNAPSHOT_METADATA_SERVICE)."""

    def to_proto(self) -> list[Any]:
        """The capabilities as `csi.v1.PluginCapability` messages."""
        service = csi_pb2.PluginCapability.Service
        caps = []
        if self.controller_service:
            caps.append(csi_pb2.PluginCapability(service=service(type=service.CONTROLLER_SERVICE)))
        if self.accessibility_constraints:
            caps.append(
                csi_pb2.PluginCapability(
                    service=service(type=service.VOLUME_ACCESSIBILITY_CONSTRAINTS)
                )
            )
        if self.group_controller_service:
            caps.append(
                csi_pb2.PluginCapability(service=service(type=service.GROUP_CONTROLLER_SERVICE))
            )
        if self.snapshot_metadata_service:
            caps.append(
                csi_pb2.PluginCapability(service=service(type=service.SNAPSHOT_METADATA_SERVICE))
            )
        if self.volume_expansion is not None:
            expansion = csi_pb2.PluginCapability.VolumeExpansion(type=self.volume_expansion.value)
            caps.append(csi_pb2.PluginCapability(volume_expansion=expansion))
        return caps


def _always_ready() -> bool | None:
    return None


class IdentityServicer(csi_pb2_grpc.IdentityServicer):  # type: ignore[misc]  # generated, untyped
    """Identity service: plugin name and version, capabilities, and `Probe`.

    `Probe` runs `health_check`. A domain error it raises becomes FAILED_PRECONDITION, the code
    the spec gives for "plugin is not healthy" and "missing required dependency", with the
    error's message; a False return answers `ready: false` (still initializing).
    """

    def __init__(
        self,
        capabilities: PluginCapabilities,
        health_check: HealthCheck = _always_ready,
        *,
        name: str = PLUGIN_NAME,
        vendor_version: str = __version__,
        manifest: Mapping[str, str] | None = None,
    ) -> None:
        self._capabilities = capabilities
        self._health_check = health_check
        self._name = name
        self._vendor_version = vendor_version
        self._manifest = dict(manifest or {})

    @rpc_errors()
    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(
            name=self._name, vendor_version=self._vendor_version, manifest=self._manifest
        )

    @rpc_errors()
    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=self._capabilities.to_proto())

    @rpc_errors({AmberError: grpc.StatusCode.FAILED_PRECONDITION})
    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:
        ready = self._health_check()
        return csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=ready is not False))
