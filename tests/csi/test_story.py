"""The user's story, as Kubernetes would drive it, against a real driver on a real pool.

Provision -> stage -> publish -> write -> snapshot -> write more -> restore (same size and
larger) -> clone -> expand online while published -> publish read-only -> a block volume as a
device file -> tear everything down. Then the same kind of story through `amber csi`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amber.domain.units import MiB
from amber.system import loopdev, mount
from tests.conftest import HAS_CAP_SYS_RESOURCE
from tests.csi.driver import (
    NODE,
    Code,
    Csi,
    DriverProcess,
    Mode,
    block_cap,
    expect_code,
    mount_cap,
    snapshot_source,
    volume_source,
)
from tests.pool.helpers import sha256, tree_digest, write_random

STORAGE_CLASS = {"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "db"}
RWO = Mode.SINGLE_NODE_MULTI_WRITER  # what Kubernetes sends for ReadWriteOnce to this driver


def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


class Kubelet:
    """Stages once per volume and publishes once per pod, with kubelet-like paths."""

    def __init__(self, csi: Csi, root: Path) -> None:
        self.csi = csi
        self.root = root

    def staging(self, volume_id: str) -> Path:
        path = self.root / "plugins" / volume_id.rsplit(":", 1)[-1] / "globalmount"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def target(self, pod: str, volume_id: str) -> Path:
        parent = self.root / "pods" / pod / "volumes"
        parent.mkdir(parents=True, exist_ok=True)
        return parent / volume_id.rsplit(":", 1)[-1]

    def mount(self, pod: str, volume_id: str, cap: object, read_only: bool = False) -> Path:
        staging, target = self.staging(volume_id), self.target(pod, volume_id)
        self.csi.stage(volume_id, staging, cap)
        self.csi.publish(volume_id, staging, target, cap, read_only=read_only)
        return target

    def unmount(self, pod: str, volume_id: str) -> None:
        self.csi.unpublish(volume_id, self.target(pod, volume_id))
        self.csi.unstage(volume_id, self.staging(volume_id))


@pytest.mark.parametrize("fs_type", ["xfs", "ext4"])
def test_the_kubernetes_story(
    csi: Csi, driver: DriverProcess, csi_pool: Path, work: Path, fs_type: str
) -> None:
    kubelet = Kubelet(csi, work / f"kubelet-{fs_type}")
    cap = mount_cap(fs_type, RWO)
    size = 320 * MiB

    # A PVC is provisioned on this node (WaitForFirstConsumer picked it) and used by a pod.
    pvc = csi.create(
        f"pvc-{fs_type}", size, cap=cap, parameters=STORAGE_CLASS, requisite=[NODE]
    ).volume_id
    live = kubelet.mount("app", pvc, cap)
    write_random(live / "table.db", 24 * MiB, seed=1)
    (live / "conf").mkdir()
    (live / "conf" / "settings").write_text("v1")
    at_snapshot = tree_digest(live)

    # A VolumeSnapshot while the pod writes: the filesystem is frozen for the reflink copy.
    snap = csi.snapshot(pvc, f"snapshot-{fs_type}")
    assert snap.ready_to_use
    write_random(live / "table.db", 4 * MiB, seed=2)
    (live / "conf" / "settings").write_text("v2")
    (live / "new-file").write_text("after the snapshot")
    now = tree_digest(live)
    assert now != at_snapshot

    # Restores: same size, and larger (its filesystem grows to the new size).
    restored = csi.create(
        f"pvc-{fs_type}-restored", size, cap=cap, source=snapshot_source(snap.snapshot_id)
    ).volume_id
    larger = csi.create(
        f"pvc-{fs_type}-larger", 2 * size, cap=cap, source=snapshot_source(snap.snapshot_id)
    ).volume_id
    for volume in (restored, larger):
        path = kubelet.mount("restore-check", volume, cap)
        assert tree_digest(path) == at_snapshot
        kubelet.unmount("restore-check", volume)
    big = kubelet.mount("big", larger, cap)
    assert fs_bytes(big) > size + 200 * MiB

    # A clone of the live volume has today's data, and the two then diverge.
    clone = csi.create(f"pvc-{fs_type}-clone", size, cap=cap, source=volume_source(pvc)).volume_id
    cloned = kubelet.mount("clone", clone, cap)
    assert tree_digest(cloned) == now
    (cloned / "only-in-clone").write_text("x")
    assert not (live / "only-in-clone").exists()

    # Online expansion while published: what kubelet does after the trivial resizer.
    before = fs_bytes(live)
    digest = sha256(live / "table.db")
    if fs_type == "xfs" or HAS_CAP_SYS_RESOURCE:
        assert csi.node_expand(pvc, live, 2 * size).capacity_bytes == 2 * size
        assert fs_bytes(live) > before + 200 * MiB
    else:
        expect_code(Code.FAILED_PRECONDITION, lambda: csi.node_expand(pvc, live, 2 * size))
        kubelet.unmount("app", pvc)
        live = kubelet.mount("app", pvc, cap)  # the next stage grows it
        assert fs_bytes(live) > before + 200 * MiB
    assert mount.is_mounted(live)
    assert sha256(live / "table.db") == digest
    write_random(live / "grown", 300 * MiB, seed=3)  # more than the old size left free

    # Another pod reads the restored volume read-only.
    reader = kubelet.mount("reader", restored, cap, read_only=True)
    assert (reader / "conf" / "settings").read_text() == "v1"
    with pytest.raises(OSError, match="Read-only file system"):
        (reader / "conf" / "settings").write_text("v3")

    # Tear down as Kubernetes would: pods go, then PVCs and snapshots.
    for pod, volume in (("app", pvc), ("big", larger), ("clone", clone), ("reader", restored)):
        kubelet.unmount(pod, volume)
    for volume in (pvc, restored, larger, clone):
        csi.delete(volume)
    csi.delete_snapshot(snap.snapshot_id)
    assert not [e for e in csi.list_volumes().entries if fs_type in e.volume.volume_id]
    assert not [m for m in mount.mount_table() if str(m.target).startswith(str(kubelet.root))]
    assert not [e for e in driver.rpc_lines() if e.get("code") == "INTERNAL"], (
        "no RPC of the story may fail with INTERNAL"
    )


def test_block_volume_story(csi: Csi, csi_pool: Path, work: Path) -> None:
    kubelet = Kubelet(csi, work / "kubelet-block")
    cap = block_cap(RWO)
    raw = csi.create("pvc-raw-story", 32 * MiB, cap=cap).volume_id
    device = kubelet.mount("db", raw, cap)
    pattern = os.urandom(2 * MiB)
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, pattern, 8 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    snap = csi.snapshot(raw, "snap-raw-story")
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, b"\xee" * (2 * MiB), 8 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    restored = csi.create(
        "pvc-raw-restored", 64 * MiB, cap=cap, source=snapshot_source(snap.snapshot_id)
    ).volume_id
    copy = kubelet.mount("check", restored, cap)
    fd = os.open(copy, os.O_RDONLY)
    try:
        assert os.pread(fd, 2 * MiB, 8 * MiB) == pattern
        assert os.lseek(fd, 0, os.SEEK_END) == 64 * MiB
    finally:
        os.close(fd)
    for pod, volume in (("db", raw), ("check", restored)):
        kubelet.unmount(pod, volume)
        csi.delete(volume)
    csi.delete_snapshot(snap.snapshot_id)
    leftovers = [
        loop for loop in loopdev.list_loops() if str(loop.backing_file).startswith(str(csi_pool))
    ]
    assert not leftovers


def amber_csi(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amber", "csi", *args, f"--endpoint={endpoint}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_amber_csi_client(driver: DriverProcess, work: Path) -> None:
    """`amber csi` talks to the running driver the way the sidecars and kubelet would."""
    endpoint = driver.endpoint

    def ok(*args: str) -> str:
        done = amber_csi(endpoint, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    info = json.loads(ok("info", "--output", "json"))
    assert info["plugin"]["name"] == "amber.csi.dev"
    assert info["node"]["node_id"] == NODE
    created = json.loads(
        ok("create-volume", "cli vol", "--size", "320Mi", "--fs", "xfs", "-o", "json")
    )
    volume_id = created["volume"]["volume_id"]
    assert created["volume"]["capacity_bytes"] == str(320 * MiB)
    assert "cli vol" not in volume_id  # not a pool name: hashed, stably
    staging, target = work / "cli" / "staging", work / "cli" / "target"
    ok("stage", volume_id, str(staging))
    (work / "cli").mkdir(exist_ok=True)
    ok("publish", volume_id, str(staging), str(target))
    (target / "f").write_text("cli")
    stats = json.loads(ok("stats", volume_id, str(target), "-o", "json"))
    assert stats["volume_condition"].get("abnormal", False) is False
    snap = json.loads(ok("snapshot", volume_id, "cli-snap", "-o", "json"))["snapshot"]
    listed = json.loads(ok("list-volumes", "-o", "json"))
    assert volume_id in [e["volume"]["volume_id"] for e in listed["entries"]]
    snapshots = json.loads(ok("list-snapshots", "--volume", volume_id, "-o", "json"))
    assert [e["snapshot"]["snapshot_id"] for e in snapshots["entries"]] == [snap["snapshot_id"]]
    assert "Snapshots" in ok("list-snapshots")
    restored = json.loads(
        ok(
            "create-volume",
            *("cli-restored", "--size", "320Mi", "--from-snapshot", snap["snapshot_id"]),
            *("-o", "json"),
        )
    )
    assert restored["volume"]["content_source"]["snapshot"]["snapshot_id"] == snap["snapshot_id"]
    before = os.statvfs(target).f_blocks
    expanded = ok("expand", volume_id, "--size", "640Mi", "--path", str(target))
    assert "640.0 MiB" in expanded
    assert os.statvfs(target).f_blocks > before  # xfs grew online
    ok("unpublish", volume_id, str(target))
    ok("unstage", volume_id, str(staging))
    ok("delete-volume", restored["volume"]["volume_id"])
    ok("delete-snapshot", snap["snapshot_id"])
    ok("delete-volume", volume_id)
    failed = amber_csi(endpoint, "stats", volume_id, str(target))
    assert failed.returncode == 3  # NOT_FOUND, as `amber` exits for NotFound
    assert "NOT_FOUND" in failed.stderr
    gone = amber_csi("unix:///tmp/amber-no-such-driver.sock", "info")
    assert gone.returncode == 9
    assert "cannot reach the driver" in gone.stderr
