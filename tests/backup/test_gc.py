"""Prune: retention applied per volume, then a mark-and-sweep that never loses reachable data."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.check import check
from amber.backup.gc import plan_sweep, prune
from amber.backup.index import RepositoryIndex, load_index
from amber.backup.layout import pack_key
from amber.backup.locks import LockKind
from amber.backup.pack import PackEntry
from amber.backup.repository import Repository, open_repository
from amber.backup.retention import RetentionPolicy
from amber.blobstore.base import BlobInfo, BlobStore
from amber.domain.errors import Busy, Corrupt, FailedPrecondition, InvalidArgument
from tests.backup.helpers import CHUNK, PASSWORD, backup, random_bytes, restore
from tests.backup.memstore import FailingPuts, FakeClock, flip_byte, keys

HOUR = 3600.0
DAY = 24 * HOUR
GRACE = 2 * HOUR


def daily_backups(
    repo: Repository, clock: FakeClock, days: int, shared: bytes
) -> list[tuple[str, bytes]]:
    """One backup a day; each shares `shared` and has two chunks of its own."""
    made = []
    for day in range(days):
        data = shared + random_bytes(2 * CHUNK, 100 + day)
        made.append((backup(repo, data), data))
        clock.advance(DAY)
    return made


def pack_of(repo: Repository, chunk_id: bytes) -> str:
    entry = repo.index.lookup(chunk_id)
    assert entry is not None
    return pack_key(entry.pack_id)


def test_prune_keeps_exactly_the_policy_and_all_their_data(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    shared = random_bytes(6 * CHUNK, 1)
    made = daily_backups(repo, clock, 5, shared)
    ids = [backup_id for backup_id, _ in made]
    result = prune(repo, RetentionPolicy(keep_last=2), grace_seconds=GRACE)
    assert sorted(result.kept_backups) == sorted(ids[-2:])
    assert sorted(result.removed_backups) == sorted(ids[:3])
    assert repo.list_backups() == sorted(ids[-2:])
    assert result.deleted_packs, "the removed backups' own chunks should have been swept"
    assert result.freed_bytes > 0
    reopened = open_repository(store, PASSWORD)
    for backup_id, data in made[-2:]:
        assert restore(reopened, backup_id) == data
    outcome = check(reopened, read_data=True)
    assert outcome.ok, outcome.errors
    assert outcome.warnings == []
    assert not set(result.deleted_packs) & set(keys(store, "data/"))


def test_a_pack_reachable_from_a_kept_backup_is_never_deleted(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    # One pack holds chunks of both the old (to be removed) and the new (kept) backup.
    old_only = random_bytes(CHUNK, 1)
    both = random_bytes(CHUNK, 2)
    writer = repo.writer()
    old_ids = [writer.add_chunk(old_only), writer.add_chunk(both)]
    from amber.backup.writer import ManifestDraft

    old = writer.commit(ManifestDraft("vol-a", 2 * CHUNK, old_ids))
    clock.advance(DAY)
    new = backup(repo, both)
    assert pack_of(repo, old_ids[0]) == pack_of(repo, old_ids[1])
    clock.advance(DAY)
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert result.removed_backups == (old,)
    assert result.deleted_packs == ()
    assert result.reclaimable_bytes > 0  # the old chunk's bytes, kept inside a used pack
    assert restore(open_repository(store, PASSWORD), new) == both


def test_young_packs_survive_the_grace_period(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    first = backup(repo, random_bytes(4 * CHUNK, 1))
    clock.advance(HOUR)
    second = backup(repo, random_bytes(4 * CHUNK, 2))
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert result.removed_backups == (first,)
    assert result.deleted_packs == ()
    assert result.protected_packs
    assert all("grace" in reason for reason in result.protected_packs.values())
    assert len(keys(store, "data/")) == len(result.protected_packs) + len(
        {pack_of(repo, c) for c in repo.load_manifest(second).chunk_ids()}
    )
    clock.advance(GRACE)
    later = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert sorted(later.deleted_packs) == sorted(result.protected_packs)
    assert check(repo, read_data=True).ok


def test_prune_is_refused_while_someone_else_holds_a_live_lock(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    made = daily_backups(repo, clock, 3, b"")
    before = keys(store, "")
    other = repo.lock("prune on node-b", LockKind.EXCLUSIVE, ttl=600)
    with pytest.raises(Busy, match="node-b"):
        prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    other.release()
    running = repo.lock("backup vol-a", LockKind.SHARED, ttl=600)
    with pytest.raises(Busy, match="backup vol-a"):
        prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    running.release()
    assert [k for k in keys(store, "") if not k.startswith("locks/")] == before
    assert len(repo.list_backups()) == len(made)


def test_expired_locks_do_not_block_prune(repo: Repository, clock: FakeClock) -> None:
    daily_backups(repo, clock, 3, b"")
    repo.lock("crashed prune", LockKind.EXCLUSIVE, ttl=600)
    clock.advance(601)
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert len(result.removed_backups) == 2
    assert repo.active_locks() == []  # prune released its own lock


def test_prune_with_a_lock_passed_in(repo: Repository, clock: FakeClock) -> None:
    daily_backups(repo, clock, 2, b"")
    shared = repo.lock("backup", LockKind.SHARED)
    with pytest.raises(FailedPrecondition, match="exclusive"):
        prune(repo, RetentionPolicy(keep_last=1), lock=shared)
    shared.release()
    with repo.lock("operator", LockKind.EXCLUSIVE) as held:
        prune(repo, RetentionPolicy(keep_last=1), lock=held, grace_seconds=GRACE)
        assert not held.released
    assert len(repo.list_backups()) == 1


def test_dry_run_changes_nothing(repo: Repository, store: BlobStore, clock: FakeClock) -> None:
    daily_backups(repo, clock, 4, b"")
    before = keys(store, "")
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE, dry_run=True)
    assert result.dry_run
    assert len(result.removed_backups) == 3
    assert result.deleted_packs
    assert keys(store, "") == before


def test_retention_applies_per_volume(repo: Repository, clock: FakeClock) -> None:
    a = [backup(repo, random_bytes(CHUNK, i), volume_name="vol-a") for i in range(3)]
    clock.advance(HOUR)
    b = [backup(repo, random_bytes(CHUNK, 10 + i), volume_name="vol-b") for i in range(2)]
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE, dry_run=True)
    kept = set(result.kept_backups)
    assert len(kept) == 2
    assert len(kept & set(a)) == 1
    assert len(kept & set(b)) == 1


def test_tagged_backups_are_kept(repo: Repository, clock: FakeClock) -> None:
    keep = backup(repo, random_bytes(CHUNK, 1), tags=["release"])
    clock.advance(DAY)
    daily_backups(repo, clock, 2, b"")
    result = prune(
        repo, RetentionPolicy(keep_last=1, keep_tags=frozenset({"release"})), grace_seconds=GRACE
    )
    assert keep in result.kept_backups
    assert result.kept_backups[keep] == "tagged release"
    assert len(repo.list_backups()) == 2


def test_orphans_of_an_interrupted_backup_are_swept(
    store: BlobStore, repo: Repository, clock: FakeClock
) -> None:
    kept = backup(repo, random_bytes(2 * CHUNK, 1))
    broken = open_repository(FailingPuts(store, "index/", after=0), PASSWORD, clock=clock)
    with pytest.raises(Exception, match="injected"):
        backup(broken, random_bytes(8 * CHUNK, 2))
    orphans = set(keys(store, "data/")) - {
        pack_of(repo, c) for c in repo.load_manifest(kept).chunk_ids()
    }
    assert orphans
    clock.advance(GRACE)
    result = prune(repo, RetentionPolicy(keep_last=5), grace_seconds=GRACE)
    assert set(result.deleted_packs) == orphans
    assert result.removed_backups == ()
    assert check(repo).problems == []


def test_unreadable_manifest_stops_prune_before_any_change(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    made = daily_backups(repo, clock, 3, b"")
    flip_byte(store, f"backups/{made[0][0]}", 3)
    before = keys(store, "")
    with pytest.raises(Corrupt):
        prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert [k for k in keys(store, "") if not k.startswith("locks/")] == before
    assert keys(store, "locks/") == []


def test_chunks_missing_from_the_index_stop_the_sweep(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    made = daily_backups(repo, clock, 2, b"")
    for key in keys(store, "index/"):
        store.delete(key)
    before = keys(store, "")
    with pytest.raises(FailedPrecondition, match="amber backup repair"):
        prune(
            open_repository(store, PASSWORD, clock=clock),
            RetentionPolicy(keep_last=1),
            grace_seconds=GRACE,
        )
    assert keys(store, "") == before
    repo.rebuild_index()
    prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert restore(open_repository(store, PASSWORD), made[-1][0]) == made[-1][1]


def test_a_resurrected_old_index_object_is_ignored(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    made = daily_backups(repo, clock, 3, b"")
    saved = {key: store.get(key) for key in keys(store, "index/")}
    result = prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert result.deleted_packs
    assert result.index_objects_removed
    for key, data in saved.items():  # a store whose deletes were not durable brings them back
        if not store.exists(key):
            store.put(key, data)
    index = load_index(store, repo.keys.sealer)
    assert set(index.superseded_keys) == set(saved)
    deleted = {p.split("/")[-1] for p in result.deleted_packs}
    assert not {p.hex() for p in index.pack_sizes} & deleted
    # the next prune removes the leftovers for good
    prune(repo, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    assert not set(saved) & set(keys(store, "index/"))
    assert restore(open_repository(store, PASSWORD), made[-1][0]) == made[-1][1]


def test_empty_policy_is_refused(repo: Repository) -> None:
    with pytest.raises(InvalidArgument, match="empty policy"):
        prune(repo, RetentionPolicy())


# --- plan_sweep, the pure core ---


def _index(packs: dict[bytes, list[bytes]]) -> RepositoryIndex:
    index = RepositoryIndex()
    for pack_id, chunks in packs.items():
        entries = [PackEntry(c, i * 10, 10, 10, 0) for i, c in enumerate(chunks)]
        index.add_pack(pack_id, 100, entries)
    return index


def test_plan_sweep_protects_packs_newer_than_a_live_lock() -> None:
    old, new, used = b"o" * 32, b"n" * 32, b"u" * 32
    index = _index({old: [b"1" * 32], new: [b"2" * 32], used: [b"3" * 32]})
    stored = {
        p: BlobInfo(pack_key(p), 100, t) for p, t in ((old, 100.0), (new, 500.0), (used, 100.0))
    }
    plan = plan_sweep(
        stored_packs=stored,
        index=index,
        marked={b"3" * 32},
        now=10_000.0,
        grace_seconds=60,
        live_lock_since=400.0,
    )
    assert plan.delete == {old}
    assert plan.used == {used}
    assert "live lock" in plan.protected[new]
    assert plan.freed_bytes == 100


@settings(max_examples=150, deadline=None)
@given(
    packs=st.dictionaries(
        st.binary(min_size=32, max_size=32),
        st.tuples(st.lists(st.integers(0, 30), max_size=5), st.floats(0, 1000), st.booleans()),
        max_size=12,
    ),
    marked=st.sets(st.integers(0, 30)),
    grace=st.floats(0, 500),
    lock_since=st.none() | st.floats(0, 1000),
)
def test_plan_sweep_never_deletes_what_must_stay(
    packs: dict[bytes, tuple[list[int], float, bool]],
    marked: set[int],
    grace: float,
    lock_since: float | None,
) -> None:

    def chunk(n: int) -> bytes:
        return n.to_bytes(32, "big")

    index = _index({p: [chunk(n) for n in chunks] for p, (chunks, _, _) in packs.items()})
    stored = {p: BlobInfo(pack_key(p), 100, t) for p, (_, t, present) in packs.items() if present}
    marked_ids = {chunk(n) for n in marked}
    now = 1000.0
    plan = plan_sweep(
        stored_packs=stored,
        index=index,
        marked=marked_ids,
        now=now,
        grace_seconds=grace,
        live_lock_since=lock_since,
    )
    reachable = {e.pack_id for c in marked_ids if (e := index.lookup(c)) is not None}
    for pack_id in plan.delete:
        assert pack_id in stored
        assert pack_id not in reachable
        assert now - stored[pack_id].mtime >= grace
        assert lock_since is None or stored[pack_id].mtime < lock_since
    assert plan.delete | plan.used | set(plan.protected) == set(stored)
    assert plan.missing_chunks == {c for c in marked_ids if c not in index}


def test_a_long_lived_handle_never_reuses_chunks_pruned_elsewhere(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    old_data = random_bytes(4 * CHUNK, 1)
    backup(repo, old_data)
    clock.advance(DAY)
    backup(repo, random_bytes(4 * CHUNK, 2))
    assert len(repo.index) == 8  # this handle has the index cached
    other_node = open_repository(store, PASSWORD, clock=clock)
    prune(other_node, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    again = backup(repo, old_data)  # the writer refreshes the index first
    assert repo.load_manifest(again).stats.chunks_new == 4
    assert restore(open_repository(store, PASSWORD), again) == old_data
    assert check(repo, read_data=True).ok


def test_reads_through_a_stale_cached_index_follow_the_new_location(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    data = random_bytes(2 * CHUNK, 1)
    first = backup(repo, data)
    stale = open_repository(store, PASSWORD, clock=clock)
    chunk_id = stale.load_manifest(first).chunk_map[0]
    assert isinstance(chunk_id, bytes)
    assert stale.index.lookup(chunk_id) is not None  # cached now
    clock.advance(DAY)
    other_node = open_repository(store, PASSWORD, clock=clock)
    other_node.delete_backup(first)
    backup(other_node, random_bytes(CHUNK, 5))
    clock.advance(DAY)
    prune(other_node, RetentionPolicy(keep_last=1), grace_seconds=GRACE)
    second = backup(other_node, data)  # the same chunks, uploaded again into a new pack
    assert stale.read_chunk(chunk_id) == data[:CHUNK]
    assert restore(stale, second) == data


def test_prune_compacts_a_fragmented_index(
    repo: Repository, store: BlobStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import amber.backup.gc

    monkeypatch.setattr(amber.backup.gc, "COMPACT_INDEX_OBJECTS", 2)
    made = daily_backups(repo, clock, 4, b"")
    assert len(keys(store, "index/")) == 4
    result = prune(repo, RetentionPolicy(keep_last=10), grace_seconds=GRACE)
    assert result.removed_backups == ()
    assert result.deleted_packs == ()
    assert keys(store, "index/") == list(result.index_objects_written)
    assert len(result.index_objects_written) == 1
    reopened = open_repository(store, PASSWORD)
    for backup_id, data in made:
        assert restore(reopened, backup_id) == data
