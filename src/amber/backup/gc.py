"""Prune: forget backups by policy, then sweep packs nothing can reach.

Mark and sweep. The *mark* is every chunk id named by a kept manifest; a pack is *used* when the
index places a marked chunk in it. Every other pack (unused indexed packs, and packs no index
lists, left by interrupted backups) is garbage, except that a pack is never deleted when

- it is younger than the grace period (`now - mtime < grace`): it may belong to a backup that
  has not committed yet, or to a host whose clock or lock we cannot see;
- it is at least as new as the oldest live shared lock held by someone else: a running backup
  may be about to reference it;
- any chunk that a kept manifest names is missing from the index: then an unindexed pack may
  hold it, so nothing is swept until `amber backup repair` has run (prune refuses);
- any manifest cannot be read: then its chunks are unknown (prune refuses).

Temporaries that interrupted uploads left on a file target (staged packs of a killed backup,
torn writes) are removed by the same rules: older than the grace period and than every other
live lock (`amber.backup.leftovers`).

Deleting needs an exclusive lock. The order is: write the index of the surviving packs, delete
the index objects it supersedes, then delete packs. A crash at any point leaves either the old
or the new index, each of which points only into packs that still exist.

The index is rewritten when packs go, or when more than `COMPACT_INDEX_OBJECTS` index objects
have accumulated (each backup adds a few), so loading it stays a handful of reads.

Packs that are partly used are kept whole; the bytes a rewrite would reclaim are reported
(`PruneResult.reclaimable_bytes`) but rewriting them (repacking) is not implemented in v1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from amber.backup.index import RepositoryIndex, write_index
from amber.backup.layout import Clock, pack_key
from amber.backup.leftovers import remove_leftovers
from amber.backup.locks import DEFAULT_GRACE_SECONDS, DEFAULT_LOCK_TTL, Lock, LockKind
from amber.backup.manifest import Manifest
from amber.backup.progress import NullProgress, Progress
from amber.backup.repository import Repository
from amber.backup.retention import RetentionItem, RetentionPolicy, apply_retention
from amber.blobstore.base import BlobInfo
from amber.domain.errors import FailedPrecondition, InvalidArgument
from amber.domain.numbers import check_seconds

# Prune compacts the index into few objects once backups have left more than this many.
COMPACT_INDEX_OBJECTS = 64


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep would delete and why the rest stays (all pack ids)."""

    delete: frozenset[bytes]
    used: frozenset[bytes]
    protected: Mapping[bytes, str]
    missing_packs: frozenset[bytes]
    missing_chunks: frozenset[bytes]
    reclaimable_bytes: int
    freed_bytes: int


def referenced_chunks(manifests: Iterable[Manifest]) -> set[bytes]:
    """The mark: every chunk id any of `manifests` names."""
    marked: set[bytes] = set()
    for manifest in manifests:
        marked |= manifest.chunk_ids()
    return marked


def _protection(info: BlobInfo, now: float, grace: float, lock_since: float | None) -> str | None:
    if now - info.mtime < grace:
        return f"younger than the grace period ({grace:.0f} s)"
    if lock_since is not None and info.mtime >= lock_since:
        return "written while a backup holds a live lock"
    return None


def _reclaimable(index: RepositoryIndex, used: Set[bytes], marked: Set[bytes]) -> int:
    return sum(
        entry.length
        for chunk_id, entry in index.chunks.entries()
        if entry.pack_id in used and chunk_id not in marked
    )


