"""Identity and Controller RPCs against a real `amber node` process, checked against the spec.

Each test names the spec sentence (or csi-sanity case) it checks. Volumes are small (64 MiB
ext4, 300 MiB xfs): the pool is real, so every CreateVolume runs mkfs.
"""

from __future__ import annotations

import os
from concurrent import futures
from pathlib import Path

import pytest

import amber
from amber.csi._proto import csi_pb2
from amber.csi.ids import IdKind, parse_id
from amber.domain.units import GiB, MiB
from tests.csi.driver import (
    NODE,
    RPC_TIMEOUT,
    Code,
    Csi,
    DriverProcess,
    Mode,
    block_cap,
    expect_code,
    image_of,
    mount_cap,
    running_driver,
    snapshot_source,
    volume_source,
)

TOPOLOGY_KEY = "topology.amber.csi.dev/node"
OTHER = "node-b"
_CRPC = csi_pb2.ControllerServiceCapability.RPC


def other_node_id(kind: str, name: str) -> str:
    return f"amber:v1:{kind}:{OTHER}:{name}"


# --- Identity -----------------------------------------------------------------------------


def test_plugin_info_and_capabilities(csi: Csi) -> None:
    info = csi.identity.GetPluginInfo(csi_pb2.GetPluginInfoRequest(), timeout=RPC_TIMEOUT)
    assert (info.name, info.vendor_version) == ("amber.csi.dev", amber.__version__)
    caps = csi.identity.GetPluginCapabilities(
        csi_pb2.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
    ).capabilities
    service = csi_pb2.PluginCapability.Service
    assert {c.service.type for c in caps if c.HasField("service")} == {
        service.CONTROLLER_SERVICE,
        service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
        service.GROUP_CONTROLLER_SERVICE,
        service.SNAPSHOT_METADATA_SERVICE,
    }
    assert [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")] == [
        csi_pb2.PluginCapability.VolumeExpansion.ONLINE
    ]


def test_probe_checks_the_pool_metadata(csi: Csi, csi_pool: Path) -> None:
    assert csi.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT).ready.value is True
    db, hidden = csi_pool / "amber.db", csi_pool / "amber.db.away"
    os.rename(db, hidden)
    try:
        message = expect_code(
            Code.FAILED_PRECONDITION,
            lambda: csi.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT),
        )
    finally:
        os.rename(hidden, db)
    assert "is not usable" in message
    assert csi.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT).ready.value is True


def test_controller_capabilities_of_node_mode(csi: Csi) -> None:
    reply = csi.controller.ControllerGetCapabilities(
        csi_pb2.ControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT
    )
    assert {c.rpc.type for c in reply.capabilities} == {
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
    }


def test_controller_mode_serves_csi_resizer_only() -> None:
    """csi-resizer: CONTROLLER_SERVICE, no controller EXPAND_VOLUME, node EXPAND_VOLUME ->
    the trivial resizer, which leaves the growing to NodeExpandVolume on the volume's node."""
    with running_driver(None, mode="controller") as process:
        csi = process.client()
        plugin = csi.identity.GetPluginCapabilities(
            csi_pb2.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
        )
        services = {c.service.type for c in plugin.capabilities if c.HasField("service")}
        assert csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE in services
        # The spec: every instance of one plugin version announces the same set, whichever
        # RPCs it serves (only `amber node` serves GroupController and SnapshotMetadata).
        assert csi_pb2.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in services
        assert csi_pb2.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE in services
        controller = csi.controller.ControllerGetCapabilities(
            csi_pb2.ControllerGetCapabilitiesRequest(), timeout=RPC_TIMEOUT
        )
        assert list(controller.capabilities) == []
        node = csi.node.NodeGetCapabilities(
            csi_pb2.NodeGetCapabilitiesRequest(), timeout=RPC_TIMEOUT
        )
        assert [c.rpc.type for c in node.capabilities] == [
            csi_pb2.NodeServiceCapability.RPC.EXPAND_VOLUME
        ]
        assert csi.identity.Probe(csi_pb2.ProbeRequest(), timeout=RPC_TIMEOUT).ready.value
        expect_code(Code.UNIMPLEMENTED, lambda: csi.create("x"))
        expect_code(Code.UNIMPLEMENTED, lambda: csi.expand("amber:v1:vol:n:x", GiB))


# --- CreateVolume -------------------------------------------------------------------------


