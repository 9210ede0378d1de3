"""Leftovers of interrupted uploads: which temporaries may be adopted or removed, and doing so.

On a file target a backup *stages* its packs: each is a temporary file (`.amber-tmp.<hex>`
beside its final name) until the writer's next flush makes it durable and renames it
(`amber.blobstore.filestore`). A writer killed before that flush leaves whole packs behind as
temporaries that no listing shows; a put killed midway leaves a torn one. S3 puts land whole or
not at all, so S3 targets have no leftovers (Amber uploads each pack in one request, never as a
multipart upload).

**Never a live writer's.** A temporary is *orphaned* when it is older than every live lock held
by someone else: a writer creates its temporaries after it took its lock, and keeps that lock
live (refreshed) for as long as it runs, so a temporary older than all of them belongs to no
running writer (with a margin of `CLOCK_MARGIN` seconds: file times come from a coarse clock,
of one second on some NFS servers). An unreadable lock object counts as taken at time 0 and so
protects every temporary. Removal also waits until a temporary is `min_age` seconds old (prune
passes its grace period): a margin for writers that hold no lock and for clocks that disagree
across hosts that share an NFS target.

**Adopting.** An orphaned temporary under `data/` that is a whole pack (its BLAKE3 hash names it
and its sealed header opens) is published under that name: the next backup of an interrupted
run, or `amber backup repair`, then indexes it like any other pack no index lists
(`adopt_unindexed_packs`), and its chunks are not uploaded again. A temporary that is not a
whole pack (torn, or an interrupted index write) holds nothing worth keeping: prune and repair
remove it once orphaned and old enough.
"""

from __future__ import annotations

from dataclasses import dataclass

from amber.backup.crypto import content_hash
from amber.backup.index import PackRecord, write_index
from amber.backup.layout import DATA_PREFIX, pack_key
from amber.backup.pack import entries_from_pack_bytes, read_pack_header
from amber.backup.repository import Repository
from amber.blobstore.base import Leftover, leftover_store
from amber.domain.errors import Corrupt, NotFound

CLOCK_MARGIN = 5.0
"""Seconds by which a temporary's mtime may trail the lock its writer took before it."""


@dataclass(frozen=True)
class LeftoverState:
    """A temporary and whether it may be touched: `protected` says why not (None: it may)."""

    leftover: Leftover
    protected: str | None


def _oldest_other_lock(repo: Repository, own_lock_id: str | None) -> float | None:
    others = [lock for lock in repo.active_locks() if lock.lock_id != own_lock_id]
    return min((lock.created for lock in others), default=None)


def survey(
    repo: Repository, own_lock_id: str | None, now: float, min_age: float = 0.0
) -> list[LeftoverState]:
    """Every temporary of the target, with why it must be left alone (if it must)."""
    store = leftover_store(repo.store)
    if store is None:
        return []
    found = store.leftovers()
    if not found:
        return []
    since = _oldest_other_lock(repo, own_lock_id)
    states = []
    for leftover in found:
        reason = None
        if since is not None and leftover.mtime >= since - CLOCK_MARGIN:
            reason = "written while another process holds a live lock (may be a running backup)"
        elif now - leftover.mtime < min_age:
            reason = f"younger than {min_age:.0f} s"
        states.append(LeftoverState(leftover, reason))
    return states


def adopt_leftover_packs(repo: Repository, own_lock_id: str | None) -> list[str]:
    """Publish every orphaned temporary under `data/` that is a whole pack; return the pack
    keys published. Anything else is left in place (for `remove_leftovers`)."""
    store = leftover_store(repo.store)
    if store is None:
        return []
    published = []
    for state in survey(repo, own_lock_id, repo.clock()):
        name = state.leftover.name
        if state.protected is not None or not name.startswith(DATA_PREFIX):
            continue
        try:
            data = store.read_leftover(name)
            pack_id = content_hash(data)
            entries_from_pack_bytes(repo.keys.sealer, data, name)
        except (Corrupt, NotFound):
            continue  # torn or gone: nothing to adopt
        key = pack_key(pack_id)
        store.adopt_leftover(name, key)
        published.append(key)
    return published


def remove_leftovers(
    repo: Repository, own_lock_id: str | None, now: float, min_age: float, *, dry_run: bool
) -> tuple[list[Leftover], list[LeftoverState]]:
    """Delete orphaned temporaries at least `min_age` seconds old; return (removed, kept)."""
    store = leftover_store(repo.store)
    states = survey(repo, own_lock_id, now, min_age)
    removed = [s.leftover for s in states if s.protected is None]
    if store is not None and not dry_run:
        for leftover in removed:
            store.remove_leftover(leftover.name)
    return removed, [s for s in states if s.protected is not None]


def adopt_unindexed_packs(repo: Repository) -> int:
    """Index the packs that no index object lists (left by a killed backup); return how many.

    A pack is whole or absent (stores put atomically) and its header is authenticated, so
    indexing it is safe; a chunk listed twice is fine (the first location wins, both are
    valid). Packs whose header cannot be read are left for prune.
    """
    index = repo.refresh_index()
    records = []
    for pack_id, info in sorted(repo.list_packs().items()):
        if pack_id in index.pack_sizes:
            continue
        try:
            entries = read_pack_header(repo.store, pack_id, info.size, repo.keys.sealer)
        except (Corrupt, NotFound):
            continue
        records.append(PackRecord(pack_id, info.size, tuple(entries)))
    if records:
        write_index(repo.store, repo.keys.sealer, records)
        repo.refresh_index()
    return len(records)
