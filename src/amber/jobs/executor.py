"""What the scheduler asks of the world: the `Executor` protocol.

The scheduler (`amber.jobs.runner`) decides *when* and *for which volumes*; an executor does the
work. Two implement it: `amber.jobs.local.LocalExecutor` against this node's pool (for
`amber schedule` and `amber job`), and the Kubernetes operator's, which creates and deletes
VolumeSnapshot objects. Whatever differs between the two lives behind this protocol, and nothing
else does.

Rules every executor keeps:
- `items` lists only what *this job* created (recorded with the job's name when created), so
  retention never deletes a hand-made snapshot or backup, nor another job's. For a
  snapshot-cleanup job, it lists the snapshots any recurring job made of the volume.
- Errors are `amber.domain.errors.AmberError`s with a one-line message; the scheduler records
  them as the run's reason and goes on with the next volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from amber.jobs.retention import Item
from amber.jobs.spec import JobSpec

__all__ = ["Candidate", "Executor", "ItemKind", "Outcome"]


class ItemKind(StrEnum):
    """The two kinds of things a job keeps, each with its own retention."""

    LOCAL = "local"
    """Snapshots on the node (a snapshot job's output; a backup job's leftover base)."""
    REMOTE = "remote"
    """Backups on the job's target."""


@dataclass(frozen=True)
class Candidate:
    """A volume a job may select."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    groups: frozenset[str] = frozenset()
    """Empty for a volume that names no group (it is then in group `default`)."""


@dataclass(frozen=True)
class Outcome:
    """What one executor call did."""

    created: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    bytes: int = 0
    """Bytes written (a backup's uploaded bytes, a snapshot's 0) or freed (trim, prune)."""
    skipped: str | None = None
    """Why nothing was done (a volume not mounted for trim), or None."""
    detail: str = ""
    """A short human summary for the run's log line."""


class Executor(Protocol):
    """The work behind each task. `when` is the run's instant, for names of what it creates."""

    def candidates(self) -> Sequence[Candidate]:
        """Every volume on this node a job could select."""
        ...

    def changed_since_last(self, job: JobSpec, volume: str) -> bool | None:
        """Whether `volume` changed since the last snapshot or backup `job` made of it; None
        when that cannot be told (no earlier run, no change tracking): treated as changed."""
        ...

    def snapshot(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        """Take a snapshot of `volume` for `job` (named `<job>-<UTC time>`, with its labels)."""
        ...

    def backup(self, job: JobSpec, volume: str, when: datetime) -> Outcome:
        """Snapshot `volume` and back the snapshot up to `job.target`, committed when this
        returns; the snapshot stays (a local item) for local retention to keep or delete."""
        ...

    def items(self, job: JobSpec, volume: str, kind: ItemKind) -> Sequence[Item]:
        """What `job` created for `volume`, of `kind` (see the module rules)."""
        ...

    def delete(self, job: JobSpec, volume: str, kind: ItemKind, item: Item) -> Outcome:
        """Delete one of `job`'s items."""
        ...

    def prune(self, job: JobSpec) -> Outcome:
        """Remove from `job.target` the data no backup needs any more."""
        ...

    def check(self, job: JobSpec) -> Outcome:
        """Check `job.target`'s repository (every byte with `job.read_data`); a problem found
        is an error (Corrupt)."""
        ...

    def trim(self, job: JobSpec, volume: str) -> Outcome:
        """fstrim the filesystem of a mounted `volume`; not mounted: skipped with the reason."""
        ...
