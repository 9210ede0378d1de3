"""Progress callbacks: how the engine tells its caller what it is doing, without a UI.

The engine (backup, restore, prune, check) reports *phases* ("reading", "downloading",
"deleting packs" …), each with a total when it is known, and advances them as work completes.
The CLI turns these calls into rich progress bars; the node daemon may turn them into metrics;
tests record them. Calls may come from worker threads, so implementations must be thread-safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol


class Progress(Protocol):
    """Receives progress from one engine operation."""

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        """A new phase starts; `total` is in `unit`s (None when unknown). Ends the previous."""
        ...

    def advance(self, amount: int) -> None:
        """`amount` more units of the current phase are done (any thread may call this)."""
        ...

    def done(self) -> None:
        """The operation finished (successfully or not); no more calls follow."""
        ...


class NullProgress:
    """Progress that goes nowhere."""

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        """Ignore the phase."""

    def advance(self, amount: int) -> None:
        """Ignore the advance."""

    def done(self) -> None:
        """Nothing to finish."""


@dataclass
class RecordedPhase:
    """One phase as `RecordingProgress` saw it."""

    name: str
    total: int | None
    unit: str
    advanced: int = 0


@dataclass
class RecordingProgress:
    """Progress that remembers every phase and how far it got (for tests and summaries)."""

    phases: list[RecordedPhase] = field(default_factory=list)
    finished: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        """Start recording a new phase."""
        with self._lock:
            self.phases.append(RecordedPhase(name, total, unit))

    def advance(self, amount: int) -> None:
        """Add to the current phase."""
        with self._lock:
            if self.phases:
                self.phases[-1].advanced += amount

    def done(self) -> None:
        """Mark the operation finished."""
        self.finished = True

    def get(self, name: str) -> RecordedPhase:
        """The last phase called `name` (KeyError if there was none)."""
        for recorded in reversed(self.phases):
            if recorded.name == name:
                return recorded
        raise KeyError(name)


def interrupted_backup(snapshot: str, target: str) -> str:
    """The one line a person reads after stopping a backup (Ctrl-C): what was kept, what next.

    The engine indexes the packs it uploaded before it gives up (or, if it could not, the next
    run adopts them), so no uploaded chunk is sent again.
    """
    return (
        f"interrupted: no backup of {snapshot} was committed; the chunks already uploaded to "
        f"target {target!r} are kept and reused by the next "
        f"`amber backup create {snapshot} --target {target}`"
    )
