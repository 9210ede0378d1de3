"""Amber against restic and borg on several data mixes, side by side in one run (issue 17).

For each mix of `mixes.py` the benchmark fills a volume on a fresh XFS (reflink) loopback pool,
takes snapshot s0, changes about 1% of the data, takes snapshot s1. Then, `--reps` times, with
fresh repositories each time, and back to back for every tool:

1. full backup of s0;
2. the 1% incremental: a backup of s1, as a cold command (a new process, page cache dropped);
3. restore of the s1 backup, made durable: Amber fsyncs what it restores, restic and borg are
   followed by `sync` (timed together with them);
4. the repository size after both backups;

and the *limit*: reading the data of s0 (SEEK_DATA, 1 MiB pieces) and compressing it with
zstd level 1 on two threads (`limit.py`), as a process of its own, what a backup of that
data cannot beat on this machine; and the limit *with writing*: the same, also writing the
compressed bytes durably beside the repositories (`limit.py --write`: 16 MiB files, each
fsynced), since every tool must write what it stores.

The tools: Amber's CLI (`amber backup create`, file target, encrypted), restic 0.14 (repository
version 2, `--compression auto`), borg 1.2 (`repokey-blake2` encryption) with `zstd,1` and
with `lz4`. restic and borg back up the snapshot's image file, the block-level equivalent of
what Amber backs up (see `backup_bench.py`). Every measured command runs under GNU time with the
page cache dropped first; the tables give the range over the repetitions. Restores are checked
byte for byte against the snapshot (once per tool and mix).

Run as root (after `scripts/install.sh --bench`):
    .venv/bin/python bench/mix_bench.py [--scale 1.0] [--reps 3] [--mixes a,b] [--output json]
A quick run: `--scale 0.05 --reps 1` (about two minutes).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3
from backup_bench import PASSWORD, Run, drop_caches, measure, teardown
from mixes import MIXES, Mix

import amber
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest

AMBER = [sys.executable, "-m", "amber"]
LIMIT = [sys.executable, str(Path(__file__).with_name("limit.py"))]
TOOLS = ("amber", "restic", "borg-zstd", "borg-lz4")
STEPS = ("full", "incremental", "restore")


@dataclass
class Result:
    """One mix: seconds per tool and step over the repetitions, sizes, the limit."""

    mix: str
    data_bytes: int
    changed_bytes: int
    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    repo_bytes: dict[str, list[int]] = field(default_factory=dict)
    limit: list[float] = field(default_factory=list)
    limit_write: list[float] = field(default_factory=list)
    """The limit when it also writes the compressed bytes durably beside the repositories
    (`limit.py --write`), as every tool must write what it stores."""
    amber_rss_mb: float = 0.0
    engine_incremental: list[float] = field(default_factory=list)
    """Seconds of the incremental's own work as Amber reports it (`duration_seconds`: from the
    lock taken to the commit), what a long-lived node process pays without the CLI's start."""
    identical: dict[str, bool] = field(default_factory=dict)
    incremental_read: list[int] = field(default_factory=list)
    """Bytes Amber's incremental read from the snapshot (its `bytes_read`)."""
    incremental_cpu: list[float] = field(default_factory=list)
    """User + system seconds of Amber's incremental command."""

    def add(self, tool: str, step: str, seconds: float) -> None:
        self.seconds.setdefault(tool, {}).setdefault(step, []).append(seconds)


