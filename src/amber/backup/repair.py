"""Repair: rebuild the index from the pack headers and tidy up what interrupted uploads left.

The index is a cache of what the pack headers say (`amber.backup.index`), so a damaged or
deleted index object loses nothing that the packs still hold. `repair` (restic's
`repair index`):

1. publishes orphaned staged packs a killed backup left on a file target
   (`amber.backup.leftovers`), so their chunks count too;
2. reads every pack's header and writes a new index of all packs, the last object superseding
   every old one (damaged ones included), and only then deletes the old objects: a crash at any
   point leaves the old index or the new one, each pointing only into packs that exist;
3. removes orphaned temporaries that are not whole packs (torn writes).

It needs the exclusive lock (no backup may write an index meanwhile, no prune delete packs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from amber.backup.leftovers import adopt_leftover_packs, remove_leftovers
from amber.backup.locks import Lock, LockKind
from amber.backup.progress import NullProgress, Progress
from amber.backup.repository import RebuildResult, Repository
from amber.domain.errors import FailedPrecondition


@dataclass(frozen=True)
class RepairResult:
    """What `repair` rebuilt, published and removed."""

    rebuilt: RebuildResult
    leftovers_adopted: tuple[str, ...]
    """Pack keys published from staged packs of interrupted backups."""
    leftovers_removed: tuple[str, ...]
    """Temporaries removed (torn writes, not whole packs)."""


def repair(
    repo: Repository,
    lock: Lock,
    *,
    leftover_age: float = 0.0,
    progress: Progress | None = None,
    failpoint: Callable[[str], None] | None = None,
) -> RepairResult:
    """Rebuild the index from the packs under the exclusive `lock`; see the module docstring.
    Temporaries younger than `leftover_age` seconds are left alone."""
    if lock.kind is not LockKind.EXCLUSIVE:
        raise FailedPrecondition("repair needs an exclusive lock on the repository")
    progress = progress or NullProgress()
    lock.refresh()
    progress.phase("publishing staged packs of interrupted backups", None, "packs")
    adopted = adopt_leftover_packs(repo, lock.info.lock_id)
    progress.phase("reading pack headers", len(repo.list_packs()), "packs")

    def one_pack() -> None:
        progress.advance(1)
        lock.refresh_if_due()

    rebuilt = repo.rebuild_index(on_pack=one_pack, failpoint=failpoint)
    removed, _ = remove_leftovers(
        repo, lock.info.lock_id, repo.clock(), leftover_age, dry_run=False
    )
    return RepairResult(rebuilt, tuple(adopted), tuple(leftover.name for leftover in removed))
