"""Patched incrementals on a real pool (XFS reflink, loop-backed): a chain of backups of small
scattered writes reads only the changed blocks, every backup of the chain restores byte for
byte, pruning the parents keeps the last one whole, and check finds a damaged patch chunk."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from amber.backup.backuper import BackupReport, backup_snapshot
from amber.backup.check import check
from amber.backup.gc import prune
from amber.backup.layout import pack_key
from amber.backup.patches import by_position, coalesce
from amber.backup.repository import Repository, init_repository
from amber.backup.restorer import RestoreOptions, restore_backup
from amber.backup.retention import RetentionPolicy
from amber.blobstore.filestore import FileStore
from amber.domain.models import VolumeMode
from amber.domain.units import KiB, MiB
from amber.pool import Pool, VolumeRequest
from tests.backup.helpers import FAST_SCRYPT, PASSWORD

CHUNK = 256 * KiB
SIZE = 16 * MiB
BLOCK = 4 * KiB
Write = tuple[int, int]  # offset, length (block-aligned)


def _write(image: Path, writes: Sequence[Write], seed: int) -> None:
    rng = random.Random(seed)
    fd = os.open(image, os.O_WRONLY)
    try:
        for offset, length in writes:
            os.pwrite(fd, rng.randbytes(length), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _scattered(rng: random.Random, positions: Sequence[int], per_position: int) -> list[Write]:
    """4-8 KiB block-aligned writes, `per_position` in each of `positions`, 32 KiB apart."""
    writes = []
    for position in positions:
        first = rng.randrange(0, 8) * BLOCK
        for n in range(per_position):
            offset = position * CHUNK + first + n * 32 * KiB
            writes.append((offset, rng.choice([BLOCK, 2 * BLOCK])))
    return writes


def _changed(writes: Sequence[Write]) -> dict[int, list[tuple[int, int]]]:
    """Per position, the written byte ranges (sorted, merged)."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    for offset, length in sorted(writes):
        ranges.setdefault(offset // CHUNK, []).append((offset, offset + length))
    return {p: coalesce(r, 1) for p, r in ranges.items()}


def _history(rng: random.Random) -> list[tuple[list[Write], int]]:
    """Rounds of writes and how many positions each rewrites whole."""
    first = _scattered(rng, [1, 5, 9, 20, 33, 40, 63], 2)
    again = [(o + BLOCK, n) for o, n in first[::2]]  # overlaps the patches of round 1
    crowded = _scattered(rng, [5], 7)  # position 5 would carry more than 8 patches
    big = [(50 * CHUNK, 96 * KiB)]  # more than a quarter of position 50
    return [
        (first, 0),
        (again + _scattered(rng, [2, 41], 1), 0),
        (_scattered(rng, [1, 9, 63], 2), 0),
        (crowded + big + _scattered(rng, [33], 1), 2),
        (_scattered(rng, [5, 50], 1), 0),  # patches over freshly rewritten positions
    ]


def _assert_reads_only_changes(
    report: BackupReport, writes: Sequence[Write], rewrites: int
) -> None:
    changed = _changed(writes)
    written = sum(end - start for ranges in changed.values() for start, end in ranges)
    patched_reads = sum(
        end - start for ranges in changed.values() for start, end in coalesce(ranges, 16 * KiB)
    )
    assert report.mode == "extent-map"
    assert report.chunks_read == rewrites
    assert report.chunks_patched == len(changed) - rewrites
    assert report.bytes_read >= written - rewrites * CHUNK  # every changed byte was read
    assert report.bytes_read <= patched_reads + rewrites * CHUNK
    if not rewrites:  # far below the size of the chunks the writes touched
        assert report.bytes_read * 4 <= len(changed) * CHUNK


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return init_repository(
        FileStore(root), PASSWORD, chunk_size=CHUNK, pack_size=256 * KiB, scrypt=FAST_SCRYPT
    )


def test_a_chain_of_patched_incrementals_restores_and_survives_pruning_its_parents(
    pool: Pool, repo: Repository
) -> None:
    rng = random.Random(17)
    image = pool.volumes.create(VolumeRequest("pv", SIZE, VolumeMode.BLOCK, None)).image
    _write(image, [(0, SIZE - 3 * CHUNK)], 0)  # data, then a hole at the end
    snapshots = [pool.snapshots.create("pv", "pv-s0")]
    reports = [backup_snapshot(pool, repo, "t", "pv-s0")]
    assert reports[0].mode == "full-read"
    for n, (writes, rewrites) in enumerate(_history(rng), start=1):
        _write(image, writes, n)
        snapshots.append(pool.snapshots.create("pv", f"pv-s{n}"))
        reports.append(backup_snapshot(pool, repo, "t", f"pv-s{n}"))
        _assert_reads_only_changes(reports[-1], writes, rewrites)
    manifests = [repo.load_manifest(r.backup_id) for r in reports]
    assert [m.version for m in manifests] == [1, 2, 2, 2, 2, 2]
    assert 5 not in by_position(manifests[4].patches, CHUNK)  # rewritten: its patches dropped
    assert 50 not in by_position(manifests[4].patches, CHUNK)
    assert 5 in by_position(manifests[5].patches, CHUNK)

    for n, (report, snapshot) in enumerate(zip(reports, snapshots, strict=True)):
        restored = restore_backup(pool, repo, report.backup_id, f"pv-r{n}")
        assert restored.complete
        assert pool.volumes.get(restored.volume).image.read_bytes() == snapshot.image.read_bytes()

    # Deleting the parents and sweeping what only they used keeps the last backup whole: the
    # patch chunks it carries forward from its parents are marked.
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=0)
    assert result.removed_backups
    assert result.deleted_packs
    assert check(repo, read_data=True).ok
    last = restore_backup(pool, repo, reports[-1].backup_id, "pv-last")
    assert pool.volumes.get(last.volume).image.read_bytes() == snapshots[-1].image.read_bytes()


