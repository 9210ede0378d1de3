"""One JSON line per RPC, and no secret in any log line or error message."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2, wrappers_pb2

from amber.csi._proto import csi_pb2
from amber.csi.logging import RpcLogInterceptor, redact, secret_values
from amber.logs import REDACTED, scrub
from tests.csi.plumbing import RPC_TIMEOUT, ServerProcess, running

Code = grpc.StatusCode

SECRETS = {
    "password": "pa55-word-value",
    "s3SK": "AKIA-SECRET-ACCESS-KEY",
    "username": "backup-operator",
}
SENSITIVE_PARAMETER = "token-in-parameters"
MOUNT_FLAG_SECRET = "flag-secret-value"


def volume_request(name: str, **parameters: str) -> Any:
    mount = csi_pb2.VolumeCapability.MountVolume(
        fs_type="xfs", mount_flags=["noatime", f"password={MOUNT_FLAG_SECRET}"]
    )
    capability = csi_pb2.VolumeCapability(
        mount=mount,
        access_mode=csi_pb2.VolumeCapability.AccessMode(
            mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
        ),
    )
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=1 << 30),
        volume_capabilities=[capability],
        parameters={"fsType": "xfs", "encryptionKey": SENSITIVE_PARAMETER, **parameters},
        secrets=SECRETS,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(tmp_path_factory.mktemp("log"), "--log-requests") as proc:
        yield proc


def lines_for(server: ServerProcess, method: str) -> list[dict[str, Any]]:
    return [line for line in server.rpc_lines() if line["method"] == method]


def test_one_line_per_call_with_method_ids_code_and_duration(server: ServerProcess) -> None:
    controller = server.controller()
    before = len(server.rpc_lines())
    reply = controller.CreateVolume(volume_request("ok"), timeout=RPC_TIMEOUT)
    with pytest.raises(grpc.RpcError) as caught:
        controller.CreateVolume(volume_request("pvc-1", **{"raise": "NotFound"}), timeout=5)
    assert caught.value.code() is Code.NOT_FOUND

    new = server.rpc_lines()[before:]
    assert len(new) == 2
    ok, failed = new
    assert ok["method"] == "/csi.v1.Controller/CreateVolume"
    assert ok["name"] == "ok"
    assert ok["volume_id"] == reply.volume.volume_id == "vol-ok"  # taken from the reply
    assert ok["code"] == "OK"
    assert "message" not in ok
    assert failed["name"] == "pvc-1"
    assert failed["code"] == "NOT_FOUND"
    assert failed["message"] == f"volume pvc-1 failed (password was {REDACTED})"
    for line in (ok, failed):
        assert isinstance(line["duration_ms"], float)
        assert 0 <= line["duration_ms"] < RPC_TIMEOUT * 1000


def test_secrets_never_reach_the_log_or_the_client(server: ServerProcess) -> None:
    request = volume_request("pvc-2", **{"raise": "AlreadyExists"})
    with pytest.raises(grpc.RpcError) as caught:
        server.controller().CreateVolume(request, timeout=RPC_TIMEOUT)
    assert caught.value.code() is Code.ALREADY_EXISTS

    (line,) = [
        x for x in lines_for(server, "/csi.v1.Controller/CreateVolume") if x["name"] == "pvc-2"
    ]
    logged = line["request"]
    # The request is in the log (so redaction really ran) ...
    assert logged["parameters"]["fsType"] == "xfs"
    assert logged["volume_capabilities"][0]["access_mode"]["mode"] == "SINGLE_NODE_WRITER"
    assert logged["capacity_range"]["required_bytes"] == 1 << 30
    # ... with every secret replaced, keys kept.
    assert logged["secrets"] == dict.fromkeys(SECRETS, REDACTED)
    assert logged["parameters"]["encryptionKey"] == REDACTED
    assert logged["volume_capabilities"][0]["mount"]["mount_flags"] == [
        "noatime",
        f"password={REDACTED}",
    ]
    output = server.all_output()
    for secret in [*SECRETS.values(), SENSITIVE_PARAMETER, MOUNT_FLAG_SECRET]:
        assert secret not in output
        assert secret not in caught.value.details()


# --- redact() and friends, in-process -----------------------------------------------------


def test_redact_walks_nested_messages_maps_and_well_known_types() -> None:
    stage = csi_pb2.NodeStageVolumeRequest(
        volume_id="vol-1",
        staging_target_path="/var/lib/kubelet/staging/vol-1",
        publish_context={"devicePath": "/dev/loop3", "apiToken": "tok-123456"},
        volume_context={"amber.csi.dev/node": "n1", "passwordHint": "hint-value"},
        secrets={"key": "luks-passphrase"},
        volume_capability=csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume()),
    )
    assert redact(stage) == {
        "volume_id": "vol-1",
        "publish_context": {"devicePath": "/dev/loop3", "apiToken": REDACTED},
        "staging_target_path": "/var/lib/kubelet/staging/vol-1",
        "volume_capability": {"block": {}},
        "secrets": {"key": REDACTED},
        "volume_context": {"amber.csi.dev/node": "n1", "passwordHint": REDACTED},
    }
    assert stage.secrets["key"] == "luks-passphrase"  # the message itself is untouched
    assert secret_values(stage) == {"tok-123456", "hint-value", "luks-passphrase"}

    snapshot = csi_pb2.CreateSnapshotResponse(
        snapshot=csi_pb2.Snapshot(
            snapshot_id="snap-1",
            creation_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
            ready_to_use=True,
        )
    )
    assert redact(snapshot) == {
        "snapshot": {
            "snapshot_id": "snap-1",
            "creation_time": "2023-11-14T22:13:20Z",
            "ready_to_use": True,
        }
    }
    probe = csi_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=False))
    assert redact(probe) == {"ready": False}


def test_redact_covers_every_secrets_field() -> None:
    for name in ("DeleteVolumeRequest", "ControllerModifyVolumeRequest", "GetMetadataDeltaRequest"):
        message = getattr(csi_pb2, name)(secrets={"user": "plain-looking-value"})
        assert redact(message)["secrets"] == {"user": REDACTED}


def test_scrub_replaces_secret_values_of_useful_length() -> None:
    text = "mount failed: passphrase luks-passphrase rejected for device 1"
    assert scrub(text, {"luks-passphrase", "1"}) == (
        "mount failed: passphrase *** rejected for device 1"
    )
    assert secret_values("not a message") == set()


class FakeContext:
    """Just enough of grpc.ServicerContext for the interceptor's bookkeeping."""

    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None
        self._details: bytes | None = None

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details.encode()
        raise Exception()  # what grpc does

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> bytes | None:
        return self._details

    def is_active(self) -> bool:
        return True


