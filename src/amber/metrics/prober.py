"""Target health for the metrics: a background thread probes each target now and then.

A scrape reads the last results (`results`), never probes: an unreachable target would hold
the scrape for as long as its client's timeouts. The edge gives the names of the targets to
probe and the probe itself (`amber.ops.probes` wires them to the targets file and the
blob-store probe); a probe that raises counts as a failed one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from amber.metrics.stats import ProbeOutcome, TargetStats

__all__ = ["TargetProber"]

_log = logging.getLogger(__name__)


class TargetProber:
    """Probes every target every `interval` seconds on a daemon thread."""

    def __init__(
        self,
        targets: Callable[[], Iterable[str]],
        probe: Callable[[str], ProbeOutcome],
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._probe = probe
        self._interval = interval
        self._clock = clock
        self._results: dict[str, TargetStats] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def results(self) -> list[TargetStats]:
        """The last probe of each target, by name."""
        with self._lock:
            return [self._results[name] for name in sorted(self._results)]

    def probe_all(self) -> None:
        """Probe every target once, one after the other (targets gone are forgotten)."""
        try:
            names = sorted(set(self._targets()))
        except Exception as e:  # a broken targets file: keep the last results, say why
            _log.warning("metrics: cannot list the targets to probe: %s", e)
            return
        with self._lock:
            self._results = {n: r for n, r in self._results.items() if n in names}
        for name in names:
            if self._stopping.is_set():
                return
            stats = self._probe_one(name)
            with self._lock:
                self._results[name] = stats

    def _probe_one(self, name: str) -> TargetStats:
        try:
            outcome = self._probe(name)
        except Exception as e:
            _log.warning("metrics: probing target %s failed: %s", name, e)
            outcome = ProbeOutcome(up=False, latency_seconds=None)
        return TargetStats(name, outcome.up, self._clock(), outcome.latency_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="metrics-prober", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing (a probe in flight is not waited for longer than `timeout`)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self.probe_all()
            self._stopping.wait(self._interval)
