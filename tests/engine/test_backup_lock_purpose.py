"""A running backup's repository lock says what it is for (its purpose), as every other
operation's lock does: other nodes read the purpose, not the holder's name."""

from __future__ import annotations

from pathlib import Path

from amber.backup.backuper import backup_snapshot
from amber.backup.locks import BACKUP, LockInfo, LockPurpose
from amber.backup.repository import init_repository
from amber.blobstore.filestore import FileStore
from amber.domain.models import VolumeMode
from amber.pool import Pool, VolumeRequest
from tests.backup.helpers import FAST_SCRYPT, PASSWORD
from tests.engine.helpers import random_bytes, write_at

CHUNK = 64 * 1024


def test_a_backup_lock_names_its_operation(pool: Pool, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    repo = init_repository(FileStore(root), PASSWORD, chunk_size=CHUNK, scrypt=FAST_SCRYPT)
    image = pool.volumes.create(VolumeRequest("pv", 1024 * 1024, VolumeMode.BLOCK, None)).image
    write_at(image, 0, random_bytes(3 * CHUNK, 1))
    pool.snapshots.create("pv", "pv-s1")
    seen: list[LockInfo] = []

    def look(name: str) -> None:
        if name == "backup.committed":
            seen.extend(repo.active_locks())

    backup_snapshot(pool, repo, "t", "pv-s1", failpoint=look)
    assert [lock.purpose for lock in seen] == [LockPurpose(BACKUP)]
    assert repo.active_locks() == []
