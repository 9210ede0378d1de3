"""Concurrent calls with repeated names converge to one object each, as a CO's retries must.

Many threads, each with its own channel (so calls really run in parallel on the server's thread
pool), call the same RPCs with a few names over and over.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from amber.domain.units import MiB
from amber.system import mount
from tests.csi.driver import Csi, DriverProcess, Mode, mount_cap

THREADS = 16
ROUNDS = 3


def in_parallel(driver: DriverProcess, calls: list[Callable[[Csi], Any]]) -> list[Any]:
    """Run each call on its own client once every thread is ready; results in call order."""
    clients = [driver.client() for _ in calls]
    start = threading.Barrier(len(calls))

    def run(index: int) -> Any:
        start.wait()
        try:
            return calls[index](clients[index])
        except grpc.RpcError as e:
            return e

    with futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, range(len(calls))))


def test_parallel_create_volume_with_repeated_names(
    driver: DriverProcess, csi: Csi, csi_pool: Path
) -> None:
    names = [f"pvc-race-{i % 4}" for i in range(THREADS)]
    images_before = len(list((csi_pool / "volumes").glob("*.img")))
    for _ in range(ROUNDS):
        results = in_parallel(driver, [lambda c, n=n: c.create(n, 32 * MiB) for n in names])
        failures = [r for r in results if isinstance(r, grpc.RpcError)]
        assert not failures, [(f.code(), f.details()) for f in failures]
        ids: dict[str, set[str]] = defaultdict(set)
        for name, volume in zip(names, results, strict=True):
            ids[name].add(volume.volume_id)
        assert all(len(v) == 1 for v in ids.values()), ids
    listed = [
        e.volume.volume_id for e in csi.list_volumes().entries if "pvc-race-" in e.volume.volume_id
    ]
    assert sorted(listed) == sorted(next(iter(v)) for v in ids.values())
    assert len(list((csi_pool / "volumes").glob("*.img"))) == images_before + 4


def test_parallel_create_snapshot_with_repeated_names(
    driver: DriverProcess, csi: Csi, csi_pool: Path
) -> None:
    volume = csi.create("pvc-snap-race", 32 * MiB).volume_id
    names = [f"snap-race-{i % 3}" for i in range(THREADS)]
    results = in_parallel(driver, [lambda c, n=n: c.snapshot(volume, n) for n in names])
    assert not [r for r in results if isinstance(r, grpc.RpcError)]
    by_name: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, snap in zip(names, results, strict=True):
        by_name[name].add((snap.snapshot_id, snap.creation_time.ToNanoseconds()))
    assert all(len(v) == 1 for v in by_name.values()), by_name
    listed = csi.list_snapshots(source_volume_id=volume).entries
    assert len(listed) == 3


def test_parallel_stage_and_publish_converge(driver: DriverProcess, csi: Csi, work: Path) -> None:
    volume = csi.create("pvc-stage-race", 32 * MiB).volume_id
    staging, target = work / "race-staging", work / "race-target"
    staging.mkdir()
    cap = mount_cap(mode=Mode.SINGLE_NODE_WRITER)
    results = in_parallel(driver, [lambda c: c.stage(volume, staging, cap)] * 8)
    assert not [r for r in results if isinstance(r, grpc.RpcError)]
    results = in_parallel(driver, [lambda c: c.publish(volume, staging, target, cap)] * 8)
    assert not [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(mount.mounts_at(staging)) == 1
    assert len(mount.mounts_at(target)) == 1
    results = in_parallel(
        driver,
        [lambda c: c.unpublish(volume, target)] * 4 + [lambda c: c.stats(volume, staging)] * 4,
    )
    errors = [r for r in results if isinstance(r, grpc.RpcError)]
    assert not errors, [(e.code(), e.details()) for e in errors]
    assert not mount.is_mounted(target)
    results = in_parallel(driver, [lambda c: c.unstage(volume, staging)] * 8)
    assert not [r for r in results if isinstance(r, grpc.RpcError)]
    assert not mount.is_mounted(staging)


def test_parallel_delete_of_one_volume(driver: DriverProcess, csi: Csi) -> None:
    volume = csi.create("pvc-delete-race", 16 * MiB).volume_id
    snap = csi.snapshot(volume, "snap-delete-race").snapshot_id
    results = in_parallel(
        driver,
        [lambda c: c.delete(volume)] * 6 + [lambda c: c.delete_snapshot(snap)] * 6,
    )
    outcomes = Counter(type(r).__name__ for r in results)
    assert outcomes == Counter({"NoneType": 12}), [
        (r.code(), r.details()) for r in results if isinstance(r, grpc.RpcError)
    ]
    assert volume not in [e.volume.volume_id for e in csi.list_volumes().entries]
