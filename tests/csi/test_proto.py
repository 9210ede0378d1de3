"""The generated stubs carry the CSI v1.12.0 wire contract: names, numbers, types, options."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from amber.csi._proto import csi_pb2, csi_pb2_grpc

F = FieldDescriptor
ROOT = Path(__file__).resolve().parents[2]
POOL_FILE = csi_pb2.DESCRIPTOR

STRING, BOOL, INT64, INT32 = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_INT64, F.TYPE_INT32
MESSAGE, ENUM = F.TYPE_MESSAGE, F.TYPE_ENUM
MAP = "map<string,string>"

# message -> field -> (number, type or MAP, repeated, message/enum type name or None)
EXPECTED_FIELDS: dict[str, dict[str, tuple[int, object, bool, str | None]]] = {
    "CreateVolumeRequest": {
        "name": (1, STRING, False, None),
        "capacity_range": (2, MESSAGE, False, "csi.v1.CapacityRange"),
        "volume_capabilities": (3, MESSAGE, True, "csi.v1.VolumeCapability"),
        "parameters": (4, MAP, True, None),
        "secrets": (5, MAP, True, None),
        "volume_content_source": (6, MESSAGE, False, "csi.v1.VolumeContentSource"),
        "accessibility_requirements": (7, MESSAGE, False, "csi.v1.TopologyRequirement"),
        "mutable_parameters": (8, MAP, True, None),
    },
    "CreateSnapshotRequest": {
        "source_volume_id": (1, STRING, False, None),
        "name": (2, STRING, False, None),
        "secrets": (3, MAP, True, None),
        "parameters": (4, MAP, True, None),
    },
    "Snapshot": {
        "size_bytes": (1, INT64, False, None),
        "snapshot_id": (2, STRING, False, None),
        "source_volume_id": (3, STRING, False, None),
        "creation_time": (4, MESSAGE, False, "google.protobuf.Timestamp"),
        "ready_to_use": (5, BOOL, False, None),
        "group_snapshot_id": (6, STRING, False, None),
    },
    "NodeStageVolumeRequest": {
        "volume_id": (1, STRING, False, None),
        "publish_context": (2, MAP, True, None),
        "staging_target_path": (3, STRING, False, None),
        "volume_capability": (4, MESSAGE, False, "csi.v1.VolumeCapability"),
        "secrets": (5, MAP, True, None),
        "volume_context": (6, MAP, True, None),
    },
    "NodePublishVolumeRequest": {
        "volume_id": (1, STRING, False, None),
        "publish_context": (2, MAP, True, None),
        "staging_target_path": (3, STRING, False, None),
        "target_path": (4, STRING, False, None),
        "volume_capability": (5, MESSAGE, False, "csi.v1.VolumeCapability"),
        "readonly": (6, BOOL, False, None),
        "secrets": (7, MAP, True, None),
        "volume_context": (8, MAP, True, None),
    },
    "VolumeCapability": {
        "block": (1, MESSAGE, False, "csi.v1.VolumeCapability.BlockVolume"),
        "mount": (2, MESSAGE, False, "csi.v1.VolumeCapability.MountVolume"),
        "access_mode": (3, MESSAGE, False, "csi.v1.VolumeCapability.AccessMode"),
    },
    "VolumeCapability.MountVolume": {
        "fs_type": (1, STRING, False, None),
        "mount_flags": (2, STRING, True, None),
        "volume_mount_group": (3, STRING, False, None),
    },
    "VolumeCapability.AccessMode": {
        "mode": (1, ENUM, False, "csi.v1.VolumeCapability.AccessMode.Mode"),
    },
    "Topology": {"segments": (1, MAP, True, None)},
    "TopologyRequirement": {
        "requisite": (1, MESSAGE, True, "csi.v1.Topology"),
        "preferred": (2, MESSAGE, True, "csi.v1.Topology"),
    },
    "Volume": {
        "capacity_bytes": (1, INT64, False, None),
        "volume_id": (2, STRING, False, None),
        "volume_context": (3, MAP, True, None),
        "content_source": (4, MESSAGE, False, "csi.v1.VolumeContentSource"),
        "accessible_topology": (5, MESSAGE, True, "csi.v1.Topology"),
    },
    "ListVolumesResponse": {
        "entries": (1, MESSAGE, True, "csi.v1.ListVolumesResponse.Entry"),
        "next_token": (2, STRING, False, None),
    },
    "ListVolumesResponse.Entry": {
        "volume": (1, MESSAGE, False, "csi.v1.Volume"),
        "status": (2, MESSAGE, False, "csi.v1.ListVolumesResponse.VolumeStatus"),
    },
    "ListVolumesResponse.VolumeStatus": {
        "published_node_ids": (1, STRING, True, None),
        "volume_condition": (2, MESSAGE, False, "csi.v1.VolumeCondition"),
    },
    "NodeGetVolumeStatsResponse": {
        "usage": (1, MESSAGE, True, "csi.v1.VolumeUsage"),
        "volume_condition": (2, MESSAGE, False, "csi.v1.VolumeCondition"),
    },
    "VolumeUsage": {
        "available": (1, INT64, False, None),
        "total": (2, INT64, False, None),
        "used": (3, INT64, False, None),
        "unit": (4, ENUM, False, "csi.v1.VolumeUsage.Unit"),
    },
    "VolumeCondition": {
        "abnormal": (1, BOOL, False, None),
        "message": (2, STRING, False, None),
    },
    "ControllerExpandVolumeRequest": {
        "volume_id": (1, STRING, False, None),
        "capacity_range": (2, MESSAGE, False, "csi.v1.CapacityRange"),
        "secrets": (3, MAP, True, None),
        "volume_capability": (4, MESSAGE, False, "csi.v1.VolumeCapability"),
    },
    "NodeGetInfoResponse": {
        "node_id": (1, STRING, False, None),
        "max_volumes_per_node": (2, INT64, False, None),
        "accessible_topology": (3, MESSAGE, False, "csi.v1.Topology"),
    },
    "GetCapacityResponse": {
        "available_capacity": (1, INT64, False, None),
        "maximum_volume_size": (2, MESSAGE, False, "google.protobuf.Int64Value"),
        "minimum_volume_size": (3, MESSAGE, False, "google.protobuf.Int64Value"),
    },
    "ProbeResponse": {"ready": (1, MESSAGE, False, "google.protobuf.BoolValue")},
    "GetMetadataDeltaRequest": {
        "base_snapshot_id": (1, STRING, False, None),
        "target_snapshot_id": (2, STRING, False, None),
        "starting_offset": (3, INT64, False, None),
        "max_results": (4, INT32, False, None),
        "secrets": (5, MAP, True, None),
    },
}


def message(path: str) -> Descriptor:
    desc = POOL_FILE.message_types_by_name[path.split(".")[0]]
    for part in path.split(".")[1:]:
        desc = desc.nested_types_by_name[part]
    return desc


def is_map(field: FieldDescriptor) -> bool:
    return field.type == MESSAGE and field.message_type.GetOptions().map_entry


def all_messages() -> list[Descriptor]:
    found: list[Descriptor] = []
    stack = list(POOL_FILE.message_types_by_name.values())
    while stack:
        desc = stack.pop()
        found.append(desc)
        stack.extend(desc.nested_types)
    return found


def test_package_and_services() -> None:
    assert POOL_FILE.package == "csi.v1"
    services = {
        name: [m.name for m in svc.methods] for name, svc in POOL_FILE.services_by_name.items()
    }
    assert services["Identity"] == ["GetPluginInfo", "GetPluginCapabilities", "Probe"]
    assert services["Node"] == [
        "NodeStageVolume",
        "NodeUnstageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeGetVolumeStats",
        "NodeExpandVolume",
        "NodeGetCapabilities",
        "NodeGetInfo",
    ]
    assert set(services["Controller"]) == {
        "CreateVolume",
        "DeleteVolume",
        "ControllerPublishVolume",
        "ControllerUnpublishVolume",
        "ValidateVolumeCapabilities",
        "ListVolumes",
        "GetCapacity",
        "ControllerGetCapabilities",
        "CreateSnapshot",
        "DeleteSnapshot",
        "ListSnapshots",
        "GetSnapshot",
        "ControllerExpandVolume",
        "ControllerGetVolume",
        "ControllerModifyVolume",
    }
    assert len(services["GroupController"]) == 4
    streaming = POOL_FILE.services_by_name["SnapshotMetadata"].methods
    assert [(m.name, m.server_streaming) for m in streaming] == [
        ("GetMetadataAllocated", True),
        ("GetMetadataDelta", True),
    ]
    for name in services:
        assert hasattr(csi_pb2_grpc, f"add_{name}Servicer_to_server")


@pytest.mark.parametrize("path", sorted(EXPECTED_FIELDS))
def test_field_numbers_and_types(path: str) -> None:
    desc = message(path)
    got = {}
    for f in desc.fields:
        kind: object = MAP if is_map(f) else f.type
        type_name = None
        if f.type == MESSAGE and not is_map(f):
            type_name = f.message_type.full_name
        elif f.type == ENUM:
            type_name = f.enum_type.full_name
        got[f.name] = (f.number, kind, f.is_repeated, type_name)
    assert got == EXPECTED_FIELDS[path]


def test_volume_capability_oneof_holds_block_and_mount_only() -> None:
    desc = message("VolumeCapability")
    oneof = desc.oneofs_by_name["access_type"]
    assert [f.name for f in oneof.fields] == ["block", "mount"]
    assert desc.fields_by_name["access_mode"].containing_oneof is None
    cap = csi_pb2.VolumeCapability(block=csi_pb2.VolumeCapability.BlockVolume())
    cap.mount.fs_type = "xfs"  # setting the other member clears the first
    assert cap.WhichOneof("access_type") == "mount"
    assert not cap.HasField("block")


def test_enum_values() -> None:
    mode = csi_pb2.VolumeCapability.AccessMode.Mode
    assert dict(mode.items()) == {
        "UNKNOWN": 0,
        "SINGLE_NODE_WRITER": 1,
        "SINGLE_NODE_READER_ONLY": 2,
        "MULTI_NODE_READER_ONLY": 3,
        "MULTI_NODE_SINGLE_WRITER": 4,
        "MULTI_NODE_MULTI_WRITER": 5,
        "SINGLE_NODE_SINGLE_WRITER": 6,
        "SINGLE_NODE_MULTI_WRITER": 7,
    }
    rpc = csi_pb2.ControllerServiceCapability.RPC.Type
    assert rpc.Value("CLONE_VOLUME") == 7
    assert rpc.Value("EXPAND_VOLUME") == 9
    assert rpc.Value("MODIFY_VOLUME") == 14
    assert rpc.Value("GET_SNAPSHOT") == 15
    node = csi_pb2.NodeServiceCapability.RPC.Type
    assert node.Value("STAGE_UNSTAGE_VOLUME") == 1
    assert node.Value("VOLUME_MOUNT_GROUP") == 6
    service = csi_pb2.PluginCapability.Service.Type
    assert service.Value("VOLUME_ACCESSIBILITY_CONSTRAINTS") == 2
    assert service.Value("GROUP_CONTROLLER_SERVICE") == 3
    assert csi_pb2.PluginCapability.VolumeExpansion.Type.Value("ONLINE") == 1


def test_custom_option_extensions() -> None:
    extensions = {
        name: (ext.number, ext.containing_type.full_name)
        for name, ext in POOL_FILE.extensions_by_name.items()
    }
    assert extensions == {
        "csi_secret": (1059, "google.protobuf.FieldOptions"),
        "alpha_field": (1060, "google.protobuf.FieldOptions"),
        "alpha_enum": (1060, "google.protobuf.EnumOptions"),
        "alpha_enum_value": (1060, "google.protobuf.EnumValueOptions"),
        "alpha_message": (1060, "google.protobuf.MessageOptions"),
        "alpha_method": (1060, "google.protobuf.MethodOptions"),
        "alpha_service": (1060, "google.protobuf.ServiceOptions"),
    }


def test_csi_secret_marks_exactly_the_secrets_fields() -> None:
    marked = set()
    named_secrets = set()
    for desc in all_messages():
        for f in desc.fields:
            if f.GetOptions().Extensions[csi_pb2.csi_secret]:
                marked.add(f.full_name)
            if f.name == "secrets":
                named_secrets.add(f.full_name)
    assert "csi.v1.CreateVolumeRequest.secrets" in marked
    assert "csi.v1.NodeExpandVolumeRequest.secrets" in marked
    assert len(marked) == 19  # 14 Controller/Node, 3 GroupController, 2 SnapshotMetadata
    assert marked == named_secrets


def test_alpha_markers_follow_v1_12() -> None:
    # ControllerModifyVolume went GA in v1.12; GetSnapshot and ControllerGetVolume are alpha.
    methods = POOL_FILE.services_by_name["Controller"].methods_by_name
    assert not methods["ControllerModifyVolume"].GetOptions().Extensions[csi_pb2.alpha_method]
    assert methods["GetSnapshot"].GetOptions().Extensions[csi_pb2.alpha_method]
    assert methods["ControllerGetVolume"].GetOptions().Extensions[csi_pb2.alpha_method]
    mutable = message("CreateVolumeRequest").fields_by_name["mutable_parameters"]
    assert not mutable.GetOptions().Extensions[csi_pb2.alpha_field]
    assert (
        POOL_FILE.services_by_name["SnapshotMetadata"]
        .GetOptions()
        .Extensions[csi_pb2.alpha_service]
    )
    assert (
        not POOL_FILE.services_by_name["GroupController"]
        .GetOptions()
        .Extensions[csi_pb2.alpha_service]
    )


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc")
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"--proto_path={ROOT / 'proto'}",
            f"--proto_path={include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(ROOT / "proto" / "csi.proto"),
        ]
    )
    assert status == 0
    committed = ROOT / "src" / "amber" / "csi" / "_proto"
    for name in ("csi_pb2.py", "csi_pb2.pyi"):
        fresh = (tmp_path / name).read_text()
        assert fresh == (committed / name).read_text(), f"{name} is stale: run gen-proto.sh"


def test_grpc_stubs_import_their_messages_relatively() -> None:
    source = Path(csi_pb2_grpc.__file__).read_text()
    assert "from . import csi_pb2 as csi__pb2" in source
    assert "\nimport csi_pb2" not in source
