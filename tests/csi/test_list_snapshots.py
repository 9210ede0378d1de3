"""ListSnapshots answers from the target, on every node.

Three real `amber node` processes over their own pools share one real S3 server (moto): A and
B know target `s3t` from their targets file; C knows no target at all. A backup snapshot that
one node deleted is reported by no node (A's own record of it is a cache, checked against the
target and dropped with its local snapshot); a node that never saw a target lists and resolves
backup snapshots from the secrets of the call (the class's `snapshotter-list-secret-*`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from amber.csi._proto import csi_pb2
from amber.domain.units import MiB
from tests.blobstore.conftest import BUCKET, MotoServer, _run_moto
from tests.csi.backup_env import PASSWORD, pool_names, write_targets
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import RPC_TIMEOUT, Csi, DriverProcess, block_cap, start_driver

TARGET = "s3t"


@dataclass
class Nodes:
    moto: MotoServer
    prefix: str
    targets: Path
    """The targets file of nodes A and B (target `s3t`)."""
    pools: list[Path]
    drivers: list[DriverProcess]

    def csi(self, index: int) -> Csi:
        return self.drivers[index].client()

    def secrets(self, prefix: str) -> dict[str, str]:
        """A Secret in Amber's layout defining a target on the moto server."""
        return {
            "url": f"s3://{BUCKET}/{prefix}",
            "endpoint": self.moto.endpoint,
            "accessKey": self.moto.access_key,
            "secretKey": self.moto.secret_key,
            "pathStyle": "true",
            "repositoryPassword": PASSWORD,
        }


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, xfs_root: Path) -> Iterator[Nodes]:
    with _run_moto(tmp_path_factory.mktemp("moto"), auth=False) as moto:
        prefix = f"list-{uuid.uuid4().hex[:8]}"
        keys = (moto.access_key, moto.secret_key)
        targets = write_targets(tmp_path_factory.mktemp("t"), TARGET, moto.endpoint, prefix, keys)
        nothing = tmp_path_factory.mktemp("none") / "targets.json"
        env = Nodes(moto, prefix, targets, [make_pool(xfs_root) for _ in range(3)], [])
        fast = ["--upload-retry=0.3", "--upload-attempts=60"]
        try:
            for pool, node, config in zip(
                env.pools, ("node-a", "node-b", "node-c"), (targets, targets, nothing), strict=True
            ):
                extra = [f"--targets-config={config}", *fast]
                env.drivers.append(start_driver(pool, node_id=node, extra=extra))
            yield env
            for driver in env.drivers:
                driver.stop()
        finally:
            for driver in env.drivers:
                driver.cleanup()
            for pool in env.pools:
                remove_pool(pool)


def until(call: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not done(value := call()):
        assert time.monotonic() < deadline, f"timed out: last {value}"
        time.sleep(0.1)
    return value


def ready_backup(
    csi: Csi,
    volume_id: str,
    name: str,
    params: dict[str, str],
    secrets: dict[str, str] | None = None,
) -> Any:
    request = csi_pb2.CreateSnapshotRequest(
        name=name, source_volume_id=volume_id, parameters=params, secrets=secrets or {}
    )
    return until(
        lambda: csi.controller.CreateSnapshot(request, timeout=RPC_TIMEOUT).snapshot,
        lambda s: s.ready_to_use,
    )


def listed(csi: Csi, snapshot_id: str = "", secrets: dict[str, str] | None = None) -> list[str]:
    request = csi_pb2.ListSnapshotsRequest(snapshot_id=snapshot_id, secrets=secrets or {})
    reply = csi.controller.ListSnapshots(request, timeout=RPC_TIMEOUT)
    return [e.snapshot.snapshot_id for e in reply.entries if e.snapshot.ready_to_use]


def delete(csi: Csi, snapshot_id: str, secrets: dict[str, str] | None = None) -> None:
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id, secrets=secrets or {})
    csi.controller.DeleteSnapshot(request, timeout=RPC_TIMEOUT)


def _volume(nodes: Nodes, name: str) -> str:
    volume_id: str = nodes.csi(0).create(name, 16 * MiB, cap=block_cap()).volume_id
    return volume_id


