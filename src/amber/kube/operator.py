"""The RecurringJob operator: the job cache, one scheduler per namespace, the reports.

`NodeOperator` runs in `amber node --recurring-jobs` (the per-volume tasks of the volumes on
its node), `ControllerOperator` in `amber controller --recurring-jobs` (prune and check, once
per cluster). Their loop, in a thread of its own:

1. when the cache changed (or every `RESYNC` seconds), turn each RecurringJob of its kind
   into a `JobSpec` -- its classes checked against the task (a backup job's target is its
   class's), then the same `amber.jobs.spec.parse_job` as `amber schedule` -- and hand the valid
   ones to the scheduler of their namespace; an invalid one is reported in its status and an
   event, with Amber's message (what the CRD's schema cannot say: a cron, a time zone...);
2. launch what is due (`amber.jobs.runner.Scheduler.launch_due`: each job in a thread of its
   own, its volumes `concurrency` at a time, skip-unchanged, retention, a run record);
3. sleep until the next slot of any job, or until the cache changes.

Each namespace has its own `Scheduler`, executor and run records
(`<pool>/jobs-kubernetes/<namespace>.db` on a node, `<state dir>/jobs-kubernetes/...` in the
controller): job names are unique per namespace only, and a job of `amber schedule` of the same
name stays apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from amber.domain.errors import AmberError
from amber.jobs.records import Records, RunRecord
from amber.jobs.runner import Clock, Scheduler
from amber.jobs.schedule import next_run
from amber.jobs.spec import JobSpec, Task, parse_job
from amber.kube.api import KubeApi
from amber.kube.cache import JobCache
from amber.kube.executor import JobClasses, KubeExecutor, NodeWork, check_classes
from amber.kube.report import Reporter
from amber.kube.resources import JobObject, job_definition
from amber.kube.targets import RepositoryOpener, TargetExecutor

__all__ = ["ControllerOperator", "NodeOperator", "Operator", "OperatorSettings"]

_log = logging.getLogger(__name__)
RESYNC: Final = 60.0
"""Real seconds between two checks of every job (a class edited, a PVC relabelled)."""
BUSY_POLL: Final = 0.5
RECORDS_DIR: Final = "jobs-kubernetes"


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs (read once at the edge)."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty: all."""
    node_limit: int = 2
    """Tasks at once per namespace on this node."""
    ready_timeout: float = 3600.0
    """Real seconds a scheduled VolumeSnapshot may take to become ready (a backup uploads)."""


