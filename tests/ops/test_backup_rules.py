"""One rule per backup operation, below the edges (issue 13, part 1, step 2).

The repository is a real directory through FileStore; the locks other nodes would hold are
written into it as they would write them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.backup.keeper import holder
from amber.backup.locks import CHECK, RESTORE, LockKind, LockPurpose, decode_lock, encode_lock
from amber.backup.repository import Repository, init_repository
from amber.backup.retention import RetentionPolicy
from amber.blobstore.filestore import FileStore
from amber.domain.errors import Busy, FailedPrecondition, NotFound
from amber.ops import Operations
from amber.ops.backups import prune_repository_locked
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, backup, random_bytes


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repository"
    root.mkdir()
    return init_repository(
        FileStore(root), PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT
    )


def operations(repo: Repository) -> Operations:
    def open_repository(target: str, *, create: bool = False) -> Repository:
        assert target == "t"
        return repo

    return Operations(None, open_repository)


def test_a_restore_lock_says_what_it_restores_and_keeps_saying_it_when_refreshed(
    repo: Repository,
) -> None:
    lock = repo.locks.acquire(
        "node-b pid 7: restore", LockKind.SHARED, reader=True, purpose=LockPurpose.restore("a" * 32)
    )
    lock.refresh()
    (seen,) = repo.active_locks()
    assert seen.purpose == LockPurpose(RESTORE, "a" * 32)
    assert seen.restores("a" * 32)
    assert not seen.restores("b" * 32)
    again = decode_lock(seen.lock_id, bytes(encode_lock(seen, repo.keys.sealer)), repo.keys.sealer)
    assert again == seen


def test_delete_is_refused_while_a_restore_of_the_backup_holds_a_lock_anywhere(
    repo: Repository,
) -> None:
    backup_id = backup(repo, random_bytes(3 * CHUNK, 1))
    ops = operations(repo)
    lock = repo.locks.acquire(
        "node-b pid 7: restoring",
        LockKind.SHARED,
        reader=True,
        purpose=LockPurpose.restore(backup_id),
    )
    with pytest.raises(FailedPrecondition, match="being restored"):
        ops.delete_backup("t", backup_id)
    assert repo.load_manifest(backup_id).backup_id == backup_id
    lock.release()
    ops.delete_backup("t", backup_id)
    with pytest.raises(NotFound):
        repo.load_manifest(backup_id)


def test_what_a_lock_is_for_is_read_from_its_purpose_not_its_holder_name(
    repo: Repository,
) -> None:
    backup_id = backup(repo, random_bytes(3 * CHUNK, 2))
    # A check whose holder name happens to read like a restore of the backup.
    repo.locks.acquire(
        f"h pid 1: restore {backup_id} to v", LockKind.SHARED, purpose=LockPurpose(CHECK)
    )
    operations(repo).delete_backup("t", backup_id)
    assert backup_id not in repo.list_backups()


def test_locks_written_before_purposes_existed_are_read_by_their_holder_name(
    repo: Repository,
) -> None:
    backup_id = backup(repo, random_bytes(3 * CHUNK, 3))
    repo.locks.write_new(f"old-node pid 9: restore {backup_id} to vol", LockKind.SHARED, 600.0)
    with pytest.raises(FailedPrecondition, match="old-node pid 9"):
        operations(repo).delete_backup("t", backup_id)


class _LooksAtLocks:
    """A progress sink that, while check runs, looks at the locks and tries to prune."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.seen: list[tuple[LockKind, str | None]] = []
        self.prune_refused = False

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        if self.seen:
            return
        self.seen = [
            (lock.kind, lock.purpose and lock.purpose.operation)
            for lock in self.repo.active_locks()
        ]
        try:
            self.repo.lock("another node pid 3: prune", LockKind.EXCLUSIVE).release()
        except Busy:
            self.prune_refused = True

    def advance(self, amount: int) -> None:
        pass

    def done(self) -> None:
        pass


def test_check_holds_a_shared_lock_that_a_prune_sees(repo: Repository) -> None:
    backup(repo, random_bytes(3 * CHUNK, 4))
    watcher = _LooksAtLocks(repo)
    result = operations(repo).check("t", progress=watcher)
    assert result.ok
    assert watcher.seen == [(LockKind.SHARED, CHECK)]
    assert watcher.prune_refused
    assert repo.active_locks() == []  # released after


def test_prune_takes_the_exclusive_lock_past_no_other_lock(
    repo: Repository,
) -> None:
    backup(repo, random_bytes(3 * CHUNK, 5))
    lock = repo.locks.acquire(holder("check"), LockKind.SHARED, purpose=LockPurpose(CHECK))
    with pytest.raises(Busy, match="shared lock"):
        prune_repository_locked(repo, RetentionPolicy(keep_last=1), wait=0.0)
    lock.release()
    result = operations(repo).prune("t", RetentionPolicy(keep_last=1))
    assert result.removed_backups == ()
