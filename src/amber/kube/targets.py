"""The controller's executor: prune and check of a target, for RecurringJobs.

A prune or check job works on a backup target, not on volumes, so it runs once per cluster, in
`amber controller`, which reads the same targets file as the nodes. The work is
`amber.jobs.tasks.TargetTasks`' `prune` and `check`, as `amber.jobs.local.LocalExecutor`'s is
(one rule for `amber schedule` and the operator); they go through `amber.ops.backups` without a
pool.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime

from amber.domain.errors import FailedPrecondition
from amber.jobs.executor import Candidate, ItemKind, Outcome
from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec
from amber.jobs.tasks import TargetTasks
from amber.kube.executor import JobClasses
from amber.kube.resources import Claim, JobObject
from amber.ops.backups import RepositoryOpener

__all__ = ["RepositoryOpener", "TargetExecutor"]


class TargetExecutor:
    """`amber.jobs.executor.Executor` for prune and check jobs (no volumes)."""

    def __init__(self, open_repository: RepositoryOpener) -> None:
        self.tasks = TargetTasks(open_repository)
        self.jobs: dict[str, tuple[JobObject, JobClasses]] = {}
        self.claims: dict[str, Claim] = {}
        self.stop = threading.Event()

    def prune(self, job: JobSpec) -> Outcome:
        return self.tasks.prune(job)

    def check(self, job: JobSpec) -> Outcome:
        return self.tasks.check(job)

    def candidates(self) -> Sequence[Candidate]:
        return []

    def _per_volume(self, job: JobSpec) -> FailedPrecondition:
        return FailedPrecondition(f"a {job.task} job runs on the nodes, not in amber controller")

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        raise self._per_volume(job)

    def snapshot(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        raise self._per_volume(job)

    def backup(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        raise self._per_volume(job)

    def items(self, job: JobSpec, volume: str, kind: ItemKind) -> Sequence[Item]:
        raise self._per_volume(job)

    def delete(self, job: JobSpec, volume: str, kind: ItemKind, item: Item) -> Outcome:
        raise self._per_volume(job)

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        raise self._per_volume(job)