class Tools:
    """The four tools on one pool; repositories under `mnt/repos`, restores under `mnt/out`."""

    def __init__(self, work: Path, scale: float, seed: int) -> None:
        self.scale = scale
        self.seed = seed
        self.mnt = work / "mnt"
        self.pool_dir = self.mnt / "pool"
        self.password = self.mnt / "password"
        self.repos = self.mnt / "repos"
        self.out = self.mnt / "out"
        self.env = dict(
            os.environ,
            AMBER_CONFIG=str(self.mnt / "targets.json"),
            RESTIC_PASSWORD=PASSWORD,
            RESTIC_CACHE_DIR=str(self.mnt / "restic-cache"),
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(self.mnt / "borg-base"),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
        )
        self.amber_argv = [*AMBER, "--pool", str(self.pool_dir)]

    def run(self, argv: Sequence[str], cwd: Path | None = None) -> str:
        done = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=False, cwd=cwd
        )
        if done.returncode != 0:
            raise SystemExit(f"failed: {' '.join(argv)}\n{done.stderr[-3000:]}")
        return done.stdout

    def repo(self, tool: str) -> Path:
        return self.repos / tool

    def init(self, tool: str, target: str) -> None:
        repo = self.repo(tool)
        if tool == "amber":
            repo.mkdir(parents=True)
            self.run(
                [
                    *self.amber_argv, "target", "add", target, f"file://{repo}",
                    "--password-file", str(self.password), "--init",
                ]
            )  # fmt: skip
        elif tool == "restic":
            self.run(["restic", "-r", str(repo), "init", "--repository-version", "2"])
        else:
            self.run(["borg", "init", "-e", "repokey-blake2", str(repo)])

    def backup(self, tool: str, target: str, snapshot: str, image: Path) -> Run:
        if tool == "amber":
            argv = [*self.amber_argv, "-o", "json", "backup", "create", snapshot, "-t", target]
        elif tool == "restic":
            argv = ["restic", "-r", str(self.repo(tool)), "backup", "--compression", "auto"]
            argv.append(str(image))
        else:
            compression = "zstd,1" if tool == "borg-zstd" else "lz4"
            argv = ["borg", "create", "--compression", compression]
            argv += [f"{self.repo(tool)}::{snapshot}", str(image)]
        run = measure(f"{tool} backup {snapshot}", argv, self.env)
        if tool == "amber":
            run.extra = json.loads(run.stdout)
        return run

    def restore(self, tool: str, target: str, backup_id: str, image: Path) -> tuple[Run, Path]:
        """Restore the backup; (the timed run, the restored image)."""
        out = self.out / tool
        if tool == "amber":
            argv = [*self.amber_argv, "backup", "restore", backup_id, "restored", "-t", target]
            run = measure(f"{tool} restore", argv, self.env)
            return run, Pool.open(self.pool_dir).volumes.get("restored").image
        out.mkdir(parents=True)
        if tool == "restic":
            argv = ["restic", "-r", str(self.repo(tool)), "restore", "latest", "--target"]
            argv.append(str(out))
        else:
            argv = ["sh", "-c", f"cd {out} && exec borg extract --sparse {self.repo(tool)}::s1"]
        run = measure(f"{tool} restore", argv, self.env)
        start = time.monotonic()
        subprocess.run(["sync"], check=True)  # neither fsyncs what it restores
        run.wall += time.monotonic() - start
        return run, out / str(image).lstrip("/")

    def clean(self, pool: Pool) -> None:
        if "restored" in {v.name for v in pool.volumes.list()}:
            pool.volumes.delete("restored")
        shutil.rmtree(self.repos, ignore_errors=True)
        shutil.rmtree(self.out, ignore_errors=True)


def note(text: str) -> None:
    """Progress, on stderr (stdout holds the report)."""
    print(text, file=sys.stderr, flush=True)


def digest(path: Path) -> bytes:
    """BLAKE3 of a file, on every core (the restores of a 16 GiB volume are compared too)."""
    return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).digest()


def repo_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def prepare(pool: Pool, tools: Tools, mix: Mix, scale: float, seed: int) -> Result:
    """Volume `mix.name` filled, snapshot s0, 1% changed, snapshot s1."""
    pool.volumes.create(VolumeRequest(mix.name, mix.volume_bytes(scale)))
    mount = tools.mnt / "mount" / mix.name
    pool.attachments.mount("volume", mix.name, mount, create_target=True)
    note(f"{mix.name}: filling…")
    data_bytes = mix.fill(mount, seed, scale)
    pool.attachments.release("volume", mix.name)
    pool.snapshots.create(mix.name, f"{mix.name}-s0")
    pool.attachments.mount("volume", mix.name, mount, create_target=True)
    changed = mix.change(mount, seed, 1)
    pool.attachments.release("volume", mix.name)
    pool.snapshots.create(mix.name, f"{mix.name}-s1")
    return Result(mix.name, data_bytes, changed)


