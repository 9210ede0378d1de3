"""Stress NodeStageVolume on ext4 (or xfs) against a real `amber node`: run it by hand.

    .venv/bin/python -m tests.csi.stress_stage --rounds 100 [--fs ext4] [--expand] [--burn 2]
        [--churn]

Each round creates a volume, optionally grows it with ControllerExpandVolume (offline: the
stage then attaches the grown image and grows the filesystem), stages, publishes, unpublishes,
unstages and deletes it. `--burn N` keeps N busy-looping processes running meanwhile, the way
parallel test workers load the machine; `--churn` makes and releases a loopback XFS
(conftest's `make_xfs`/`release_xfs`) over and over meanwhile, the way other workers' fixtures
use loop devices. (Before `loopdev.detach` checked what it detaches, release_xfs freed another
process's device by a stale name: with --churn, an INTERNAL within ~50 rounds.) A failed RPC
prints the driver log's lines of its INTERNAL reference (the traceback) and the round stops;
everything is torn down at the end.

Not a test (pytest does not collect it): it looks for an intermittent failure by repetition.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from amber.domain.units import MiB
from tests.conftest import make_xfs, release_xfs
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import Csi, DriverProcess, mount_cap, start_driver


def _burn() -> None:  # pragma: no cover - a CPU hog in a child process
    while True:
        pass


def _churn(stop: Any) -> None:  # pragma: no cover - runs in a child process
    while not stop.is_set():
        with tempfile.TemporaryDirectory(prefix="amber-churn-") as root:
            release_xfs(*make_xfs(Path(root), "300M"))


def one_round(csi: Csi, work: Path, index: int, fs_type: str, expand: bool) -> None:
    cap = mount_cap(fs_type)
    size = 64 * MiB if fs_type == "ext4" else 320 * MiB
    volume = csi.create(f"stress-{index}", size, cap=cap).volume_id
    if expand:
        csi.expand(volume, 2 * size, cap)
    staging, target = work / f"staging-{index}", work / f"target-{index}"
    staging.mkdir()
    csi.stage(volume, staging, cap)
    csi.publish(volume, staging, target, cap)
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)
    csi.delete(volume)
    staging.rmdir()


def referenced(driver: DriverProcess, error: grpc.RpcError) -> str:
    refs = re.findall(r"\(ref ([0-9a-f]+)\)", str(error.details()))
    log = driver.log.read_text(errors="replace")
    return "\n".join(line for line in log.splitlines() if any(r in line for r in refs))


def stress(rounds: int, fs_type: str, expand: bool, root: Path) -> int:
    image, mnt = make_xfs(root, "16G")
    pool = make_pool(mnt)
    work = pool.parent / f"{pool.name}-work"
    driver = start_driver(pool)
    failures = 0
    try:
        csi = driver.client()
        for index in range(rounds):
            try:
                one_round(csi, work, index, fs_type, expand)
            except grpc.RpcError as e:
                failures += 1
                print(f"round {index}: {e.code().name}: {e.details()}\n{referenced(driver, e)}")
                break
        driver.stop()
    finally:
        driver.cleanup()
        remove_pool(pool)
        release_xfs(image, mnt)
    print(f"{rounds if not failures else index} rounds passed, {failures} failed")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--fs", default="ext4", choices=["ext4", "xfs"])
    parser.add_argument("--expand", action="store_true", help="ControllerExpand before staging")
    parser.add_argument("--burn", type=int, default=0, help="busy-looping processes meanwhile")
    parser.add_argument("--churn", action="store_true", help="make/release loop XFS meanwhile")
    args = parser.parse_args()
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(args.burn)]
    stop = multiprocessing.Event()
    churner = multiprocessing.Process(target=_churn, args=(stop,)) if args.churn else None
    for process in [*burners, *([churner] if churner else [])]:
        process.start()
    try:
        with tempfile.TemporaryDirectory(prefix="amber-stress-") as root:
            return 1 if stress(args.rounds, args.fs, args.expand, Path(root)) else 0
    finally:
        for burner in burners:
            burner.terminate()
        if churner is not None:
            stop.set()  # it finishes the round it is in: no mount or loop device left
            churner.join()


if __name__ == "__main__":
    sys.exit(main())
