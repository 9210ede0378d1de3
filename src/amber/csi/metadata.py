"""The CSI SnapshotMetadata service: allocated blocks of a snapshot, changed blocks between two.

Both RPCs stream the ranges `amber.pool.changes` finds from the images' extent maps, for local
snapshots of this node. The metadata type is chosen once per driver (`amber node
--snapshot-metadata-type`), as the spec leaves it to the plugin:

- VARIABLE_LENGTH (default): extents -- merged ranges of any length, each starting on a block
  boundary of the pool filesystem;
- FIXED_LENGTH: every range is one block of the pool filesystem's block size (4 KiB on XFS),
  the granularity the extent maps are exact at. The block size is the `size_bytes` of every
  tuple; clients read it from there.

`starting_offset` is rounded down to that block size (the spec allows it), so a client that
resumes an interrupted stream at the end of the last range it got never misses a byte. An
offset equal to the capacity yields no ranges; a larger one is OUT_OF_RANGE, a negative one
INVALID_ARGUMENT. Every response repeats the same type and capacity; a listing with no ranges
still sends one response, so the client learns both. Snapshots of two different volumes are
INVALID_ARGUMENT (an argument value is invalid); on a pool without reflink, GetMetadataDelta is
FAILED_PRECONDITION, the spec's "changed block tracking is not enabled".

In Kubernetes, backup applications reach this service through the external-snapshot-metadata
sidecar (not deployed by Amber's manifests yet), which talks to the node plugin's socket.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from typing import Any, Final

import grpc

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.errors import rpc_errors
from amber.csi.objects import LocalObjects
from amber.domain.errors import InvalidArgument, OutOfRange
from amber.pool.changes import ByteRange, Delta, allocated, delta

__all__ = ["DEFAULT_MAX_RESULTS", "MetadataType", "SnapshotMetadataServicer"]

DEFAULT_MAX_RESULTS: Final = 1024
"""Ranges per response when the client's `max_results` is 0."""


class MetadataType(enum.Enum):
    """How ranges are reported (the spec's BlockMetadataType)."""

    VARIABLE = "variable"
    """VARIABLE_LENGTH: merged extents."""
    FIXED = "fixed"
    """FIXED_LENGTH: one tuple per block of the pool filesystem."""

    @property
    def proto(self) -> int:
        kind = csi_pb2.BlockMetadataType
        return int(kind.FIXED_LENGTH if self is MetadataType.FIXED else kind.VARIABLE_LENGTH)


class SnapshotMetadataServicer(csi_pb2_grpc.SnapshotMetadataServicer):  # type: ignore[misc]
    """GetMetadataAllocated and GetMetadataDelta over this node's local snapshots."""

    def __init__(
        self, objects: LocalObjects, metadata_type: MetadataType = MetadataType.VARIABLE
    ) -> None:
        self._objects = objects
        self._type = metadata_type

    @rpc_errors()
    def GetMetadataAllocated(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        max_results = _max_results(request.max_results, request.starting_offset)
        snapshot = self._objects.snapshot(request.snapshot_id)
        found = allocated(snapshot)
        ranges = self._ranges(found, request.starting_offset)
        yield from _responses(
            csi_pb2.GetMetadataAllocatedResponse, self._type, found, ranges, max_results
        )

    @rpc_errors()
    def GetMetadataDelta(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        max_results = _max_results(request.max_results, request.starting_offset)
        if not request.base_snapshot_id:
            raise InvalidArgument("base_snapshot_id is required")
        if not request.target_snapshot_id:
            raise InvalidArgument("target_snapshot_id is required")
        base = self._objects.snapshot(request.base_snapshot_id)
        target = self._objects.snapshot(request.target_snapshot_id)
        found = delta(base, target, reflink=self._objects.pool.ctx.reflink)
        ranges = self._ranges(found, request.starting_offset)
        yield from _responses(
            csi_pb2.GetMetadataDeltaResponse, self._type, found, ranges, max_results
        )

    def _ranges(self, found: Delta, offset: int) -> Iterator[ByteRange]:
        if offset > found.capacity:
            raise OutOfRange(
                f"starting_offset {offset} is past the end of the snapshot ({found.capacity} bytes)"
            )
        if self._type is MetadataType.FIXED:
            return found.blocks_from(offset)
        return found.extents_from(offset)


def _max_results(value: int, offset: int) -> int:
    """The ranges per response; checks the arguments every request has."""
    if offset < 0:
        raise InvalidArgument(f"starting_offset must not be negative, not {offset}")
    if value < 0:
        raise InvalidArgument(f"max_results must not be negative, not {value}")
    return value or DEFAULT_MAX_RESULTS


def _responses(
    message: Any, kind: MetadataType, found: Delta, ranges: Iterator[ByteRange], size: int
) -> Iterator[Any]:
    """`message`s of at most `size` ranges each; one empty message when there is none."""
    sent = False
    while batch := list(itertools.islice(ranges, size)):
        sent = True
        yield message(
            block_metadata_type=kind.proto,
            volume_capacity_bytes=found.capacity,
            block_metadata=[
                csi_pb2.BlockMetadata(byte_offset=start, size_bytes=length)
                for start, length in batch
            ],
        )
    if not sent:
        yield message(block_metadata_type=kind.proto, volume_capacity_bytes=found.capacity)