def test_create_volume_returns_id_size_topology_and_context(csi: Csi) -> None:
    volume = csi.create("pvc-basic", 100 * MiB + 1)
    assert volume.volume_id == f"amber:v1:vol:{NODE}:pvc-basic"
    assert volume.capacity_bytes == 101 * MiB  # whole MiB, at least what was required
    assert [dict(t.segments) for t in volume.accessible_topology] == [{TOPOLOGY_KEY: NODE}]
    assert dict(volume.volume_context) == {
        "amber.csi.dev/mode": "filesystem",
        "amber.csi.dev/fsType": "ext4",
    }
    assert not volume.HasField("content_source")


def test_create_volume_is_idempotent_by_name(csi: Csi) -> None:
    first = csi.create("pvc-twice", 64 * MiB)
    again = csi.create("pvc-twice", 64 * MiB)
    smaller_ask = csi.create("pvc-twice", 32 * MiB)  # an existing 64 MiB fits "at least 32"
    assert first == again
    assert smaller_ask.volume_id == first.volume_id


@pytest.mark.parametrize(
    ("change", "kwargs"),
    [
        ("larger", {"size": 128 * MiB}),
        ("limit below size", {"size": 16 * MiB, "limit": 32 * MiB}),
        ("block", {"cap": block_cap()}),
        ("xfs", {"cap": mount_cap("xfs"), "size": 300 * MiB}),
    ],
)
def test_incompatible_repeat_is_already_exists(csi: Csi, change: str, kwargs: dict) -> None:
    csi.create(f"pvc-incompat-{change.replace(' ', '-')}", 64 * MiB)
    message = expect_code(
        Code.ALREADY_EXISTS,
        lambda: csi.create(f"pvc-incompat-{change.replace(' ', '-')}", **kwargs),
    )
    assert "already exists and does not match" in message


def test_names_are_mapped_to_pool_names_stably(csi: Csi) -> None:
    odd = "My Volume: ünïcode/../and spaces" + "x" * 90  # 128 characters, not a pool name
    first = csi.create(odd)
    assert csi.create(odd).volume_id == first.volume_id
    ref = parse_id(first.volume_id, IdKind.VOLUME)
    assert ref is not None
    assert ref.name.startswith("My-Volume-")
    assert len(first.volume_id.encode()) <= 128
    assert csi.create("x" * 128).volume_id != first.volume_id


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"name": ""}, Code.INVALID_ARGUMENT),
        ({"name": "n" * 129}, Code.INVALID_ARGUMENT),
        ({"name": "pvc-nocaps", "caps": []}, Code.INVALID_ARGUMENT),
        (
            {"name": "pvc-multi", "caps": [mount_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)]},
            Code.INVALID_ARGUMENT,
        ),
        (
            {"name": "pvc-ro-many", "caps": [mount_cap(mode=Mode.MULTI_NODE_READER_ONLY)]},
            Code.INVALID_ARGUMENT,
        ),
        (
            {"name": "pvc-nomode", "caps": [csi_pb2.VolumeCapability(mount={})]},
            Code.INVALID_ARGUMENT,
        ),
        ({"name": "pvc-both", "caps": [mount_cap(), block_cap()]}, Code.INVALID_ARGUMENT),
        ({"name": "pvc-btrfs", "caps": [mount_cap("btrfs")]}, Code.INVALID_ARGUMENT),
        (
            {"name": "pvc-conflict", "caps": [mount_cap("xfs")], "params": {"fsType": "ext4"}},
            Code.INVALID_ARGUMENT,
        ),
        ({"name": "pvc-param", "params": {"tpye": "fast"}}, Code.INVALID_ARGUMENT),
        (
            {"name": "pvc-block-param", "caps": [block_cap()], "params": {"tpye": "fast"}},
            Code.INVALID_ARGUMENT,
        ),
        ({"name": "pvc-neg", "required": -1}, Code.INVALID_ARGUMENT),
        ({"name": "pvc-range", "required": 2 * GiB, "limit": GiB}, Code.OUT_OF_RANGE),
        ({"name": "pvc-tiny-limit", "limit": 4 * MiB}, Code.OUT_OF_RANGE),  # ext4 needs 8 MiB
        ({"name": "pvc-huge", "required": 2**62}, Code.OUT_OF_RANGE),
        ({"name": "pvc-too-big", "required": 1 << 49}, Code.RESOURCE_EXHAUSTED),
    ],
    ids=lambda v: v.name if isinstance(v, Code) else None,
)
def test_create_volume_errors(csi: Csi, request_fields: dict, code: Code) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name=request_fields["name"],
        volume_capabilities=request_fields.get("caps", [mount_cap()]),
        parameters=request_fields.get("params", {}),
    )
    if "required" in request_fields or "limit" in request_fields:
        request.capacity_range.required_bytes = request_fields.get("required", 0)
        request.capacity_range.limit_bytes = request_fields.get("limit", 0)
    before = {e.volume.volume_id for e in csi.list_volumes().entries}
    expect_code(code, lambda: csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT))
    assert {e.volume.volume_id for e in csi.list_volumes().entries} == before


