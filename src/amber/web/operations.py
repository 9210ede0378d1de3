"""Long operations the dashboard started (backups, restores), run in background threads.

Each operation is a function of a `Progress` (the engine's own callback protocol) that returns
a one-line result. The registry keeps the last `KEEP` of them with their phase and how far it
got, which the pages poll for live progress; failures stay listed with their one-line error.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from amber.backup.progress import Progress
from amber.domain.errors import AmberError

log = logging.getLogger(__name__)
KEEP = 100


class State(StrEnum):
    """Where an operation is."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class Operation:
    """One background operation as the pages show it."""

    id: int
    kind: str
    title: str
    state: State
    started: float
    phase: str = ""
    unit: str = "bytes"
    done: int = 0
    total: int | None = None
    finished: float | None = None
    result: str = ""
    error: str = ""

    @property
    def percent(self) -> float | None:
        """How far the current phase got, when its total is known."""
        if not self.total:
            return None
        return min(100.0, 100.0 * self.done / self.total)


Work = Callable[[Progress], str]


class _Tracker:
    """The `Progress` of one operation: updates its record in the registry."""

    def __init__(self, registry: Operations, op_id: int) -> None:
        self._registry = registry
        self._id = op_id

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        self._registry.update(self._id, phase=name, total=total, unit=unit, done=0)

    def advance(self, amount: int) -> None:
        self._registry.advance(self._id, amount)

    def done(self) -> None:
        """The registry marks the end when the work function returns."""


class Operations:
    """The registry of background operations (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: dict[int, Operation] = {}
        self._ids = itertools.count(1)
        self._threads: dict[int, threading.Thread] = {}

    def start(self, kind: str, title: str, work: Work) -> Operation:
        """Run `work` in a new thread; returns its record at once."""
        with self._lock:
            op = Operation(next(self._ids), kind, title, State.RUNNING, self._clock())
            self._ops[op.id] = op
            self._trim_locked()
        thread = threading.Thread(
            target=self._run, args=(op.id, work), name=f"dashboard-{kind}-{op.id}", daemon=True
        )
        self._threads[op.id] = thread
        thread.start()
        return op

    def _run(self, op_id: int, work: Work) -> None:
        try:
            result = work(_Tracker(self, op_id))
        except AmberError as e:
            self._finish(op_id, State.FAILED, error=e.message)
        except Exception as e:
            log.exception("dashboard operation %d failed", op_id)
            self._finish(op_id, State.FAILED, error=f"internal error: {type(e).__name__}: {e}")
        else:
            self._finish(op_id, State.SUCCEEDED, result=result)
        finally:
            self._threads.pop(op_id, None)

    def _finish(self, op_id: int, state: State, *, result: str = "", error: str = "") -> None:
        self.update(op_id, state=state, finished=self._clock(), result=result, error=error)

    def update(self, op_id: int, **changes: object) -> None:
        """Change fields of an operation's record."""
        with self._lock:
            op = self._ops.get(op_id)
            if op is not None:
                self._ops[op_id] = replace(op, **changes)  # type: ignore[arg-type]

    def advance(self, op_id: int, amount: int) -> None:
        """`amount` more units of the current phase are done."""
        with self._lock:
            op = self._ops.get(op_id)
            if op is not None:
                self._ops[op_id] = replace(op, done=op.done + amount)

    def list(self) -> list[Operation]:
        """Every kept operation, newest first."""
        with self._lock:
            return sorted(self._ops.values(), key=lambda o: o.id, reverse=True)

    def get(self, op_id: int) -> Operation | None:
        """One operation's record."""
        with self._lock:
            return self._ops.get(op_id)

    def join(self, timeout: float | None = None) -> None:
        """Wait for running operations (for a clean shutdown)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)

    def _trim_locked(self) -> None:
        finished = [o.id for o in sorted(self._ops.values(), key=lambda o: o.id) if o.finished]
        while len(self._ops) > KEEP and finished:
            del self._ops[finished.pop(0)]
