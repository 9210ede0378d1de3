"""The recurring jobs the dashboard shows and runs: the jobs file it was given, the pool's job
records, and one scheduler of the local engine (`amber.jobs`).

Nothing here decides a rule of the engine: the next and last run come from
`amber.jobs.status`, a run now is `Scheduler.run_now` (the code path of `amber job run-now`,
which also refuses a job that runs already, in this process or another), and the work is the
local pool's executor with the dashboard's targets. The jobs file is read again at each use, so
an edit shows at the next page load; a bad file is one line on the page.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from amber.backup.repository import Repository
from amber.domain.errors import NotFound
from amber.jobs.local import LocalExecutor
from amber.jobs.records import Records, RunClaim, RunRecord
from amber.jobs.runner import Scheduler, SystemClock
from amber.jobs.spec import JobSpec, find_job, load_jobs_file
from amber.jobs.status import JobStatus, job_statuses
from amber.pool import Pool

__all__ = ["JobEngine"]

Opener = Callable[..., Repository]


class JobEngine:
    """The jobs of one dashboard (thread-safe); `close` releases the job records."""

    def __init__(self, pool: Pool, jobs_file: Path | None, open_repository: Opener) -> None:
        self.pool = pool
        self.jobs_file = jobs_file
        self._open_repository = open_repository
        self._lock = threading.Lock()
        self._scheduler: Scheduler | None = None
        self._records: Records | None = None
        self._listeners: dict[str, Callable[[RunRecord], None]] = {}

    def configured(self) -> bool:
        """Whether there is a jobs file to read (a missing one means no jobs, not an error)."""
        return self.jobs_file is not None and self.jobs_file.exists()

    def load(self) -> list[JobSpec]:
        """The jobs of the file (InvalidArgument: one line naming the file); none without one."""
        if self.jobs_file is None or not self.configured():
            return []
        return load_jobs_file(self.jobs_file)

    def find(self, name: str) -> JobSpec:
        """One job of the file by name (NotFound names the file and its jobs)."""
        if self.jobs_file is None:
            raise NotFound(f"no recurring job {name!r}: this dashboard has no jobs file")
        return find_job(self.load(), name, self.jobs_file)

    def scheduler(self) -> Scheduler:
        """The dashboard's one scheduler (made at first use): its per-job rule holds across
        every request."""
        with self._lock:
            if self._scheduler is None:
                self._records = Records.in_pool(self.pool.root)
                executor = LocalExecutor(self.pool, self._records, self._open_repository)
                self._scheduler = Scheduler(
                    SystemClock(), executor, self._records, on_record=self._recorded
                )
            return self._scheduler

    def statuses(self, jobs: list[JobSpec]) -> list[JobStatus]:
        """Next and last run of each job (`amber.jobs.status`)."""
        self.scheduler()
        assert self._records is not None
        return job_statuses(self._records, jobs, datetime.now(UTC))

    def run_now(
        self,
        job: JobSpec,
        on_record: Callable[[RunRecord], None] | None = None,
        *,
        claim: RunClaim | None = None,
    ) -> list[RunRecord]:
        """Run the job now (Busy while it runs already, here or in another process);
        `on_record` hears each subject's run; `claim` is the job's, taken beforehand
        (`Scheduler.claim`)."""
        scheduler = self.scheduler()
        with self._lock:
            listening = on_record is not None and job.name not in self._listeners
            if listening:
                self._listeners[job.name] = on_record  # type: ignore[assignment]
        try:
            return scheduler.run_now(job, claim=claim)
        finally:
            if listening:
                with self._lock:
                    self._listeners.pop(job.name, None)

    def _recorded(self, record: RunRecord) -> None:
        with self._lock:
            listener = self._listeners.get(record.job)
        if listener is not None:
            listener(record)

    def close(self) -> None:
        with self._lock:
            if self._records is not None:
                self._records.close()
            self._records = None
            self._scheduler = None
