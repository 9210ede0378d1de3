"""The sources of the state metrics, read at scrape time, each bounded in time.

A scrape must answer even when a source hangs (a stuck mount, a pool whose metadata is locked):
each source runs on a thread of its own, all of them at once, and the scrape waits for them
until one shared deadline. A source that has not answered by then, or failed, contributes no
samples this time (its success is False); a source still running from an earlier scrape is
waited for again, never started twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from amber.metrics.stats import PoolStats, TargetStats, VolumeStats

__all__ = ["Sources"]

_log = logging.getLogger(__name__)

_Source = Callable[[], Any]


class _Run:
    """One call of a source on a daemon thread (a hung source must not block the exit)."""

    def __init__(self, name: str, read: _Source) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self._read = read
        threading.Thread(target=self._run, name=f"metrics-{name}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.value = self._read()
        except BaseException as e:  # reported by the scrape, never raised on this thread
            self.error = e
        finally:
            self.done.set()


class Sources:
    """The pool, volume and target sources `set` gave, and their last reads."""

    def __init__(self, timeout: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._runs: dict[str, _Run] = {}

    def set(
        self,
        *,
        pool: Callable[[], PoolStats] | None,
        volumes: Callable[[], Iterable[VolumeStats]] | None,
        targets: Callable[[], Iterable[TargetStats]] | None,
    ) -> None:
        sources: dict[str, _Source] = {}
        if pool is not None:
            sources["pool"] = pool
        if volumes is not None:
            sources["volumes"] = lambda: list(volumes())
        if targets is not None:
            sources["targets"] = lambda: list(targets())
        with self._lock:
            self._sources = sources
            self._runs = {}

    def read_all(self) -> tuple[dict[str, Any], dict[str, bool]]:
        """What each source returned (those that answered in time), and which answered."""
        with self._lock:
            runs = {name: self._start(name, read) for name, read in self._sources.items()}
        deadline = self._clock() + self._timeout
        results: dict[str, Any] = {}
        success: dict[str, bool] = {}
        for name, run in runs.items():
            finished = run.done.wait(max(deadline - self._clock(), 0.0))
            success[name] = finished and run.error is None
            if success[name]:
                results[name] = run.value
            elif finished:
                _log.warning("metrics: reading the %s failed: %s", name, run.error)
            else:
                _log.warning("metrics: the %s did not answer within %gs", name, self._timeout)
        return results, success

    def _start(self, name: str, read: _Source) -> _Run:
        run = self._runs.get(name)
        if run is None or run.done.is_set():
            run = self._runs[name] = _Run(name, read)
        return run
