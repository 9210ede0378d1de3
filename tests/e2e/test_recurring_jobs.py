"""RecurringJobs on the real control plane: `amber node --recurring-jobs` on each node (as
ServiceAccount amber-node, with deploy/'s RBAC) schedules VolumeSnapshots of the PVCs a job
selects, retains the job's own, skips unchanged volumes, and reports in the job's status and in
events. The nodes' scheduler clock runs 60 times faster (cluster.TIME_SCALE): a job with
`cron: "* * * * *"` runs about every second.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.cluster import Cluster
from tests.e2e.kube import ApiError, Kube, Obj, until
from tests.e2e.objects import (
    Mi,
    bound,
    claim,
    namespace,
    node_of,
    read_pattern,
    ready,
    snapshot,
    write_pattern,
)

JOB_LABEL = "amber.csi.dev/recurring-job"
PVC_LABEL = "amber.csi.dev/pvc"
KIND_LABEL = "amber.csi.dev/snapshot-kind"
GROUP_LABEL = "recurring-job-group.amber.csi.dev/nightly"
EVERY_MINUTE = "* * * * *"


def recurring_job(ns: str, name: str, **spec: object) -> Obj:
    return {
        "apiVersion": "amber.csi.dev/v1alpha1",
        "kind": "RecurringJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"cron": EVERY_MINUTE, **spec},
    }


def block_claim(ns: str, name: str, node: str, labels: dict[str, str] | None = None) -> Obj:
    obj = claim(ns, name, "64Mi", node=node, storage_class="amber-block", block=True)
    obj["metadata"]["labels"] = labels or {}
    return obj


def job_snapshots(kube: Kube, ns: str, job: str, pvc: str = "") -> list[Obj]:
    labels = f"{JOB_LABEL}={job}" + (f",{PVC_LABEL}={pvc}" if pvc else "")
    return kube.list("volumesnapshots", ns, labels=labels)


def names(snapshots: list[Obj]) -> set[str]:
    return {s["metadata"]["name"] for s in snapshots}


def node_status(kube: Kube, ns: str, job: str, node: str) -> Obj:
    status = kube.get("recurringjobs", job, ns).get("status") or {}
    found: Obj = (status.get("nodes") or {}).get(node) or {}
    return found


def created_count(kube: Kube, ns: str, job: str, node: str) -> int:
    return int(node_status(kube, ns, job, node).get("created") or 0)


def test_snapshot_job_selects_retains_and_skips_unchanged(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-rj-snap")
    kube.apply(
        [
            block_claim(ns, "web", "node-a", {"app": "web"}),
            block_claim(ns, "other", "node-a"),
            block_claim(ns, "night", "node-b", {GROUP_LABEL: "enabled"}),
        ]
    )
    _, web_pv = bound(kube, ns, "web")
    bound(kube, ns, "other")
    bound(kube, ns, "night")
    write_pattern(cluster, web_pv, os.urandom(Mi))
    kube.apply([snapshot(ns, "by-hand", "web", "amber-local")])
    ready(kube, ns, "by-hand")
    kube.apply(
        [
            recurring_job(
                ns, "frequent", task="snapshot", retain=2, selector={"matchLabels": {"app": "web"}},
                snapshotClassName="amber-local",
            ),
            recurring_job(ns, "nightly", task="snapshot", retain=1, groups=["nightly"]),
        ]
    )  # fmt: skip

    # The first run snapshots `web` (nothing to compare with yet); then it is unchanged.
    until("frequent's first snapshot", lambda: created_count(kube, ns, "frequent", "node-a") >= 1)
    until(
        "a run skipped as unchanged",
        lambda: int(node_status(kube, ns, "frequent", "node-a").get("skipped") or 0) >= 1,
    )
    until(
        "a Skipped event on web",
        lambda: [e for e in kube.events_for(ns, "web") if "unchanged since" in e],
    )
    assert len(job_snapshots(kube, ns, "frequent", "web")) == 1

    # Each write makes the next run create one; retention keeps the newest 2 of the job's.
    for _ in range(2):
        before = created_count(kube, ns, "frequent", "node-a")
        write_pattern(cluster, web_pv, os.urandom(Mi))
        until(
            "a snapshot after the write",
            lambda before=before: created_count(kube, ns, "frequent", "node-a") > before,
        )
    until(
        "retention down to 2 of frequent's snapshots",
        lambda: len(job_snapshots(kube, ns, "frequent")) == 2,
    )
    mine = job_snapshots(kube, ns, "frequent")
    assert {s["spec"]["source"]["persistentVolumeClaimName"] for s in mine} == {"web"}
    for name in names(mine):
        ready(kube, ns, name)
    assert int(node_status(kube, ns, "frequent", "node-a")["deleted"]) >= 1
    assert kube.find("volumesnapshots", "by-hand", ns) is not None

    # Group `nightly` is node-b's `night` only; `other` is selected by no job.
    until("nightly's snapshot of night", lambda: job_snapshots(kube, ns, "nightly", "night"))
    assert {
        s["spec"]["source"]["persistentVolumeClaimName"] for s in job_snapshots(kube, ns, "nightly")
    } == {"night"}
    every = kube.list("volumesnapshots", ns)
    assert not [s for s in every if s["spec"]["source"]["persistentVolumeClaimName"] == "other"]

    status = kube.get("recurringjobs", "frequent", ns)["status"]
    mine_status = status["nodes"]["node-a"]
    assert mine_status["lastRun"]
    assert mine_status["nextRun"] > mine_status["lastRun"]
    assert mine_status["lastOutcome"] in ("ok", "skipped")
    assert status["nextRun"]
    printed = kube.kubectl("get", "recurringjobs", "-n", ns)
    assert "frequent" in printed
    assert "snapshot" in printed
    assert EVERY_MINUTE in printed
    until(
        "3 SnapshotCreated events on web",
        lambda: len([e for e in kube.events_for(ns, "web") if "created VolumeSnapshot" in e]) >= 3,
    )
    kube.delete("recurringjobs", "frequent", ns)
    kube.delete("recurringjobs", "nightly", ns)


def test_backup_job_restores_on_the_other_node(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-rj-backup")
    kube.apply([block_claim(ns, "data", "node-a", {"app": "db"})])
    _, pv = bound(kube, ns, "data")
    data = os.urandom(2 * Mi)
    write_pattern(cluster, pv, data)
    kube.apply(
        [
            recurring_job(
                ns, "offsite", task="backup", retain=1, retainLocal=1,
                selector={"matchLabels": {"app": "db"}}, snapshotClassName="amber-backup",
            )
        ]
    )  # fmt: skip

    def backed_up() -> list[Obj]:
        found = kube.list("volumesnapshots", ns, labels=f"{JOB_LABEL}=offsite,{KIND_LABEL}=remote")
        return [s for s in found if (s.get("status") or {}).get("readyToUse")]

    [backup, *_] = until("a ready backup VolumeSnapshot of offsite", backed_up, timeout=120)
    assert backup["spec"]["volumeSnapshotClassName"] == "amber-backup"
    local = kube.list("volumesnapshots", ns, labels=f"{JOB_LABEL}=offsite,{KIND_LABEL}=local")
    assert local
    assert {s["spec"]["volumeSnapshotClassName"] for s in local} == {"amber-local"}
    kube.delete("recurringjobs", "offsite", ns)

    name = backup["metadata"]["name"]
    restored = claim(ns, "restored", "64Mi", node="node-b", storage_class="amber-block", block=True)
    restored["spec"]["dataSource"] = {
        "kind": "VolumeSnapshot",
        "name": name,
        "apiGroup": "snapshot.storage.k8s.io",
    }
    kube.apply([restored])
    _, restored_pv = bound(kube, ns, "restored", timeout=120)
    assert node_of(restored_pv) == "node-b"
    assert read_pattern(cluster, restored_pv, len(data)) == data


def test_a_trim_job_skips_a_claim_no_pod_mounted_with_the_reason(cluster: Cluster) -> None:
    """No kubelet here mounts a claim, so trim finds nothing to trim and says why."""
    kube = cluster.kube
    ns = namespace(kube, "e2e-rj-trim")
    kube.apply([claim(ns, "files", "100Mi", node="node-b")])
    bound(kube, ns, "files")
    kube.apply([recurring_job(ns, "weekly-trim", task="trim", volumes=["files"])])
    until(
        "a skipped trim",
        lambda: int(node_status(kube, ns, "weekly-trim", "node-b").get("skipped") or 0) >= 1,
    )
    events = until(
        "a Skipped event on files",
        lambda: [e for e in kube.events_for(ns, "files") if "is not mounted" in e],
    )
    assert "weekly-trim" in events[0]
    assert node_status(kube, ns, "weekly-trim", "node-a").get("lastRun") is None  # not its claim
    kube.delete("recurringjobs", "weekly-trim", ns)


def test_check_and_prune_jobs_run_in_the_controller(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-rj-target")
    kube.apply(
        [
            recurring_job(ns, "verify", task="check", target="default"),
            recurring_job(ns, "tidy", task="prune", target="default"),
        ]
    )

    def reported(job: str) -> Obj:
        status = kube.get("recurringjobs", job, ns).get("status") or {}
        done: Obj = status.get("controller") or {}
        return done if done.get("lastRun") else {}

    for job in ("verify", "tidy"):
        done = until(f"the controller's run of {job}", lambda job=job: reported(job))
        assert done["lastOutcome"] == "ok", done
        assert done["failed"] == 0
        assert "nodes" not in kube.get("recurringjobs", job, ns)["status"]  # not a node's job
    kube.delete("recurringjobs", "verify", ns)
    kube.delete("recurringjobs", "tidy", ns)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retain", -1, "spec.retain"),
        ("task", "explode", "spec.task"),
        ("cron", "* *", "spec.cron"),
    ],
)
def test_the_schema_refuses_what_it_can_say(
    cluster: Cluster, field: str, value: object, message: str
) -> None:
    kube = cluster.kube
    job = recurring_job("default", "bad", task="snapshot", retain=1, groups=["default"])
    job["spec"][field] = value
    with pytest.raises(ApiError) as refused:
        kube.create(job)
    assert refused.value.status == 422
    assert message in str(refused.value)


def test_amber_reports_what_the_schema_cannot_say(cluster: Cluster) -> None:
    kube = cluster.kube
    ns = namespace(kube, "e2e-rj-invalid")
    kube.apply(
        [
            recurring_job(
                ns, "bad-cron", task="snapshot", retain=1, groups=["x"], cron="61 * * * *"
            ),
            recurring_job(
                ns, "bad-zone", task="snapshot", retain=1, groups=["x"], timezone="Mars/Olympus"
            ),
        ]
    )
    for job, message in (
        ("bad-cron", "cron '61 * * * *' is not a valid cron expression"),
        ("bad-zone", "unknown time zone 'Mars/Olympus'"),
    ):
        for node in cluster.nodes:
            reported = until(
                f"{job} reported invalid by {node}",
                lambda job=job, node=node: node_status(kube, ns, job, node).get("lastError"),
            )
            assert message in reported
            assert node_status(kube, ns, job, node)["lastOutcome"] == "invalid"
        events = until(f"an event on {job}", lambda job=job: kube.events_for(ns, job))
        assert any(message in e for e in events), events


def test_the_operator_was_never_refused_by_rbac(cluster: Cluster) -> None:
    """The operators ran as ServiceAccounts amber-node and amber-controller through every test
    above: any request deploy/'s RBAC refused shows in their logs."""
    logs = cluster.plane.procs.logs
    refused = [
        f"{log.name}: {line[:300]}"
        for log in sorted(logs.glob("amber-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "forbidden" in line.lower()
    ]
    assert not refused, "\n".join(refused[:10])
    operating = [
        log.name
        for log in sorted(logs.glob("amber-*.log"))
        if "recurring jobs: watching RecurringJobs" in log.read_text(errors="replace")
    ]
    assert len(operating) == len(cluster.nodes) + 1  # and the controller
