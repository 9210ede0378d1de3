"""The SnapshotMetadata service over gRPC against a real `amber node` process.

One test per MUST of the spec's GetMetadataAllocated / GetMetadataDelta text: the capability,
the ranges themselves, `max_results`, `starting_offset` (resume, rounding, OUT_OF_RANGE), the
type and capacity constant over a stream, both metadata types, and the error codes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain.units import KiB, MiB
from tests.csi.driver import (
    NODE,
    RPC_TIMEOUT,
    Code,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    running_driver,
)

SIZE = 16 * MiB
BLOCK = 4 * KiB
VARIABLE = csi_pb2.BlockMetadataType.VARIABLE_LENGTH
FIXED = csi_pb2.BlockMetadataType.FIXED_LENGTH
SECRET = "cbt-s3cr3t-91ab"


def metadata_stub(driver: DriverProcess) -> Any:
    channel = grpc.insecure_channel(driver.endpoint)
    driver.channels.append(channel)
    return csi_pb2_grpc.SnapshotMetadataStub(channel)


@pytest.fixture(scope="module")
def meta(driver: DriverProcess) -> Any:
    return metadata_stub(driver)


def _write(device: Path, writes: list[tuple[int, bytes]]) -> None:
    fd = os.open(device, os.O_RDWR)
    try:
        for offset, data in writes:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _history(csi: Csi, work: Path, name: str, rounds: list[list[tuple[int, bytes]]]) -> list[str]:
    """A Block volume written in rounds, with a snapshot after each; the snapshot IDs."""
    volume = csi.create(name, SIZE, cap=block_cap()).volume_id
    staging, target = work / f"{name}-staging", work / f"{name}-device"
    staging.mkdir()
    csi.stage(volume, staging, block_cap())
    csi.publish(volume, staging, target, block_cap())
    snapshots = []
    try:
        for number, writes in enumerate(rounds):
            _write(target, writes)
            snapshots.append(csi.snapshot(volume, f"{name}-s{number}").snapshot_id)
    finally:
        csi.unpublish(volume, target)
        csi.unstage(volume, staging)
    return snapshots


@pytest.fixture(scope="module")
def snaps(csi: Csi, work: Path) -> list[str]:
    """s0: 64 KiB at 1 MiB; s1: + 8 KiB at 1 MiB, 4 KiB at 3 MiB; s2: nothing new."""
    return _history(
        csi,
        work,
        "meta",
        [
            [(1 * MiB, os.urandom(64 * KiB))],
            [(1 * MiB, os.urandom(8 * KiB)), (3 * MiB, os.urandom(4 * KiB))],
            [],
        ],
    )


def allocated(meta: Any, snapshot_id: str, **fields: Any) -> list[Any]:
    request = csi_pb2.GetMetadataAllocatedRequest(snapshot_id=snapshot_id, **fields)
    return list(meta.GetMetadataAllocated(request, timeout=RPC_TIMEOUT))


def delta(meta: Any, base: str, target: str, **fields: Any) -> list[Any]:
    request = csi_pb2.GetMetadataDeltaRequest(
        base_snapshot_id=base, target_snapshot_id=target, **fields
    )
    return list(meta.GetMetadataDelta(request, timeout=RPC_TIMEOUT))


def ranges(responses: list[Any]) -> list[tuple[int, int]]:
    return [(b.byte_offset, b.size_bytes) for r in responses for b in r.block_metadata]


def merged(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, length in pairs:
        if out and sum(out[-1]) == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return out


def test_the_plugin_announces_the_service(csi: Csi) -> None:
    caps = csi.identity.GetPluginCapabilities(
        csi_pb2.GetPluginCapabilitiesRequest(), timeout=RPC_TIMEOUT
    ).capabilities
    service = csi_pb2.PluginCapability.Service
    assert service.SNAPSHOT_METADATA_SERVICE in {c.service.type for c in caps}


def test_allocated_lists_the_written_ranges(meta: Any, snaps: list[str]) -> None:
    responses = allocated(meta, snaps[0])
    assert ranges(responses) == [(1 * MiB, 64 * KiB)]
    assert {(r.block_metadata_type, r.volume_capacity_bytes) for r in responses} == {
        (VARIABLE, SIZE)
    }
    assert ranges(allocated(meta, snaps[1])) == [(1 * MiB, 64 * KiB), (3 * MiB, 4 * KiB)]


def test_delta_lists_exactly_the_rewritten_blocks(meta: Any, snaps: list[str]) -> None:
    responses = delta(meta, snaps[0], snaps[1])
    assert ranges(responses) == [(1 * MiB, 8 * KiB), (3 * MiB, 4 * KiB)]
    assert {(r.block_metadata_type, r.volume_capacity_bytes) for r in responses} == {
        (VARIABLE, SIZE)
    }


def test_no_change_is_one_empty_response_with_the_capacity(meta: Any, snaps: list[str]) -> None:
    responses = delta(meta, snaps[1], snaps[2])
    assert len(responses) == 1
    assert ranges(responses) == []
    assert responses[0].volume_capacity_bytes == SIZE
    assert responses[0].block_metadata_type == VARIABLE


def test_max_results_bounds_every_response(csi: Csi, work: Path, meta: Any) -> None:
    writes = [(i * 64 * KiB, b"\x01" * BLOCK) for i in range(10)]
    (only,) = _history(csi, work, "many", [writes])
    everything = ranges(allocated(meta, only))
    assert len(everything) == 10
    responses = allocated(meta, only, max_results=3)
    assert [len(r.block_metadata) for r in responses] == [3, 3, 3, 1]
    assert ranges(responses) == everything


def test_starting_offset_resumes_where_the_client_stopped(meta: Any, snaps: list[str]) -> None:
    assert ranges(delta(meta, snaps[0], snaps[1], starting_offset=2 * MiB)) == [(3 * MiB, BLOCK)]
    # inside a range: the range is clipped to the block holding the offset (rounded down)
    assert ranges(allocated(meta, snaps[0], starting_offset=1 * MiB + 10 * KiB + 5)) == [
        (1 * MiB + 8 * KiB, 56 * KiB)
    ]
    at_end = allocated(meta, snaps[0], starting_offset=SIZE)
    assert ranges(at_end) == []
    assert at_end[0].volume_capacity_bytes == SIZE


def test_a_starting_offset_past_the_end_is_out_of_range(meta: Any, snaps: list[str]) -> None:
    expect_code(Code.OUT_OF_RANGE, lambda: allocated(meta, snaps[0], starting_offset=SIZE + 1))
    expect_code(
        Code.OUT_OF_RANGE, lambda: delta(meta, snaps[0], snaps[1], starting_offset=SIZE + BLOCK)
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"snapshot_id": ""},
        {"starting_offset": -1},
        {"max_results": -1},
    ],
)
def test_allocated_invalid_arguments(meta: Any, snaps: list[str], fields: dict[str, Any]) -> None:
    request = {"snapshot_id": snaps[0], **fields}
    expect_code(Code.INVALID_ARGUMENT, lambda: allocated(meta, **request))


@pytest.mark.parametrize(
    "fields",
    [
        {"base": ""},
        {"target": ""},
        {"starting_offset": -BLOCK},
        {"max_results": -5},
    ],
)
def test_delta_invalid_arguments(meta: Any, snaps: list[str], fields: dict[str, Any]) -> None:
    request = {"base": snaps[0], "target": snaps[1], **fields}
    expect_code(Code.INVALID_ARGUMENT, lambda: delta(meta, **request))


@pytest.mark.parametrize(
    "missing", [f"amber:v1:snap:{NODE}:missing", "nonsense", "amber:v1:snap:node-b:elsewhere"]
)
def test_unknown_snapshots_are_not_found(meta: Any, snaps: list[str], missing: str) -> None:
    expect_code(Code.NOT_FOUND, lambda: allocated(meta, missing))
    expect_code(Code.NOT_FOUND, lambda: delta(meta, missing, snaps[1]))
    expect_code(Code.NOT_FOUND, lambda: delta(meta, snaps[0], missing))


def test_snapshots_of_different_volumes_are_an_invalid_argument(
    csi: Csi, work: Path, meta: Any, snaps: list[str]
) -> None:
    (other,) = _history(csi, work, "other", [[(0, b"\x02" * BLOCK)]])
    message = expect_code(Code.INVALID_ARGUMENT, lambda: delta(meta, snaps[0], other))
    assert "not snapshots of the same volume" in message


def test_fixed_length_reports_one_tuple_per_block(fresh_pool: Path) -> None:
    work = fresh_pool.parent / f"{fresh_pool.name}-work"
    extra = ["--snapshot-metadata-type=fixed", "--log-requests"]
    with running_driver(fresh_pool, extra=extra) as driver:
        csi, meta = driver.client(), metadata_stub(driver)
        base, target = _history(
            csi,
            work,
            "fixed",
            [[(0, os.urandom(64 * KiB))], [(8 * KiB, os.urandom(12 * KiB))]],
        )
        responses = delta(meta, base, target, max_results=2, secrets={"token": SECRET})
        assert {r.block_metadata_type for r in responses} == {FIXED}
        assert ranges(responses) == [(8 * KiB, BLOCK), (12 * KiB, BLOCK), (16 * KiB, BLOCK)]
        assert [len(r.block_metadata) for r in responses] == [2, 1]
        whole = ranges(allocated(meta, base, starting_offset=BLOCK + 1))
        assert {size for _, size in whole} == {BLOCK}
        assert merged(whole) == [(BLOCK, 60 * KiB)]
        logged = driver.log.read_text()
        assert "GetMetadataDelta" in logged
        assert SECRET not in logged
