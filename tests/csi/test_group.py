"""The GroupController over gRPC against a real `amber node`: every MUST of the spec's
CreateVolumeGroupSnapshot, GetVolumeGroupSnapshot and DeleteVolumeGroupSnapshot."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain.units import MiB
from tests.cli.runner import amber_json
from tests.csi.driver import (
    NODE,
    RPC_TIMEOUT,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    mount_cap,
    pool_state,
    snapshot_source,
)

Code = grpc.StatusCode
_names = itertools.count()


@pytest.fixture(scope="module")
def group_stub(driver: DriverProcess) -> Iterator[Any]:
    with grpc.insecure_channel(driver.endpoint) as channel:
        yield csi_pb2_grpc.GroupControllerStub(channel)


def _create(stub: Any, name: str, volume_ids: list[str], **fields: Any) -> Any:
    request = csi_pb2.CreateVolumeGroupSnapshotRequest(
        name=name, source_volume_ids=volume_ids, **fields
    )
    return stub.CreateVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT).group_snapshot


def _get(stub: Any, group_id: str, snapshot_ids: list[str]) -> Any:
    request = csi_pb2.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, snapshot_ids=snapshot_ids
    )
    return stub.GetVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT).group_snapshot


def _delete(stub: Any, group_id: str, snapshot_ids: list[str]) -> None:
    request = csi_pb2.DeleteVolumeGroupSnapshotRequest(
        group_snapshot_id=group_id, snapshot_ids=snapshot_ids
    )
    stub.DeleteVolumeGroupSnapshot(request, timeout=RPC_TIMEOUT)


def _volumes(csi: Csi, count: int = 2, *, filesystem: bool = False) -> list[str]:
    n = next(_names)
    cap = mount_cap() if filesystem else block_cap()
    return [csi.create(f"gv{n}-{i}", 64 * MiB, cap=cap).volume_id for i in range(count)]


def _ids(group: Any) -> list[str]:
    return [s.snapshot_id for s in group.snapshots]


def test_the_node_announces_the_group_controller(csi: Csi, group_stub: Any) -> None:
    reply = csi.identity.GetPluginCapabilities(
        csi_pb2.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
    )
    services = {c.service.type for c in reply.capabilities if c.HasField("service")}
    assert csi_pb2.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in services
    caps = group_stub.GroupControllerGetCapabilities(
        csi_pb2.GroupControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT
    ).capabilities
    rpc = csi_pb2.GroupControllerServiceCapability.RPC
    assert [c.rpc.type for c in caps] == [rpc.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT]


def test_members_hold_one_moment_and_restore(csi: Csi, group_stub: Any, work: Path) -> None:
    volume_ids = _volumes(csi, filesystem=True)
    staged = []
    for i, volume_id in enumerate(volume_ids):
        staging = work / f"moment-{i}"
        staging.mkdir()
        csi.stage(volume_id, staging)
        (staging / "file").write_text(f"before {i}")
        staged.append(staging)

    group = _create(group_stub, "moment", volume_ids)
    for staging in staged:
        (staging / "file").write_text("after")

    assert group.group_snapshot_id == f"amber:v1:grp:{NODE}:moment"
    assert group.ready_to_use
    assert group.creation_time.seconds > 0
    assert [s.source_volume_id for s in group.snapshots] == volume_ids
    for snapshot in group.snapshots:
        assert snapshot.group_snapshot_id == group.group_snapshot_id
        assert snapshot.ready_to_use
        assert snapshot.snapshot_id.startswith(f"amber:v1:snap:{NODE}:")
    listed = {e.snapshot.snapshot_id: e.snapshot for e in csi.list_snapshots().entries}
    assert all(listed[i].group_snapshot_id == group.group_snapshot_id for i in _ids(group))
    for i, snapshot in enumerate(group.snapshots):
        restored = csi.create(
            f"moment-r{i}", 16 * MiB, source=snapshot_source(snapshot.snapshot_id)
        )
        target = work / f"moment-r{i}"
        target.mkdir()
        csi.stage(restored.volume_id, target)
        assert (target / "file").read_text() == f"before {i}"
        csi.unstage(restored.volume_id, target)
    for volume_id, staging in zip(volume_ids, staged, strict=True):
        csi.unstage(volume_id, staging)


def test_create_is_idempotent_and_refuses_other_volumes(csi: Csi, group_stub: Any) -> None:
    a, b, c = _volumes(csi, 3)
    first = _create(group_stub, "same", [a, b])

    again = _create(group_stub, "same", [b, a])

    assert again.group_snapshot_id == first.group_snapshot_id
    assert sorted(_ids(again)) == sorted(_ids(first))
    assert again.creation_time == first.creation_time
    message = expect_code(Code.ALREADY_EXISTS, lambda: _create(group_stub, "same", [a, c]))
    assert "already exists" in message
    assert _get(group_stub, first.group_snapshot_id, _ids(first)) == first


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("no name", Code.INVALID_ARGUMENT),
        ("no volumes", Code.INVALID_ARGUMENT),
        ("empty volume id", Code.INVALID_ARGUMENT),
        ("twice the same volume", Code.INVALID_ARGUMENT),
        ("unknown volume", Code.NOT_FOUND),
        ("volume of another node", Code.FAILED_PRECONDITION),
        ("unknown parameter", Code.INVALID_ARGUMENT),
        ("backup class", Code.INVALID_ARGUMENT),
    ],
)
def test_bad_create_requests_make_nothing(
    csi: Csi, group_stub: Any, csi_pool: Path, case: str, code: grpc.StatusCode
) -> None:
    (a,) = _volumes(csi, 1)
    requests: dict[str, tuple[str, list[str], dict[str, Any]]] = {
        "no name": ("", [a], {}),
        "no volumes": ("bad", [], {}),
        "empty volume id": ("bad", [a, ""], {}),
        "twice the same volume": ("bad", [a, a], {}),
        "unknown volume": ("bad", [a, f"amber:v1:vol:{NODE}:nope"], {}),
        "volume of another node": ("bad", [a, "amber:v1:vol:node-z:v"], {}),
        "unknown parameter": ("bad", [a], {"parameters": {"colour": "blue"}}),
        "backup class": ("bad", [a], {"parameters": {"type": "backup", "target": "t"}}),
    }
    name, volume_ids, fields = requests[case]
    before = pool_state(csi, csi_pool)

    expect_code(code, lambda: _create(group_stub, name, volume_ids, **fields))

    assert pool_state(csi, csi_pool) == before
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, f"amber:v1:grp:{NODE}:bad", []))


def test_get_answers_not_found_and_checks_the_snapshot_list(csi: Csi, group_stub: Any) -> None:
    group = _create(group_stub, "got", _volumes(csi))
    gid = group.group_snapshot_id

    assert _get(group_stub, gid, list(reversed(_ids(group)))) == group
    expect_code(Code.INVALID_ARGUMENT, lambda: _get(group_stub, "", _ids(group)))
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, f"amber:v1:grp:{NODE}:nope", []))
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, "not-an-id", []))
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, "amber:v1:grp:node-z:got", []))
    expect_code(Code.INVALID_ARGUMENT, lambda: _get(group_stub, gid, _ids(group)[:1]))
    wrong = [*_ids(group)[:1], f"amber:v1:snap:{NODE}:other"]
    expect_code(Code.INVALID_ARGUMENT, lambda: _get(group_stub, gid, wrong))


def test_delete_removes_the_members_and_is_idempotent(csi: Csi, group_stub: Any) -> None:
    group = _create(group_stub, "gone", _volumes(csi))
    gid, ids = group.group_snapshot_id, _ids(group)

    message = expect_code(Code.FAILED_PRECONDITION, lambda: csi.delete_snapshot(ids[0]))
    assert "member of the snapshot group" in message
    expect_code(Code.INVALID_ARGUMENT, lambda: _delete(group_stub, "", ids))
    expect_code(Code.INVALID_ARGUMENT, lambda: _delete(group_stub, gid, ids[:1]))
    expect_code(Code.FAILED_PRECONDITION, lambda: _delete(group_stub, "amber:v1:grp:node-z:g", []))
    assert _get(group_stub, gid, ids) == group

    _delete(group_stub, gid, ids)

    listed = {e.snapshot.snapshot_id for e in csi.list_snapshots().entries}
    assert not listed & set(ids)
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, gid, ids))
    _delete(group_stub, gid, ids)  # again: OK
    _delete(group_stub, f"amber:v1:grp:{NODE}:never", [])
    _delete(group_stub, "not-an-id", [])


def test_delete_of_a_group_in_use_is_failed_precondition(
    csi: Csi, group_stub: Any, csi_pool: Path, work: Path
) -> None:
    group = _create(group_stub, "busy", _volumes(csi, filesystem=True))
    gid, ids = group.group_snapshot_id, _ids(group)
    member = ids[0].rsplit(":", 1)[1]
    mounted = work / "busy-member"
    # A member mounted by `amber snapshot mount` (another process on the same pool) is in use.
    amber_json(csi_pool, "snapshot", "mount", member, str(mounted))

    message = expect_code(Code.FAILED_PRECONDITION, lambda: _delete(group_stub, gid, ids))

    assert "in use" in message
    assert _get(group_stub, gid, ids) == group
    amber_json(csi_pool, "snapshot", "unmount", member)
    _delete(group_stub, gid, ids)
    expect_code(Code.NOT_FOUND, lambda: _get(group_stub, gid, ids))