def plan_sweep(
    *,
    stored_packs: Mapping[bytes, BlobInfo],
    index: RepositoryIndex,
    marked: Set[bytes],
    now: float,
    grace_seconds: float,
    live_lock_since: float | None,
) -> SweepPlan:
    """Decide, without touching the store, which packs to delete."""
    missing_chunks = frozenset(chunk_id for chunk_id in marked if chunk_id not in index)
    used = frozenset(
        entry.pack_id for chunk_id in marked if (entry := index.lookup(chunk_id)) is not None
    )
    protected: dict[bytes, str] = {}
    delete = set()
    for pack_id, info in stored_packs.items():
        if pack_id in used:
            continue
        reason = _protection(info, now, grace_seconds, live_lock_since)
        if reason is None:
            delete.add(pack_id)
        else:
            protected[pack_id] = reason
    return SweepPlan(
        delete=frozenset(delete),
        used=used & stored_packs.keys(),
        protected=protected,
        missing_packs=frozenset(index.pack_sizes.keys() - stored_packs.keys()),
        missing_chunks=missing_chunks,
        reclaimable_bytes=_reclaimable(index, used, marked),
        freed_bytes=sum(stored_packs[p].size for p in delete),
    )


@dataclass(frozen=True)
class PruneResult:
    """What prune kept, removed and deleted (pack keys), or would have with `dry_run`."""

    dry_run: bool
    kept_backups: Mapping[str, str]
    removed_backups: tuple[str, ...]
    deleted_packs: tuple[str, ...]
    protected_packs: Mapping[str, str]
    missing_packs: tuple[str, ...]
    freed_bytes: int
    reclaimable_bytes: int
    index_objects_written: tuple[str, ...] = ()
    index_objects_removed: tuple[str, ...] = field(default=())
    leftovers_removed: tuple[str, ...] = ()
    """Temporaries of interrupted uploads removed (file targets; `amber.backup.leftovers`)."""
    leftover_bytes: int = 0
    """Their size."""


def select_backups(
    manifests: Sequence[Manifest], policy: RetentionPolicy
) -> tuple[dict[str, str], list[str]]:
    """Apply the policy to each volume's backups separately: `(kept id -> reason, removed ids)`."""
    by_volume: dict[str, list[RetentionItem]] = {}
    for m in manifests:
        item = RetentionItem(m.backup_id, m.created, frozenset(m.tags))
        by_volume.setdefault(m.volume_name, []).append(item)
    kept: dict[str, str] = {}
    removed: list[str] = []
    for items in by_volume.values():
        decision = apply_retention(items, policy)
        kept.update(decision.reasons)
        removed.extend(item.item_id for item in decision.remove)
    return kept, sorted(removed)


def _exclusive_lock(repo: Repository, lock: Lock | None, holder: str) -> tuple[Lock, bool]:
    if lock is None:
        return repo.lock(holder, LockKind.EXCLUSIVE, DEFAULT_LOCK_TTL), True
    if lock.kind is not LockKind.EXCLUSIVE:
        raise FailedPrecondition("prune needs an exclusive lock on the repository")
    lock.refresh()
    return lock, False


def _oldest_live_lock(repo: Repository, own: Lock) -> float | None:
    others = [info for info in repo.active_locks() if info.lock_id != own.info.lock_id]
    return min((info.created for info in others), default=None)


def _refuse_missing_chunks(plan: SweepPlan) -> None:
    if plan.missing_chunks:
        example = next(iter(plan.missing_chunks)).hex()[:16]
        raise FailedPrecondition(
            f"{len(plan.missing_chunks)} chunk(s) that kept backups use (e.g. {example}) are not "
            "in the index, so their packs could be mistaken for garbage; nothing was deleted. "
            "Run `amber backup repair`; if chunks are still missing, check names the damaged "
            "backups: delete them (they cannot be restored whole) and prune again"
        )


def _rewrite_index(repo: Repository, plan: SweepPlan) -> tuple[list[str], list[str]]:
    """Write the index of the surviving packs when packs go or the index is fragmented; return
    (written, superseded) keys. Otherwise only leftovers superseded earlier are returned."""
    index = repo.index
    dropped = plan.delete | plan.missing_packs
    fragmented = len(index.object_keys) > COMPACT_INDEX_OBJECTS
    if not (dropped & index.pack_sizes.keys() or fragmented):
        return [], sorted(index.superseded_keys)  # already replaced by an object that stays
    survivors = [p for p in index.pack_sizes if p not in dropped]
    replaced = index.object_keys | index.superseded_keys
    written = write_index(
        repo.store, repo.keys.sealer, index.records(survivors), supersedes=replaced
    )
    return written, sorted(replaced - set(written))


