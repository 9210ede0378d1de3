"""What every request of one dashboard shares: the open pool, the targets, the operations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from amber.backup.repository import Repository
from amber.backup.targets import (
    Target,
    TargetConfig,
    TargetRuntime,
    TargetStatus,
    open_target_repository,
    target_status,
)
from amber.pool import Pool
from amber.pool.context import no_failpoint
from amber.web.operations import Operations


@dataclass
class WebContext:
    """The dashboard's handles on the engines (one per server)."""

    pool: Pool
    targets: TargetConfig
    runtime: TargetRuntime = field(default_factory=TargetRuntime)
    operations: Operations = field(default_factory=Operations)
    failpoint: Callable[[str], None] = no_failpoint
    """Named points of long operations (tests pause or crash there)."""
    health_ttl: float = 30.0
    """How long a target's health check is shown before the next page load checks again (a
    check writes a probe object and unlocks the key, which costs a scrypt: ~0.5 s)."""
    clock: Callable[[], float] = time.time
    _health: dict[str, tuple[float, TargetStatus]] = field(default_factory=dict, repr=False)
    _health_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def target(self, name: str) -> Target:
        """One target (NotFound names the targets file and the known ones)."""
        return self.targets.get(name)

    def repository(self, name: str, *, create: bool = False) -> Repository:
        """Open a target's repository with the dashboard's runtime."""
        return open_target_repository(self.target(name), create=create, runtime=self.runtime)

    def target_health(self, target: Target, *, refresh: bool = False) -> tuple[float, TargetStatus]:
        """(when it was checked, what the check found) for a target, checked again when older
        than `health_ttl` or when asked."""
        now = self.clock()
        with self._health_lock:
            cached = self._health.get(target.name)
        if cached is not None and not refresh and now - cached[0] < self.health_ttl:
            return cached
        checked = (now, target_status(self.targets.resolved(target), self.runtime))
        with self._health_lock:
            self._health[target.name] = checked
        return checked
