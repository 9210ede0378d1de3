"""Fixtures for the backup repository tests.

`store` runs every repository test twice: over an in-memory store and over a real directory
through the project's FileStore (re-stamped with the fake clock, see memstore.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.backup.repository import Repository, init_repository
from amber.blobstore.base import BlobStore
from amber.blobstore.filestore import FileStore
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD
from tests.backup.memstore import ClockedFileStore, FakeClock, MemStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "filestore"])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return MemStore(clock)
    root = tmp_path / "repository"
    root.mkdir()
    return ClockedFileStore(FileStore(root), clock)


@pytest.fixture
def mem_store(clock: FakeClock) -> MemStore:
    return MemStore(clock)


@pytest.fixture
def repo(store: BlobStore, clock: FakeClock) -> Repository:
    return init_repository(
        store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT, clock=clock
    )
