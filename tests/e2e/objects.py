"""Builders for the objects the end-to-end tests create, and waits on what Kubernetes makes of
them."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from tests.e2e.cluster import TOPOLOGY_KEY, Cluster
from tests.e2e.kube import Kube, Obj, until

SNAPSHOT_API = "snapshot.storage.k8s.io"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
MANAGED_BY = "snapshot.storage.kubernetes.io/managed-by"

Mi = 1024 * 1024
Gi = 1024 * Mi


def claim(
    namespace: str,
    name: str,
    size: str,
    *,
    node: str,
    storage_class: str = "amber-ext4",
    block: bool = False,
    source: tuple[str, str] | None = None,
) -> Obj:
    """A PVC that the scheduler has placed on `node` (the annotation it would set); `source`
    is (kind, name) of a VolumeSnapshot or PersistentVolumeClaim."""
    spec: Obj = {
        "storageClassName": storage_class,
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}},
        "volumeMode": "Block" if block else "Filesystem",
    }
    if source is not None:
        kind, source_name = source
        group = SNAPSHOT_API if kind == "VolumeSnapshot" else None
        spec["dataSource"] = {"kind": kind, "name": source_name, "apiGroup": group}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace, "annotations": {SELECTED_NODE: node}},
        "spec": spec,
    }


def snapshot(namespace: str, name: str, pvc: str, snapshot_class: str) -> Obj:
    return {
        "apiVersion": f"{SNAPSHOT_API}/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "volumeSnapshotClassName": snapshot_class,
            "source": {"persistentVolumeClaimName": pvc},
        },
    }


def namespace(kube: Kube, name: str) -> str:
    kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def bound(kube: Kube, ns: str, name: str, timeout: float = 90) -> tuple[Obj, Obj]:
    """Wait until the claim is Bound; return it and its PV."""

    def probe() -> Obj | None:
        pvc = kube.get("persistentvolumeclaims", name, ns)
        return pvc if pvc.get("status", {}).get("phase") == "Bound" else None

    pvc: Obj = until(f"PVC {ns}/{name} Bound", probe, timeout)
    return pvc, kube.get("persistentvolumes", pvc["spec"]["volumeName"])


def ready(kube: Kube, ns: str, name: str, timeout: float = 90) -> tuple[Obj, Obj]:
    """Wait until the VolumeSnapshot is readyToUse; return it and its content. (A status error
    on the way is not final: snapshot-controller reports conflicts there, and retries.)"""
    seen: list[Obj] = [{}]

    def probe() -> Obj | None:
        vs = kube.get("volumesnapshots", name, ns)
        seen[0] = vs.get("status") or {}
        return vs if seen[0].get("readyToUse") else None

    try:
        vs: Obj = until(f"VolumeSnapshot {ns}/{name} readyToUse", probe, timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}; its status: {seen[0]}") from None
    return vs, kube.get("volumesnapshotcontents", vs["status"]["boundVolumeSnapshotContentName"])


def gone(kube: Kube, plural: str, name: str, ns: str = "", timeout: float = 90) -> None:
    until(f"{plural} {ns}/{name} deleted", lambda: kube.find(plural, name, ns) is None, timeout)


def quantity_bytes(text: str) -> int:
    """A Kubernetes quantity (as the API returns sizes) in bytes."""
    units = {"Ki": 1024, "Mi": Mi, "Gi": Gi, "Ti": 1024 * Gi, "k": 1000, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def pool_rows(pool: Path, table: str) -> dict[str, dict[str, Any]]:
    """The pool's `volumes` or `snapshots` rows by name (read from its metadata database)."""
    assert table in ("volumes", "snapshots")
    with contextlib.closing(sqlite3.connect(pool / "amber.db")) as db:
        db.row_factory = sqlite3.Row
        return {str(row["name"]): dict(row) for row in db.execute(f"SELECT * FROM {table}")}


def pool_name(handle: str) -> str:
    """The object's name in its pool, from an `amber:v1:vol|snap:<node>:<name>` ID."""
    return handle.rsplit(":", 1)[1]


PATTERN_AT = 5 * Mi + 12345


def node_of(pv: Obj) -> str:
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    [expression] = terms[0]["matchExpressions"]
    assert expression["key"] == TOPOLOGY_KEY
    [node] = expression["values"]
    return str(node)


def image_of(cluster: Cluster, pv: Obj) -> Any:
    handle = pv["spec"]["csi"]["volumeHandle"]
    rows = pool_rows(cluster.nodes[node_of(pv)].pool, "volumes")
    return rows[pool_name(handle)]["image"]


def write_pattern(cluster: Cluster, pv: Obj, data: bytes) -> None:
    """Write bytes into a Block volume's image (what a pod would write to the device)."""
    fd = os.open(image_of(cluster, pv), os.O_WRONLY)
    try:
        os.pwrite(fd, data, PATTERN_AT)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_pattern(cluster: Cluster, pv: Obj, size: int) -> bytes:
    with open(image_of(cluster, pv), "rb") as f:
        f.seek(PATTERN_AT)
        return f.read(size)
