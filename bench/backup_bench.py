"""Amber backups vs restic, side by side in one run, on the same volume and the same disk.

The benchmark builds a realistic volume on a fresh XFS (reflink) loopback pool: a 4 GiB ext4
volume holding about 1.9 GiB of data — incompressible binaries, compressible logs and CSV, and
thousands of small files — and snapshots it. Then, for each tool:

1. a full backup of the snapshot;
2. three incrementals, each after about 1% of the data changed (binaries overwritten in
   place, a log appended, small files rewritten), each of a new snapshot;
3. a restore of the last backup;

first to a directory on the same disk (the filesystem target), then to a local S3 server (moto's
server mode on 127.0.0.1, objects held in memory): one full backup of the first snapshot, the
three incrementals of the same snapshots, one restore.

What restic backs up: the snapshot's *image file* (`restic backup <pool>/snapshots/<uid>.img`,
repository version 2, `--compression auto`). That is the block-level equivalent of what Amber
backs up (a whole volume, file system metadata included, restorable as a volume), and it is
what open-local does with restic for its snapshots. restic cannot know what changed inside an
image, so it reads it whole every time; that is exactly the cost Amber's extent maps remove.
(Backing up the *mounted files* instead would let restic skip unchanged files, but it would
then back up something else: no file system, no block volume to restore.)

Both tools write to a directory on the same disk; the page cache is dropped before every
measured command; each command runs as its own process under GNU time (wall, user+system CPU,
peak RSS). The full backup and the restore are repeated (`--reps`, fresh repositories for each
full backup) and medians are reported, because a shared VM's disk is noisy. restic does not
fsync what it restores, Amber does (the volume must be durable before it exists), so the
restore is also reported with restic followed by `sync`, and beside the time this disk takes
to write and fsync as many bytes sequentially (the floor for a durable restore). Restores are
checked byte for byte against the snapshot image.

Run as root:  .venv/bin/python bench/backup_bench.py [--workdir /var/tmp/amber-bench]
    [--reps 5] [--big-volume]   (also back up a 32 GiB volume holding the same data)
It prints Markdown tables; docs/backup.md ("Benchmarks") records a run.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import amber
from amber.domain.models import SourceKind
from amber.domain.units import GiB, MiB
from amber.pool import Pool, VolumeRequest

PASSWORD = "bench-password-not-secret"
AMBER = [sys.executable, "-m", "amber"]


@dataclass
class Run:
    """One measured process."""

    label: str
    wall: float
    cpu: float
    rss_mb: float
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def measure(label: str, argv: Sequence[str], env: dict[str, str]) -> Run:
    """Run `argv` with a cold page cache, under GNU time: wall clock, user+system CPU and the
    peak RSS of that process alone. (wait4 on a child spawned from this big process would report
    the parent's RSS: Linux carries the high-water mark across vfork and exec.)"""
    drop_caches()
    stats = Path(f"/tmp/amber-bench-{os.getpid()}.time")
    timed = ["/usr/bin/time", "-o", str(stats), "-f", "%e %U %S %M", *argv]
    start = time.monotonic()
    done = subprocess.run(timed, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{label} failed: {' '.join(argv)}\n{done.stderr[-3000:]}")
    _elapsed, user, system, rss_kb = stats.read_text().split()[-4:]
    stats.unlink()
    return Run(label, wall, float(user) + float(system), int(rss_kb) / 1024, done.stdout)


# -- the volume ---------------------------------------------------------------------------------

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "request",
    "response",
    "cache",
    "miss",
    "hit",
    "user",
    "order",
    "payment",
    "invoice",
    "shipment",
    "warehouse",
    "timeout",
    "retry",
    "connect",
    "session",
    "token",
    "refresh",
    "commit",
    "rollback",
    "index",
]
LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")


def log_lines(rng: random.Random, nbytes: int, start_ts: int) -> bytes:
    parts: list[str] = []
    size = 0
    ts = start_ts
    while size < nbytes:
        ts += rng.randrange(1, 50)
        line = (
            f"2026-11-{1 + ts // 86400 % 28:02d}T{ts // 3600 % 24:02d}:{ts // 60 % 60:02d}:"
            f"{ts % 60:02d}.{rng.randrange(1000):03d}Z {rng.choice(LEVELS)} "
            f"{rng.choice(WORDS)}-svc[{rng.randrange(1, 40000)}]: {rng.choice(WORDS)} "
            f"{rng.choice(WORDS)} id={rng.getrandbits(48):012x} user={rng.randrange(10**6)} "
            f"took={rng.randrange(1, 5000)}ms status={rng.choice((200, 200, 200, 404, 500))}\n"
        )
        parts.append(line)
        size += len(line)
    return "".join(parts).encode()


def csv_rows(rng: random.Random, nbytes: int) -> bytes:
    parts = ["order_id,created,customer,sku,quantity,unit_price,currency,status\n"]
    size = len(parts[0])
    order = rng.randrange(10**8)
    while size < nbytes:
        order += 1
        row = (
            f"{order},2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d} "
            f"{rng.randrange(24):02d}:{rng.randrange(60):02d},C{rng.randrange(10**6):07d},"
            f"SKU-{rng.randrange(5000):05d},{rng.randrange(1, 20)},"
            f"{rng.randrange(100, 99999) / 100:.2f},{rng.choice(('EUR', 'USD', 'GBP'))},"
            f"{rng.choice(('paid', 'shipped', 'pending', 'cancelled'))}\n"
        )
        parts.append(row)
        size += len(row)
    return "".join(parts).encode()


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def populate(root: Path, rng: random.Random) -> int:
    """About 1.9 GiB: 760 MiB binaries, 600 MiB logs, 400 MiB CSV, ~130 MiB small files."""
    total = 0
    (root / "bin").mkdir()
    for i in range(38):
        with open(root / "bin" / f"blob-{i:02d}.bin", "wb") as f:
            for _ in range(20):
                f.write(os.urandom(MiB))
        total += 20 * MiB
    for i in range(12):
        data = log_lines(rng, 50 * MiB, 1_700_000_000 + i * 10**6)
        write_file(root / "logs" / f"app-{i:02d}.log", data)
        total += len(data)
    for i in range(8):
        data = csv_rows(rng, 50 * MiB)
        write_file(root / "csv" / f"orders-{i}.csv", data)
        total += len(data)
    for i in range(4000):
        size = rng.randrange(1024, 64 * 1024)
        data = os.urandom(size) if i % 2 else log_lines(rng, size, i * 1000)[:size]
        write_file(root / "small" / f"d{i // 200:02d}" / f"f{i:05d}", data)
        total += size
    os.sync()
    return total


def populated_volume(pool: Pool, bench: Bench, rng: random.Random) -> tuple[Path, int]:
    """Create the 4 GiB volume `data`, mount it and fill it (`populate`): (mount point, bytes)."""
    pool.volumes.create(VolumeRequest("data", 4 * GiB))
    data_dir = bench.mnt / "data"
    pool.attachments.mount("volume", "data", data_dir, create_target=True)
    print("populating the volume…", flush=True)
    return data_dir, populate(data_dir, rng)


def change_one_percent(root: Path, rng: random.Random, round_no: int) -> int:
    """Change about 1% of the data in place, the way applications do; return bytes written."""
    changed = 0
    for _ in range(8):  # 8 MiB of binaries overwritten in place
        path = root / "bin" / f"blob-{rng.randrange(38):02d}.bin"
        with open(path, "r+b") as f:
            f.seek(rng.randrange(19) * MiB + rng.randrange(4) * 256 * 1024)
            f.write(os.urandom(MiB))
        changed += MiB
    data = log_lines(rng, 6 * MiB, 1_800_000_000 + round_no * 10**6)  # a log grows by 6 MiB
    with open(root / "logs" / f"app-{round_no:02d}.log", "ab") as f:
        f.write(data)
    changed += len(data)
    for i in rng.sample(range(4000), 150):  # 150 small files rewritten
        path = root / "small" / f"d{i // 200:02d}" / f"f{i:05d}"
        size = path.stat().st_size
        write_file(path, os.urandom(size))
        changed += size
    os.sync()
    return changed


# -- the tools ----------------------------------------------------------------------------------


class Bench:
    """Both tools, their repositories (recreated for each repetition of the full backup)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mnt = work / "mnt"
        self.pool_dir = self.mnt / "pool"
        self.config = self.mnt / "targets.json"
        self.password = self.mnt / "password"
        self.generation = 0
        self.env = dict(os.environ, AMBER_CONFIG=str(self.config), RESTIC_PASSWORD=PASSWORD)
        self.env["RESTIC_CACHE_DIR"] = str(self.mnt / "restic-cache")

    @property
    def amber_repo(self) -> Path:
        return self.mnt / f"amber-repo-{self.generation}"

    @property
    def restic_repo(self) -> Path:
        return self.mnt / f"restic-repo-{self.generation}"

    def fresh_repositories(self) -> None:
        """New, empty repositories for both tools (and no Amber base: a true first backup)."""
        self.generation += 1
        self.amber_repo.mkdir()
        amber = [*AMBER, "--pool", str(self.pool_dir)]
        if self.generation > 1:
            self.run([*amber, "target", "remove", "bench"])
            self.run([*amber, "backup", "bases", "--forget", "data"])
        self.run(
            [
                *amber,
                "target",
                "add",
                "bench",
                f"file://{self.amber_repo}",
                "--password-file",
                str(self.password),
                "--init",
            ]
        )
        self.run(["restic", "-r", str(self.restic_repo), "init", "--repository-version", "2"])

    def run(self, argv: Sequence[str]) -> None:
        subprocess.run(argv, env=self.env, check=True, capture_output=True)

    def amber(self, label: str, *args: str) -> Run:
        run = measure(label, [*AMBER, "--pool", str(self.pool_dir), "-o", "json", *args], self.env)
        run.extra = json.loads(run.stdout)
        return run

    def restic(self, label: str, *args: str) -> Run:
        return measure(label, ["restic", "-r", str(self.restic_repo), "--json", *args], self.env)


def repo_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def setup(work: Path) -> tuple[Pool, Bench]:
    mnt = work / "mnt"
    mnt.mkdir(parents=True)
    image = work / "xfs.img"
    subprocess.run(["truncate", "-s", "80G", str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    Pool.init_dir(mnt / "pool", overprovisioning=4.0)
    bench = Bench(work)
    bench.password.write_text(PASSWORD + "\n")
    return Pool.open(bench.pool_dir), bench


def teardown(work: Path) -> None:
    mnt = work / "mnt"
    table = Path("/proc/self/mounts").read_text().splitlines()
    targets = [line.split()[1] for line in table if line.split()[1].startswith(str(work))]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for line in loops.splitlines():
        if str(work) in line:
            subprocess.run(["losetup", "-d", line.split(":")[0]], check=False)
    still = Path("/proc/self/mounts").read_text().splitlines()
    if not any(line.split()[1] == str(mnt) for line in still):
        shutil.rmtree(work, ignore_errors=True)


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Results:
    full: list[tuple[Run, Run, int, int]] = field(default_factory=list)
    """(Amber, restic, Amber stored, restic stored) per repetition."""
    incremental: list[tuple[Run, Run, int, int, int]] = field(default_factory=list)
    """(Amber, restic, Amber uploaded, restic uploaded, bytes changed) per incremental."""
    restore: list[tuple[Run, Run, float]] = field(default_factory=list)
    """(Amber, restic, the `sync` that makes restic's restore durable) per repetition."""
    images: list[Path] = field(default_factory=list)
    """The snapshot images s0..s3, in order."""
    identical: tuple[bool, bool] = (False, False)
    allocated: tuple[int, int, int] = (0, 0, 0)
    big: Run | None = None
    disk_floor: list[float] = field(default_factory=list)
    """Seconds to write and fsync as many bytes as Amber's restore allocated, per repetition."""
    s3: list[tuple[str, Run, Run]] = field(default_factory=list)
    """(step, Amber, restic) against the S3 server."""


def backup_pair(bench: Bench, label: str, snapshot: str, image: Path) -> tuple[Run, Run, int, int]:
    before = repo_bytes(bench.amber_repo), repo_bytes(bench.restic_repo)
    amber = bench.amber(label, "backup", "create", snapshot, "-t", "bench")
    restic = bench.restic(label, "backup", "--compression", "auto", str(image))
    after = repo_bytes(bench.amber_repo), repo_bytes(bench.restic_repo)
    print(f"  {label}: amber {amber.wall:.2f} s, restic {restic.wall:.2f} s", flush=True)
    return amber, restic, after[0] - before[0], after[1] - before[1]


def run_backups(
    pool: Pool, bench: Bench, data_dir: Path, rng: random.Random, reps: int
) -> tuple[Results, Path]:
    results = Results()
    image = pool.snapshots.create("data", "s0").image
    results.images.append(image)
    for rep in range(reps):
        bench.fresh_repositories()
        results.full.append(backup_pair(bench, f"full #{rep + 1}", "s0", image))
    for round_no in range(1, 4):
        changed = change_one_percent(data_dir, rng, round_no)
        image = pool.snapshots.create("data", f"s{round_no}").image
        results.images.append(image)
        pair = backup_pair(bench, f"incremental {round_no}", f"s{round_no}", image)
        results.incremental.append((*pair, changed))
    return results, image


def run_restores(pool: Pool, bench: Bench, results: Results, image: Path, reps: int) -> None:
    backup_id = results.incremental[-1][0].extra["backup_id"]
    for rep in range(reps):
        amber = bench.amber(
            "restore", "backup", "restore", backup_id, f"restored-{rep}", "-t", "bench"
        )
        target = bench.mnt / f"restic-restore-{rep}"
        restic = bench.restic("restore", "restore", "latest", "--target", str(target))
        start = time.monotonic()
        subprocess.run(["sync"], check=True)  # restic does not fsync what it restores
        results.restore.append((amber, restic, time.monotonic() - start))
        restored_bytes = allocated(pool.volumes.get(f"restored-{rep}").image)
        results.disk_floor.append(durable_write(bench.mnt / "floor.bin", restored_bytes))
        print(
            f"  restore: amber {amber.wall:.2f} s, restic {restic.wall:.2f} s "
            f"(+{results.restore[-1][2]:.2f} s sync)",
            flush=True,
        )
    restored = pool.volumes.get("restored-0").image
    restic_file = bench.mnt / "restic-restore-0" / str(image).lstrip("/")
    want = sha256_of(image)
    results.identical = (sha256_of(restored) == want, sha256_of(restic_file) == want)
    results.allocated = (allocated(image), allocated(restored), allocated(restic_file))


def durable_write(path: Path, nbytes: int) -> float:
    """Seconds to write `nbytes` sequentially (8 MiB writes) and fsync them, cache dropped
    first: the least a durable restore of that much data can take on this disk."""
    block = os.urandom(8 * MiB)
    drop_caches()
    start = time.monotonic()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(0, nbytes, len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.monotonic() - start
    path.unlink()
    return elapsed


def run_big_volume(pool: Pool, bench: Bench) -> Run:
    """The same data in a 32 GiB volume (a clone grown to 32 GiB), to a fresh repository."""
    pool.volumes.create(
        VolumeRequest("big", 32 * GiB, source_kind=SourceKind.SNAPSHOT, source_name="s3")
    )
    pool.snapshots.create("big", "big-s0")
    repo = bench.mnt / "amber-big"
    repo.mkdir()
    bench.run(
        [
            *AMBER,
            "--pool",
            str(bench.pool_dir),
            "target",
            "add",
            "big",
            f"file://{repo}",
            "--password-file",
            str(bench.password),
            "--init",
        ]
    )
    run = bench.amber("32 GiB full", "backup", "create", "big-s0", "-t", "big")
    run.extra["repo"] = repo_bytes(repo)
    return run


# -- the S3 target -----------------------------------------------------------------------------

S3_KEY, S3_SECRET = "bench", "bench-secret-key"


def start_moto(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server on a free port of 127.0.0.1, with one bucket per tool."""
    import boto3  # the benchmark runs in Amber's environment, which has boto3

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / "moto.log", "wb")  # noqa: SIM115 (lives as long as the server)
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"moto server did not start: see {work / 'moto.log'}") from None
            time.sleep(0.1)
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
    )
    for bucket in ("amber-bench", "restic-bench"):
        s3.create_bucket(Bucket=bucket)
    return proc, endpoint


def run_s3(pool: Pool, bench: Bench, results: Results) -> None:
    """The full backup, the three incrementals and a restore, both tools to the S3 server."""
    proc, endpoint = start_moto(bench.work)
    try:
        secret = bench.mnt / "s3.secret"
        secret.write_text(S3_SECRET + "\n")
        amber = [*AMBER, "--pool", str(bench.pool_dir)]
        bench.run(
            [
                *amber,
                "target",
                "add",
                "s3bench",
                "s3://amber-bench/repo",
                "--endpoint",
                endpoint,
                "--region",
                "us-east-1",
                "--path-style",
                "--access-key",
                S3_KEY,
                "--secret-key-file",
                str(secret),
                "--password-file",
                str(bench.password),
                "--init",
            ]
        )
        env = dict(bench.env, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        restic = ["restic", "-r", f"s3:{endpoint}/restic-bench", "--json"]
        subprocess.run(
            [*restic, "init", "--repository-version", "2"], env=env, check=True, capture_output=True
        )
        labels = ["full", "incremental 1", "incremental 2", "incremental 3"]
        for number, (label, image) in enumerate(zip(labels, results.images, strict=True)):
            a = bench.amber(f"S3 {label}", "backup", "create", f"s{number}", "-t", "s3bench")
            r = measure(
                f"S3 {label}", [*restic, "backup", "--compression", "auto", str(image)], env
            )
            results.s3.append((label, a, r))
            print(f"  S3 {label}: amber {a.wall:.2f} s, restic {r.wall:.2f} s", flush=True)
        backup_id = results.s3[-1][1].extra["backup_id"]
        a = bench.amber(
            "S3 restore", "backup", "restore", backup_id, "s3-restored", "-t", "s3bench"
        )
        target = bench.mnt / "restic-restore-s3"
        r = measure("S3 restore", [*restic, "restore", "latest", "--target", str(target)], env)
        start = time.monotonic()
        subprocess.run(["sync"], check=True)
        synced = Run("restic+sync", r.wall + time.monotonic() - start, r.cpu, r.rss_mb)
        results.s3 += [("restore", a, r), ("restore, restic + `sync`", a, synced)]
        print(f"  S3 restore: amber {a.wall:.2f} s, restic {r.wall:.2f} s", flush=True)
        restored = pool.volumes.get("s3-restored").image
        if sha256_of(restored) != sha256_of(results.images[-1]):
            raise SystemExit("the restore from S3 differs from the snapshot")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- the report --------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(amber: float, restic: float) -> str:
    return f"{restic / amber:.1f}x" if amber > 0 else "-"


def row(label: str, amber: Sequence[Run], restic: Sequence[Run], extra: str = "") -> str:
    a = [median([r.wall for r in amber]), median([r.cpu for r in amber])]
    b = [median([r.wall for r in restic]), median([r.cpu for r in restic])]
    rss = max(r.rss_mb for r in amber), max(r.rss_mb for r in restic)
    return (
        f"| {label} | {a[0]:.2f} s | {b[0]:.2f} s | **{ratio(a[0], b[0])}** | {a[1]:.2f} s | "
        f"{b[1]:.2f} s | {rss[0]:.0f} MB | {rss[1]:.0f} MB |{extra}"
    )


def report(results: Results, data_bytes: int) -> None:
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"{data_bytes / GiB:.2f} GiB of data in a 4 GiB ext4 volume; medians of "
        f"{len(results.full)} full backups and {len(results.restore)} restores"
    )
    print(
        "\n| step | Amber wall | restic wall | speed-up | Amber CPU | restic CPU | "
        "Amber peak RSS | restic peak RSS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(row("full backup", [f[0] for f in results.full], [f[1] for f in results.full]))
    for i, (a, r, *_rest) in enumerate(results.incremental, start=1):
        print(row(f"incremental {i} (1% changed)", [a], [r]))
    amber = [r[0] for r in results.restore]
    restic = [r[1] for r in results.restore]
    print(row("restore", amber, restic))
    synced = [Run("restic+sync", r[1].wall + r[2], r[1].cpu, r[1].rss_mb) for r in results.restore]
    print(row("restore, restic + `sync` (durable, as Amber's)", amber, synced))
    print(
        "\n| incremental | changed (file level) | Amber chunks read / unchanged | Amber engine "
        "time | Amber uploaded | uploaded / changed | restic uploaded |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, (a, _, up_a, up_r, changed) in enumerate(results.incremental, start=1):
        x = a.extra
        print(
            f"| {i} | {changed / MiB:.1f} MiB | {x['chunks_read']} / {x['chunks_unchanged']} | "
            f"{x['duration_seconds']:.2f} s | {up_a / MiB:.1f} MiB | {up_a / changed:.2f} | "
            f"{up_r / MiB:.1f} MiB |"
        )
    total_a = results.full[-1][2] + sum(i[2] for i in results.incremental)
    total_r = results.full[-1][3] + sum(i[3] for i in results.incremental)
    print(
        f"\nRepository after the full backup and 3 incrementals: Amber {total_a / MiB:.0f} MiB, "
        f"restic {total_r / MiB:.0f} MiB ({total_a / total_r:.2f}x restic's)."
    )
    alloc = results.allocated
    print(
        f"Restores byte-identical: Amber {results.identical[0]}, restic {results.identical[1]}. "
        f"Allocated: snapshot {alloc[0] / MiB:.0f} MiB, Amber's restore {alloc[1] / MiB:.0f} "
        f"MiB, restic's {alloc[2] / MiB:.0f} MiB."
    )
    print(
        f"Writing and fsyncing {alloc[1] / MiB:.0f} MiB sequentially on the same disk (the floor "
        f"for a durable restore of that data), median of {len(results.disk_floor)}: "
        f"{median(results.disk_floor):.2f} s ({', '.join(f'{t:.2f}' for t in results.disk_floor)})."
    )
    if results.s3:
        print("\nTo the S3 server (moto, 127.0.0.1), same snapshots, one run each:\n")
        print(
            "| step | Amber wall | restic wall | speed-up | Amber CPU | restic CPU | "
            "Amber peak RSS | restic peak RSS |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for label, a, r in results.s3:
            print(row(label, [a], [r]))
    if results.big is not None:
        big = results.big
        print(
            f"32 GiB volume holding the same data, full backup: {big.wall:.2f} s, CPU "
            f"{big.cpu:.2f} s, peak RSS {big.rss_mb:.0f} MB, stored "
            f"{big.extra['repo'] / MiB:.0f} MiB."
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/amber-bench"))
    parser.add_argument("--reps", type=int, default=5, help="repetitions of full and restore")
    parser.add_argument("--big-volume", action="store_true")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 server half")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the benchmark uses loop devices and mounts")
    if args.workdir.exists():
        teardown(args.workdir)
        if args.workdir.exists():
            raise SystemExit(f"{args.workdir} is in the way; remove it")
    rng = random.Random(args.seed)
    # As installed (scripts/install.sh): bytecode for every module, even where the environment
    # sets PYTHONDONTWRITEBYTECODE, so no Amber command compiles its modules while timed.
    compileall.compile_dir(Path(amber.__file__).parent, quiet=1)
    try:
        pool, bench = setup(args.workdir)
        data_dir, data_bytes = populated_volume(pool, bench, rng)
        results, image = run_backups(pool, bench, data_dir, rng, args.reps)
        pool.attachments.release("volume", "data")
        run_restores(pool, bench, results, image, args.reps)
        if not args.no_s3:
            run_s3(pool, bench, results)
        if args.big_volume:
            results.big = run_big_volume(pool, bench)
        report(results, data_bytes)
        pool.close()
    finally:
        teardown(args.workdir)


if __name__ == "__main__":
    main()
