"""What every request of one dashboard shares: the open pool, the targets, the operations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from amber.backup.repository import Repository
from amber.backup.targets import Target, TargetConfig, TargetRuntime, open_target_repository
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

    def target(self, name: str) -> Target:
        """One target (NotFound names the targets file and the known ones)."""
        return self.targets.get(name)

    def repository(self, name: str, *, create: bool = False) -> Repository:
        """Open a target's repository with the dashboard's runtime."""
        return open_target_repository(self.target(name), create=create, runtime=self.runtime)
