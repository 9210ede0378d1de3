"""A VolumeGroupSnapshot of two PVCs selected by label, against the real control plane: it
becomes ready through snapshot-controller, csi-snapshotter and Amber's GroupController, both
members hold the bytes of one moment and restore into new PVCs, and deleting the group removes
every member from the node's pool."""

from __future__ import annotations

import os

from tests.e2e.cluster import DRIVER, Cluster
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
    read_pattern,
    write_pattern,
)
from tests.e2e.test_flows import SIDECARS

GROUP_API = "groupsnapshot.storage.k8s.io/v1beta2"
NODE = "node-a"


def _group_snapshot(ns: str, name: str, label: dict[str, str]) -> Obj:
    return {
        "apiVersion": GROUP_API,
        "kind": "VolumeGroupSnapshot",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "volumeGroupSnapshotClassName": "amber-group",
            "source": {"selector": {"matchLabels": label}},
        },
    }


def _labelled_block_claim(ns: str, name: str, label: dict[str, str]) -> Obj:
    obj = claim(ns, name, "64Mi", node=NODE, storage_class="amber-block", block=True)
    obj["metadata"]["labels"] = label
    return obj


def _group_ready(kube: Kube, ns: str, name: str) -> Obj:
    seen: list[Obj] = [{}]

    def probe() -> Obj | None:
        group = kube.get("volumegroupsnapshots", name, ns)
        seen[0] = group.get("status") or {}
        return group if seen[0].get("readyToUse") else None

    try:
        group: Obj = until(f"VolumeGroupSnapshot {ns}/{name} readyToUse", probe, timeout=120)
    except AssertionError as e:
        raise AssertionError(f"{e}; its status: {seen[0]}") from None
    return group


def _label_content_with_its_node(kube: Kube, ns: str, name: str) -> None:
    """The step upstream leaves out under distributed snapshotting (snapshot-controller and
    csi-snapshotter v8.6): label the VolumeGroupSnapshotContent, and the class, with the node.

    csi-snapshotter --node-deployment watches contents *and* group snapshot classes only with
    the label `snapshot.storage.kubernetes.io/managed-by=<its node>`; snapshot-controller
    --enable-distributed-snapshotting sets that label on VolumeSnapshotContents but not on
    VolumeGroupSnapshotContents, and nothing labels classes. Without these two labels the group
    stays unready with "volumegroupsnapshotclass amber-group not found" (docs/snapshots.md).
    """

    def content_name() -> str | None:
        status = kube.get("volumegroupsnapshots", name, ns).get("status") or {}
        return status.get("boundVolumeGroupSnapshotContentName")

    content = until(f"VolumeGroupSnapshot {ns}/{name} bound to a content", content_name)
    assert MANAGED_BY not in (
        kube.get("volumegroupsnapshotcontents", content)["metadata"].get("labels") or {}
    ), "snapshot-controller now labels group contents: drop this step"
    labels = {"metadata": {"labels": {MANAGED_BY: NODE}}}
    kube.patch("volumegroupsnapshotclasses", "amber-group", labels)
    kube.patch("volumegroupsnapshotcontents", content, labels)


def _members(kube: Kube, ns: str, group: str) -> list[Obj]:
    return [
        vs
        for vs in kube.list("volumesnapshots", ns)
        if (vs.get("status") or {}).get("volumeGroupSnapshotName") == group
    ]


def test_group_snapshot_of_two_claims_restores_both_members(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-group")
    label = {"app": "db"}
    kube.apply(
        [
            _labelled_block_claim(ns, "data", label),
            _labelled_block_claim(ns, "log", label),
            claim(ns, "other", "64Mi", node=NODE, storage_class="amber-block", block=True),
        ]
    )
    pvs = {name: bound(kube, ns, name)[1] for name in ("data", "log", "other")}
    before = {name: os.urandom(Mi) for name in ("data", "log")}
    for name, data in before.items():
        write_pattern(cluster, pvs[name], data)

    kube.apply([_group_snapshot(ns, "nightly", label)])
    _label_content_with_its_node(kube, ns, "nightly")
    group = _group_ready(kube, ns, "nightly")
    for name in before:
        write_pattern(cluster, pvs[name], os.urandom(Mi))

    content = kube.get(
        "volumegroupsnapshotcontents", group["status"]["boundVolumeGroupSnapshotContentName"]
    )
    assert content["spec"]["driver"] == DRIVER
    handle = content["status"]["volumeGroupSnapshotHandle"]
    assert handle.startswith(f"amber:v1:grp:{NODE}:"), handle
    infos = content["status"]["volumeSnapshotInfoList"]
    assert sorted(i["volumeHandle"] for i in infos) == sorted(
        pvs[n]["spec"]["csi"]["volumeHandle"] for n in before
    )
    members: list[Obj] = until(
        "both member VolumeSnapshots",
        lambda: m if len(m := _members(kube, ns, "nightly")) == 2 else None,
    )
    snapshot_rows = pool_rows(cluster.nodes[NODE].pool, "snapshots")
    member_of: dict[str, str] = {}  # claim -> member VolumeSnapshot
    for vs in members:
        assert vs["status"].get("readyToUse") is True, vs["status"]
        vsc = kube.get("volumesnapshotcontents", vs["status"]["boundVolumeSnapshotContentName"])
        row = snapshot_rows[pool_name(vsc["status"]["snapshotHandle"])]
        claim_name = next(n for n, pv in pvs.items() if pool_name(
            pv["spec"]["csi"]["volumeHandle"]) == row["volume_name"])  # fmt: skip
        member_of[claim_name] = vs["metadata"]["name"]
    assert sorted(member_of) == ["data", "log"], "the unlabelled claim must not be a member"

    restores = [
        claim(
            ns, f"{name}-then", "64Mi", node=NODE, storage_class="amber-block", block=True,
            source=("VolumeSnapshot", member_of[name]),
        )
        for name in before
    ]  # fmt: skip
    kube.apply(restores)
    for name, data in before.items():
        _, restored = bound(kube, ns, f"{name}-then")
        assert read_pattern(cluster, restored, Mi) == data, f"{name} lost the group's moment"

    kube.delete("volumegroupsnapshots", "nightly", ns)
    gone(kube, "volumegroupsnapshots", "nightly", ns, timeout=120)
    until(
        "the members gone from the pool",
        lambda: (
            not any(
                pool_name(handle) in n for n in pool_rows(cluster.nodes[NODE].pool, "snapshots")
            )
        ),
        timeout=120,
    )
    for pvc in kube.list("persistentvolumeclaims", ns):
        kube.delete("persistentvolumeclaims", pvc["metadata"]["name"], ns)
    for pvc_name in ("data", "log", "other", "data-then", "log-then"):
        gone(kube, "persistentvolumeclaims", pvc_name, ns, timeout=120)


def test_no_sidecar_was_refused_by_rbac_for_group_snapshots(cluster: Cluster) -> None:
    logs = cluster.plane.procs.logs
    refused = [
        f"{log.name}: {line[:300]}"
        for log in sorted(logs.glob("*.log"))
        if log.name.startswith(SIDECARS)
        for line in log.read_text(errors="replace").splitlines()
        if "forbidden" in line
    ]
    assert not refused, "\n".join(refused[:10])