def test_size_defaults_minimums_and_limits(csi: Csi) -> None:
    assert csi.create("pvc-default", 0).capacity_bytes == GiB
    assert csi.create("pvc-min-xfs", MiB, cap=mount_cap("xfs")).capacity_bytes == 300 * MiB
    assert csi.create("pvc-limited", 0, limit=100 * MiB + 5).capacity_bytes == 100 * MiB
    exact = csi.create("pvc-exact", 50 * MiB, limit=50 * MiB)
    assert exact.capacity_bytes == 50 * MiB


def test_fs_type_from_parameters_and_capability(csi: Csi) -> None:
    by_param = csi.create("pvc-param-xfs", 300 * MiB, parameters={"fsType": "xfs"})
    by_k8s = csi.create(
        "pvc-k8s-xfs",
        300 * MiB,
        parameters={"csi.storage.k8s.io/fstype": "xfs", "csi.storage.k8s.io/pvc/name": "data"},
    )
    by_cap = csi.create("pvc-cap-xfs", 300 * MiB, cap=mount_cap("xfs"))
    for volume in (by_param, by_k8s, by_cap):
        assert volume.volume_context["amber.csi.dev/fsType"] == "xfs"
    raw = csi.create("pvc-raw", 16 * MiB, cap=block_cap())
    assert dict(raw.volume_context) == {"amber.csi.dev/mode": "block"}


def test_single_node_access_modes_are_accepted(csi: Csi) -> None:
    for i, mode in enumerate(
        (
            Mode.SINGLE_NODE_WRITER,
            Mode.SINGLE_NODE_READER_ONLY,
            Mode.SINGLE_NODE_SINGLE_WRITER,
            Mode.SINGLE_NODE_MULTI_WRITER,
        )
    ):
        assert csi.create(f"pvc-mode-{i}", cap=mount_cap(mode=mode)).volume_id


def test_topology_requirements(csi: Csi) -> None:
    """requisite must include this node, else RESOURCE_EXHAUSTED (the spec's "unable to
    provision in accessible_topology"); the provisioner then reschedules the pod."""
    ok = csi.create("pvc-topo-ok", requisite=[OTHER, NODE])
    assert [dict(t.segments) for t in ok.accessible_topology] == [{TOPOLOGY_KEY: NODE}]
    message = expect_code(
        Code.RESOURCE_EXHAUSTED, lambda: csi.create("pvc-topo-elsewhere", requisite=[OTHER])
    )
    assert OTHER in message
    assert NODE in message


# --- content sources ------------------------------------------------------------------------


def test_restore_and_clone_echo_their_source(csi: Csi) -> None:
    origin = csi.create("pvc-origin", 64 * MiB)
    snap = csi.snapshot(origin.volume_id, "snap-origin")
    restored = csi.create("pvc-restored", 0, source=snapshot_source(snap.snapshot_id))
    assert restored.capacity_bytes == 64 * MiB  # no size asked: the snapshot's size
    assert restored.content_source.snapshot.snapshot_id == snap.snapshot_id
    bigger = csi.create("pvc-restored-big", 128 * MiB, source=snapshot_source(snap.snapshot_id))
    assert bigger.capacity_bytes == 128 * MiB
    clone = csi.create("pvc-clone", 64 * MiB, source=volume_source(origin.volume_id))
    assert clone.content_source.volume.volume_id == origin.volume_id
    again = csi.create("pvc-clone", 64 * MiB, source=volume_source(origin.volume_id))
    assert again == clone
    expect_code(
        Code.ALREADY_EXISTS,
        lambda: csi.create("pvc-clone", 64 * MiB, source=snapshot_source(snap.snapshot_id)),
    )


