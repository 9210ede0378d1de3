"""The plain counters, gauges and histograms the events are recorded in."""

from __future__ import annotations

import threading

import pytest

from amber.metrics.events import Counter, Gauge, Histogram, HistogramSeries


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    histogram = Histogram("h_seconds", "help", ("outcome",), bounds=(1.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 7.0):
        histogram.observe(("success",), value)
    (series,) = histogram.series()
    assert series == HistogramSeries(
        ("success",), ((1.0, 2), (5.0, 4), (float("inf"), 5)), 0.5 + 1.0 + 1.5 + 5.0 + 7.0
    )


def test_counters_only_go_up_and_labels_must_match() -> None:
    counter = Counter("c", "help", ("method", "code"))
    counter.touch(("Probe", "OK"))
    counter.inc(("Probe", "OK"), 2)
    assert counter.series() == [(("Probe", "OK"), 2.0)]
    with pytest.raises(ValueError, match="only goes up"):
        counter.inc(("Probe", "OK"), -1)
    with pytest.raises(ValueError, match="takes the labels"):
        counter.inc(("Probe",))
    gauge = Gauge("g", "help", ("kind",))
    with pytest.raises(ValueError, match="takes the labels"):
        gauge.set((), 1.0)


def test_concurrent_records_are_all_counted() -> None:
    counter = Counter("c", "help")
    gauge = Gauge("g", "help", ("kind",))

    def work() -> None:
        for _ in range(2000):
            counter.inc()
            gauge.add(("backup",), 1.0)
            gauge.add(("backup",), -1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.series() == [((), 8000.0)]
    assert gauge.get(("backup",)) == 0.0
