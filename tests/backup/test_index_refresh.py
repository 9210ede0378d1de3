"""`Repository.refresh_index` lists the index objects once per call, and still sees what
another process wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from amber.backup.layout import INDEX_PREFIX
from amber.backup.repository import init_repository, open_repository
from amber.blobstore.base import BlobInfo
from amber.blobstore.filestore import FileStore
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, backup, random_bytes, volume


class ListCounter(FileStore):
    """A FileStore that counts how often each prefix is listed."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.listed: list[str] = []

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        self.listed.append(prefix)
        return super().list(prefix)


def test_a_first_refresh_lists_the_index_once_and_later_ones_see_new_objects(
    tmp_path: Path,
) -> None:
    store = ListCounter(tmp_path)
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