def test_content_source_errors(csi: Csi) -> None:
    origin = csi.create("pvc-src-errors", 64 * MiB)
    snap = csi.snapshot(origin.volume_id, "snap-src-errors")
    source = snapshot_source(snap.snapshot_id)
    expect_code(Code.NOT_FOUND, lambda: csi.create("v1", source=snapshot_source("nope")))
    expect_code(
        Code.NOT_FOUND,
        lambda: csi.create("v2", source=snapshot_source(f"amber:v1:snap:{NODE}:missing")),
    )
    expect_code(
        Code.NOT_FOUND,
        lambda: csi.create("v3", source=volume_source(f"amber:v1:vol:{NODE}:missing")),
    )
    # Smaller than the source within a limit: the spec's "unsupported capacity_range".
    expect_code(
        Code.OUT_OF_RANGE, lambda: csi.create("v4", 32 * MiB, limit=32 * MiB, source=source)
    )
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.create("v5", cap=block_cap(), source=source))
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.create("v6", 300 * MiB, cap=mount_cap("xfs"), source=source),
    )


def test_source_on_another_node_is_invalid_argument_naming_the_node(csi: Csi) -> None:
    """The source exists, on another node: not NOT_FOUND ("does not exist") but the spec's
    "source incompatible or not supported" -- INVALID_ARGUMENT, with the node named."""
    for source in (
        snapshot_source(other_node_id("snap", "snap-1")),
        volume_source(other_node_id("vol", "pvc-1")),
    ):
        message = expect_code(Code.INVALID_ARGUMENT, lambda s=source: csi.create("v", source=s))
        assert f"lives on node {OTHER!r}" in message
        assert NODE in message


# --- DeleteVolume, ValidateVolumeCapabilities, ControllerGetVolume ------------------------------


def test_delete_volume_is_idempotent(csi: Csi) -> None:
    volume = csi.create("pvc-delete", 16 * MiB)
    csi.delete(volume.volume_id)
    csi.delete(volume.volume_id)  # already gone: OK
    csi.delete("reallyfakevolumeid")  # not an Amber ID: OK
    csi.delete(f"amber:v1:vol:{NODE}:../../etc")  # hostile: not an ID of ours, nothing done
    expect_code(Code.NOT_FOUND, lambda: csi.get_volume(volume.volume_id))
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(), timeout=RPC_TIMEOUT),
    )


def test_delete_of_another_nodes_volume_is_refused(csi: Csi) -> None:
    """OK would make the CO forget a volume that still exists on its node."""
    message = expect_code(
        Code.FAILED_PRECONDITION, lambda: csi.delete(other_node_id("vol", "pvc-x"))
    )
    assert OTHER in message


def test_delete_of_a_staged_volume_is_failed_precondition(csi: Csi, work: Path) -> None:
    volume = csi.create("pvc-in-use", 16 * MiB)
    staging = work / "in-use-staging"
    staging.mkdir()
    csi.stage(volume.volume_id, staging)
    try:
        expect_code(Code.FAILED_PRECONDITION, lambda: csi.delete(volume.volume_id))
    finally:
        csi.unstage(volume.volume_id, staging)
    csi.delete(volume.volume_id)


def test_validate_volume_capabilities(csi: Csi) -> None:
    volume = csi.create("pvc-validate", 16 * MiB)
    validate = csi.controller.ValidateVolumeCapabilities

    def ask(*caps: object, **fields: object) -> csi_pb2.ValidateVolumeCapabilitiesResponse:
        request = csi_pb2.ValidateVolumeCapabilitiesRequest(
            volume_id=volume.volume_id, volume_capabilities=caps, **fields
        )
        return validate(request, timeout=RPC_TIMEOUT)

    confirmed = ask(mount_cap(), mount_cap("ext4", Mode.SINGLE_NODE_MULTI_WRITER))
    assert len(confirmed.confirmed.volume_capabilities) == 2
    for refused in (
        ask(block_cap()),
        ask(mount_cap("xfs")),
        ask(mount_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)),
        ask(mount_cap(), parameters={"bogus": "1"}),
    ):
        assert not refused.HasField("confirmed")
        assert refused.message
    expect_code(Code.INVALID_ARGUMENT, lambda: ask())
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: validate(
            csi_pb2.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_cap()]),
            timeout=RPC_TIMEOUT,
        ),
    )
    expect_code(
        Code.NOT_FOUND,
        lambda: validate(
            csi_pb2.ValidateVolumeCapabilitiesRequest(
                volume_id="fake-id", volume_capabilities=[mount_cap()]
            ),
            timeout=RPC_TIMEOUT,
        ),
    )


