"""Counters, gauges and histograms as plain thread-safe Python, for recording events cheaply.

Recording must cost nothing worth noticing in a process that never serves its metrics (a
one-shot `amber backup create` records its backup like the node does): these keep numbers in
dicts under a lock, and prometheus_client -- with its HTTP and e-mail modules, tens of
milliseconds to import -- is loaded only when something reads them
(`amber.metrics.collectors.EventCollector`).

A series is the tuple of its label values, in the order of the family's label names.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Counter", "Family", "Gauge", "Histogram", "HistogramSeries"]

Labels = tuple[str, ...]


@dataclass
class Family:
    """One metric family: its name (a counter's without `_total`), help text, label names."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def _check(self, values: Labels) -> Labels:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes the labels {self.labels}, not {values}")
        return values


@dataclass
class Counter(Family):
    """A value that only goes up."""

    _values: dict[Labels, float] = field(default_factory=dict, repr=False)

    def inc(self, values: Labels = (), amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{self.name} only goes up, not by {amount}")
        key = self._check(values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def touch(self, values: Labels = ()) -> None:
        """Make the series exist (at 0) before anything is counted."""
        key = self._check(values)
        with self._lock:
            self._values.setdefault(key, 0.0)

    def series(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return list(self._values.items())


@dataclass
class Gauge(Family):
    """A value that goes up and down."""

    _values: dict[Labels, float] = field(default_factory=dict, repr=False)

    def set(self, values: Labels, value: float) -> None:
        key = self._check(values)
        with self._lock:
            self._values[key] = value

    def add(self, values: Labels, amount: float) -> None:
        key = self._check(values)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def get(self, values: Labels) -> float | None:
        with self._lock:
            return self._values.get(self._check(values))

    def series(self) -> list[tuple[Labels, float]]:
        with self._lock:
            return list(self._values.items())


@dataclass(frozen=True)
class HistogramSeries:
    """One series of a histogram, as it is exposed."""

    labels: Labels
    buckets: tuple[tuple[float, int], ...]
    """(upper bound, observations at most that), cumulative, ending with +Inf."""
    total: float
    """The sum of the observations."""


@dataclass
class Histogram(Family):
    """Observations counted into buckets by upper bound."""

    bounds: Sequence[float] = ()
    _counts: dict[Labels, list[int]] = field(default_factory=dict, repr=False)
    _sums: dict[Labels, float] = field(default_factory=dict, repr=False)

    def observe(self, values: Labels, value: float) -> None:
        key = self._check(values)
        index = bisect.bisect_left(self.bounds, value)  # the first bound >= value
        with self._lock:
            counts = self._counts.setdefault(key, [0] * (len(self.bounds) + 1))
            counts[index] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def series(self) -> list[HistogramSeries]:
        with self._lock:
            found = [(key, list(counts), self._sums[key]) for key, counts in self._counts.items()]
        out = []
        for key, counts, total in found:
            running, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
                running += count
                buckets.append((bound, running))
            out.append(HistogramSeries(key, tuple(buckets), total))
        return out
