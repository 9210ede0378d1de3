"""deploy/ turns group snapshots on: the class, the feature gates and the RBAC they need."""

from __future__ import annotations

from typing import Any

import pytest

from amber.csi.identity import PLUGIN_NAME
from amber.csi.params import parse_snapshot_parameters
from tests.deploy.test_manifests import AMBER, Rendered, containers, of_kind, workloads

GATE = "--feature-gates=CSIVolumeGroupSnapshot=true"
GROUP = "groupsnapshot.storage.k8s.io"


def _rules(objects: list[dict[str, Any]], role: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs the ClusterRole `role` grants in the group snapshot API group."""
    (cluster_role,) = [o for o in of_kind(objects, "ClusterRole") if o["metadata"]["name"] == role]
    return {
        (resource, verb)
        for rule in cluster_role["rules"]
        if GROUP in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize("name", AMBER)
def test_the_group_class_is_a_local_amber_class(name: str, rendered: Rendered) -> None:
    classes = of_kind(rendered[name], "VolumeGroupSnapshotClass")
    (group,) = [c for c in classes if c["metadata"]["name"] == "amber-group"]
    assert group["driver"] == PLUGIN_NAME
    assert not parse_snapshot_parameters(group.get("parameters", {})).backup


@pytest.mark.parametrize("name", AMBER)
def test_csi_snapshotter_calls_the_group_controller(name: str, rendered: Rendered) -> None:
    objects = rendered[name]
    snapshotters = [
        c
        for workload, pod in workloads(objects)
        if workload["metadata"]["name"] == "amber-node"
        for c in containers(pod)
        if c["name"] == "csi-snapshotter"
    ]
    assert snapshotters, "no csi-snapshotter beside amber node"
    assert all(GATE in c["args"] for c in snapshotters)
    granted = _rules(objects, "amber-node")
    for needed in [
        ("volumegroupsnapshotclasses", "watch"),
        ("volumegroupsnapshotcontents", "update"),
        ("volumegroupsnapshotcontents/status", "patch"),
    ]:
        assert needed in granted, needed


def test_snapshot_controller_manages_group_snapshots(rendered: Rendered) -> None:
    objects = rendered["snapshot-controller"]
    (args,) = [c["args"] for _, pod in workloads(objects) for c in containers(pod)]
    assert GATE in args
    granted = _rules(objects, "snapshot-controller")
    for needed in [
        ("volumegroupsnapshots", "watch"),
        ("volumegroupsnapshots/status", "patch"),
        ("volumegroupsnapshotcontents", "create"),
        ("volumegroupsnapshotcontents", "delete"),
        ("volumegroupsnapshotclasses", "list"),
    ]:
        assert needed in granted, needed
