"""Amber's Kubernetes flows against a real control plane, each asserted through the Kubernetes
API (and, where the bytes matter, in the nodes' pools and the S3 target).

Each test works in a namespace of its own; the last test deletes everything and checks that no
volume, snapshot or loop device is left on the nodes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import boto3
import pytest

from amber.ops.handles import key_backup_id
from amber.system import loopdev
from tests.blobstore.conftest import S3Server
from tests.e2e.cluster import DRIVER, TOPOLOGY_KEY, Cluster
from tests.e2e.kube import Kube, Obj, until
from tests.e2e.objects import (
    MANAGED_BY,
    Mi,
    bound,
    claim,
    gone,
    namespace,
    pool_name,
    pool_rows,
    quantity_bytes,
    ready,
    snapshot,
)

PATTERN_AT = 5 * Mi + 12345


def _node_of(pv: Obj) -> str:
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    [expression] = terms[0]["matchExpressions"]
    assert expression["key"] == TOPOLOGY_KEY
    [node] = expression["values"]
    return str(node)


def _image(cluster: Cluster, pv: Obj) -> Any:
    handle = pv["spec"]["csi"]["volumeHandle"]
    rows = pool_rows(cluster.nodes[_node_of(pv)].pool, "volumes")
    return rows[pool_name(handle)]["image"]


def _write_pattern(cluster: Cluster, pv: Obj, data: bytes) -> None:
    """Write bytes into a Block volume's image (what a pod would write to the device)."""
    fd = os.open(_image(cluster, pv), os.O_WRONLY)
    try:
        os.pwrite(fd, data, PATTERN_AT)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_pattern(cluster: Cluster, pv: Obj, size: int) -> bytes:
    with open(_image(cluster, pv), "rb") as f:
        f.seek(PATTERN_AT)
        return f.read(size)


def _manifests(s3: S3Server, prefix: str) -> set[str]:
    """The backup manifests on the S3 target (object names under `<prefix>/backups/`)."""
    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
    )
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{prefix}/backups/")
    return {str(o["Key"]).rsplit("/", 1)[1] for o in listed.get("Contents", [])}


def _backup_id(content: Obj) -> str:
    handle = content["status"]["snapshotHandle"]
    assert handle.startswith("amber:v1:bak:default:"), handle
    return key_backup_id(handle.rsplit(":", 1)[1])


# -- the flows --------------------------------------------------------------------------------