class FakeHandler:
    request_streaming = False
    response_streaming = False
    request_deserializer = None
    response_serializer = None

    def __init__(self, behavior: Any) -> None:
        self.unary_unary = behavior


class Details:
    method = "/csi.v1.Node/NodeUnstageVolume"


def test_interceptor_measures_with_the_injected_clock(caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter([10.0, 10.25])
    interceptor = RpcLogInterceptor(clock=lambda: next(ticks))
    handler = interceptor.intercept_service(
        lambda _: FakeHandler(lambda req, ctx: csi_pb2.NodeUnstageVolumeResponse()), Details()
    )
    request = csi_pb2.NodeUnstageVolumeRequest(volume_id="vol-9", staging_target_path="/s")
    with caplog.at_level(logging.DEBUG, logger="amber.csi.rpc"):
        handler.unary_unary(request, FakeContext())
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "NodeUnstageVolume OK"
    assert record.csi_rpc == {  # type: ignore[attr-defined]
        "method": "/csi.v1.Node/NodeUnstageVolume",
        "volume_id": "vol-9",
        "code": "OK",
        "duration_ms": 250.0,
    }


def test_interceptor_turns_an_unmapped_exception_into_internal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def explode(request: Any, context: Any) -> Any:
        raise OSError(f"umount {request.staging_target_path}/very-secret-dir failed")

    interceptor = RpcLogInterceptor()
    handler = interceptor.intercept_service(lambda _: FakeHandler(explode), Details())
    context = FakeContext()
    request = csi_pb2.NodeUnstageVolumeRequest(volume_id="vol-9", staging_target_path="/s")
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception):  # noqa: B017
        handler.unary_unary(request, context)
    assert context.code() is Code.INTERNAL
    assert b"very-secret-dir" not in (context.details() or b"")
    rpc = [r for r in caplog.records if r.name == "amber.csi.rpc"]
    assert [r.levelno for r in rpc] == [logging.ERROR]
    assert rpc[0].csi_rpc["code"] == "INTERNAL"  # type: ignore[attr-defined]
    assert any("OSError: umount" in r.getMessage() for r in caplog.records)


def test_every_log_line_is_one_json_object(server: ServerProcess) -> None:
    server.identity().Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    raw = server.rpc_log.read_text().splitlines()
    assert raw
    for text in raw:
        assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize(
    ("method", "code", "level"),
    [
        ("/csi.v1.Identity/Probe", None, logging.DEBUG),
        ("/csi.v1.Node/NodeUnstageVolume", None, logging.INFO),
        ("/csi.v1.Identity/Probe", Code.FAILED_PRECONDITION, logging.WARNING),
        ("/csi.v1.Node/NodeUnstageVolume", Code.DATA_LOSS, logging.ERROR),
    ],
)
def test_log_levels(
    caplog: pytest.LogCaptureFixture, method: str, code: Code | None, level: int
) -> None:
    def behavior(request: Any, context: Any) -> Any:
        if code is not None:
            context.abort(code, "failed")
        return csi_pb2.ProbeResponse()

    class At:
        pass

    details = At()
    details.method = method  # type: ignore[attr-defined]
    handler = RpcLogInterceptor().intercept_service(lambda _: FakeHandler(behavior), details)
    with caplog.at_level(logging.DEBUG, logger="amber.csi.rpc"):
        try:
            handler.unary_unary(csi_pb2.ProbeRequest(), FakeContext())
        except Exception:
            assert code is not None
    assert [r.levelno for r in caplog.records] == [level]
