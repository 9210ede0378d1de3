"""The fixed cost of a cold `amber backup create` (a 1% incremental) and `amber backup restore`.

Builds the `mixed` volume of `mixes.py` on a fresh XFS (reflink) loopback pool, takes snapshot
s0, changes 1%, takes s1, and backs up s0 into an encrypted file target. Then, `--reps` times,
with the page cache dropped before each command and the source trees of `--src` alternated in
every repetition (so a base and a branch are compared side by side in one run):

- `amber backup create` of s1 then of s0 (each a 1% incremental against the one before);
- `amber backup restore` of the last backup into a new volume (deleted afterwards).

`--src` takes directories holding an `amber` package (for instance an export of main's `src/`
and this checkout's); each runs with that directory first on PYTHONPATH and the same `.venv`.
Each command is timed with GNU time: wall, CPU (user+sys) and peak RSS; the table gives ranges.

Run as root:
    .venv/bin/python bench/cold_bench.py --scale 0.05 --reps 5 --src /tmp/base/src,src
`--keep DIR` keeps the pool (mounted) for profiling by hand; the printed lines say how.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from backup_bench import Run, measure, teardown
from mix_bench import Tools, prepare
from mixes import MIXES

from amber.pool import Pool

STEPS = ("create", "restore")


def amber_argv(tools: Tools) -> list[str]:
    return [sys.executable, "-m", "amber", "--pool", str(tools.pool_dir)]


def env_for(tools: Tools, src: Path) -> dict[str, str]:
    return dict(tools.env, PYTHONPATH=str(src.resolve()))


def cold_create(tools: Tools, src: Path, snapshot: str) -> Run:
    argv = [*amber_argv(tools), "-o", "json", "backup", "create", snapshot, "-t", "cold"]
    run = measure(f"create {snapshot}", argv, env_for(tools, src))
    run.extra = json.loads(run.stdout)
    return run


def cold_restore(tools: Tools, src: Path, backup_id: str) -> Run:
    argv = [*amber_argv(tools), "backup", "restore", backup_id, "restored", "-t", "cold"]
    run = measure("restore", argv, env_for(tools, src))
    Pool.open(tools.pool_dir).volumes.delete("restored")
    return run


def span(values: Sequence[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def bench(tools: Tools, srcs: Sequence[Path], reps: int) -> dict[str, dict[str, list[Run]]]:
    runs: dict[str, dict[str, list[Run]]] = {str(s): {k: [] for k in STEPS} for s in srcs}
    turn = 0
    for rep in range(reps):
        for src in srcs:
            snapshot = f"mixed-s{1 - turn % 2}"
            turn += 1
            made = cold_create(tools, src, snapshot)
            runs[str(src)]["create"].append(made)
            runs[str(src)]["restore"].append(cold_restore(tools, src, made.extra["backup_id"]))
            print(f"rep {rep + 1} {src}: create {made.wall:.2f} s", file=sys.stderr, flush=True)
    return runs


def report(runs: dict[str, dict[str, list[Run]]]) -> None:
    print("| source | step | wall | CPU (user+sys) | peak RSS | engine (`duration_seconds`) |")
    print("|---|---|---|---|---|---|")
    for src, steps in runs.items():
        for step, done in steps.items():
            engine = [float(r.extra["duration_seconds"]) for r in done if r.extra]
            print(
                f"| {src} | {step} | {span([r.wall for r in done])} s "
                f"| {span([r.cpu for r in done])} s | {span([r.rss_mb for r in done], 0)} MB "
                f"| {span(engine) + ' s' if engine else '-'} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--src", default="src", help="comma-separated source trees")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-cold"))
    parser.add_argument("--keep", action="store_true", help="leave the pool mounted")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, mounts, drop_caches)")
    srcs = [Path(s) for s in args.src.split(",")]
    for src in srcs:
        compileall.compile_dir(src / "amber", quiet=1)
    from mix_bench import setup

    pool, tools = setup(args.workdir, args.scale, args.seed)
    try:
        prepare(pool, tools, MIXES["mixed"], args.scale, args.seed)
        tools.repos.mkdir(parents=True)
        tools.run(
            [
                *amber_argv(tools), "target", "add", "cold", f"file://{tools.repos}",
                "--password-file", str(tools.password), "--init",
            ]
        )  # fmt: skip
        tools.run([*amber_argv(tools), "backup", "create", "mixed-s0", "-t", "cold"])
        report(bench(tools, srcs, args.reps))
    finally:
        if args.keep:
            print(f"kept: --pool {tools.pool_dir}, AMBER_CONFIG={tools.env['AMBER_CONFIG']}")
        else:
            teardown(args.workdir)


if __name__ == "__main__":
    main()
