"""A job's status for the edges: when it runs next, and how its last run ended.

One rule for every edge that shows jobs (`amber job list`, the dashboard's jobs page): the next
run is the first slot after the later of the job's last slot and now (a slot missed while
nothing ran is not shown as the next run: `amber schedule run` runs it once at start-up, and
the first slot after now is what follows), and the last run is the newest run recorded in the
pool's job database, whoever ran it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from amber.jobs.records import RunRecord
from amber.jobs.schedule import next_run
from amber.jobs.spec import JobSpec

__all__ = ["JobRecords", "JobStatus", "job_status", "job_statuses"]


class JobRecords(Protocol):
    """What the status reads of the job database (`records.Records`)."""

    def last_run(self, job: str) -> RunRecord | None: ...

    def last_slot(self, job: str) -> float | None: ...


@dataclass(frozen=True)
class JobStatus:
    """A job with its next and last run."""

    job: JobSpec
    next_run: datetime
    """The next slot (aware, UTC)."""
    last_run: RunRecord | None
    """The newest recorded run (on any of its subjects), None if it never ran."""


def job_status(records: JobRecords, job: JobSpec, now: datetime) -> JobStatus:
    """The status of `job` at `now` (aware)."""
    slot = records.last_slot(job.name)
    after = now if slot is None else max(datetime.fromtimestamp(slot, UTC), now)
    return JobStatus(job, next_run(job, after), records.last_run(job.name))


def job_statuses(records: JobRecords, jobs: Sequence[JobSpec], now: datetime) -> list[JobStatus]:
    """The status of each job, in the given order."""
    return [job_status(records, job, now) for job in jobs]
