"""check: every finding reported, with the backup and byte range it affects."""

from __future__ import annotations

import random

import pytest

from amber.backup.check import Severity, check
from amber.backup.layout import pack_key
from amber.backup.repository import Repository
from amber.blobstore.base import BlobStore
from amber.domain.errors import InvalidArgument
from tests.backup.helpers import CHUNK, backup, random_bytes
from tests.backup.memstore import FakeClock, flip_byte, keys, overwrite


def two_backups(repo: Repository) -> tuple[str, str]:
    first = backup(repo, random_bytes(10 * CHUNK, 1) + random_bytes(100, 2))
    second = backup(repo, random_bytes(6 * CHUNK, 3), volume_name="vol-b")
    return first, second


def test_a_healthy_repository_has_no_problems(repo: Repository) -> None:
    two_backups(repo)
    result = check(repo, read_data=True)
    assert result.ok
    assert result.problems == []
    assert result.backups_checked == 2
    assert result.packs_checked == result.packs_read > 1
    assert result.chunks_verified == 17


def test_read_data_finds_a_flipped_byte_and_names_backup_and_range(
    repo: Repository, store: BlobStore
) -> None:
    first, _ = two_backups(repo)
    manifest = repo.load_manifest(first)
    position = 4
    chunk_id = manifest.chunk_map[position]
    assert isinstance(chunk_id, bytes)
    entry = repo.index.lookup(chunk_id)
    assert entry is not None
    flip_byte(store, pack_key(entry.pack_id), entry.offset + entry.length // 2)

    assert check(repo).ok  # structure alone cannot see a flipped data byte
    result = check(repo, read_data=True)
    assert not result.ok
    damaged = [p for p in result.errors if p.code == "chunk-damaged"]
    assert len(damaged) == 1
    (problem,) = damaged
    assert problem.backup_id == first
    assert problem.chunk_index == position
    assert problem.byte_range == (position * CHUNK, (position + 1) * CHUNK)
    assert problem.object_key == pack_key(entry.pack_id)
    assert f"bytes {position * CHUNK}-{(position + 1) * CHUNK}" in problem.message
    assert {p.code for p in result.errors} == {"chunk-damaged", "pack-hash"}
    assert result.damaged_backups() == {first}


def test_the_short_last_chunk_reports_its_true_range(repo: Repository, store: BlobStore) -> None:
    first, _ = two_backups(repo)
    manifest = repo.load_manifest(first)
    last = len(manifest.chunk_map) - 1
    chunk_id = manifest.chunk_map[last]
    assert isinstance(chunk_id, bytes)
    entry = repo.index.lookup(chunk_id)
    assert entry is not None
    flip_byte(store, pack_key(entry.pack_id), entry.offset + 20)
    (problem,) = [p for p in check(repo, read_data=True).errors if p.code == "chunk-damaged"]
    assert problem.byte_range == (10 * CHUNK, 10 * CHUNK + 100)


def test_a_missing_pack_names_every_affected_chunk(repo: Repository, store: BlobStore) -> None:
    first, second = two_backups(repo)
    manifest = repo.load_manifest(second)
    chunk_id = manifest.chunk_map[0]
    assert isinstance(chunk_id, bytes)
    entry = repo.index.lookup(chunk_id)
    assert entry is not None
    store.delete(pack_key(entry.pack_id))
    result = check(repo)
    pack_level = [p.code for p in result.errors if p.chunk_id is None]
    assert pack_level == ["pack-missing"]
    lost = [p for p in result.errors if p.code == "chunk-pack-missing"]
    in_pack = {c for c, e in repo.index.chunks.items() if e.pack_id == entry.pack_id}
    expected = {
        (m.backup_id, i)
        for m in (repo.load_manifest(first), manifest)
        for i, ref in enumerate(m.chunk_map)
        if ref in in_pack
    }
    assert {(p.backup_id, p.chunk_index) for p in lost} == expected


def test_structure_problems_are_all_reported(repo: Repository, store: BlobStore) -> None:
    first, second = two_backups(repo)
    first_chunk = repo.load_manifest(first).chunk_map[0]
    assert isinstance(first_chunk, bytes)
    truncated = pack_key(repo.index.chunks[first_chunk].pack_id)
    bad_header = next(k for k in keys(store, "data/") if k != truncated)
    last_offset, last_blob = max(
        (e.offset, c) for c, e in repo.index.chunks.items() if pack_key(e.pack_id) == truncated
    )
    overwrite(store, truncated, store.get(truncated)[: last_offset + 10])
    flip_byte(store, bad_header, -20)  # inside the sealed header
    flip_byte(store, f"backups/{second}", 0)
    result = check(repo)
    codes = {(p.code, p.object_key) for p in result.errors}
    assert ("pack-size", truncated) in codes
    assert ("pack-header-unreadable", bad_header) in codes
    assert ("manifest-unreadable", f"backups/{second}") in codes
    assert result.backups_checked == 1  # the first backup was still checked
    # the last blob of the truncated pack is named with the backup and range that lose it
    (cut,) = [p for p in result.errors if p.code == "chunk-truncated"]
    assert cut.chunk_id == last_blob.hex()
    assert cut.backup_id == first
    assert cut.byte_range is not None
    assert cut.object_key == truncated
    # the blobs behind the damaged header are still verified, one by one
    deep = check(repo, read_data=True)
    header_chunks = [c for c, e in repo.index.chunks.items() if pack_key(e.pack_id) == bad_header]
    damaged = {p.chunk_id for p in deep.errors if p.code == "chunk-damaged"}
    assert not {c.hex() for c in header_chunks} & damaged
    assert last_blob.hex() in damaged


def test_an_unreadable_index_leaves_chunks_unindexed(repo: Repository, store: BlobStore) -> None:
    two_backups(repo)
    index_key = keys(store, "index/")[0]
    flip_byte(store, index_key, 50)
    result = check(repo)
    assert ("index-unreadable", index_key) in {(p.code, p.object_key) for p in result.errors}
    assert any(p.code == "chunk-not-indexed" and p.byte_range is not None for p in result.errors)
    assert any(p.code == "pack-unindexed" for p in result.warnings)


def test_subset_reads_only_some_packs(repo: Repository, store: BlobStore) -> None:
    two_backups(repo)
    total = len(keys(store, "data/"))
    assert total >= 3
    result = check(repo, read_data=True, subset_pct=1, rng=random.Random(4))
    assert result.packs_read == 1
    assert result.ok
    with pytest.raises(InvalidArgument):
        check(repo, read_data=True, subset_pct=0)


def test_stale_and_unreadable_locks_are_warnings(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    two_backups(repo)
    repo.lock("backup that died", ttl=10)
    store.put("locks/" + "d" * 32, b"junk")
    store.put("keys/" + "e" * 32, b"{}")
    clock.advance(11)
    result = check(repo)
    assert result.ok
    assert sorted(p.code for p in result.warnings) == [
        "key-slot-unreadable",
        "lock-stale",
        "lock-unreadable",
    ]
    assert all(p.severity is Severity.WARNING for p in result.problems)