def bench_mix(pool: Pool, tools: Tools, mix: Mix, reps: int, tool_names: Sequence[str]) -> Result:
    result = prepare(pool, tools, mix, tools.scale, tools.seed)
    images = [pool.snapshots.get(f"{mix.name}-s{i}").image for i in (0, 1)]
    backup_id = ""  # Amber's backup of s1
    want = b""  # the digest of s1
    for rep in range(reps):
        target = f"{mix.name}-{rep}"
        for tool in tool_names:
            tools.init(tool, target)
        for step, index in (("full", 0), ("incremental", 1)):
            for tool in tool_names:
                name = f"{mix.name}-s{index}" if tool == "amber" else f"s{index}"
                run = tools.backup(tool, target, name, images[index])
                result.add(tool, step, run.wall)
                if tool == "amber":
                    result.amber_rss_mb = max(result.amber_rss_mb, run.rss_mb)
                    backup_id = str(run.extra["backup_id"])
                    if step == "incremental":
                        result.engine_incremental.append(float(run.extra["duration_seconds"]))
                        result.incremental_read.append(int(run.extra["bytes_read"]))
                        result.incremental_cpu.append(run.cpu)
        result.limit.append(measure("limit", [*LIMIT, str(images[0])], tools.env).wall)
        sink = tools.mnt / "limit-out"
        argv = [*LIMIT, str(images[0]), "--write", str(sink)]
        result.limit_write.append(measure("limit+write", argv, tools.env).wall)
        shutil.rmtree(sink)
        for tool in tool_names:
            result.repo_bytes.setdefault(tool, []).append(repo_size(tools.repo(tool)))
        for tool in tool_names:
            run, restored = tools.restore(tool, target, backup_id, images[1])
            result.add(tool, "restore", run.wall)
            if tool not in result.identical:
                want = want or digest(images[1])
                result.identical[tool] = digest(restored) == want
        tools.clean(pool)
        note(f"  rep {rep + 1}: {one_line(result)}")
    for i in (1, 0):
        pool.snapshots.delete(f"{mix.name}-s{i}")
    pool.volumes.delete(mix.name)
    return result


def one_line(result: Result) -> str:
    parts = []
    for step in STEPS:
        cells = [f"{t} {s[step][-1]:.2f}" for t, s in result.seconds.items() if step in s]
        parts.append(f"{step}: " + ", ".join(cells))
    read = (
        f"; amber incremental read {result.incremental_read[-1] / MiB:.1f} MiB, "
        f"cpu {result.incremental_cpu[-1]:.2f} s"
    ) * bool(result.incremental_read)
    limits = f"; limit {result.limit[-1]:.2f} s, with writing {result.limit_write[-1]:.2f} s"
    return "; ".join(parts) + limits + read


# -- the report --------------------------------------------------------------------------------


def span(values: Sequence[float], unit: str = " s") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}{unit}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}{unit}"


def ratio_span(peer: Sequence[float], amber: Sequence[float]) -> str:
    """The peer's time over Amber's, worst and best pairing of the repetitions."""
    lo, hi = min(peer) / max(amber), max(peer) / min(amber)
    return f"{lo:.1f}x" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f}x"


