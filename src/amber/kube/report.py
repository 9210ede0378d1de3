"""What the operator tells Kubernetes: the RecurringJob's status and events.

Status is patched on the status subresource with a JSON merge patch, so each writer touches only
its own key: a node writes `status.nodes.<node>`, the controller `status.controller`. The
top-level `lastRun`, `nextRun` and `lastOutcome` (the printer columns of `kubectl get rj`) are
whatever writer reported last. Counts are the runs of this job seen by this writer since the
job was created (carried over from the status the writer finds when it starts).

Events go on the PVC (`SnapshotCreated`, `Skipped`, `Failed`, with Amber's message) and on
the RecurringJob (the same, plus `InvalidSpec`). Events are best effort: a refused event is
logged, never a reason for a run to fail.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from amber.domain.errors import AmberError
from amber.jobs.records import RunOutcome, RunRecord
from amber.kube.api import KubeApi, Obj
from amber.kube.resources import Claim, JobObject, api_time

__all__ = ["Reporter"]

_log = logging.getLogger(__name__)
COMPONENT: Final = "amber-recurring-jobs"
COUNTS: Final = ("created", "deleted", "skipped", "failed")


@dataclass
class _Counts:
    created: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: int = 0


class Reporter:
    """Status and events of the jobs, as writer `key` (`nodes.<node>` or `controller`)."""

    def __init__(self, api: KubeApi, writer: str, instance: str) -> None:
        self.api = api
        self.writer = writer
        """`node-a` for status.nodes.node-a, or "" for status.controller."""
        self.instance = instance
        self._counts: dict[str, _Counts] = {}
        self._lock = threading.Lock()

    def _mine(self, job: JobObject) -> Obj:
        status = job.status or {}
        if not self.writer:
            mine: Obj = status.get("controller") or {}
        else:
            mine = (status.get("nodes") or {}).get(self.writer) or {}
        return mine

    def _patch(self, job: JobObject, mine: Obj, summary: Obj) -> None:
        body: Obj = dict(summary)
        if self.writer:
            body["nodes"] = {self.writer: mine}
        else:
            body["controller"] = mine
        try:
            self.api.patch_job_status(job.namespace, job.name, body)
        except AmberError as e:
            _log.warning("status of RecurringJob %s not written: %s", job.key, e)

    def scheduled(self, job: JobObject, next_run: datetime) -> None:
        """The job is valid and planned: its next run (clears an earlier spec error)."""
        mine = {"nextRun": api_time(next_run), "lastError": None}
        if self._mine(job).get("lastOutcome") == "invalid":
            mine["lastOutcome"] = None
        self._patch(job, mine, {"nextRun": api_time(next_run)})

    def invalid(self, job: JobObject, message: str) -> None:
        """The spec is refused by Amber (what the schema cannot say): status and an event."""
        mine: Obj = {"lastOutcome": "invalid", "lastError": message, "nextRun": None}
        self._patch(job, mine, {"lastOutcome": "invalid", "nextRun": None})
        self.event(job.reference(), "InvalidSpec", message, warning=True)

    def record(
        self, job: JobObject, claim: Claim | None, record: RunRecord, next_run: datetime
    ) -> None:
        """One run on one volume (or target): status counts and times, events."""
        with self._lock:
            counts = self._counts.get(job.uid)
            if counts is None:
                known = self._mine(job)
                counts = _Counts(*(int(known.get(k) or 0) for k in COUNTS))
                self._counts[job.uid] = counts
            counts.created += len(record.created)
            counts.deleted += len(record.deleted)
            counts.skipped += record.outcome is RunOutcome.SKIPPED
            counts.failed += record.outcome is RunOutcome.FAILED
            mine: Obj = {k: getattr(counts, k) for k in COUNTS}
        last = api_time(datetime.fromtimestamp(record.slot, UTC))
        error = record.reason if record.outcome is RunOutcome.FAILED else None
        mine.update(
            lastRun=last,
            nextRun=api_time(next_run),
            lastOutcome=record.outcome.value,
            lastError=error,
        )
        summary = {"lastRun": last, "nextRun": api_time(next_run)}
        summary["lastOutcome"] = record.outcome.value
        self._patch(job, mine, summary)
        self._events(job, claim, record)

    def _events(self, job: JobObject, claim: Claim | None, record: RunRecord) -> None:
        subjects = [job.reference()] + ([claim.reference()] if claim is not None else [])
        where = f"RecurringJob {job.name}"
        if record.outcome is RunOutcome.SKIPPED:
            for ref in subjects:
                self.event(ref, "Skipped", f"{where}: {record.subject}: {record.reason}")
        elif record.outcome is RunOutcome.FAILED:
            for ref in subjects:
                self.event(ref, "Failed", f"{where}: {record.subject}: {record.reason}", True)
        for name in record.created:
            for ref in subjects:
                self.event(ref, "SnapshotCreated", f"{where}: created VolumeSnapshot {name}")
        for name in record.deleted:
            self.event(job.reference(), "SnapshotDeleted", f"{where}: deleted {name} (retention)")

    def event(self, ref: Obj, reason: str, message: str, warning: bool = False) -> None:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{ref['name']}.", "namespace": ref["namespace"]},
            "involvedObject": ref,
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": COMPONENT, "host": self.instance},
            "reportingComponent": f"amber.csi.dev/{COMPONENT}",
            "reportingInstance": self.instance,
        }
        try:
            self.api.create_event(str(ref["namespace"]), body)
        except AmberError as e:
            _log.warning("event %s on %s not recorded: %s", reason, ref["name"], e)
