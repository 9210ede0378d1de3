"""A progress sink that can also stop the engine: the cancel switch of a background job.

The engine reports progress through `Progress.phase/advance`, from its own threads. `Watch`
records how far a job got (for the messages of repeated calls) and raises `Cancelled` from the
next callback once `cancel()` was called; the engine treats it like any failure of that step
(a backup gives up and keeps what it uploaded for the next run; a restore removes the
journaled, half-written volume).
"""

from __future__ import annotations

import threading

from amber.domain.errors import Busy
from amber.domain.units import format_size

__all__ = ["Cancelled", "Watch"]


class Cancelled(Busy):
    """The job was cancelled (its snapshot or volume is being deleted)."""


class Watch:
    """Progress of one job, with a cancel switch."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self.phase_name = "starting"
        self.total: int | None = None
        self.done_amount = 0
        self.unit = "bytes"

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled("the job was cancelled")

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        self._check()
        with self._lock:
            self.phase_name, self.total, self.done_amount, self.unit = name, total, 0, unit

    def advance(self, amount: int) -> None:
        self._check()
        with self._lock:
            self.done_amount += amount

    def done(self) -> None:
        """Called by the engine when it stops (never raises)."""

    def describe(self) -> str:
        """`downloading: 12.0 MiB of 64.0 MiB (18%)` or just the phase."""
        with self._lock:
            name, total, done, unit = self.phase_name, self.total, self.done_amount, self.unit
        if not total or unit != "bytes":
            return name
        return f"{name}: {format_size(done)} of {format_size(total)} ({100 * done // total}%)"