@dataclass
class _Space:
    """The jobs of one namespace."""

    executor: KubeExecutor | TargetExecutor
    scheduler: Scheduler
    records: Records
    threads: list[threading.Thread] = field(default_factory=list)
    seen: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Per job uid: the generation and the verdict last reported (no report storm)."""


class Operator:
    """The loop; a subclass says which jobs it runs, how it checks them and with what."""

    def __init__(
        self,
        api: KubeApi,
        writer: str,
        records_root: Path,
        *,
        clock: Clock,
        settings: OperatorSettings = OperatorSettings(),
    ) -> None:
        self.api = api
        self.writer = writer
        """The node name (status.nodes.<node>), or "" for the controller (status.controller)."""
        self.clock = clock
        self.settings = settings
        self.records_dir = records_root / RECORDS_DIR
        self.reporter = Reporter(api, writer, writer or "controller")
        self.cache = JobCache(api, settings.namespaces, on_change=self._changed)
        self._wake = threading.Event()
        self._dirty = True
        self._stop = threading.Event()
        self._spaces: dict[str, _Space] = {}
        self._thread = threading.Thread(target=self._loop, name="recurring-jobs", daemon=True)

    # -- life cycle

    def start(self) -> None:
        self.records_dir.mkdir(mode=0o700, exist_ok=True)
        self.cache.start()
        self._thread.start()
        _log.info(
            "recurring jobs: watching RecurringJobs in %s for %s",
            ", ".join(self.settings.namespaces) or "all namespaces",
            f"node {self.writer}" if self.writer else "the controller (prune, check)",
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Start no new task; let running ones finish (up to `timeout`); close the records."""
        self._stop.set()
        self._wake.set()
        self.cache.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)  # first: it adds spaces and launches threads
        spaces = list(self._spaces.values())
        for space in spaces:
            space.scheduler.stop.set()
            space.executor.stop.set()
        deadline = time.monotonic() + timeout
        for space in spaces:
            for thread in space.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if not any(t.is_alive() for t in space.threads):
                space.records.close()

    def _changed(self) -> None:
        self._dirty = True
        self._wake.set()

    # -- the loop

    def _loop(self) -> None:
        last_sync = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                if self._dirty or time.monotonic() - last_sync > RESYNC:
                    self._dirty = False
                    last_sync = time.monotonic()
                    self._sync(self.cache.jobs())
                self._launch()
            except Exception:  # never let the loop die: log, pause, go on
                _log.exception("recurring jobs: planning failed")
                self._wake.wait(BUSY_POLL * 10)
                continue
            self._sleep()

    def _sleep(self) -> None:
        wakes = [w for s in self._spaces.values() if (w := s.scheduler.next_wake()) is not None]
        if not wakes:
            self._wake.wait(RESYNC)
            return
        wake = min(wakes)
        if wake <= self.clock.now():  # a job still runs its slot: look again shortly
            self._wake.wait(BUSY_POLL)
            return
        self.clock.sleep_until(wake, self._wake)

    def _launch(self) -> None:
        for space in self._spaces.values():
            space.threads = [t for t in space.threads if t.is_alive()]
            space.threads += space.scheduler.launch_due()

    # -- jobs from the cache

    def _sync(self, jobs: Sequence[JobObject]) -> None:
        by_namespace: dict[str, list[JobObject]] = {}
        for job in jobs:
            if self.runs(job):
                by_namespace.setdefault(job.namespace, []).append(job)
        for namespace in set(self._spaces) | set(by_namespace):
            space = self._space(namespace)
            valid: dict[str, tuple[JobObject, JobClasses]] = {}
            specs: list[JobSpec] = []
            for job in by_namespace.get(namespace, []):
                checked = self._check(space, job)
                if checked is not None:
                    valid[job.name] = (job, checked[1])
                    specs.append(checked[0])
            space.executor.jobs = valid
            space.scheduler.jobs = specs
            space.scheduler.start()
            for spec in specs:
                self._report_planned(space, valid[spec.name][0], spec)

    # -- what a subclass says

    def runs(self, job: JobObject) -> bool:
        raise NotImplementedError

    def checked(self, job: JobObject) -> tuple[JobSpec, JobClasses]:
        """The job's spec and classes, or AmberError with the message for its status."""
        raise NotImplementedError

    def executor(self, namespace: str) -> KubeExecutor | TargetExecutor:
        raise NotImplementedError

    def _check(self, space: _Space, job: JobObject) -> tuple[JobSpec, JobClasses] | None:
        try:
            spec, classes = self.checked(job)
        except AmberError as e:
            if space.seen.get(job.uid) != (job.generation, e.message):
                space.seen[job.uid] = (job.generation, e.message)
                _log.warning("RecurringJob %s is invalid: %s", job.key, e.message)
                self.reporter.invalid(job, e.message)
            return None
        return spec, classes

    def _report_planned(self, space: _Space, job: JobObject, spec: JobSpec) -> None:
        if space.seen.get(job.uid) == (job.generation, ""):
            return
        space.seen[job.uid] = (job.generation, "")
        last = space.records.last_slot(spec.name)
        after = datetime.fromtimestamp(last, UTC) if last is not None else self.clock.now()
        self.reporter.scheduled(job, next_run(spec, after))

    def _space(self, namespace: str) -> _Space:
        space = self._spaces.get(namespace)
        if space is None:
            executor = self.executor(namespace)
            records = Records(self.records_dir / f"{namespace}.db")
            scheduler = Scheduler(
                self.clock, executor, records, node_limit=self.settings.node_limit
            )
            space = _Space(executor, scheduler, records)
            scheduler.on_record = lambda record: self._recorded(space, record)
            self._spaces[namespace] = space
        return space

    def _recorded(self, space: _Space, record: RunRecord) -> None:
        entry = space.executor.jobs.get(record.job)
        if entry is None:
            return
        job = entry[0]
        spec = next((s for s in space.scheduler.jobs if s.name == record.job), None)
        if spec is None:
            return
        claim = space.executor.claims.get(record.subject)
        upcoming = next_run(spec, datetime.fromtimestamp(record.slot, UTC))
        _log.info(
            "recurring job %s on %s: %s%s",
            job.key,
            record.subject,
            record.outcome.value,
            f" ({record.reason})" if record.reason else "",
        )
        self.reporter.record(job, claim, record, upcoming)


def _per_volume(job: JobObject) -> bool:
    """Whether a node runs the job (prune and check run in the controller)."""
    return job.spec.get("task") not in (Task.PRUNE.value, Task.CHECK.value)


class NodeOperator(Operator):
    """The per-volume tasks of the volumes on `node`."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        work: NodeWork,
        records_root: Path,
        *,
        clock: Clock,
        settings: OperatorSettings = OperatorSettings(),
    ) -> None:
        super().__init__(api, node, records_root, clock=clock, settings=settings)
        self.work = work

    def runs(self, job: JobObject) -> bool:
        return _per_volume(job)

    def checked(self, job: JobObject) -> tuple[JobSpec, JobClasses]:
        classes, target = check_classes(self.api, job)
        return parse_job(job_definition(job, target)), classes

    def executor(self, namespace: str) -> KubeExecutor:
        return KubeExecutor(
            self.api, namespace, self.writer, self.work, ready_timeout=self.settings.ready_timeout
        )


class ControllerOperator(Operator):
    """Prune and check jobs, once per cluster, on the targets of `open_repository`."""

    def __init__(
        self,
        api: KubeApi,
        open_repository: RepositoryOpener,
        records_root: Path,
        *,
        clock: Clock,
        settings: OperatorSettings = OperatorSettings(),
    ) -> None:
        super().__init__(api, "", records_root, clock=clock, settings=settings)
        self.open_repository = open_repository

    def runs(self, job: JobObject) -> bool:
        return not _per_volume(job)

    def checked(self, job: JobObject) -> tuple[JobSpec, JobClasses]:
        return parse_job(job_definition(job)), JobClasses("", None)

    def executor(self, namespace: str) -> TargetExecutor:
        return TargetExecutor(self.open_repository)