def test_filesystem_and_block_claims_bind_on_their_selected_nodes(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-bind")
    kube.apply(
        [
            claim(ns, "fs", "200Mi", node="node-a"),
            claim(ns, "xfs", "320Mi", node="node-b", storage_class="amber-xfs"),
            claim(ns, "raw", "64Mi", node="node-b", storage_class="amber-block", block=True),
        ]
    )
    for name, node, mode, fs in (
        ("fs", "node-a", "Filesystem", "ext4"),
        ("xfs", "node-b", "Filesystem", "xfs"),
        ("raw", "node-b", "Block", None),
    ):
        pvc, pv = bound(kube, ns, name)
        csi = pv["spec"]["csi"]
        assert csi["driver"] == DRIVER
        assert csi["volumeHandle"].startswith(f"amber:v1:vol:{node}:pvc-")
        assert csi.get("fsType") == fs
        assert pv["spec"]["volumeMode"] == mode
        assert _node_of(pv) == node
        assert pv["spec"]["capacity"]["storage"] == pvc["spec"]["resources"]["requests"]["storage"]
        row = pool_rows(cluster.nodes[node].pool, "volumes")[pool_name(csi["volumeHandle"])]
        assert row["size"] == quantity_bytes(pv["spec"]["capacity"]["storage"])
        assert row["mode"] == mode.lower()


def test_nodes_publish_their_capacity(cluster: Cluster) -> None:
    kube = cluster.kube

    def published() -> set[str]:
        found = set()
        for item in kube.list("csistoragecapacities", "amber-system"):
            labels = item["nodeTopology"]["matchLabels"]
            if item.get("capacity") and quantity_bytes(item["capacity"]) > 0:
                found.add(labels[TOPOLOGY_KEY])
        return found if found == set(cluster.nodes) else set()

    until("CSIStorageCapacity objects of both nodes", published)


def test_local_snapshot_restores_and_clones_on_its_node(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-local")
    kube.apply([claim(ns, "origin", "100Mi", node="node-a")])
    _, origin_pv = bound(kube, ns, "origin")
    kube.apply([snapshot(ns, "snap", "origin", "amber-local")])
    vs, content = ready(kube, ns, "snap")
    assert quantity_bytes(vs["status"]["restoreSize"]) == 100 * Mi
    handle = content["status"]["snapshotHandle"]
    assert handle.startswith("amber:v1:snap:node-a:")
    assert content["metadata"]["labels"][MANAGED_BY] == "node-a"
    snap_row = pool_rows(cluster.nodes["node-a"].pool, "snapshots")[pool_name(handle)]
    assert snap_row["volume_name"] == pool_name(origin_pv["spec"]["csi"]["volumeHandle"])

    kube.apply(
        [
            claim(ns, "same", "100Mi", node="node-a", source=("VolumeSnapshot", "snap")),
            claim(ns, "larger", "200Mi", node="node-a", source=("VolumeSnapshot", "snap")),
            claim(ns, "clone", "100Mi", node="node-a", source=("PersistentVolumeClaim", "origin")),
        ]
    )
    volumes = pool_rows(cluster.nodes["node-a"].pool, "volumes")
    for name, size, kind, source in (
        ("same", 100 * Mi, "snapshot", pool_name(handle)),
        ("larger", 200 * Mi, "snapshot", pool_name(handle)),
        ("clone", 100 * Mi, "volume", pool_name(origin_pv["spec"]["csi"]["volumeHandle"])),
    ):
        _, pv = bound(kube, ns, name)
        assert quantity_bytes(pv["spec"]["capacity"]["storage"]) == size
        assert _node_of(pv) == "node-a"
        volumes = pool_rows(cluster.nodes["node-a"].pool, "volumes")
        row = volumes[pool_name(pv["spec"]["csi"]["volumeHandle"])]
        assert (row["size"], row["source_kind"], row["source_name"]) == (size, kind, source)


def test_local_snapshot_keeps_the_moment_it_was_taken(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-moment")
    kube.apply([claim(ns, "dev", "64Mi", node="node-b", storage_class="amber-block", block=True)])
    _, pv = bound(kube, ns, "dev")
    before, after = os.urandom(Mi), os.urandom(Mi)
    _write_pattern(cluster, pv, before)
    kube.apply([snapshot(ns, "moment", "dev", "amber-local")])
    ready(kube, ns, "moment")
    _write_pattern(cluster, pv, after)
    kube.apply(
        [
            claim(
                ns, "then", "64Mi", node="node-b", storage_class="amber-block", block=True,
                source=("VolumeSnapshot", "moment"),
            )
        ]
    )  # fmt: skip
    _, then = bound(kube, ns, "then")
    assert _read_pattern(cluster, then, Mi) == before
    assert _read_pattern(cluster, pv, Mi) == after


def test_expansion_reaches_the_node_expansion_stage(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-expand")
    kube.apply([claim(ns, "grow", "100Mi", node="node-b")])
    _, pv = bound(kube, ns, "grow")
    kube.patch(
        "persistentvolumeclaims",
        "grow",
        {"spec": {"resources": {"requests": {"storage": "300Mi"}}}},
        ns,
    )

    def node_stage() -> Obj | None:
        pvc = kube.get("persistentvolumeclaims", "grow", ns)
        status = pvc.get("status", {})
        conditions = {c["type"] for c in status.get("conditions", [])}
        pending = status.get("allocatedResourceStatuses", {}).get("storage")
        if "FileSystemResizePending" in conditions and pending == "NodeResizePending":
            return pvc
        return None

    pvc = until("the claim to wait for node expansion", node_stage)
    assert quantity_bytes(pvc["status"]["allocatedResources"]["storage"]) == 300 * Mi
    assert quantity_bytes(pvc["status"]["capacity"]["storage"]) == 100 * Mi  # not grown yet
    pv = kube.get("persistentvolumes", pv["metadata"]["name"])
    assert quantity_bytes(pv["spec"]["capacity"]["storage"]) == 300 * Mi
    # The image grows at NodeExpandVolume, which needs a kubelet: it has not been touched.
    row = pool_rows(cluster.nodes["node-b"].pool, "volumes")[
        pool_name(pv["spec"]["csi"]["volumeHandle"])
    ]
    assert row["size"] == 100 * Mi


def test_backup_snapshot_restores_on_the_other_node_and_delete_removes_it(
    cluster: Cluster, weed: S3Server, s3_prefix: str
) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-backup")
    kube.apply([claim(ns, "data", "64Mi", node="node-a", storage_class="amber-block", block=True)])
    _, pv = bound(kube, ns, "data")
    data = os.urandom(3 * Mi)
    _write_pattern(cluster, pv, data)

    kube.apply([snapshot(ns, "nightly", "data", "amber-backup")])
    vs, content = ready(kube, ns, "nightly")
    assert quantity_bytes(vs["status"]["restoreSize"]) == 64 * Mi
    backup_id = _backup_id(content)
    assert backup_id in _manifests(weed, s3_prefix)

    kube.apply(
        [
            claim(
                ns, "restored", "64Mi", node="node-b", storage_class="amber-block", block=True,
                source=("VolumeSnapshot", "nightly"),
            )
        ]
    )  # fmt: skip
    _, restored = bound(kube, ns, "restored", timeout=120)
    assert _node_of(restored) == "node-b"
    assert _read_pattern(cluster, restored, len(data)) == data

    kube.delete("volumesnapshots", "nightly", ns)
    gone(kube, "volumesnapshotcontents", content["metadata"]["name"])
    until(
        "the backup's manifest removed from S3",
        lambda: backup_id not in _manifests(weed, s3_prefix),
    )


def _amber(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AMBER_CONFIG": str(cluster.targets)}
    return subprocess.run(
        [sys.executable, "-m", "amber", *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


def _import(cluster: Cluster, backup_id: str, ns: str, name: str, node: str) -> str:
    """`amber backup import ID --target default --node NODE ... | kubectl apply -f -`; the
    printed YAML. `--node` sets the managed-by label that tells which node's csi-snapshotter
    (--node-deployment) handles the content."""
    printed = _amber(
        cluster, "backup", "import", backup_id, "--target", "default", "--namespace", ns,
        "--name", name, "--node", node,
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    cluster.kube.apply(printed.stdout)
    return printed.stdout


def test_retained_backup_stays_and_imports_and_restores(
    cluster: Cluster, weed: S3Server, s3_prefix: str
) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-retain")
    kube.apply(
        [
            {
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshotClass",
                "metadata": {"name": "amber-backup-retain"},
                "driver": DRIVER,
                "deletionPolicy": "Retain",
                "parameters": {"type": "backup", "target": "default"},
            },
            claim(ns, "data", "64Mi", node="node-a", storage_class="amber-block", block=True),
        ]
    )
    _, pv = bound(kube, ns, "data")
    data = os.urandom(2 * Mi)
    _write_pattern(cluster, pv, data)
    kube.apply([snapshot(ns, "kept", "data", "amber-backup-retain")])
    _, content = ready(kube, ns, "kept")
    backup_id = _backup_id(content)

    kube.delete("volumesnapshots", "kept", ns)
    gone(kube, "volumesnapshots", "kept", ns)
    left = kube.get("volumesnapshotcontents", content["metadata"]["name"])
    assert left["spec"]["deletionPolicy"] == "Retain"
    assert backup_id in _manifests(weed, s3_prefix)
    kube.delete("volumesnapshotcontents", content["metadata"]["name"])  # the backup stays
    gone(kube, "volumesnapshotcontents", content["metadata"]["name"])
    assert backup_id in _manifests(weed, s3_prefix)

    printed = _import(cluster, backup_id, ns, "imported", "node-b")
    assert f"amber:v1:backup:default:{backup_id}" in printed
    [imported] = [
        c
        for c in kube.list("volumesnapshotcontents")
        if c["spec"]["source"].get("snapshotHandle", "").endswith(backup_id)
    ]
    assert imported["metadata"]["labels"][MANAGED_BY] == "node-b"
    vs, _ = ready(kube, ns, "imported")
    assert quantity_bytes(vs["status"]["restoreSize"]) == 64 * Mi
    kube.apply(
        [
            claim(
                ns, "from-import", "64Mi", node="node-b", storage_class="amber-block", block=True,
                source=("VolumeSnapshot", "imported"),
            )
        ]
    )  # fmt: skip
    _, restored = bound(kube, ns, "from-import", timeout=120)
    assert _read_pattern(cluster, restored, len(data)) == data


def _pending_with(kube: Kube, ns: str, name: str, message: str) -> list[str]:
    def events() -> list[str]:
        return [e for e in kube.events_for(ns, name) if message in e]

    found: list[str] = until(f"an event on {ns}/{name} saying {message!r}", events)
    assert kube.get("persistentvolumeclaims", name, ns)["status"]["phase"] == "Pending"
    return found


def test_invalid_claims_stay_pending_with_ambers_message(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-invalid")
    kube.apply(
        [
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": "amber-typo"},
                "provisioner": DRIVER,
                "volumeBindingMode": "WaitForFirstConsumer",
                "parameters": {"fstyp": "xfs"},
            },
            claim(ns, "typo", "100Mi", node="node-a", storage_class="amber-typo"),
            claim(ns, "origin", "100Mi", node="node-a"),
        ]
    )
    events = _pending_with(kube, ns, "typo", "unknown volume parameter(s) 'fstyp'")
    assert all("code = InvalidArgument" in event for event in events)
    bound(kube, ns, "origin")
    kube.apply([snapshot(ns, "snap", "origin", "amber-local")])
    ready(kube, ns, "snap")
    kube.apply([claim(ns, "elsewhere", "100Mi", node="node-b", source=("VolumeSnapshot", "snap"))])
    _pending_with(kube, ns, "elsewhere", "lives on node 'node-a', not on this node 'node-b'")


def test_deletes_leave_no_volume_snapshot_or_loop_device(cluster: Cluster) -> None:
    kube = cluster.kube
    namespaces = [n["metadata"]["name"] for n in kube.list("namespaces")]
    for ns in (n for n in namespaces if n.startswith("e2e-")):
        for vs in kube.list("volumesnapshots", ns):
            kube.delete("volumesnapshots", vs["metadata"]["name"], ns)
        for pvc in kube.list("persistentvolumeclaims", ns):
            kube.delete("persistentvolumeclaims", pvc["metadata"]["name"], ns)
    until("every PV deleted", lambda: not kube.list("persistentvolumes"), timeout=120)
    for content in kube.list("volumesnapshotcontents"):
        if content["spec"]["deletionPolicy"] == "Retain":
            kube.delete("volumesnapshotcontents", content["metadata"]["name"])
    until("every VolumeSnapshotContent deleted", lambda: not kube.list("volumesnapshotcontents"))
    for node in cluster.nodes.values():
        assert pool_rows(node.pool, "volumes") == {}
        assert pool_rows(node.pool, "snapshots") == {}
        prefix = f"{node.pool}/"
        assert not [
            loop for loop in loopdev.list_loops() if str(loop.backing_file).startswith(prefix)
        ]


SIDECARS = ("csi-provisioner", "csi-snapshotter", "csi-resizer")


def test_no_sidecar_was_refused_by_rbac(cluster: Cluster) -> None:
    """The sidecars ran as deploy/'s ServiceAccounts through every flow above: a request the
    RBAC refused shows in their logs even where the sidecar carries on without it (a missing
    watch, or the provisioner's snapshot finalizer), and fails the suite."""
    logs = cluster.plane.procs.logs
    refused = [
        f"{log.name}: {line[:300]}"
        for log in sorted(logs.glob("*.log"))
        if log.name.startswith(SIDECARS)
        for line in log.read_text(errors="replace").splitlines()
        if "forbidden" in line
    ]
    assert not refused, "\n".join(refused[:10])


@pytest.fixture(autouse=True)
def _processes_alive(cluster: Cluster) -> None:
    """Every test starts with all the harness's processes running."""
    cluster.plane.procs.check()