def _apply_sweep(
    repo: Repository, plan: SweepPlan, lock: Lock, progress: Progress
) -> tuple[list[str], list[str]]:
    """Write the surviving index, drop the superseded index objects, then delete packs."""
    written, removed = _rewrite_index(repo, plan)
    progress.phase("deleting packs", len(plan.delete), "packs")
    for key in removed:
        repo.store.delete(key)
    for pack_id in sorted(plan.delete):
        lock.refresh_if_due()
        repo.store.delete(pack_key(pack_id))
        progress.advance(1)
    repo.reload_index()
    return written, removed


def prune(
    repo: Repository,
    policy: RetentionPolicy,
    *,
    clock: Clock | None = None,
    dry_run: bool = False,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    lock: Lock | None = None,
    holder: str = "prune",
    progress: Progress | None = None,
) -> PruneResult:
    """Delete the backups `policy` does not keep (per volume), then sweep unreachable packs.

    Takes an exclusive lock unless one is passed in (Busy if another live lock exists). Raises
    before changing anything when a manifest is unreadable or kept backups use chunks the index
    does not know. `dry_run` computes the same result and changes nothing.
    """
    if policy.is_empty():
        raise InvalidArgument(
            "refusing to prune with an empty policy: it would remove every backup"
        )
    check_seconds("grace period", grace_seconds)  # NaN would protect no young pack
    now_of = clock or repo.clock
    held, own = _exclusive_lock(repo, lock, holder)
    try:
        return _prune_locked(
            repo,
            policy,
            now_of(),
            dry_run=dry_run,
            grace=grace_seconds,
            lock=held,
            progress=progress or NullProgress(),
        )
    finally:
        if own:
            held.release()


def _prune_locked(
    repo: Repository,
    policy: RetentionPolicy,
    now: float,
    *,
    dry_run: bool,
    grace: float,
    lock: Lock,
    progress: Progress,
) -> PruneResult:
    progress.phase("loading backups", None, "backups")
    manifests = repo.load_manifests()
    kept, removed = select_backups(manifests, policy)
    index = repo.reload_index()
    plan = plan_sweep(
        stored_packs=repo.list_packs(),
        index=index,
        marked=referenced_chunks(m for m in manifests if m.backup_id in kept),
        now=now,
        grace_seconds=grace,
        live_lock_since=_oldest_live_lock(repo, lock),
    )
    _refuse_missing_chunks(plan)
    written: list[str] = []
    dropped: list[str] = []
    if not dry_run:
        lock.refresh()
        for backup_id in removed:
            repo.delete_backup(backup_id)
        written, dropped = _apply_sweep(repo, plan, lock, progress)
    leftovers, _ = remove_leftovers(repo, lock.info.lock_id, now, grace, dry_run=dry_run)
    return PruneResult(
        dry_run=dry_run,
        kept_backups=kept,
        removed_backups=tuple(removed),
        deleted_packs=tuple(sorted(pack_key(p) for p in plan.delete)),
        protected_packs={pack_key(p): reason for p, reason in plan.protected.items()},
        missing_packs=tuple(sorted(pack_key(p) for p in plan.missing_packs)),
        freed_bytes=plan.freed_bytes,
        reclaimable_bytes=plan.reclaimable_bytes,
        index_objects_written=tuple(written),
        index_objects_removed=tuple(dropped),
        leftovers_removed=tuple(leftover.name for leftover in leftovers),
        leftover_bytes=sum(leftover.size for leftover in leftovers),
    )
