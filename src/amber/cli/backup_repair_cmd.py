"""`amber backup repair` and `amber backup unlock`: the way out of a damaged index or lock.

`backup_cmd` declares the two commands (their options) and calls in here when they run, so the
other backup commands do not pay for importing this module.
"""

from __future__ import annotations

from collections.abc import Sequence

from amber.backup.keeper import UnlockResult, unlock
from amber.backup.progress import Progress
from amber.backup.repair import RepairResult
from amber.backup.repository import Repository
from amber.cli import output
from amber.cli.state import CliState
from amber.ops.backups import Operations


def run_repair(st: CliState, target: str, ops: Operations, progress: Progress) -> None:
    """Rebuild the index of `target` under an exclusive lock and print what was done."""
    try:
        result = ops.repair(target, progress=progress)
    finally:
        progress.done()
    _print_repair(st, target, result)


def _print_repair(st: CliState, target: str, result: RepairResult) -> None:
    if st.json:
        output.print_json(result)
        return
    rebuilt = result.rebuilt
    say = output.console().print
    for line in rebuilt.unreadable_index_objects:
        say(f"replaced unreadable index object {line}", markup=False)
    for line in rebuilt.unreadable_packs:
        say(f"warning: pack header unreadable: {line}", markup=False)
    for key in rebuilt.packs_kept_from_index:
        say(f"kept the old index entries of {key} (run check --read-data)", markup=False)
    say(
        f"{target}: index rebuilt from {rebuilt.packs_indexed} pack(s), "
        f"{rebuilt.chunks_indexed} chunk(s); {len(rebuilt.index_objects_written)} index "
        f"object(s) written, {len(rebuilt.index_objects_removed)} replaced; "
        f"{len(result.leftovers_adopted)} staged pack(s) of interrupted backups adopted, "
        f"{len(result.leftovers_removed)} leftover temporary file(s) removed.",
        markup=False,
    )


def run_unlock(
    st: CliState, target: str, repo: Repository, lock_ids: Sequence[str], *, remove_all: bool
) -> None:
    """Remove locks and print what was removed and what remains."""
    result = unlock(repo, lock_ids, remove_all=remove_all)
    _print_unlock(st, target, result)


def _print_unlock(st: CliState, target: str, result: UnlockResult) -> None:
    if st.json:
        output.print_json(
            {
                "target": target,
                "removed": list(result.removed),
                "remaining": [
                    {**output.to_jsonable(lock), "description": lock.describe()}
                    for lock in result.remaining
                ],
            }
        )
        return
    say = output.console().print
    for key in result.removed:
        say(f"removed {key}", markup=False)
    for lock in result.remaining:
        say(f"still there: {lock.describe()}", markup=False)
    say(
        f"{target}: {len(result.removed)} lock(s) removed, {len(result.remaining)} left.",
        markup=False,
    )
