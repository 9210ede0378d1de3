"""A prune job sweeps: it frees the packs no backup uses and removes no backup.

The repository is a real directory (FileStore); its clock runs two days ahead, so the packs
written now are past prune's 24 h grace period. The executor runs over a real pool.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from amber.backup.keeper import holder
from amber.backup.locks import CHECK, LockKind, LockPurpose
from amber.backup.repository import Repository, init_repository
from amber.blobstore.filestore import FileStore
from amber.domain.errors import Busy
from amber.jobs.local import LocalExecutor
from amber.jobs.records import Records
from amber.jobs.spec import parse_job
from amber.ops.backups import sweep_repository_locked
from amber.pool import Pool
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, backup, random_bytes, restore

TWO_DAYS = 2 * 86400.0


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return init_repository(
        FileStore(root),
        PASSWORD,
        chunk_size=CHUNK,
        pack_size=PACK,
        scrypt=FAST_SCRYPT,
        clock=lambda: time.time() + TWO_DAYS,
    )


def test_a_prune_job_frees_unused_packs_and_keeps_every_backup(
    pool: Pool, pool_dir: Path, repo: Repository
) -> None:
    volumes = {f"vol-{n}": [random_bytes(8 * CHUNK, 10 * n + i) for i in range(3)] for n in (1, 2)}
    kept = {
        backup(repo, data, volume_name=name): data
        for name, datas in volumes.items()
        for data in datas
    }
    before = set(repo.list_packs())
    gone = backup(repo, random_bytes(8 * CHUNK, 99), volume_name="vol-1")
    gone_packs = set(repo.list_packs()) - before
    repo.delete_backup(gone)
    job = parse_job({"name": "gc", "task": "prune", "cron": "0 3 * * *", "target": "t"})
    records = Records.in_pool(pool_dir)
    try:
        outcome = LocalExecutor(pool, records, lambda name, create=False: repo).prune(job)
    finally:
        records.close()

    assert outcome.bytes > 0
    assert sorted(repo.list_backups()) == sorted(kept)
    assert gone_packs
    assert set(repo.list_packs()) == before
    for backup_id, data in kept.items():
        assert restore(repo, backup_id) == data


def test_a_sweep_takes_the_exclusive_lock_past_no_other_lock(repo: Repository) -> None:
    backup(repo, random_bytes(3 * CHUNK, 5))
    lock = repo.locks.acquire(holder("check"), LockKind.SHARED, purpose=LockPurpose(CHECK))
    with pytest.raises(Busy, match="shared lock"):
        sweep_repository_locked(repo, wait=0.0)
    lock.release()
    assert sweep_repository_locked(repo).removed_backups == ()
