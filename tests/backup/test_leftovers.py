"""Temporaries left by interrupted uploads on a real directory: who may adopt or remove them.

The rule under test: a staged pack belongs to a live writer as long as that writer's lock is
live, so neither adoption nor removal ever touches it; once the writer is gone (its lock
removed, as for a killed process) a whole staged pack is adopted and anything else removed.
Real files and real mtimes, so the clock is the real one here.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from amber.backup.leftovers import adopt_leftover_packs, adopt_unindexed_packs, remove_leftovers
from amber.backup.repository import Repository, init_repository
from amber.blobstore.base import leftover_store
from amber.blobstore.filestore import FileStore
from amber.blobstore.retry import RetryingStore
from amber.domain.errors import InvalidArgument
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, random_bytes
from tests.backup.memstore import FakeClock, MemStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "repository"
    path.mkdir()
    return path


@pytest.fixture
def file_repo(root: Path) -> Repository:
    return init_repository(
        RetryingStore(FileStore(root)),
        PASSWORD,
        chunk_size=CHUNK,
        pack_size=PACK,
        scrypt=FAST_SCRYPT,
    )


def _temps(root: Path) -> list[Path]:
    return sorted(root.rglob(".amber-tmp.*"))


def _stage_packs(repo: Repository, first_seed: int, chunks: int = 10) -> list[bytes]:
    """Start a backup that stages packs and never flushes them (as if it were killed)."""
    lock = repo.lock("backup that dies")
    writer = repo.writer(lock)
    ids = [writer.add_chunk(random_bytes(CHUNK, first_seed + i)) for i in range(chunks)]
    return ids


def test_a_live_writers_staged_packs_are_neither_adopted_nor_removed(
    file_repo: Repository, root: Path
) -> None:
    lock = file_repo.lock("backup vol-a")
    writer = file_repo.writer(lock)
    for i in range(10):
        writer.add_chunk(random_bytes(CHUNK, i))
    staged = _temps(root)
    assert len(staged) >= 2  # 4 incompressible chunks fill a 16 KiB pack
    other = file_repo.lock("backup vol-b")  # another process, taken after vol-a's lock
    removed, kept = remove_leftovers(
        file_repo, other.info.lock_id, time.time() + 10**6, 0.0, dry_run=False
    )
    assert removed == []
    assert all("live lock" in (state.protected or "") for state in kept)
    assert adopt_leftover_packs(file_repo, other.info.lock_id) == []
    assert _temps(root) == staged
    writer.flush()  # the live writer publishes its packs as if nothing happened
    assert _temps(root) == []
    assert len(file_repo.reload_index().pack_sizes) == len(staged) + 1  # + the open pack


def test_staged_packs_of_a_dead_writer_are_adopted_and_indexed(
    file_repo: Repository, root: Path
) -> None:
    chunk_ids = _stage_packs(file_repo, 100)
    staged = _temps(root)
    assert staged
    for lock in file_repo.locks.all():
        file_repo.locks.remove(lock.lock_id)  # what happens to a killed process's lock
    rerun = file_repo.lock("backup vol-a again")
    published = adopt_leftover_packs(file_repo, rerun.info.lock_id)
    assert len(published) == len(staged)
    assert _temps(root) == []
    assert adopt_unindexed_packs(file_repo) == len(staged)
    index = file_repo.refresh_index()
    assert sum(chunk_id in index for chunk_id in chunk_ids) == 4 * len(staged)


def test_a_staged_pack_adopted_under_its_writer_still_flushes(
    file_repo: Repository, root: Path
) -> None:
    lock = file_repo.lock("backup vol-a")
    writer = file_repo.writer(lock)
    for i in range(8):
        writer.add_chunk(random_bytes(CHUNK, 200 + i))
    assert adopt_leftover_packs(file_repo, lock.info.lock_id)  # e.g. a lock it lost
    writer.flush()
    assert _temps(root) == []


def test_torn_temporaries_are_removed_only_when_orphaned_and_old_enough(
    file_repo: Repository, root: Path
) -> None:
    torn = root / "data" / "ab" / ".amber-tmp.0123456789abcdef"
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"half a pack")
    other = root / "index" / ".amber-tmp.fedcba9876543210"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_bytes(b"half an index object")
    assert adopt_leftover_packs(file_repo, None) == []  # not whole packs
    now = time.time()
    removed, kept = remove_leftovers(file_repo, None, now, 3600.0, dry_run=False)
    assert removed == []
    assert len(kept) == 2
    assert all("younger than" in (state.protected or "") for state in kept)
    removed, kept = remove_leftovers(file_repo, None, now + 7200, 3600.0, dry_run=True)
    assert {leftover.name for leftover in removed} == {
        "data/ab/.amber-tmp.0123456789abcdef",
        "index/.amber-tmp.fedcba9876543210",
    }
    assert torn.exists()  # a dry run
    remove_leftovers(file_repo, None, now + 7200, 3600.0, dry_run=False)
    assert _temps(root) == []


def test_an_unreadable_lock_protects_every_temporary(file_repo: Repository, root: Path) -> None:
    _stage_packs(file_repo, 300)
    for lock in file_repo.locks.all():
        file_repo.locks.remove(lock.lock_id)
    file_repo.store.put("locks/" + "e" * 32, b"damaged")
    removed, _ = remove_leftovers(file_repo, None, time.time() + 10**6, 0.0, dry_run=False)
    assert removed == []
    assert adopt_leftover_packs(file_repo, None) == []


def test_leftover_names_are_checked(root: Path) -> None:
    store = FileStore(root)
    for name in ("config", "data/../x", "data/.amber-tmp.zz", "/etc/.amber-tmp.0123456789abcdef"):
        with pytest.raises(InvalidArgument):
            store.read_leftover(name)


def test_stores_without_temporaries_have_no_leftovers() -> None:
    assert leftover_store(MemStore(FakeClock())) is None
    assert leftover_store(RetryingStore(MemStore(FakeClock()))) is None
