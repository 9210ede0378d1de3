"""The Kubernetes executor of `amber.jobs`: volumes are PVCs, snapshots are VolumeSnapshots.

One executor serves the RecurringJobs of one namespace on one node (a job selects PVCs in its
own namespace). Its candidates are the bound PVCs of that namespace whose PV is Amber's and
lives on this node. A snapshot is a VolumeSnapshot of the job's class, created and waited for
until it is ready (a backup class's snapshot is ready once the backup is committed); a backup
job that keeps local snapshots (`retainLocal`/`keepLocal`) takes one of its local class too.
Each snapshot is labelled with its job, its PVC and whether it is local or a backup, and
annotated with its scheduled instant: `items` lists by those labels only, so retention never
touches a hand-made VolumeSnapshot.

Skip-unchanged maps the PVC to its pool volume (PV `volumeHandle`) and the job's newest
VolumeSnapshot to its pool snapshot (content `snapshotHandle`; for a backup handle, the
target's incremental base), and asks `NodeWork.changed` -- the same comparison `amber.jobs`
uses for the local pool. Trim goes to the same local work, by pool volume.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from amber.jobs.executor import Candidate, ItemKind, Outcome
from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec, Task
from amber.kube.api import KubeApi, Obj
from amber.kube.resources import (
    JOB_LABEL,
    PVC_LABEL,
    Claim,
    JobObject,
    claim_of,
    parse_time,
    snapshot_body,
    snapshot_name,
)

__all__ = ["KIND_LABEL", "SCHEDULED_AT", "KubeExecutor", "NodeWork"]

KIND_LABEL: Final = "amber.csi.dev/snapshot-kind"
SCHEDULED_AT: Final = "amber.csi.dev/scheduled-at"
POLL: Final = 0.5


class NodeWork(Protocol):
    """What only the node's own pool can answer, by CSI handles (wired by `amber node`)."""

    def changed(self, job: JobSpec, volume_handle: str, snapshot_handle: str) -> bool | None:
        """Whether the volume changed since that snapshot (None: cannot tell)."""
        ...

    def trim(self, job: JobSpec, volume_handle: str) -> Outcome:
        """fstrim the volume's filesystem where it is mounted (skipped when it is not)."""
        ...


@dataclass
class JobClasses:
    """A job's VolumeSnapshotClasses: the main one, and a backup job's local one (or None)."""

    main: str
    local: str | None


