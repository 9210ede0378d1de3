"""CSIServer and IdentityServicer over real sockets; the server runs in a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import amber
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.errors import status_for
from amber.csi.identity import IdentityServicer, PluginCapabilities, VolumeExpansion
from amber.csi.server import CSIServer, parse_endpoint, registration_for
from amber.domain import errors
from tests.csi.plumbing import (
    RPC_TIMEOUT,
    ServerProcess,
    launch,
    make_stale_socket,
    running,
    wait_for,
)

Code = grpc.StatusCode
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("srv")) as proc:
        yield proc


def create_volume(server: ServerProcess, name: str, **parameters: str) -> grpc.RpcError:
    request = csi_pb2.CreateVolumeRequest(
        name=name, parameters=parameters, secrets={"password": PASSWORD}
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.controller().CreateVolume(request, timeout=RPC_TIMEOUT)
    return caught.value


# --- Identity -----------------------------------------------------------------------------


def test_get_plugin_info(server: ServerProcess) -> None:
    info = server.identity().GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
    assert info.name == "amber.csi.dev"
    assert info.vendor_version == amber.__version__


def test_get_plugin_capabilities(server: ServerProcess) -> None:
    reply = server.identity().GetPluginCapabilities(
        csi_pb2.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
    )
    service = csi_pb2.PluginCapability.Service
    services = {c.service.type for c in reply.capabilities if c.HasField("service")}
    expansions = [
        c.volume_expansion.type for c in reply.capabilities if c.HasField("volume_expansion")
    ]
    assert services == {service.CONTROLLER_SERVICE, service.VOLUME_ACCESSIBILITY_CONSTRAINTS}
    assert expansions == [csi_pb2.PluginCapability.VolumeExpansion.ONLINE]


def test_capabilities_differ_by_mode() -> None:
    node_only = PluginCapabilities(controller_service=False, volume_expansion=None)
    assert [c.service.type for c in node_only.to_proto()] == [
        csi_pb2.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS
    ]
    offline = PluginCapabilities(volume_expansion=VolumeExpansion.OFFLINE).to_proto()
    assert offline[-1].volume_expansion.type == csi_pb2.PluginCapability.VolumeExpansion.OFFLINE


def test_probe_reports_health_from_the_check(server: ServerProcess) -> None:
    identity = server.identity()
    healthy = identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    assert healthy.HasField("ready")
    assert healthy.ready.value is True

    unhealthy = server.state_dir / "unhealthy"
    unhealthy.touch()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    finally:
        unhealthy.unlink()
    assert caught.value.code() is Code.FAILED_PRECONDITION
    assert "is not usable (test switch)" in caught.value.details()

    starting = server.state_dir / "starting"
    starting.touch()
    try:
        initializing = identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    finally:
        starting.unlink()
    assert initializing.HasField("ready")
    assert initializing.ready.value is False


# --- Error mapping over the wire -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        ("InvalidArgument", Code.INVALID_ARGUMENT),
        ("NotFound", Code.NOT_FOUND),
        ("AlreadyExists", Code.ALREADY_EXISTS),
        ("FailedPrecondition", Code.FAILED_PRECONDITION),
        ("OutOfSpace", Code.RESOURCE_EXHAUSTED),
        ("OutOfRange", Code.OUT_OF_RANGE),
        ("Busy", Code.ABORTED),
        ("Unavailable", Code.UNAVAILABLE),
        ("Corrupt", Code.DATA_LOSS),
        ("PermissionDenied", Code.PERMISSION_DENIED),
    ],
)
def test_domain_error_becomes_spec_code(server: ServerProcess, error: str, code: Code) -> None:
    failure = create_volume(server, "pvc-err", **{"raise": error})
    assert failure.code() is code
    assert failure.details() == "volume pvc-err failed (password was ***)"


def test_system_failure_is_internal_with_generic_message(server: ServerProcess) -> None:
    failure = create_volume(server, "pvc-sys", **{"raise": "SystemFailure"})
    assert failure.code() is Code.INTERNAL
    assert failure.details().startswith("internal error in CreateVolume; see the plugin log (ref ")
    assert "pvc-sys" not in failure.details()


def test_unexpected_exception_is_internal_and_logged_without_secret(server: ServerProcess) -> None:
    failure = create_volume(server, "crash")
    assert failure.code() is Code.INTERNAL
    assert "unexpected failure" not in failure.details()
    ref = failure.details().rsplit("(ref ", 1)[1].rstrip(")")
    stderr = server.stderr_log.read_text()
    assert f"internal error in CreateVolume (ref {ref})" in stderr
    assert "RuntimeError: unexpected failure while using password ***" in stderr
    assert PASSWORD not in server.all_output()


def test_per_rpc_override_changes_the_code(server: ServerProcess) -> None:
    request = csi_pb2.ControllerExpandVolumeRequest(
        volume_id="vol-1", capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 40)
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.controller().ControllerExpandVolume(request, timeout=RPC_TIMEOUT)
    assert caught.value.code() is Code.OUT_OF_RANGE  # CreateVolume maps OutOfSpace otherwise
    assert caught.value.details() == "the pool cannot grow vol-1"


def test_undecorated_method_cannot_leak_its_exception(server: ServerProcess) -> None:
    request = csi_pb2.DeleteVolumeRequest(volume_id="vol-1", secrets={"token": "t0ken-value"})
    with pytest.raises(grpc.RpcError) as caught:
        server.controller().DeleteVolume(request, timeout=RPC_TIMEOUT)
    assert caught.value.code() is Code.INTERNAL
    assert "leaked" not in caught.value.details()
    assert "t0ken-value" not in server.all_output()


def test_unimplemented_method_stays_unimplemented(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.controller().ListVolumes(csi_pb2.ListVolumesRequest(), timeout=RPC_TIMEOUT)
    assert caught.value.code() is Code.UNIMPLEMENTED


def test_override_wins_over_a_more_specific_default() -> None:
    probe_table = {errors.AmberError: Code.FAILED_PRECONDITION}
    assert status_for(errors.NotFound("no pool"), "Probe", probe_table) == (
        Code.FAILED_PRECONDITION,
        "no pool",
    )
    assert status_for(errors.NotFound("no vol"), "X") == (Code.NOT_FOUND, "no vol")
    code, message = status_for(ValueError("secret-ish detail"), "X")
    assert code is Code.INTERNAL
    assert "secret-ish" not in message


# --- Lifecycle -----------------------------------------------------------------------------


def refused_after_shutdown(server: ServerProcess) -> bool:
    channel = grpc.insecure_channel(server.target)
    try:
        csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
            csi_pb2.GetPluginInfoRequest(), timeout=1.0
        )
    except grpc.RpcError as e:
        return bool(e.code() is Code.UNAVAILABLE)
    finally:
        channel.close()
    return False


def test_sigterm_lets_the_call_in_flight_finish(tmp_path: Path) -> None:
    server = launch(tmp_path, grace=20.0)
    try:
        pending = server.controller().CreateVolume.future(
            csi_pb2.CreateVolumeRequest(name="slow"), timeout=30
        )
        wait_for((server.state_dir / "slow-started").exists, 10, "the slow call to start")

        server.signal(signal.SIGTERM)
        wait_for(lambda: refused_after_shutdown(server), 10, "new calls to be refused")
        assert not pending.done()  # still running: the grace period protects it
        assert server.proc.poll() is None

        (server.state_dir / "slow-release").touch()
        assert pending.result(timeout=10).volume.volume_id == "vol-slow"
        assert server.wait_exit() == 0
        assert not server.socket.exists()
    finally:
        server.close()
    lines = [line for line in server.rpc_lines() if line.get("name") == "slow"]
    assert [(line["code"], line["volume_id"]) for line in lines] == [("OK", "vol-slow")]


def test_second_sigterm_cancels_the_call_in_flight(tmp_path: Path) -> None:
    with running(tmp_path, grace=20.0) as server:
        pending = server.controller().CreateVolume.future(
            csi_pb2.CreateVolumeRequest(name="slow"), timeout=30
        )
        wait_for((server.state_dir / "slow-started").exists, 10, "the slow call to start")
        server.signal(signal.SIGTERM)
        wait_for(lambda: refused_after_shutdown(server), 10, "new calls to be refused")
        server.signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as caught:
            pending.result(timeout=10)
        # gRPC answers UNAVAILABLE to a call cancelled by shutdown: the CO retries it later.
        assert caught.value.code() is Code.UNAVAILABLE
        assert caught.value.details() == "Cancelling all calls"
        # The handler thread itself cannot be interrupted; once it returns, the process exits.
        (server.state_dir / "slow-release").touch()
        assert server.wait_exit() == 0
    assert "stopping now: cancelling the calls in flight" in server.stderr_log.read_text()


def test_sigint_stops_an_idle_server(tmp_path: Path) -> None:
    with running(tmp_path) as server:
        server.signal(signal.SIGINT)
        assert server.wait_exit() == 0
        assert not server.socket.exists()


def test_stale_socket_is_replaced_on_start(tmp_path: Path) -> None:
    stale = tmp_path / "run" / "csi.sock"
    make_stale_socket(stale)
    stale_identity = os.stat(stale).st_ctime_ns
    with running(tmp_path) as server:
        assert server.socket == stale
        assert os.stat(server.socket).st_ctime_ns != stale_identity
        info = server.identity().GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
        assert info.name == "amber.csi.dev"
    assert "removing stale socket" in server.stderr_log.read_text()


# --- Endpoints, in-process ----------------------------------------------------------------


def identity_only(endpoint: str) -> CSIServer:
    servicer = IdentityServicer(PluginCapabilities())
    return CSIServer(endpoint, [registration_for(servicer)], max_workers=2, grace=1.0)


def test_refuses_a_socket_another_server_answers_on(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "csi.sock"  # the parent directories are created
    first = identity_only(f"unix://{path}")
    first.start()
    try:
        with pytest.raises(errors.AlreadyExists, match="another server is listening"):
            identity_only(f"unix://{path}").start()
        with grpc.insecure_channel(f"unix://{path}") as channel:
            reply = csi_pb2_grpc.IdentityStub(channel).Probe(
                csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT
            )
        assert reply.ready.value is True
    finally:
        first.stop(1.0)
    assert first.wait(timeout=1.0)
    assert not path.exists()


def test_refuses_a_path_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "csi.sock"
    path.write_text("precious")
    with pytest.raises(errors.FailedPrecondition, match="is not a socket"):
        identity_only(f"unix://{path}").start()
    assert path.read_text() == "precious"


def test_tcp_endpoint_for_debugging() -> None:
    server = identity_only("tcp://127.0.0.1:0")
    server.start()
    try:
        assert server.port > 0
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            info = csi_pb2_grpc.IdentityStub(channel).GetPluginInfo(
                csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT
            )
        assert info.name == "amber.csi.dev"
    finally:
        server.stop(1.0)


def test_tcp_port_in_use_is_refused() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(errors.Unavailable, match="cannot listen"):
            identity_only(f"tcp://127.0.0.1:{port}").start()


@pytest.mark.parametrize(
    ("endpoint", "path"),
    [
        ("unix:///run/amber/csi.sock", "/run/amber/csi.sock"),
        ("unix:/run/amber/csi.sock", "/run/amber/csi.sock"),
    ],
)
def test_parse_unix_endpoints(endpoint: str, path: str) -> None:
    parsed = parse_endpoint(endpoint)
    assert parsed.path == Path(path)
    assert parsed.grpc_address == f"unix://{path}"


def test_parse_tcp_endpoints() -> None:
    assert parse_endpoint("tcp://127.0.0.1:10000").grpc_address == "127.0.0.1:10000"
    assert parse_endpoint("tcp://[::1]:10000").grpc_address == "[::1]:10000"


@pytest.mark.parametrize(
    "endpoint",
    [
        "unix://relative/csi.sock",
        "unix:csi.sock",
        "/run/amber/csi.sock",
        "http://127.0.0.1:80",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "tcp://:10000",
        "unix:///" + "x" * 120,
    ],
)
def test_rejects_bad_endpoints(endpoint: str) -> None:
    with pytest.raises(errors.InvalidArgument):
        parse_endpoint(endpoint)


def test_registration_needs_a_csi_servicer() -> None:
    identity = IdentityServicer(PluginCapabilities())
    assert registration_for(identity) == (csi_pb2_grpc.add_IdentityServicer_to_server, identity)
    with pytest.raises(errors.InvalidArgument, match="does not extend a CSI servicer"):
        registration_for(object())


def test_stop_before_start_and_twice_is_harmless(tmp_path: Path) -> None:
    server = identity_only(f"unix://{tmp_path / 'csi.sock'}")
    server.stop()
    assert server.wait(timeout=0.1)
    started = identity_only(f"unix://{tmp_path / 'other.sock'}")
    started.start()
    with futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: started.stop(1.0), range(2)))
    assert started.wait(timeout=1.0)
    assert not (tmp_path / "other.sock").exists()
