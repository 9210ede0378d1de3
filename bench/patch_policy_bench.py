"""Patched incrementals under several patch policies, side by side in one run (issue 17).

For each mix of `mixes.py` the volume is filled (snapshot s0), then changed by 1% `--rounds`
times (snapshots s1, s2, …, each change a new seed). For each policy, `--reps` times, into a
fresh encrypted file repository (the default chunk size): a full backup of s0, then an
incremental of each later snapshot — in-process (`backup_snapshot`: the engine's own work, the
page cache dropped before each), then a restore of the last backup (`restore_backup`, durable).
Reported per policy: bytes read and stored by the incrementals, their seconds (wall and the
process's CPU), the patches the last manifest carries, the restore's seconds and the
repository size after all backups.

Policies: `off` never patches (what Amber did before manifest format 2); the others are
`PatchPolicy(coalesce_gap, max_fraction, max_patches)`, named `gap G / fraction / patches`.

Run as root:
    .venv/bin/python bench/patch_policy_bench.py [--scale 0.25] [--reps 2] [--rounds 3]
        [--mixes mixed,database,vm-image]
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from backup_bench import PASSWORD, drop_caches, teardown
from mix_bench import Tools, note, prepare, repo_size, setup
from mixes import MIXES

from amber.backup.backuper import BackupOptions, BackupReport, backup_snapshot
from amber.backup.keys import Password
from amber.backup.patches import PatchPolicy
from amber.backup.repository import Repository, init_repository
from amber.backup.restorer import restore_backup
from amber.blobstore.filestore import FileStore
from amber.domain.units import KiB, MiB
from amber.pool import Pool

POLICIES = {
    "off": PatchPolicy(max_fraction=0.0),
    "gap 4K / 1/4 / 8": PatchPolicy(coalesce_gap=4 * KiB),
    "gap 16K / 1/4 / 8 (default)": PatchPolicy(),
    "gap 64K / 1/4 / 8": PatchPolicy(coalesce_gap=64 * KiB),
    "gap 16K / 1/8 / 8": PatchPolicy(max_fraction=0.125),
    "gap 16K / 1/2 / 8": PatchPolicy(max_fraction=0.5),
    "gap 16K / 1/4 / 2": PatchPolicy(max_patches=2),
}
T = TypeVar("T")


@dataclass
class Cell:
    """One mix under one policy, over the repetitions."""

    read: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    patches: list[int] = field(default_factory=list)
    restore_wall: list[float] = field(default_factory=list)
    restore_cpu: list[float] = field(default_factory=list)
    repo_bytes: list[int] = field(default_factory=list)


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds of this process) with the page cache dropped."""
    drop_caches()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    result = fn()
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return result, wall, cpu


def one(pool: Pool, tools: Tools, mix: str, rounds: int, name: str, rep: int, cell: Cell) -> None:
    target = f"{mix}-{list(POLICIES).index(name)}-{rep}"
    root = tools.repos / target
    root.mkdir(parents=True)
    repo: Repository = init_repository(FileStore(root), Password(PASSWORD))
    options = BackupOptions(patch_policy=POLICIES[name])
    backup_snapshot(pool, repo, target, f"{mix}-s0", options=options)
    read = stored = 0
    wall = cpu = 0.0
    last: BackupReport | None = None
    for n in range(1, rounds + 1):

        def incremental(n: int = n) -> BackupReport:
            return backup_snapshot(pool, repo, target, f"{mix}-s{n}", options=options)

        last, w, c = timed(incremental)
        assert last.mode == "extent-map", last.fallback_reason
        read, stored, wall, cpu = (
            read + last.bytes_read,
            stored + last.bytes_stored,
            wall + w,
            cpu + c,
        )
    assert last is not None
    backup_id = last.backup_id
    _, restore_wall, restore_cpu = timed(lambda: restore_backup(pool, repo, backup_id, "restored"))
    cell.read.append(read)
    cell.stored.append(stored)
    cell.wall.append(wall)
    cell.cpu.append(cpu)
    cell.patches.append(last.patches)
    cell.restore_wall.append(restore_wall)
    cell.restore_cpu.append(restore_cpu)
    cell.repo_bytes.append(repo_size(root))
    restored = pool.volumes.get("restored").image
    want = pool.snapshots.get(f"{mix}-s{rounds}").image
    assert restored.read_bytes() == want.read_bytes(), "the restore differs from the snapshot"
    pool.volumes.delete("restored")


def span(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def report(cells: dict[tuple[str, str], Cell], changed: dict[str, int], rounds: int) -> None:
    print(
        f"| mix (changed in {rounds} rounds) | policy | incrementals: read MiB / stored MiB / "
        "wall s / CPU s | patches in the last | restore: wall s / CPU s | repository MiB |"
    )
    print("|---|---|---|---|---|---|")
    for (mix, name), c in cells.items():
        mib = "{:.1f}"
        print(
            f"| {mix} ({changed[mix] / MiB:.1f} MiB) | {name} | "
            f"{span([r / MiB for r in c.read], mib)} / {span([s / MiB for s in c.stored], mib)} / "
            f"{span(c.wall)} / {span(c.cpu)} | {span(c.patches, '{}')} | "
            f"{span(c.restore_wall)} / {span(c.restore_cpu)} | "
            f"{span([b / MiB for b in c.repo_bytes], '{:.0f}')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-patch-policy"))
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mixes", default="mixed,database,vm-image")
    parser.add_argument("--policies", default=",".join(POLICIES), help="names, comma-separated")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    names = [n for n in args.policies.split(",") if n]
    if args.workdir.exists():
        teardown(args.workdir)
    pool, tools = setup(args.workdir, args.scale, args.seed)
    cells: dict[tuple[str, str], Cell] = {}
    changed: dict[str, int] = {}
    try:
        for mix_name in args.mixes.split(","):
            mix = MIXES[mix_name]
            changed[mix_name] = prepare(pool, tools, mix, args.scale, args.seed).changed_bytes
            mount = tools.mnt / "mount" / mix_name
            for n in range(2, args.rounds + 1):
                pool.attachments.mount("volume", mix_name, mount, create_target=True)
                changed[mix_name] += mix.change(mount, args.seed, n)
                pool.attachments.release("volume", mix_name)
                pool.snapshots.create(mix_name, f"{mix_name}-s{n}")
            for rep in range(args.reps):
                for name in names:
                    cell = cells.setdefault((mix_name, name), Cell())
                    one(pool, tools, mix_name, args.rounds, name, rep, cell)
                    note(f"  {mix_name} / {name} rep {rep + 1}: read {cell.read[-1] / MiB:.1f} MiB")
        pool.close()
    finally:
        teardown(args.workdir)
    report(cells, changed, args.rounds)


if __name__ == "__main__":
    main()
