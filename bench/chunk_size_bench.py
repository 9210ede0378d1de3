"""Amber at several chunk sizes on the same data mixes, side by side in one run (issue 17).

For each mix of `mixes.py` (same volumes and 1% change as `mix_bench.py`) and each chunk size,
`--reps` times, each into a fresh encrypted file repository created in-process with that chunk
size and then added as a target (`amber target add` without `--init`):

1. full backup of s0, as a cold command (`amber backup create`, page cache dropped, under GNU
   time: wall, user+system CPU, peak RSS);
2. the 1% incremental (backup of s1), the same way, with the bytes Amber read and stored;
3. the repository size after both.

Run as root (after `scripts/install.sh --bench`):
    .venv/bin/python bench/chunk_size_bench.py [--scale 1] [--reps 2] [--mixes mixed,database]
        [--sizes 1024,256,128,64]   (KiB)
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backup_bench import PASSWORD, Run, teardown
from mix_bench import Tools, measure, note, prepare, repo_size, setup, span
from mixes import MIXES

import amber
from amber.backup.keys import Password
from amber.backup.repository import init_repository
from amber.blobstore.filestore import FileStore
from amber.domain.units import KiB, MiB
from amber.pool import Pool


@dataclass
class Cell:
    """One mix at one chunk size, over the repetitions."""

    full: list[Run] = field(default_factory=list)
    incremental: list[Run] = field(default_factory=list)
    repo_bytes: list[int] = field(default_factory=list)


def backup(tools: Tools, target: str, snapshot: str) -> Run:
    argv = [*tools.amber_argv, "-o", "json", "backup", "create", snapshot, "-t", target]
    run = measure(f"amber backup {snapshot}", argv, tools.env)
    run.extra = json.loads(run.stdout)
    return run


def one(tools: Tools, pool: Pool, mix: str, chunk_size: int, rep: int) -> tuple[Run, Run, int]:
    target = f"{mix}-{chunk_size // KiB}k-{rep}"
    repo = tools.repos / target
    repo.mkdir(parents=True)
    init_repository(FileStore(repo), Password(PASSWORD), chunk_size=chunk_size)
    tools.run(
        [
            *tools.amber_argv, "target", "add", target, f"file://{repo}",
            "--password-file", str(tools.password),
        ]
    )  # fmt: skip
    full = backup(tools, target, f"{mix}-s0")
    incremental = backup(tools, target, f"{mix}-s1")
    size = repo_size(repo)
    tools.clean(pool)
    return full, incremental, size


def report(cells: dict[tuple[str, int], Cell], changed: dict[str, int]) -> None:
    print(
        "| mix | chunk | full: wall / CPU / RSS | incremental: read / stored / wall / CPU "
        "| repository after both |"
    )
    print("|---|---|---|---|---|")
    for (mix, size), c in cells.items():
        full = (
            f"{span([r.wall for r in c.full])} / {span([r.cpu for r in c.full])} / "
            f"{max(r.rss_mb for r in c.full):.0f} MB"
        )
        inc = c.incremental
        read = max(int(r.extra["bytes_read"]) for r in inc) / MiB
        stored = max(int(r.extra["bytes_stored"]) for r in inc) / MiB
        print(
            f"| {mix} ({changed[mix] / MiB:.0f} MiB changed) | {size // KiB} KiB | {full} | "
            f"{read:.0f} MiB / {stored:.0f} MiB / {span([r.wall for r in inc])} / "
            f"{span([r.cpu for r in inc])} | {max(c.repo_bytes) / MiB:.0f} MiB |"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-chunk-sizes"))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--mixes", default="mixed,database,vm-image")
    parser.add_argument("--sizes", default="1024,256,128,64", help="chunk sizes in KiB")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark uses loop devices and mounts")
    sizes = [int(s) * KiB for s in args.sizes.split(",")]
    if args.workdir.exists():
        teardown(args.workdir)
    compileall.compile_dir(Path(amber.__file__).parent, quiet=1)
    cells: dict[tuple[str, int], Cell] = {}
    changed: dict[str, int] = {}
    try:
        pool, tools = setup(args.workdir, args.scale, args.seed)
        for name in args.mixes.split(","):
            result = prepare(pool, tools, MIXES[name], args.scale, args.seed)
            changed[name] = result.changed_bytes
            for rep in range(args.reps):
                for size in sizes:  # back to back, so the machine's load hits every size alike
                    full, incremental, repo_bytes = one(tools, pool, name, size, rep)
                    cell = cells.setdefault((name, size), Cell())
                    cell.full.append(full)
                    cell.incremental.append(incremental)
                    cell.repo_bytes.append(repo_bytes)
                    note(
                        f"{name} {size // KiB} KiB rep {rep + 1}: full {full.wall:.2f} s "
                        f"({full.cpu:.2f} CPU), incremental {incremental.wall:.2f} s "
                        f"({incremental.cpu:.2f} CPU), {repo_bytes / MiB:.0f} MiB"
                    )
            for i in (1, 0):
                pool.snapshots.delete(f"{name}-s{i}")
            pool.volumes.delete(name)
        pool.close()
    finally:
        teardown(args.workdir)
    report(cells, changed)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