def test_check_read_data_finds_a_damaged_patch_chunk_and_restore_leaves_its_range_zero(
    pool: Pool, repo: Repository, tmp_path: Path
) -> None:
    image = pool.volumes.create(VolumeRequest("pv", 4 * MiB, VolumeMode.BLOCK, None)).image
    _write(image, [(0, 4 * MiB)], 0)
    pool.snapshots.create("pv", "pv-s0")
    backup_snapshot(pool, repo, "t", "pv-s0")
    _write(image, [(3 * CHUNK + 2 * BLOCK, BLOCK)], 1)
    snapshot = pool.snapshots.create("pv", "pv-s1")
    report = backup_snapshot(pool, repo, "t", "pv-s1")
    (patch,) = repo.load_manifest(report.backup_id).patches
    assert (patch.offset, patch.length) == (3 * CHUNK + 2 * BLOCK, BLOCK)

    entry = repo.reload_index().lookup(patch.chunk_id)
    assert entry is not None
    pack = tmp_path / "repo" / pack_key(entry.pack_id)
    with open(pack, "r+b") as f:  # flip a byte inside the patch chunk's sealed blob
        f.seek(entry.offset + entry.length // 2)
        byte = f.read(1)
        f.seek(entry.offset + entry.length // 2)
        f.write(bytes([byte[0] ^ 0xFF]))

    assert check(repo).ok  # the structure is intact
    found = [p for p in check(repo, read_data=True).errors if p.code == "chunk-damaged"]
    assert [(p.backup_id, p.byte_range) for p in found] == [
        (report.backup_id, (patch.offset, patch.end))
    ]
    options = RestoreOptions(allow_partial=True)
    restored = restore_backup(pool, repo, report.backup_id, "pv-r", options=options)
    assert [(d.start, d.end) for d in restored.damaged] == [(patch.offset, patch.end)]
    expected = bytearray(snapshot.image.read_bytes())
    expected[patch.offset : patch.end] = bytes(patch.length)
    assert pool.volumes.get("pv-r").image.read_bytes() == expected
