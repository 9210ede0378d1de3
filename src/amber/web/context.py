"""What every request of one dashboard shares: the open pool, the targets, the operations and
the recurring jobs."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from amber.backup.repository import Repository
from amber.backup.targets import (
    Target,
    TargetConfig,
    TargetRuntime,
    TargetStatus,
    open_target_repository,
    target_status,
)
from amber.domain.errors import Unavailable
from amber.pool import Pool
from amber.pool.context import no_failpoint
from amber.web.jobs import JobEngine
from amber.web.operations import Operations


@dataclass
class WebContext:
    """The dashboard's handles on the engines (one per server)."""

    pool: Pool
    targets: TargetConfig
    runtime: TargetRuntime = field(default_factory=TargetRuntime)
    """How actions (backups, restores) try a target: the CLI's outage budget."""
    operations: Operations = field(default_factory=Operations)
    failpoint: Callable[[str], None] = no_failpoint
    """Named points of long operations (tests pause or crash there)."""
    health_ttl: float = 30.0
    """How long a target's health check is shown before the next page load checks again (a
    check writes a probe object and unlocks the key, which costs a scrypt: ~0.5 s)."""
    clock: Callable[[], float] = time.time
    read_budget: float = 5.0
    """Seconds a page waits for a target that does not answer (its backups are then shown as
    unavailable): a page must not hang for an action's outage budget."""
    jobs_file: Path | None = None
    """The recurring jobs the jobs page shows and runs (None: none)."""
    jobs: JobEngine = field(init=False, repr=False)
    _health: dict[str, tuple[float, TargetStatus]] = field(default_factory=dict, repr=False)
    _health_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.jobs = JobEngine(self.pool, self.jobs_file, self.repository)

    def close(self) -> None:
        """Release what the requests opened (the job records); the pool is the caller's."""
        self.jobs.close()

    def target(self, name: str) -> Target:
        """One target (NotFound names the targets file and the known ones)."""
        return self.targets.get(name)

    def repository(self, name: str, *, create: bool = False) -> Repository:
        """Open a target's repository for an action (the dashboard's runtime)."""
        return open_target_repository(self.target(name), create=create, runtime=self.runtime)

    def reading(self) -> TargetRuntime:
        """The runtime of page reads: `read_budget` seconds at most per call."""
        return dataclasses.replace(
            self.runtime,
            deadline=self.read_budget,
            first_contact_deadline=self.read_budget,
            budget_from_env=True,  # a target's own longer budget does not apply to a page
        )

    def read_repository(self, name: str) -> Repository:
        """Open a target's repository for a page, or Unavailable when its last health check
        (within `health_ttl`) found it unreachable: pages do not wait for a target known down."""
        target = self.target(name)
        with self._health_lock:
            cached = self._health.get(name)
        fresh = cached is not None and self.clock() - cached[0] < self.health_ttl
        if cached is not None and fresh and not cached[1].reachable:
            raise Unavailable(f"target {name} is unreachable: {cached[1].error or 'no answer'}")
        return open_target_repository(target, runtime=self.reading())

    def target_health(self, target: Target, *, refresh: bool = False) -> tuple[float, TargetStatus]:
        """(when it was checked, what the check found) for a target, checked again when older
        than `health_ttl` or when asked."""
        now = self.clock()
        with self._health_lock:
            cached = self._health.get(target.name)
        if cached is not None and not refresh and now - cached[0] < self.health_ttl:
            return cached
        checked = (now, target_status(self.targets.resolved(target), self.reading()))
        with self._health_lock:
            self._health[target.name] = checked
        return checked