@pytest.mark.parametrize("keep_local", [False, True])
def test_a_backup_deleted_by_one_node_is_listed_by_none(nodes: Nodes, keep_local: bool) -> None:
    a, b = nodes.csi(0), nodes.csi(1)
    volume_id = _volume(nodes, f"pvc-gone-{keep_local}")
    params = {"type": "backup", "target": TARGET, "keepLocalSnapshot": str(keep_local).lower()}
    snap = ready_backup(a, volume_id, f"snapshot-gone-{keep_local}", params)
    volume_name = volume_id.rsplit(":", 1)[1]
    assert len(pool_names(nodes.pools[0], "snapshots", volume_name)) == int(keep_local)
    assert listed(a, snap.snapshot_id) == [snap.snapshot_id]
    assert listed(b, snap.snapshot_id) == [snap.snapshot_id]
    assert snap.snapshot_id in listed(a)

    delete(b, snap.snapshot_id)  # node B deletes it (A is not told)

    assert listed(b, snap.snapshot_id) == []
    assert listed(a, snap.snapshot_id) == []  # A checked the target, not its own record
    assert snap.snapshot_id not in listed(a)
    # A forgot it as DeleteSnapshot would have: the local snapshot kept with it goes too.
    until(lambda: pool_names(nodes.pools[0], "snapshots", volume_name), lambda s: s == set())
    delete(a, snap.snapshot_id)  # and a late DeleteSnapshot on A is still fine
    assert listed(a, snap.snapshot_id) == []


def test_the_full_listing_drops_what_another_node_deleted(nodes: Nodes) -> None:
    a, b = nodes.csi(0), nodes.csi(1)
    volume_id = _volume(nodes, "pvc-full-list")
    params = {"type": "backup", "target": TARGET}
    one = ready_backup(a, volume_id, "snapshot-list-1", params)
    two = ready_backup(a, volume_id, "snapshot-list-2", params)
    assert {one.snapshot_id, two.snapshot_id} <= set(listed(a))
    delete(b, one.snapshot_id)
    now = listed(a)  # without an ID: every snapshot of node A, checked per target
    assert one.snapshot_id not in now
    assert two.snapshot_id in now
    delete(a, two.snapshot_id)


def test_a_node_that_never_saw_the_target_lists_with_the_list_secret(nodes: Nodes) -> None:
    a, c = nodes.csi(0), nodes.csi(2)
    secrets = nodes.secrets(f"{nodes.prefix}-secret")
    volume_id = _volume(nodes, "pvc-list-secret")
    class_params = {
        "type": "backup",
        "csi.storage.k8s.io/snapshotter-secret-name": "amber-target",
        "csi.storage.k8s.io/snapshotter-list-secret-name": "amber-target",
    }
    snap = ready_backup(a, volume_id, "snapshot-list-secret", class_params, secrets)
    # Node C has no targets file and never took part: with no secret it cannot name the target
    # (nothing reported), with the list secret it reads the manifest on the target.
    assert listed(c, snap.snapshot_id) == []
    found = c.controller.ListSnapshots(
        csi_pb2.ListSnapshotsRequest(snapshot_id=snap.snapshot_id, secrets=secrets),
        timeout=RPC_TIMEOUT,
    ).entries
    assert [(e.snapshot.snapshot_id, e.snapshot.ready_to_use) for e in found] == [
        (snap.snapshot_id, True)
    ]
    assert found[0].snapshot.source_volume_id == volume_id
    assert found[0].snapshot.size_bytes == 16 * MiB
    # Deleted through node C (DeleteSnapshot carries the snapshotter secret): node A, asked
    # with the list secret, reports it no more.
    delete(c, snap.snapshot_id, secrets)
    assert listed(c, snap.snapshot_id, secrets) == []
    assert listed(a, snap.snapshot_id, secrets) == []
    assert snap.snapshot_id not in listed(a, secrets=secrets)
    for driver in nodes.drivers:
        text = driver.log.read_text()
        assert nodes.moto.secret_key not in text
        assert PASSWORD not in text