def test_controller_get_volume_reports_condition(csi: Csi, csi_pool: Path) -> None:
    volume = csi.create("pvc-condition", 16 * MiB)
    healthy = csi.get_volume(volume.volume_id)
    assert healthy.volume == volume
    assert not healthy.status.volume_condition.abnormal
    image = image_of(csi_pool, "pvc-condition")
    os.truncate(image, MiB)
    try:
        condition = csi.get_volume(volume.volume_id).status.volume_condition
        listed = [
            e.status.volume_condition
            for e in csi.list_volumes().entries
            if e.volume.volume_id == volume.volume_id
        ]
    finally:
        os.truncate(image, 16 * MiB)
    assert condition.abnormal
    assert "smaller than its recorded size" in condition.message
    assert listed == [condition]
    image.rename(image.with_suffix(".away"))
    try:
        condition = csi.get_volume(volume.volume_id).status.volume_condition
    finally:
        image.with_suffix(".away").rename(image)
    assert (condition.abnormal, "missing" in condition.message) == (True, True)
    assert not csi.get_volume(volume.volume_id).status.volume_condition.abnormal
    expect_code(Code.NOT_FOUND, lambda: csi.get_volume(f"amber:v1:vol:{NODE}:nope"))
    expect_code(Code.NOT_FOUND, lambda: csi.get_volume(other_node_id("vol", "x")))


# --- ListVolumes --------------------------------------------------------------------------


def test_list_volumes_pagination(csi: Csi) -> None:
    for i in range(5):
        csi.create(f"pvc-page-{i}", 16 * MiB)
    everything = [e.volume.volume_id for e in csi.list_volumes().entries]
    assert everything == sorted(everything)
    seen: list[str] = []
    token = ""
    while True:
        reply = csi.list_volumes(max_entries=2, token=token)
        assert len(reply.entries) <= 2
        seen += [e.volume.volume_id for e in reply.entries]
        token = reply.next_token
        if not token:
            break
    assert seen == everything
    first = csi.list_volumes(max_entries=2)
    # A volume added before the cursor, one deleted after it: no duplicates, no error.
    csi.create("aaa-first", 16 * MiB)
    rest = csi.list_volumes(token=first.next_token)
    ids = [e.volume.volume_id for e in rest.entries]
    assert not set(ids) & {e.volume.volume_id for e in first.entries}
    assert all(e.status.HasField("volume_condition") for e in rest.entries)


@pytest.mark.parametrize("token", ["invalid-token", "x.y", "YWJj.00000000", "." * 600])
def test_list_with_a_token_we_did_not_issue_is_aborted(csi: Csi, token: str) -> None:
    expect_code(Code.ABORTED, lambda: csi.list_volumes(token=token))
    expect_code(Code.ABORTED, lambda: csi.list_snapshots(starting_token=token))


def test_list_with_negative_max_entries_is_invalid(csi: Csi) -> None:
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.list_volumes(max_entries=-1))


# --- GetCapacity --------------------------------------------------------------------------


def test_get_capacity_per_topology(csi: Csi, csi_pool: Path) -> None:
    def capacity(**fields: object) -> csi_pb2.GetCapacityResponse:
        request = csi_pb2.GetCapacityRequest(**fields)
        return csi.controller.GetCapacity(request, timeout=RPC_TIMEOUT)

    here = csi_pb2.Topology(segments={TOPOLOGY_KEY: NODE})
    elsewhere = csi_pb2.Topology(segments={TOPOLOGY_KEY: OTHER})
    plain = capacity()
    st = os.statvfs(csi_pool)
    assert 0 < plain.available_capacity <= st.f_blocks * st.f_frsize * 4
    assert plain.maximum_volume_size.value == plain.available_capacity
    assert plain.minimum_volume_size.value == 8 * MiB
    assert capacity(accessible_topology=here).available_capacity == plain.available_capacity
    assert capacity(accessible_topology=elsewhere).available_capacity == 0
    multi = capacity(volume_capabilities=[mount_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)])
    assert multi.available_capacity == 0
    xfs = capacity(parameters={"fsType": "xfs"})
    assert xfs.minimum_volume_size.value == 300 * MiB
    csi.create("pvc-capacity", GiB)
    assert capacity().available_capacity == plain.available_capacity - GiB
    expect_code(Code.INVALID_ARGUMENT, lambda: capacity(parameters={"nope": "1"}))


