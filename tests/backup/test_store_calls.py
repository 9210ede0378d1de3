"""The store calls a backup's start makes, counted: each is a round trip on S3.

`Repository.refresh_index` lists the index objects once per call (and still sees what another
process wrote); taking a lock does not read back the lock object it has just written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.backup.layout import INDEX_PREFIX, LOCKS_PREFIX, lock_key
from amber.backup.locks import LockKind
from amber.backup.repository import init_repository, open_repository
from amber.blobstore.base import BlobInfo
from amber.blobstore.filestore import FileStore
from amber.domain.errors import Busy
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, backup, random_bytes, volume


class CountingStore(FileStore):
    """A FileStore that records the prefixes it lists and the keys it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[str] = []
        self.read: list[str] = []

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        self.listed.append(prefix)
        return super().list(prefix)

    def get(self, key: str) -> bytes:
        self.read.append(key)
        return super().get(key)


def test_a_first_refresh_lists_the_index_once_and_later_ones_see_new_objects(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path)
    init_repository(store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT)
    first = open_repository(store, PASSWORD)
    backup(first, volume([random_bytes(CHUNK, 1), random_bytes(CHUNK, 2)]))

    repo = open_repository(store, PASSWORD)  # a fresh process, as a cold command is
    store.listed.clear()
    index = repo.refresh_index()  # what a backup writer does first
    assert store.listed.count(INDEX_PREFIX) == 1
    assert len(index) == 2

    other = open_repository(store, PASSWORD)  # another process adds a backup
    backup(other, volume([random_bytes(CHUNK, 3)]))
    assert len(repo.refresh_index()) == 3
    assert repo.refresh_index() is repo.index  # unchanged listing: the same index


def test_taking_a_lock_reads_only_the_other_locks(tmp_path: Path) -> None:
    store = CountingStore(tmp_path)
    repo = init_repository(store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT)
    other = repo.lock("restore elsewhere")
    store.read.clear()
    with repo.lock("backup vol"):
        reads = [key for key in store.read if key.startswith(LOCKS_PREFIX)]
        # once before writing its own lock and once after: the other lock, never its own
        assert reads == [lock_key(other.info.lock_id)] * 2
        with pytest.raises(Busy, match="restore elsewhere"):
            repo.lock("prune", LockKind.EXCLUSIVE)
    other.release()
