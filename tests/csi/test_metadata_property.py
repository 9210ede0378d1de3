"""GetMetadataDelta against the truth, over gRPC: random writes into ext4, xfs and Block volumes
published by a real `amber node`, two snapshots, and the two snapshot images compared byte by
byte. "Truly differs" is measured in 4 KiB blocks (the pool filesystem's block size, which the
delta is exact at): a block truly differs when one of its bytes does. The streamed ranges must
cover every such block and add at most 10% more bytes.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from amber.csi._proto import csi_pb2
from amber.domain.units import KiB, MiB
from tests.csi.driver import RPC_TIMEOUT, Csi, DriverProcess, block_cap, mount_cap
from tests.csi.test_metadata import metadata_stub
from tests.pool.helpers import differing_blocks

BLOCK = 4 * KiB
SIZE = 320 * MiB  # xfs needs 300 MiB


def _snapshot_image(pool: Path, name: str) -> Path:
    uri = f"file:{pool / 'amber.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        row = db.execute("SELECT image FROM snapshots WHERE name = ?", (name,)).fetchone()
    assert row is not None, name
    return Path(row[0])


def _random_writes(rng: random.Random, path: Path, span: int, *, create: bool) -> None:
    fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        for _ in range(rng.randrange(10, 50)):
            length = rng.randrange(1, 160 * KiB)
            os.pwrite(fd, rng.randbytes(length), rng.randrange(0, span - length))
        os.fsync(fd)
    finally:
        os.close(fd)


def _round(rng: random.Random, kind: str, target: Path) -> None:
    if kind == "block":
        _random_writes(rng, target, SIZE, create=False)
        return
    for number in range(rng.randrange(1, 4)):
        _random_writes(rng, target / f"file-{number}", 16 * MiB, create=True)


@pytest.mark.parametrize("kind", ["ext4", "xfs", "block"])
def test_delta_covers_every_changed_block_and_at_most_10_percent_more(
    driver: DriverProcess, csi: Csi, csi_pool: Path, work: Path, kind: str
) -> None:
    rng = random.Random(f"grpc-{kind}")
    cap = block_cap() if kind == "block" else mount_cap(kind)
    name = f"prop-{kind}"
    volume = csi.create(name, SIZE, cap=cap).volume_id
    staging, target = work / f"{name}-staging", work / f"{name}-target"
    staging.mkdir()
    csi.stage(volume, staging, cap)
    csi.publish(volume, staging, target, cap)
    snapshots: list[Any] = []
    try:
        for number in range(2):
            _round(rng, kind, target)
            snapshots.append(csi.snapshot(volume, f"{name}-{number}"))
    finally:
        csi.unpublish(volume, target)
        csi.unstage(volume, staging)
    base, after = snapshots
    request = csi_pb2.GetMetadataDeltaRequest(
        base_snapshot_id=base.snapshot_id, target_snapshot_id=after.snapshot_id
    )
    responses = list(metadata_stub(driver).GetMetadataDelta(request, timeout=RPC_TIMEOUT))
    reported = {
        i
        for r in responses
        for b in r.block_metadata
        for i in range(b.byte_offset // BLOCK, -(-(b.byte_offset + b.size_bytes) // BLOCK))
    }
    reported_bytes = sum(b.size_bytes for r in responses for b in r.block_metadata)
    truth = differing_blocks(
        _snapshot_image(csi_pool, f"{name}-0"), _snapshot_image(csi_pool, f"{name}-1"), BLOCK
    )
    assert truth, "the writes changed nothing: the test proves nothing"
    missed = truth - reported
    assert not missed, f"{len(missed)} changed blocks not reported, e.g. {sorted(missed)[:5]}"
    assert reported_bytes <= 1.10 * len(truth) * BLOCK, (reported_bytes, len(truth) * BLOCK)