# --- snapshots ----------------------------------------------------------------------------


def test_create_snapshot_and_its_idempotency(csi: Csi) -> None:
    volume = csi.create("pvc-snap-src", 32 * MiB)
    other = csi.create("pvc-snap-other", 32 * MiB)
    snap = csi.snapshot(volume.volume_id, "snap-1")
    assert snap.snapshot_id == f"amber:v1:snap:{NODE}:snap-1"
    assert snap.source_volume_id == volume.volume_id
    assert snap.size_bytes == 32 * MiB
    assert snap.ready_to_use
    assert snap.creation_time.seconds > 0
    assert csi.snapshot(volume.volume_id, "snap-1") == snap
    expect_code(Code.ALREADY_EXISTS, lambda: csi.snapshot(other.volume_id, "snap-1"))
    long_name = csi.snapshot(volume.volume_id, "s" * 128)
    assert csi.snapshot(volume.volume_id, "s" * 128) == long_name
    # Snapshots do not depend on their volume: deleting the volume keeps them.
    csi.delete(volume.volume_id)
    assert csi.list_snapshots(snapshot_id=snap.snapshot_id).entries[0].snapshot == snap
    assert csi.snapshot(volume.volume_id, "snap-1") == snap  # still idempotent


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"source_volume_id": "testId"}, Code.INVALID_ARGUMENT),
        ({"name": "name"}, Code.INVALID_ARGUMENT),
        ({"name": "s", "source_volume_id": "fake"}, Code.NOT_FOUND),
        ({"name": "s", "source_volume_id": f"amber:v1:vol:{NODE}:missing"}, Code.NOT_FOUND),
        ({"name": "s", "source_volume_id": f"amber:v1:vol:{OTHER}:v"}, Code.NOT_FOUND),
        (
            {"name": "s", "source_volume_id": "x", "parameters": {"type": "backup"}},
            Code.INVALID_ARGUMENT,
        ),
        (
            {"name": "s", "source_volume_id": "x", "parameters": {"s3URL": "http://x"}},
            Code.INVALID_ARGUMENT,
        ),
        (
            {"name": "s", "source_volume_id": "x", "parameters": {"kind": "local"}},
            Code.INVALID_ARGUMENT,
        ),
    ],
)
def test_create_snapshot_errors(csi: Csi, fields: dict, code: Code) -> None:
    request = csi_pb2.CreateSnapshotRequest(**fields)
    expect_code(code, lambda: csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT))


def test_snapshot_parameters_of_open_local_are_accepted(csi: Csi) -> None:
    volume = csi.create("pvc-openlocal", 16 * MiB)
    snap = csi.snapshot(
        volume.volume_id,
        "snap-openlocal",
        {"csi.aliyun.com/readonly": "true", "csi.storage.k8s.io/volumesnapshot/name": "s"},
    )
    assert snap.ready_to_use


def test_delete_snapshot(csi: Csi) -> None:
    volume = csi.create("pvc-delsnap", 16 * MiB)
    snap = csi.snapshot(volume.volume_id, "snap-del")
    restored = csi.create("pvc-from-delsnap", 0, source=snapshot_source(snap.snapshot_id))
    csi.delete_snapshot(snap.snapshot_id)
    csi.delete_snapshot(snap.snapshot_id)
    csi.delete_snapshot("reallyfakesnapshotid")
    assert not csi.list_snapshots(snapshot_id=snap.snapshot_id).entries
    assert csi.get_volume(restored.volume_id).volume == restored  # restores are independent
    expect_code(Code.FAILED_PRECONDITION, lambda: csi.delete_snapshot(other_node_id("snap", "s")))
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.controller.DeleteSnapshot(csi_pb2.DeleteSnapshotRequest(), timeout=RPC_TIMEOUT),
    )


