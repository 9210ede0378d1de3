"""How fast the dashboard's pages answer with 1,000 volumes and 10,000 snapshots in the pool.

The benchmark makes a fresh XFS (reflink) loopback filesystem and a pool on it, then fills the
pool through the pool API itself (no metadata is faked): `--volumes` raw block volumes of
64 MiB (block, so no mkfs: the images are sparse and empty), and `--snapshots` snapshots spread
evenly over them (each a real reflink copy and a metadata row). It adds a file target with a
few real backups of one small volume and a jobs file of three recurring jobs (one selects every
volume, so the volumes page fills its schedule column), starts `amber dashboard` as its own
process on 127.0.0.1, and times each page and API answer as a client sees it: the median (and
p90) of `--requests` sequential GETs after one warm-up request (`/metrics` too: every scrape
reads the pool, its 1,000 volumes and 10,000 snapshots). The issue's goal is < 100 ms a page.

Run as root:  .venv/bin/python bench/dashboard_bench.py [--workdir /var/tmp/amber-dash-bench]
    [--volumes 1000] [--snapshots 10000] [--requests 20]
It prints a Markdown table; docs/dashboard.md ("Speed") records a run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from amber.backup.backuper import backup_snapshot
from amber.backup.targets import Target, TargetConfig, open_target_repository
from amber.domain.models import VolumeMode
from amber.pool import Pool, VolumeRequest

MiB = 1 << 20
PAGES = (
    "/",
    "/volumes",
    "/volumes/vol-00000",
    "/backups",
    "/targets",
    "/jobs",
    "/operations",
    "/api/overview",
    "/api/volumes",
    "/api/volumes/vol-00000",
    "/api/jobs",
    "/metrics",
)
JOBS = """\
jobs:
  - {name: hourly, task: snapshot, cron: "0 * * * *", retain: 24, groups: [default]}
  - {name: nightly, task: backup, cron: "30 2 * * *", target: t, retain: 7,
     volumes: [vol-00000, vol-00001]}
  - {name: weekly-prune, task: prune, cron: "0 4 * * 0", target: t}
"""


def make_xfs(workdir: Path, size: str) -> Path:
    image, mnt = workdir / "xfs.img", workdir / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    return mnt


def fill(root: Path, volumes: int, snapshots: int) -> tuple[float, float]:
    """Create the volumes and snapshots; seconds each phase took."""
    pool = Pool.open(root)
    started = time.perf_counter()
    for i in range(volumes):
        pool.volumes.create(VolumeRequest(f"vol-{i:05d}", 64 * MiB, VolumeMode.BLOCK, None))
    made_volumes = time.perf_counter() - started
    started = time.perf_counter()
    for j in range(snapshots):
        pool.snapshots.create(f"vol-{j % volumes:05d}", f"snap-{j:06d}")
    made_snapshots = time.perf_counter() - started
    pool.close()
    return made_volumes, made_snapshots


def add_backups(root: Path, workdir: Path, count: int) -> Path:
    """A file target `t` with `count` backups of vol-00000 (1 MiB written between them)."""
    password = workdir / "password"
    password.write_text("dashboard bench password\n")
    (workdir / "repo").mkdir()
    config = TargetConfig(workdir / "targets.json")
    config.add(Target("t", f"file://{workdir / 'repo'}", password_file=str(password)))
    pool = Pool.open(root)
    repo = open_target_repository(config.get("t"), create=True)
    image = pool.volumes.get("vol-00000").image
    for k in range(count):
        with open(image, "r+b") as f:
            f.seek(k * MiB)
            f.write(os.urandom(MiB))
        pool.snapshots.create("vol-00000", f"bench-backup-{k}")
        backup_snapshot(pool, repo, "t", f"bench-backup-{k}")
    pool.close()
    return config.path


def start(root: Path, targets: Path, jobs: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "amber",
            "--pool",
            str(root),
            "dashboard",
            "--targets",
            str(targets),
            "--address",
            "127.0.0.1:0",
            "--jobs-file",
            str(jobs),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "Amber dashboard on " not in line:
        process.kill()
        raise SystemExit(f"the dashboard did not start: {line}")
    return process, line.split("Amber dashboard on http://", 1)[1].split("/")[0]


def timed(netloc: str, path: str, requests: int) -> tuple[list[float], int]:
    """Milliseconds of each GET (after one warm-up) and the answer's size."""
    conn = http.client.HTTPConnection(netloc, timeout=120)
    times: list[float] = []
    size = 0
    for n in range(requests + 1):
        started = time.perf_counter()
        conn.request("GET", path, headers={"Host": netloc})
        response = conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}: {body[:200]!r}")
        if n:
            times.append(elapsed)
        size = len(body)
    conn.close()
    return times, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-dash-bench"))
    parser.add_argument("--volumes", type=int, default=1000)
    parser.add_argument("--snapshots", type=int, default=10000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--backups", type=int, default=3)
    args = parser.parse_args()
    if args.workdir.exists():
        raise SystemExit(f"{args.workdir} exists: remove it or pass another --workdir")
    args.workdir.mkdir(parents=True)
    mnt = make_xfs(args.workdir, "64G")
    process = None
    try:
        root = mnt / "pool"
        Pool.init_dir(root, overprovisioning=100.0)
        made_volumes, made_snapshots = fill(root, args.volumes, args.snapshots)
        print(
            f"pool: {args.volumes} volumes in {made_volumes:.1f} s, {args.snapshots} snapshots "
            f"in {made_snapshots:.1f} s (real images and rows, through the pool API)"
        )
        targets = add_backups(root, args.workdir, args.backups)
        jobs = args.workdir / "jobs.yaml"
        jobs.write_text(JOBS)
        process, netloc = start(root, targets, jobs)
        print("\n| page | median ms | p90 ms | bytes |\n|---|---:|---:|---:|")
        for path in PAGES:
            times, size = timed(netloc, path, args.requests)
            p90 = statistics.quantiles(times, n=10)[-1] if len(times) > 1 else times[0]
            print(f"| `{path}` | {statistics.median(times):.1f} | {p90:.1f} | {size:,} |")
        print(f"\n(median of {args.requests} sequential requests each, after one warm-up)")
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