class KubeExecutor:
    """`amber.jobs.executor.Executor` for the jobs of `namespace` on `node`."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        node: str,
        work: NodeWork,
        *,
        ready_timeout: float = 600.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.node = node
        self.work = work
        self.ready_timeout = ready_timeout
        self.stop = stop or threading.Event()
        self.jobs: dict[str, tuple[JobObject, JobClasses]] = {}
        """The jobs of this namespace by name, with their classes (set by the operator)."""
        self.claims: dict[str, Claim] = {}
        self.on_created: Callable[[Claim, str], None] = lambda claim, name: None

    # -- volumes

    def candidates(self) -> Sequence[Candidate]:
        claims: dict[str, Claim] = {}
        for pvc in self.api.list_claims(self.namespace):
            volume = (pvc.get("spec") or {}).get("volumeName")
            if (pvc.get("status") or {}).get("phase") != "Bound" or not volume:
                continue
            try:
                claim = claim_of(pvc, self.api.get_volume(str(volume)))
            except NotFound:
                continue
            if claim is not None and claim.node == self.node:
                claims[claim.name] = claim
        self.claims = claims
        return [Candidate(c.name, dict(c.labels), c.groups) for c in claims.values()]

    def claim(self, volume: str) -> Claim:
        try:
            return self.claims[volume]
        except KeyError:
            raise NotFound(f"PVC {self.namespace}/{volume} is not on node {self.node}") from None

    def _job(self, job: JobSpec) -> tuple[JobObject, JobClasses]:
        try:
            return self.jobs[job.name]
        except KeyError:
            raise NotFound(f"RecurringJob {self.namespace}/{job.name} is gone") from None

    # -- skip-unchanged

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        kind = ItemKind.REMOTE if job.task is Task.BACKUP else ItemKind.LOCAL
        newest = self._snapshots(job, volume, kind)
        if job.task is Task.BACKUP:
            newest = self._snapshots(job, volume, ItemKind.LOCAL) or newest
        ready = [s for s in newest if (s.get("status") or {}).get("readyToUse")]
        if not ready:
            return None
        content_name = ready[0]["status"].get("boundVolumeSnapshotContentName")
        if not content_name:
            return None
        handle = (self.api.get_content(str(content_name)).get("status") or {}).get("snapshotHandle")
        if not handle:
            return None
        return self.work.changed(job, self.claim(volume).volume_handle, str(handle))

    # -- snapshots and backups

    def snapshot(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        _, classes = self._job(job)
        name = self._take(job, volume, when, classes.main, ItemKind.LOCAL)
        return Outcome(created=(name,), detail=f"VolumeSnapshot {self.namespace}/{name}")

    def backup(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        _, classes = self._job(job)
        created = []
        if classes.local is not None:
            created.append(self._take(job, volume, when, classes.local, ItemKind.LOCAL))
        created.append(self._take(job, volume, when, classes.main, ItemKind.REMOTE))
        return Outcome(created=tuple(created), detail=f"VolumeSnapshot {created[-1]}")

    def _take(self, job: JobSpec, volume: str, when: datetime, klass: str, kind: ItemKind) -> str:
        claim = self.claim(volume)
        jobobj, _ = self._job(job)
        name = snapshot_name(job.name, volume, when)
        if kind is ItemKind.REMOTE:
            name = snapshot_name(f"{job.name}-bak", volume, when)
        body = snapshot_body(jobobj, claim, name, klass)
        body["metadata"]["labels"][KIND_LABEL] = kind.value
        body["metadata"]["annotations"] = {SCHEDULED_AT: f"{when.timestamp():.3f}"}
        with contextlib.suppress(AlreadyExists):  # a retried run of the same slot
            self.api.create_snapshot(self.namespace, body)
        self._wait_ready(name)
        self.on_created(claim, name)
        return name

    def _wait_ready(self, name: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        error = ""
        while True:
            status = self.api.get_snapshot(self.namespace, name).get("status") or {}
            if status.get("readyToUse"):
                return
            error = str((status.get("error") or {}).get("message") or error)
            if self.stop.is_set():
                raise Unavailable(
                    f"stopped before VolumeSnapshot {self.namespace}/{name} was ready (it stays, "
                    "and counts in the job's retention)"
                )
            if time.monotonic() > deadline:
                raise FailedPrecondition(
                    f"VolumeSnapshot {self.namespace}/{name} is not ready after "
                    f"{self.ready_timeout:.0f}s" + (f": {error}" if error else "")
                )
            self.stop.wait(POLL)

    # -- retention

    def _snapshots(self, job: JobSpec, volume: str, kind: ItemKind) -> list[Obj]:
        """The job's VolumeSnapshots of `volume` of `kind`, newest first (snapshot-cleanup:
        those of every recurring job)."""
        if job.task is Task.SNAPSHOT_CLEANUP:
            selector = f"{JOB_LABEL},{PVC_LABEL}={volume},{KIND_LABEL}={ItemKind.LOCAL.value}"
        else:
            selector = f"{JOB_LABEL}={job.name},{PVC_LABEL}={volume},{KIND_LABEL}={kind.value}"
        found = self.api.list_snapshots(self.namespace, selector)
        return sorted(found, key=_created, reverse=True)

    def items(self, job: JobSpec, volume: str, kind: ItemKind) -> Sequence[Item]:
        return [
            Item(str(s["metadata"]["name"]), _created(s))
            for s in self._snapshots(job, volume, kind)
        ]

    def delete(self, job: JobSpec, volume: str, kind: ItemKind, item: Item) -> Outcome:
        self.api.delete_snapshot(self.namespace, item.item_id)
        return Outcome(deleted=(item.item_id,))

    # -- the rest

    def prune(self, job: JobSpec) -> Outcome:
        raise FailedPrecondition(f"a {job.task} job runs in amber controller, not on a node")

    check = prune

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        return self.work.trim(job, self.claim(volume).volume_handle)


def _created(snapshot: Obj) -> float:
    meta = snapshot["metadata"]
    stamp = (meta.get("annotations") or {}).get(SCHEDULED_AT)
    if stamp:
        try:
            return float(stamp)
        except ValueError:
            pass
    at = parse_time(meta.get("creationTimestamp"))
    return at.timestamp() if at else 0.0


def check_classes(api: KubeApi, job: JobObject) -> tuple[JobClasses, str | None]:
    """The job's classes, checked against its task, and a backup class's target (the job's
    target: checked before the rest of the spec, which needs it)."""
    task = job.spec.get("task")
    if task not in (Task.SNAPSHOT, Task.BACKUP):
        return JobClasses(job.snapshot_class or "amber-local", None), None
    main = job.snapshot_class or ("amber-backup" if task == Task.BACKUP else "amber-local")
    params = _class_parameters(api, main)
    backup = params.get("type") == "backup"
    if task == Task.BACKUP and not backup:
        raise InvalidArgument(
            f"snapshotClassName {main!r} is a local class: a backup job needs a class with "
            "type: backup (e.g. amber-backup)"
        )
    if task != Task.BACKUP and backup:
        raise InvalidArgument(
            f"snapshotClassName {main!r} is a backup class: use task: backup for it"
        )
    local = None
    if task == Task.BACKUP and ("retainLocal" in job.spec or "keepLocal" in job.spec):
        local = job.local_class
        if _class_parameters(api, local).get("type", "local") != "local":
            raise InvalidArgument(f"localSnapshotClassName {local!r} is not a local class")
    return JobClasses(main, local), params.get("target") if backup else None


def _class_parameters(api: KubeApi, name: str) -> dict[str, str]:
    try:
        klass = api.get_snapshot_class(name)
    except NotFound:
        raise InvalidArgument(f"VolumeSnapshotClass {name!r} does not exist") from None
    return {str(k): str(v) for k, v in (klass.get("parameters") or {}).items()}
