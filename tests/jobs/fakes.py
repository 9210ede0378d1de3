"""Pure-logic fakes for the scheduler tests: a clock that jumps, an executor in memory."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from amber.domain.errors import Unavailable
from amber.jobs.executor import Candidate, ItemKind, Outcome
from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec


class FakeClock:
    """Time stands still until something sleeps; a sleep jumps to its end."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when

    def sleep_until(self, when: datetime, stop: threading.Event) -> bool:
        if stop.is_set():
            return False
        with self._lock:
            self._now = max(self._now, when)
        return True


@dataclass
class FakeExecutor:
    """Volumes, snapshots and backups as dictionaries; records every call."""

    clock: FakeClock
    volumes: dict[str, Candidate] = field(default_factory=dict)
    changed: dict[str, bool | None] = field(default_factory=dict)
    items_by: dict[tuple[str, str, ItemKind], list[Item]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    gate: threading.Event | None = None
    """When set up, every snapshot waits for it (tests of concurrency)."""
    active: int = 0
    max_active: int = 0
    moved: threading.Condition = field(default_factory=threading.Condition)

    def add(
        self, name: str, labels: dict[str, str] | None = None, groups: Sequence[str] = ()
    ) -> None:
        self.volumes[name] = Candidate(name, labels or {}, frozenset(groups))

    def candidates(self) -> Sequence[Candidate]:
        return list(self.volumes.values())

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        return self.changed.get(volume)

    def _enter(self, what: str, volume: str) -> None:
        with self.moved:
            self.calls.append((what, volume))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.moved.notify_all()
        if self.gate is not None:
            self.gate.wait(30)

    def _leave(self) -> None:
        with self.moved:
            self.active -= 1
            self.moved.notify_all()

    def _create(self, job: JobSpec, volume: str, kind: ItemKind, when: datetime) -> str:
        item_id = f"{job.name}-{volume}-{kind}-{when:%Y%m%dT%H%M%S}"
        self.items_by.setdefault((job.name, volume, kind), []).append(
            Item(item_id, self.clock.now().timestamp())
        )
        return item_id

    def snapshot(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        self._enter("snapshot", volume)
        try:
            if volume in self.failing:
                raise Unavailable(f"volume {volume!r} is not reachable")
            return Outcome(created=(self._create(job, volume, ItemKind.LOCAL, when),))
        finally:
            self._leave()

    def backup(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        self._enter("backup", volume)
        try:
            local = self._create(job, volume, ItemKind.LOCAL, when)
            remote = self._create(job, volume, ItemKind.REMOTE, when)
            return Outcome(created=(local, remote), bytes=100)
        finally:
            self._leave()

    def items(self, job: JobSpec, volume: str, kind: ItemKind) -> Sequence[Item]:
        return list(self.items_by.get((job.name, volume, kind), []))

    def delete(self, job: JobSpec, volume: str, kind: ItemKind, item: Item) -> Outcome:
        self.calls.append(("delete", item.item_id))
        self.items_by[(job.name, volume, kind)].remove(item)
        return Outcome(deleted=(item.item_id,))

    def prune(self, job: JobSpec) -> Outcome:
        self.calls.append(("prune", job.target or ""))
        return Outcome(bytes=5)

    def check(self, job: JobSpec) -> Outcome:
        self.calls.append(("check", job.target or ""))
        return Outcome()

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        self.calls.append(("trim", volume))
        if volume.startswith("unmounted"):
            return Outcome(skipped=f"volume {volume!r} is not mounted")
        return Outcome(bytes=4096)
