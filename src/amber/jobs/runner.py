"""The scheduler: runs due jobs on their volumes, applies retention, records every run.

`Scheduler.serve` loops: sleep until the next slot (or a stop), run what is due, again. Each due
job runs in its own thread; inside it, its volumes run `concurrency` at a time, each starting
its jitter after the slot, and every task anywhere holds one of the node's `node_limit` slots
while it works. A run on one volume:

1. a snapshot or backup job with `skipUnchanged` asks the executor whether the volume changed
   since the job's last snapshot or backup; unchanged: recorded `skipped`, nothing created;
2. the task runs (snapshot, backup, snapshot-cleanup, trim; prune and check run once per target);
3. after a successful task, retention deletes the job's items beyond its policy (local
   snapshots and remote backups each by their own policy);
4. the run is recorded (`records.RunRecord`), counted in the `amber_job_*` metrics and
   reported through `on_record`.

A failure on one volume is recorded `failed` with its one-line reason; the others go on. A
stop (SIGTERM in `amber schedule run`) lets running tasks finish and starts no new one.

A job runs once at a time, across processes: every run (a slot, `amber job run-now`, the
dashboard's Run now) holds the job's claim in its run records (`RunLog.try_claim`: a lock file
in the pool that the kernel releases when a process dies). A run-now of a job that runs
already is refused (Busy); a slot that finds its job running in another process is recorded
`skipped` on each subject with `ELSEWHERE`, and the schedule moves on.

Time comes from a `Clock`, so tests drive days of schedule in milliseconds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from amber import metrics
from amber.domain.errors import AmberError, Busy, InvalidArgument
from amber.jobs.executor import Candidate, Executor, ItemKind, Outcome
from amber.jobs.records import RunClaim, RunLog, RunOutcome, RunRecord
from amber.jobs.retention import select
from amber.jobs.schedule import due, jitter_offset, next_run
from amber.jobs.spec import JobSpec, Retention, Task

__all__ = ["Clock", "Scheduler", "SystemClock", "select_volumes"]

log = logging.getLogger(__name__)

_METRIC_OUTCOMES = {
    RunOutcome.OK: metrics.Outcome.SUCCESS,
    RunOutcome.SKIPPED: metrics.Outcome.SKIPPED,
    RunOutcome.FAILED: metrics.Outcome.FAILURE,
}
"""A recorded run as the `amber_job_*` metrics count it (every edge's runs: one place)."""
RETRY_AFTER = timedelta(minutes=1)
"""How long a job that failed without recording a run (its database failing) waits to retry."""
IDLE_WAKE = timedelta(hours=1)
"""How long `serve` sleeps when no job has a next slot (all running, or none defined)."""
MAX_SLEEP = 60.0
"""The longest single sleep: a wall clock set forward is noticed within a minute."""
ELSEWHERE = "the job was already running in another process"
"""The reason recorded for a slot skipped because another process ran the job."""


class Clock(Protocol):
    """Where the scheduler's time comes from."""

    def now(self) -> datetime:
        """The current instant (aware)."""
        ...

    def sleep_until(self, when: datetime, stop: threading.Event) -> bool:
        """Return at `when` (True) or when `stop` is set (False), whichever is first."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep_until(self, when: datetime, stop: threading.Event) -> bool:
        while not stop.is_set():
            left = (when - self.now()).total_seconds()
            if left <= 0:
                return True
            stop.wait(min(left, MAX_SLEEP))
        return False


def _busy(job: str) -> Busy:
    return Busy(f"job {job!r} is already running: wait for its run to end")


def select_volumes(spec: JobSpec, candidates: Iterable[Candidate]) -> list[str]:
    """The names of the volumes `spec` applies to, sorted."""
    return sorted(c.name for c in candidates if spec.selection.selects(c.name, c.labels, c.groups))


class _Held:
    """A job's run held by a scheduler: its mark in the scheduler and its records' claim."""

    def __init__(self, claim: RunClaim, unmark: Callable[[], None]) -> None:
        self._claim, self._unmark = claim, unmark
        self._released = threading.Event()

    def release(self) -> None:
        if self._released.is_set():
            return
        self._released.set()
        try:
            self._claim.release()
        finally:
            self._unmark()


@dataclass
class _Run:
    """One job's run in progress."""

    spec: JobSpec
    slot: datetime
    force: bool
    immediate: bool = False
    interrupted: bool = False
    """A stop came before every subject was done."""
    records: list[RunRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Scheduler:
    """Drives `jobs` with `executor`; see the module docstring."""

    def __init__(
        self,
        clock: Clock,
        executor: Executor,
        records: RunLog,
        *,
        node_limit: int = 2,
        jobs: Sequence[JobSpec] = (),
        on_record: Callable[[RunRecord], None] | None = None,
    ) -> None:
        if node_limit < 1:
            raise InvalidArgument(f"the node limit must be 1 or more, not {node_limit}")
        self.clock = clock
        self.executor = executor
        self.records = records
        self.jobs = list(jobs)
        self.on_record = on_record
        self.stop = threading.Event()
        """Set by `request_stop`: no new task starts."""
        self._wake = threading.Event()
        """Set when `serve` must look again: a stop, or a job that finished."""
        self._node = threading.BoundedSemaphore(node_limit)
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self._done: dict[str, list[RunRecord]] = {}

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Remember now as the last slot of jobs that never ran: a new job waits for its
        first slot instead of running at once."""
        now = self.clock.now()
        for spec in self.jobs:
            if self.records.last_slot(spec.name) is None:
                self.records.set_last_slot(spec.name, now.timestamp())

    def request_stop(self) -> None:
        """Start no new task; `serve` returns once the running ones are done."""
        self.stop.set()
        self._wake.set()

    def serve(self) -> None:
        """Run due jobs until `request_stop`; then wait for the running ones and return.

        It sleeps until the next slot of a job that is not running, or until a running job
        finishes (its next slot may have passed meanwhile: it then runs once, at once).
        """
        self.start()
        threads: list[threading.Thread] = []
        while not self.stop.is_set():
            self._wake.clear()
            threads = [t for t in threads if t.is_alive()]
            threads += self.launch_due()
            wake = self.next_wake()
            if wake is None:
                wake = self.clock.now() + IDLE_WAKE
            self.clock.sleep_until(wake, self._wake)
        for thread in threads:
            thread.join()

    def next_wake(self) -> datetime | None:
        """The earliest next slot of the jobs not running now (None if there is none)."""
        wakes = []
        with self._running_lock:
            running = set(self._running)
        for spec in self.jobs:
            if spec.name in running:
                continue
            last = self.records.last_slot(spec.name)
            after = datetime.fromtimestamp(last, UTC) if last is not None else self.clock.now()
            wakes.append(next_run(spec, after))
        return min(wakes, default=None)

    def due_now(self) -> list[tuple[JobSpec, datetime]]:
        """The jobs due now, each with the slot it runs for (one catch-up slot after downtime)."""
        now = self.clock.now()
        result = []
        for spec in self.jobs:
            last = self.records.last_slot(spec.name)
            if last is None:
                continue
            slot = due(spec, datetime.fromtimestamp(last, UTC), now)
            if slot is not None:
                result.append((spec, slot))
        return result

    def launch_due(self) -> list[threading.Thread]:
        """Start each due job that is not running yet in a thread of its own."""
        threads = []
        for spec, slot in self.due_now():
            with self._running_lock:
                if spec.name in self._running:
                    continue  # still busy with an earlier slot: caught up when it finishes
                self._running.add(spec.name)
            thread = threading.Thread(
                target=self._run_scheduled, args=(spec, slot), name=f"job-{spec.name}"
            )
            thread.start()
            threads.append(thread)
        return threads

    def run_due(self) -> list[RunRecord]:
        """Run every due job to its end (in this thread's turn); what they recorded."""
        result: list[RunRecord] = []
        for thread in self.launch_due():
            thread.join()
        with self._running_lock:
            for records in self._done.values():
                result += records
            self._done.clear()
        return result

    def _run_scheduled(self, spec: JobSpec, slot: datetime) -> None:
        try:
            claim = self.records.try_claim(spec.name)
            if claim is None:
                run = self._skip_all(spec, slot, ELSEWHERE)
            else:
                try:
                    run = self._run(spec, slot)
                finally:
                    claim.release()
            if not run.interrupted:  # else the slot runs again at start-up, once
                self.records.set_last_slot(spec.name, slot.timestamp())
            with self._running_lock:
                self._done[spec.name] = run.records
        except Exception:
            log.exception("job %s failed before it could record a run", spec.name)
            # Still "running" while it waits: serve does not start it again at once.
            self.clock.sleep_until(self.clock.now() + RETRY_AFTER, self.stop)
        finally:
            with self._running_lock:
                self._running.discard(spec.name)
            self._wake.set()

    # -- run now ----------------------------------------------------------------------------

    def running(self, job: str) -> bool:
        """Whether `job` runs now: in this scheduler (a slot, or a run-now) or in another
        process sharing its records (`amber schedule run`, another dashboard, `amber node`)."""
        with self._running_lock:
            if job in self._running:
                return True
        return self.records.is_claimed(job)

    def claim(self, spec: JobSpec) -> RunClaim:
        """Hold the job's one run (the per-job concurrency rule), in this scheduler and in
        every process sharing its records, until `release`; Busy when it runs already."""
        with self._running_lock:
            if spec.name in self._running:
                raise _busy(spec.name)
            self._running.add(spec.name)
        try:
            held = self.records.try_claim(spec.name)
        except BaseException:
            self._unmark(spec.name)
            raise
        if held is None:
            self._unmark(spec.name)
            raise _busy(spec.name)
        return _Held(held, lambda: self._unmark(spec.name))

    def _unmark(self, job: str) -> None:
        with self._running_lock:
            self._running.discard(job)
        self._wake.set()

    @contextmanager
    def claimed(self, spec: JobSpec) -> Iterator[None]:
        """`claim` for the block."""
        held = self.claim(spec)
        try:
            yield
        finally:
            held.release()

    def run_now(
        self, spec: JobSpec, *, force: bool = False, claim: RunClaim | None = None
    ) -> list[RunRecord]:
        """Run `spec` once now on every volume at once, without jitter (`amber job run-now`,
        the dashboard's Run now); its schedule is not moved. Busy while it runs already.

        `claim` is the job's claim taken beforehand (`claim`: an edge that refuses at once and
        runs later, in another thread); it is released at the end either way."""
        held = claim if claim is not None else self.claim(spec)
        try:
            slot = self.clock.now().replace(microsecond=0)
            return self.run_job(spec, slot, force=force, now=True)
        finally:
            held.release()

    # -- one run ----------------------------------------------------------------------------

    def run_job(
        self, spec: JobSpec, slot: datetime, *, force: bool = False, now: bool = False
    ) -> list[RunRecord]:
        """Run `spec` for `slot` on every subject; the records (also stored).

        `force` runs on unchanged volumes too (`amber job run-now --force`); `now` starts every
        volume at once, without the job's jitter (`amber job run-now`).
        """
        return self._run(spec, slot, force=force, now=now).records

    def _run(
        self, spec: JobSpec, slot: datetime, *, force: bool = False, now: bool = False
    ) -> _Run:
        with metrics.inflight("job"):
            return self._run_subjects(_Run(spec, slot, force, immediate=now))

    def _subjects(self, spec: JobSpec) -> list[tuple[str, str | None]]:
        """(subject, volume) of each run of `spec`, in the order they start."""
        if not spec.task.per_volume:
            return [(f"target:{spec.target}", None)]
        volumes = select_volumes(spec, self.executor.candidates())
        return [(v, v) for v in sorted(volumes, key=lambda v: (jitter_offset(spec, v), v))]

    def _skip_all(self, spec: JobSpec, slot: datetime, reason: str) -> _Run:
        """Record the slot `skipped` with `reason` on each subject (nothing run)."""
        run = _Run(spec, slot, force=False)
        for subject, _ in self._subjects(spec):
            start = self.clock.now()
            run.records.append(
                self._record(run, subject, start, RunOutcome.SKIPPED, done=Outcome(), reason=reason)
            )
        run.records.sort(key=lambda r: r.subject)
        return run

    def _run_subjects(self, run: _Run) -> _Run:
        spec = run.spec
        if not spec.task.per_volume:
            self._one(run, f"target:{spec.target}", None)
            return run
        with ThreadPoolExecutor(spec.concurrency, thread_name_prefix=f"job-{spec.name}") as pool:
            futures = [pool.submit(self._one, run, *subject) for subject in self._subjects(spec)]
        for future in futures:
            future.result()  # what could not even be recorded (the job database failing)
        run.records.sort(key=lambda r: r.subject)
        return run

    def _one(self, run: _Run, subject: str, volume: str | None) -> None:
        spec = run.spec
        if not run.immediate and spec.jitter > 0:
            start_at = run.slot + timedelta(seconds=jitter_offset(spec, subject))
            if not self.clock.sleep_until(start_at, self.stop):
                run.interrupted = True
                return
        if self.stop.is_set():
            run.interrupted = True
            return
        with self._node:
            start = self.clock.now()
            try:
                record = self._work(run, subject, volume, start)
            except AmberError as e:
                record = self._record(
                    run, subject, start, RunOutcome.FAILED, done=Outcome(), reason=e.message
                )
            except Exception as e:
                log.exception("job %s on %s failed", spec.name, subject)
                reason = f"internal error: {type(e).__name__}: {e}"
                record = self._record(
                    run, subject, start, RunOutcome.FAILED, done=Outcome(), reason=reason
                )
        with run.lock:
            run.records.append(record)

    def _work(self, run: _Run, subject: str, volume: str | None, start: datetime) -> RunRecord:
        spec, executor = run.spec, self.executor
        skippable = spec.task.creates and spec.skip_unchanged and not run.force
        if volume is not None and skippable and executor.changed_since_last(spec, volume) is False:
            reason = "unchanged since the job's last run"
            return self._record(
                run, subject, start, RunOutcome.SKIPPED, done=Outcome(), reason=reason
            )
        done = self._task(spec, volume, run.slot)
        if done.skipped is not None:
            return self._record(
                run, subject, start, RunOutcome.SKIPPED, done=done, reason=done.skipped
            )
        if volume is not None and spec.task.retains:
            deleted, problems = self._retain(spec, volume)
            detail = "; ".join(filter(None, [done.detail, *problems]))
            done = Outcome(done.created, done.deleted + deleted, done.bytes, None, detail)
        return self._record(run, subject, start, RunOutcome.OK, done=done, reason=done.detail)

    def _task(self, spec: JobSpec, volume: str | None, slot: datetime) -> Outcome:
        executor = self.executor
        if spec.task is Task.PRUNE:
            return executor.prune(spec)
        if spec.task is Task.CHECK:
            return executor.check(spec)
        assert volume is not None
        if spec.task is Task.SNAPSHOT:
            return executor.snapshot(spec, volume, slot)
        if spec.task is Task.BACKUP:
            return executor.backup(spec, volume, slot)
        if spec.task is Task.TRIM:
            return executor.trim(spec, volume)
        return Outcome()  # snapshot-cleanup: retention is all it does

    def _retain(self, spec: JobSpec, volume: str) -> tuple[tuple[str, ...], list[str]]:
        """Delete the job's items beyond its policies: (deleted ids, why some could not be).

        An item that cannot be deleted now (a snapshot in use) stays, and the run still counts
        as done: what it created is there; the next run tries the deletion again."""
        policies: list[tuple[ItemKind, Retention]] = [(ItemKind.LOCAL, spec.retention)]
        if spec.task is Task.BACKUP:
            policies = [(ItemKind.REMOTE, spec.retention), (ItemKind.LOCAL, spec.local_retention)]
        deleted: list[str] = []
        problems: list[str] = []
        for kind, policy in policies:
            items = self.executor.items(spec, volume, kind)
            for item in select(items, policy, spec.zone).delete:
                try:
                    deleted += self.executor.delete(spec, volume, kind, item).deleted
                except AmberError as e:
                    problems.append(f"kept {item.item_id}: {e.message}")
        return tuple(deleted), problems

    def _record(
        self,
        run: _Run,
        subject: str,
        start: datetime,
        outcome: RunOutcome,
        *,
        done: Outcome,
        reason: str,
    ) -> RunRecord:
        record = RunRecord(
            job=run.spec.name,
            task=run.spec.task.value,
            subject=subject,
            slot=run.slot.timestamp(),
            start=start.timestamp(),
            end=self.clock.now().timestamp(),
            outcome=outcome,
            reason=reason,
            created=done.created,
            deleted=done.deleted,
            bytes=done.bytes,
        )
        record_id = self.records.add(record)
        record = RunRecord(**{**record.__dict__, "id": record_id})
        metrics.record_job_run(record.job, _METRIC_OUTCOMES[outcome], record.end)
        if self.on_record is not None:
            self.on_record(record)
        return record
