"""Class parameters and numeric fields a CO may send wrong: the code the spec requires, and
nothing made. A real `amber node` over gRPC; docs/reliability.md lists the review.

StorageClass parameters reach CreateVolume and GetCapacity; VolumeSnapshotClass parameters
reach CreateSnapshot. Numbers arrive as capacity ranges (CreateVolume, ControllerExpandVolume)
and `max_entries` (ListVolumes, ListSnapshots). Sizes above 1 PiB are OUT_OF_RANGE with the
message the CLI prints for `--size 2Pi` (one rule: domain/units.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amber.csi._proto import csi_pb2
from amber.domain.units import MAX_SIZE, MiB
from tests.csi.driver import RPC_TIMEOUT, Code, Csi, expect_code, mount_cap

SIZE_MESSAGE = "above the maximum volume size (1 PiB)"


def _state(csi_pool: Path) -> list[str]:
    return sorted(p.name for d in ("volumes", "snapshots") for p in (csi_pool / d).iterdir())


@pytest.fixture(scope="module")
def source(csi: Csi) -> str:
    volume_id: str = csi.create("pvc-params-source", 16 * MiB).volume_id
    return volume_id


@pytest.mark.parametrize(
    "parameters",
    [
        {"fsType": "ntfs"},
        {"fsType": "ext4", "csi.storage.k8s.io/fstype": "xfs"},
        {"size": "10Gi"},
        {"fsType": "-1"},
    ],
)
def test_bad_storage_class_parameters(csi: Csi, csi_pool: Path, parameters: dict[str, str]) -> None:
    before = _state(csi_pool)
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.create("pvc-bad-param", parameters=parameters))
    request = csi_pb2.GetCapacityRequest(parameters=parameters)
    expect_code(
        Code.INVALID_ARGUMENT, lambda: csi.controller.GetCapacity(request, timeout=RPC_TIMEOUT)
    )
    assert _state(csi_pool) == before


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "remote"},
        {"type": "backup"},  # no target, no secret
        {"type": "backup", "target": "../etc"},
        {"type": "backup", "target": "not-configured-here"},
        {"type": "backup", "target": "t", "keepLocalSnapshot": "yes"},
        {"type": "backup", "target": "t", "keepLocalSnapshot": "-1"},
        {"type": "backup", "csi.aliyun.com/readonly": "true", "target": "t"},
        {"type": "local", "target": "t"},
        {"type": "local", "keepLocalSnapshot": "true"},
        {"csi.aliyun.com/readonly": "maybe"},
        {"s3URL": "http://127.0.0.1:1"},
        {"retention": "-1"},
    ],
)
def test_bad_snapshot_class_parameters(
    csi: Csi, csi_pool: Path, source: str, parameters: dict[str, str]
) -> None:
    before = _state(csi_pool)
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.snapshot(source, "snap-bad", parameters))
    assert _state(csi_pool) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda csi: csi.list_volumes(max_entries=-1),
        lambda csi: csi.list_snapshots(max_entries=-1),
        lambda csi: csi.create("pvc-negative", -1),
        lambda csi: csi.create("pvc-negative-limit", MiB, limit=-MiB),
    ],
)
def test_negative_numbers_are_invalid(csi: Csi, call: Callable[[Csi], Any]) -> None:
    expect_code(Code.INVALID_ARGUMENT, lambda: call(csi))


def test_sizes_above_one_pib_are_out_of_range_with_the_cli_message(
    csi: Csi, csi_pool: Path, source: str
) -> None:
    before = _state(csi_pool)
    for size in (MAX_SIZE + 1, 2 * MAX_SIZE):
        message = expect_code(Code.OUT_OF_RANGE, lambda s=size: csi.create("pvc-huge", s))
        assert SIZE_MESSAGE in message
        message = expect_code(Code.OUT_OF_RANGE, lambda s=size: csi.expand(source, s))
        assert SIZE_MESSAGE in message
    assert _state(csi_pool) == before
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-huge-limit",
        volume_capabilities=[mount_cap()],
        capacity_range=csi_pb2.CapacityRange(limit_bytes=2 * MAX_SIZE),
    )
    volume = csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT).volume
    assert volume.capacity_bytes <= MAX_SIZE  # a limit above 1 PiB only bounds; it is not asked
    csi.delete(volume.volume_id)
