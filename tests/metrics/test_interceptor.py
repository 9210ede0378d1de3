"""The metrics interceptor inside a real CSIServer, called over gRPC on a real unix socket:
every call counted once, under the code the client receives."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.metrics import MetricsInterceptor
from amber.csi.server import CSIServer, registration_for

TIMEOUT = 30.0


class Identity(csi_pb2_grpc.IdentityServicer):  # type: ignore[misc]
    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(name="amber.csi.dev", vendor_version="test")

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:
        raise RuntimeError("a bug no servicer mapped")

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")


class Metadata(csi_pb2_grpc.SnapshotMetadataServicer):  # type: ignore[misc]
    def GetMetadataAllocated(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        for _ in range(3):
            yield csi_pb2.GetMetadataAllocatedResponse(volume_capacity_bytes=1)

    def GetMetadataDelta(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        yield csi_pb2.GetMetadataDeltaResponse(volume_capacity_bytes=1)
        context.abort(grpc.StatusCode.NOT_FOUND, "the base snapshot is gone")


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[list[tuple[str, str]], grpc.Channel]]:
    calls: list[tuple[str, str, float]] = []
    server = CSIServer(
        f"unix://{tmp_path / 'csi.sock'}",
        [registration_for(Identity()), registration_for(Metadata())],
        grace=5.0,
        metrics=MetricsInterceptor(record=lambda m, c, s: calls.append((m, c, s))),
    )
    server.start()
    channel = grpc.insecure_channel(f"unix://{tmp_path / 'csi.sock'}")
    try:
        yield calls, channel  # type: ignore[misc]
    finally:
        channel.close()
        server.stop()
    assert all(seconds >= 0 for _, _, seconds in calls)


def code_of(call: Any) -> grpc.StatusCode:
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_each_call_is_counted_under_the_code_the_client_gets(recorded: Any) -> None:
    calls, channel = recorded
    identity = csi_pb2_grpc.IdentityStub(channel)
    metadata = csi_pb2_grpc.SnapshotMetadataStub(channel)
    controller = csi_pb2_grpc.ControllerStub(channel)
    seen = [
        code_of(lambda: identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=TIMEOUT)),
        code_of(lambda: identity.Probe(csi_pb2.ProbeRequest(), timeout=TIMEOUT)),
        code_of(
            lambda: identity.GetPluginCapabilities(
                csi_pb2.GetPluginCapabilitiesRequest(), timeout=TIMEOUT
            )
        ),
        code_of(
            lambda: metadata.GetMetadataAllocated(
                csi_pb2.GetMetadataAllocatedRequest(), timeout=TIMEOUT
            )
        ),
        code_of(
            lambda: metadata.GetMetadataDelta(csi_pb2.GetMetadataDeltaRequest(), timeout=TIMEOUT)
        ),
        # A service this server does not register: gRPC answers, no handler, nothing counted.
        code_of(
            lambda: controller.ControllerGetCapabilities(
                csi_pb2.ControllerGetCapabilitiesRequest(), timeout=TIMEOUT
            )
        ),
    ]
    assert [code.name for code in seen] == [
        "OK",
        "INTERNAL",
        "FAILED_PRECONDITION",
        "OK",
        "NOT_FOUND",
        "UNIMPLEMENTED",
    ]
    assert [(method, code) for method, code, _ in calls] == [
        ("GetPluginInfo", "OK"),
        ("Probe", "INTERNAL"),
        ("GetPluginCapabilities", "FAILED_PRECONDITION"),
        ("GetMetadataAllocated", "OK"),
        ("GetMetadataDelta", "NOT_FOUND"),
    ]