def table(results: Sequence[Result], tool_names: Sequence[str]) -> list[str]:
    names = " / ".join(tool_names)
    lines = [
        f"| mix | data | full: {names} / limit / limit+write | 1% incremental: {names} | "
        f"restore + sync: {names} | repository MiB: {names} |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for step in STEPS:
            values = [span(r.seconds[t][step]) for t in tool_names]
            if step == "full":
                values += [span(r.limit), span(r.limit_write)]
            cells.append(" / ".join(values))
        sizes = " / ".join(f"{max(r.repo_bytes[t]) / MiB:.0f}" for t in tool_names)
        lines.append(f"| {r.mix} | {r.data_bytes / MiB:.0f} MiB | {' | '.join(cells)} | {sizes} |")
    return lines


def ratios(results: Sequence[Result], tool_names: Sequence[str]) -> list[str]:
    peers = [t for t in tool_names if t != "amber"]
    head = " | ".join(f"{step} vs {p}" for step in STEPS for p in peers)
    lines = [
        f"| mix | full / limit | full / limit+write | {head} | size vs smallest peer | "
        "Amber peak RSS | incremental in-process |",
        "|---|---|---|" + "---|" * (len(STEPS) * len(peers)) + "---|---|---|",
    ]
    for r in results:
        amber = r.seconds["amber"]
        cells = [
            f"{min(amber['full']) / max(limit):.2f}-{max(amber['full']) / min(limit):.2f}"
            for limit in (r.limit, r.limit_write)
        ]
        cells += [ratio_span(r.seconds[p][step], amber[step]) for step in STEPS for p in peers]
        smallest = min(min(r.repo_bytes[p]) for p in peers) if peers else 0
        size = f"{max(r.repo_bytes['amber']) / smallest:.2f}x" if smallest else "-"
        engine = span(r.engine_incremental) if r.engine_incremental else "-"
        lines.append(
            f"| {r.mix} | {' | '.join(cells)} | {size} | {r.amber_rss_mb:.0f} MB | {engine} |"
        )
    return lines


def worst(results: Sequence[Result], tool_names: Sequence[str]) -> list[str]:
    """The worst mix per goal: the smallest speed-up against any peer, the largest full/limit."""
    peers = [t for t in tool_names if t != "amber"]
    lines = []
    for step in STEPS:
        pairs = [
            (min(r.seconds[p][step]) / max(r.seconds["amber"][step]), r.mix, p)
            for r in results
            for p in peers
        ]
        if pairs:
            low = min(pairs)
            lines.append(f"- {step}: worst {low[1]}, {low[0]:.1f}x against {low[2]}")
    over = max((max(r.seconds["amber"]["full"]) / min(r.limit), r.mix) for r in results)
    lines.append(f"- full backup against the limit: worst {over[1]}, {over[0]:.2f}x the limit")
    over = max((max(r.seconds["amber"]["full"]) / min(r.limit_write), r.mix) for r in results)
    lines.append(
        f"- full backup against the limit with writing: worst {over[1]}, {over[0]:.2f}x it"
    )
    if peers:
        big = max(
            (max(r.repo_bytes["amber"]) / min(min(r.repo_bytes[p]) for p in peers), r.mix)
            for r in results
        )
        lines.append(f"- repository size: worst {big[1]}, {big[0]:.2f}x the smallest peer's")
    return lines


def report(results: Sequence[Result], tool_names: Sequence[str], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, "
        f"{os.cpu_count()} cores, Linux {platform.release()}; scale {args.scale}, "
        f"{args.reps} repetition(s); load average at the end {load[0]:.1f}\n"
    )
    for line in table(results, tool_names):
        print(line)
    print("\nSpeed-ups (the peer's time over Amber's; ranges pair the worst and best runs):\n")
    for line in ratios(results, tool_names):
        print(line)
    print("\nWorst mix:")
    for line in worst(results, tool_names):
        print(line)
    bad = [f"{r.mix}/{t}" for r in results for t, ok in r.identical.items() if not ok]
    print("\nRestores byte-identical:", "all" if not bad else f"NOT {', '.join(bad)}")


def as_json(results: Sequence[Result], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
        "scale": args.scale,
        "reps": args.reps,
        "mixes": [r.__dict__ for r in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-mixes"))
    parser.add_argument("--scale", type=float, default=1.0, help="data size factor (1 = docs)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mixes", default=",".join(MIXES), help="comma-separated mix names")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated tools")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--save", type=Path, help="append each mix's result to this file (JSON lines) when done"
    )
    parser.add_argument(
        "--report", type=Path, help="print the report of results saved with --save; run nothing"
    )
    args = parser.parse_args(argv)
    if args.report is not None:
        saved = [Result(**json.loads(line)) for line in args.report.read_text().splitlines()]
        show(saved, [t for t in TOOLS if t in saved[0].seconds], args)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark uses loop devices and mounts")
    mixes = [MIXES[name] for name in args.mixes.split(",") if name]
    tool_names = [t for t in args.tools.split(",") if t]
    if "amber" not in tool_names or any(t not in TOOLS for t in tool_names):
        raise SystemExit(f"--tools: choose from {', '.join(TOOLS)}, amber included")
    if args.workdir.exists():
        teardown(args.workdir)
        if args.workdir.exists():
            raise SystemExit(f"{args.workdir} is in the way; remove it")
    compileall.compile_dir(Path(amber.__file__).parent, quiet=1)
    try:
        pool, tools = setup(args.workdir, args.scale, args.seed)
        results = []
        for mix in mixes:
            results.append(bench_mix(pool, tools, mix, args.reps, tool_names))
            if args.save is not None:
                with open(args.save, "a") as f:
                    f.write(json.dumps(results[-1].__dict__) + "\n")
        pool.close()
    finally:
        teardown(args.workdir)
    show(results, tool_names, args)


def show(results: Sequence[Result], tool_names: Sequence[str], args: argparse.Namespace) -> None:
    if args.output == "json":
        print(json.dumps(as_json(results, args), indent=1))
    else:
        report(results, tool_names, args)


def setup(work: Path, scale: float, seed: int) -> tuple[Pool, Tools]:
    mnt = work / "mnt"
    mnt.mkdir(parents=True)
    image = work / "xfs.img"
    subprocess.run(["truncate", "-s", "200G", str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    Pool.init_dir(mnt / "pool", overprovisioning=8.0)
    tools = Tools(work, scale, seed)
    tools.password.write_text(PASSWORD + "\n")
    drop_caches()
    return Pool.open(tools.pool_dir), tools


if __name__ == "__main__":
    main()
