"""Locks as objects, with an injected clock (no sleeps)."""

from __future__ import annotations

import pytest

from amber.backup.keeper import acquire, release_quietly
from amber.backup.locks import LockInfo, LockKind, encode_lock
from amber.backup.repository import Repository, open_repository
from amber.blobstore.base import BlobStore
from amber.blobstore.faulty import Fault, FaultyStore
from amber.domain.errors import Busy, Corrupt, FailedPrecondition, InvalidArgument
from tests.backup.helpers import PASSWORD
from tests.backup.memstore import FakeClock, PassThrough, keys


def test_shared_locks_coexist_and_exclude_exclusive(repo: Repository) -> None:
    first = repo.lock("backup vol-a")
    second = repo.lock("restore vol-b")
    with pytest.raises(Busy, match=r"backup vol-a|restore vol-b"):
        repo.lock("prune", LockKind.EXCLUSIVE)
    assert {info.holder for info in repo.active_locks(kind=LockKind.SHARED)} == {
        "backup vol-a",
        "restore vol-b",
    }
    first.release()
    second.release()
    with repo.lock("prune", LockKind.EXCLUSIVE) as exclusive:
        assert [info.kind for info in repo.active_locks()] == [LockKind.EXCLUSIVE]
        with pytest.raises(Busy, match=r"exclusive lock .* held by 'prune'"):
            repo.lock("backup vol-a")
    assert exclusive.released
    assert repo.active_locks() == []


def test_expired_locks_are_ignored_and_removable(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    repo.lock("prune on a dead node", LockKind.EXCLUSIVE, ttl=600)
    clock.advance(599)
    with pytest.raises(Busy):
        repo.lock("backup vol-a")
    clock.advance(1)
    lock = repo.lock("backup vol-a")
    assert [info.holder for info in repo.active_locks()] == ["backup vol-a"]
    assert len(keys(store, "locks/")) == 2
    removed = repo.remove_stale_locks()
    assert len(removed) == 1
    assert keys(store, "locks/") == [f"locks/{lock.info.lock_id}"]


def test_refresh_replaces_the_object_and_extends_expiry(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    lock = repo.lock("backup vol-a", ttl=100)
    old_id = lock.info.lock_id
    started = lock.info.created
    clock.advance(40)
    lock.refresh_if_due()
    assert lock.info.lock_id == old_id  # not yet due
    clock.advance(20)
    lock.refresh_if_due()
    assert lock.info.lock_id != old_id
    assert lock.info.expires == clock.now + 100
    assert lock.info.created == started  # prune protects what the holder wrote since then
    assert keys(store, "locks/") == [f"locks/{lock.info.lock_id}"]
    clock.advance(49)
    lock.refresh_if_due()
    assert lock.info.expires == clock.now + 51  # due again only at half of the new lifetime


def test_refresh_after_expiry_or_removal_fails(repo: Repository, clock: FakeClock) -> None:
    lock = repo.lock("backup vol-a", ttl=100)
    clock.advance(100)
    with pytest.raises(FailedPrecondition, match="expired"):
        lock.refresh()
    other = repo.lock("backup vol-b", ttl=100)
    repo.locks.remove(other.info.lock_id)
    with pytest.raises(FailedPrecondition, match="removed by another process"):
        other.ensure_live()
    other.release()
    with pytest.raises(FailedPrecondition, match="already released"):
        other.refresh()


def test_unreadable_lock_counts_as_live_exclusive(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    store.put("locks/" + "a" * 32, b"garbage")
    clock.advance(10**9)
    # it never expires, so waiting is pointless: one error naming it and the way out
    with pytest.raises(Corrupt, match=r"unreadable lock object locks/a{32}.*backup unlock"):
        repo.lock("backup vol-a")
    with pytest.raises(Corrupt, match="unreadable lock object"):
        repo.lock("prune", LockKind.EXCLUSIVE)
    assert repo.remove_stale_locks() == []  # never removed automatically
    repo.lock("check", reader=True).release()  # readers go past it
    repo.locks.remove("a" * 32)
    repo.lock("backup vol-a").release()


def test_an_unreadable_lock_fails_acquire_at_once_without_waiting(
    repo: Repository, store: BlobStore
) -> None:
    store.put("locks/" + "a" * 32, b"garbage")
    slept: list[float] = []
    with pytest.raises(Corrupt, match="unreadable lock object"):
        acquire(repo, "backup", wait=300.0, sleep=slept.append)
    assert slept == []
    acquire(repo, "check", wait=300.0, sleep=slept.append, reader=True).release()
    assert slept == []


def test_a_reader_still_waits_for_a_live_exclusive_lock(repo: Repository) -> None:
    with repo.lock("prune", LockKind.EXCLUSIVE), pytest.raises(Busy):
        repo.lock("check", reader=True)
    with pytest.raises(InvalidArgument):
        repo.lock("odd", LockKind.EXCLUSIVE, reader=True)


def test_a_lock_from_another_repository_key_is_unreadable(
    repo: Repository, store: BlobStore
) -> None:
    from amber.backup.crypto import AesGcmSealer

    info = LockInfo("b" * 32, "intruder", LockKind.SHARED, 0.0, 1e12)
    store.put("locks/" + "b" * 32, encode_lock(info, AesGcmSealer(bytes(32))))
    (seen,) = repo.locks.all()
    assert not seen.readable
    assert seen.kind is LockKind.EXCLUSIVE


class _RacingStore(PassThrough):
    """Writes a competitor's exclusive lock just before our lock lands (the race the
    write-then-verify protocol exists for)."""

    def __init__(self, inner: BlobStore, competitor: tuple[str, bytes]) -> None:
        super().__init__(inner)
        self.competitor: tuple[str, bytes] | None = competitor

    def put(self, key: str, data: bytes) -> None:
        if key.startswith("locks/") and self.competitor is not None:
            self.inner.put(*self.competitor)
            self.competitor = None
        self.inner.put(key, data)


def test_a_lock_that_lost_the_race_backs_off(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    from amber.backup.locks import LockTable

    competitor = LockInfo(
        "c" * 32, "prune elsewhere", LockKind.EXCLUSIVE, clock.now, clock.now + 600
    )
    racing = _RacingStore(store, ("locks/" + "c" * 32, encode_lock(competitor, repo.keys.sealer)))
    table = LockTable(racing, repo.keys.sealer, clock)
    with pytest.raises(Busy, match="prune elsewhere"):
        table.acquire("backup vol-a", LockKind.SHARED)
    assert keys(store, "locks/") == ["locks/" + "c" * 32]  # ours was taken back


def test_lock_ttl_must_be_positive(repo: Repository) -> None:
    with pytest.raises(InvalidArgument):
        repo.lock("backup", ttl=0)


def test_release_quietly_logs_a_failed_release_instead_of_raising(
    repo: Repository, store: BlobStore, caplog: pytest.LogCaptureFixture
) -> None:
    faulty = FaultyStore(store, [Fault("delete", "locks/")])  # fails the release only
    lock = open_repository(faulty, PASSWORD, clock=repo.clock).lock("backup of vol-a")
    release_quietly(lock)
    assert faulty.fired
    assert keys(store, "locks/") == [f"locks/{lock.info.lock_id}"]  # left to expire
    assert "expires by itself" in caplog.text
    assert not lock.released