def test_list_snapshots_filters_and_pages(csi: Csi) -> None:
    a = csi.create("pvc-list-a", 16 * MiB)
    b = csi.create("pvc-list-b", 16 * MiB)
    snaps_a = [csi.snapshot(a.volume_id, f"list-a-{i}") for i in range(3)]
    snap_b = csi.snapshot(b.volume_id, "list-b-0")
    by_volume = csi.list_snapshots(source_volume_id=a.volume_id).entries
    assert sorted(e.snapshot.snapshot_id for e in by_volume) == sorted(
        s.snapshot_id for s in snaps_a
    )
    by_id = csi.list_snapshots(snapshot_id=snap_b.snapshot_id).entries
    assert [e.snapshot for e in by_id] == [snap_b]
    both = csi.list_snapshots(snapshot_id=snap_b.snapshot_id, source_volume_id=a.volume_id)
    assert not both.entries
    for missing in (
        {"snapshot_id": "none-exist-id"},
        {"snapshot_id": other_node_id("snap", "list-a-0")},
        {"source_volume_id": f"amber:v1:vol:{NODE}:nothing"},
        {"source_volume_id": other_node_id("vol", "pvc-list-a")},
    ):
        assert not csi.list_snapshots(**missing).entries
    total = len(csi.list_snapshots().entries)
    first = csi.list_snapshots(max_entries=2)
    assert len(first.entries) == 2
    rest = csi.list_snapshots(starting_token=first.next_token)
    assert len(rest.entries) == total - 2
    assert not rest.next_token


# --- ControllerExpandVolume ----------------------------------------------------------------


def test_controller_expand_volume(csi: Csi) -> None:
    volume = csi.create("pvc-cexpand", 64 * MiB)
    reply = csi.expand(volume.volume_id, 128 * MiB)
    assert reply.capacity_bytes == 128 * MiB
    assert reply.node_expansion_required  # not mounted: the filesystem grows when staged
    assert csi.get_volume(volume.volume_id).volume.capacity_bytes == 128 * MiB
    assert csi.expand(volume.volume_id, 100 * MiB).capacity_bytes == 128 * MiB  # no shrink
    raw = csi.create("pvc-cexpand-raw", 16 * MiB, cap=block_cap())
    grown = csi.expand(raw.volume_id, 32 * MiB, cap=block_cap())
    assert (grown.capacity_bytes, grown.node_expansion_required) == (32 * MiB, False)
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.expand(raw.volume_id, 64 * MiB, mount_cap()))
    expect_code(Code.NOT_FOUND, lambda: csi.expand(f"amber:v1:vol:{NODE}:nope", GiB))
    # 512 TiB: allowed, but beyond the pool's room (RESOURCE_EXHAUSTED); over 1 PiB: not allowed.
    message = expect_code(Code.RESOURCE_EXHAUSTED, lambda: csi.expand(volume.volume_id, 1 << 49))
    assert "pvc-cexpand" in message
    expect_code(Code.OUT_OF_RANGE, lambda: csi.expand(volume.volume_id, 1 << 51))
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(volume_id=volume.volume_id),
            timeout=RPC_TIMEOUT,
        ),
    )
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.controller.ControllerExpandVolume(
            csi_pb2.ControllerExpandVolumeRequest(
                capacity_range=csi_pb2.CapacityRange(required_bytes=GiB)
            ),
            timeout=RPC_TIMEOUT,
        ),
    )


# --- logging --------------------------------------------------------------------------------


def test_one_log_line_per_rpc_without_secrets(csi: Csi, driver: DriverProcess) -> None:
    secret = "s3cr3t-value-never-logged"
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-logged",
        volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(required_bytes=16 * MiB),
        secrets={"password": secret},
    )
    with futures.ThreadPoolExecutor(1) as pool:
        pool.submit(csi.controller.CreateVolume, request, timeout=RPC_TIMEOUT).result()
    lines = [
        line
        for line in driver.rpc_lines()
        if line.get("name") == "pvc-logged" and line["method"].endswith("/CreateVolume")
    ]
    assert len(lines) == 1
    assert lines[0]["code"] == "OK"
    assert lines[0]["volume_id"] == f"amber:v1:vol:{NODE}:pvc-logged"
    assert secret not in driver.log.read_text()


def test_mutable_parameters_are_refused_without_modify_volume(csi: Csi) -> None:
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-mutable",
        volume_capabilities=[mount_cap()],
        mutable_parameters={"iops": "100"},
    )
    expect_code(
        Code.INVALID_ARGUMENT, lambda: csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT)
    )
