"""The metrics as prometheus_client sees them: imported only when something reads them.

`EventCollector` turns the plain counters, gauges and histograms of `amber.metrics.events`
into metric families; `SourceCollector` reads the pool, volume and target sources
(`amber.metrics.sources`, bounded in time) and turns their records into gauges, with
`amber_scrape_collector_success{collector}` saying which answered. Target health is not probed
here: the target source is the last result of a background prober (`amber.metrics.prober`), so
an unreachable target never slows a scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from amber.metrics.events import Counter, Family, Gauge, Histogram
from amber.metrics.sources import Sources
from amber.metrics.stats import PoolStats, TargetStats, VolumeStats

__all__ = [
    "POOL_GAUGES",
    "TARGET_GAUGES",
    "VOLUME_GAUGES",
    "EventCollector",
    "SourceCollector",
    "new_registry",
]


@dataclass(frozen=True)
class _Gauge:
    name: str
    help: str
    value: Callable[[Any], float | None]
    """The sample's value from the source's record; None: no sample for this record."""


POOL_GAUGES: Final = (
    _Gauge("amber_pool_size_bytes", "Size of the pool filesystem.", lambda s: s.size_bytes),
    _Gauge(
        "amber_pool_free_bytes",
        "Bytes the pool filesystem still has available (what thin volumes can still write).",
        lambda s: s.free_bytes,
    ),
    _Gauge(
        "amber_pool_capacity_bytes",
        "What volume sizes may add up to: the filesystem size times the overprovisioning ratio.",
        lambda s: s.capacity_bytes,
    ),
    _Gauge(
        "amber_pool_provisioned_bytes",
        "Sizes of the pool's volumes added up.",
        lambda s: s.provisioned_bytes,
    ),
    _Gauge(
        "amber_pool_capacity_free_bytes",
        "Capacity left for new volumes by the accounting (capacity minus provisioned).",
        lambda s: s.capacity_free_bytes,
    ),
    _Gauge(
        "amber_pool_overprovisioning_ratio",
        "How many times its size the pool's volumes may add up to.",
        lambda s: s.overprovisioning_ratio,
    ),
    _Gauge("amber_pool_volumes", "Volumes in the pool.", lambda s: s.volumes),
    _Gauge("amber_pool_snapshots", "Local snapshots in the pool.", lambda s: s.snapshots),
    _Gauge(
        "amber_pool_snapshots_bytes",
        "Bytes allocated to snapshot images (shared with their volumes through reflink, so "
        "not to be added to the volumes' bytes).",
        lambda s: s.snapshots_bytes,
    ),
    _Gauge(
        "amber_pool_backup_bases",
        "Base images the backup engine keeps for incremental backups.",
        lambda s: s.backup_bases,
    ),
    _Gauge(
        "amber_pool_backup_bases_bytes",
        "Bytes allocated to the backup engine's base images (shared through reflink).",
        lambda s: s.backup_bases_bytes,
    ),
    _Gauge(
        "amber_pool_full",
        "1 when the pool filesystem is (nearly) full whatever the accounting says, else 0.",
        lambda s: float(s.full),
    ),
)

VOLUME_GAUGES: Final = (
    _Gauge("amber_volume_capacity_bytes", "The volume's size.", lambda v: v.capacity_bytes),
    _Gauge(
        "amber_volume_allocated_bytes",
        "Bytes the volume's sparse image holds in the pool.",
        lambda v: v.allocated_bytes,
    ),
    _Gauge(
        "amber_volume_used_bytes",
        "Bytes used in the volume's filesystem (while it is mounted on this node).",
        lambda v: v.used_bytes,
    ),
    _Gauge(
        "amber_volume_inodes",
        "Inodes of the volume's filesystem (while it is mounted on this node).",
        lambda v: v.inodes,
    ),
    _Gauge(
        "amber_volume_inodes_used",
        "Inodes used in the volume's filesystem (while it is mounted on this node).",
        lambda v: v.inodes_used,
    ),
    _Gauge(
        "amber_volume_condition_abnormal",
        "1 when the volume's condition is abnormal (image missing or truncated, mount gone or "
        "read-only, device not answering, pool full), else 0.",
        lambda v: float(v.abnormal),
    ),
)

TARGET_GAUGES: Final = (
    _Gauge(
        "amber_target_up",
        "1 when the target's last probe read, wrote and deleted an object, else 0.",
        lambda t: float(t.up),
    ),
    _Gauge(
        "amber_target_last_check_timestamp_seconds",
        "When the target was last probed, seconds since the epoch.",
        lambda t: t.checked_at,
    ),
    _Gauge(
        "amber_target_probe_latency_seconds",
        "How long the last probe's read took (no sample when it failed).",
        lambda t: t.latency_seconds,
    ),
)

SUCCESS: Final = "amber_scrape_collector_success"


class SourceCollector(Collector):
    """The pool, volume and target families, from the sources at each scrape."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def describe(self) -> Iterable[Metric]:
        return [*_families({}), _success({})]

    def collect(self) -> Iterable[Metric]:
        results, success = self._sources.read_all()
        return [*_families(results), _success(success)]


class EventCollector(Collector):
    """The families of the recorded events."""

    def __init__(self, families: Sequence[Family]) -> None:
        self._families = families

    def describe(self) -> Iterable[Metric]:
        return [_event_family(family, with_samples=False) for family in self._families]

    def collect(self) -> Iterable[Metric]:
        return [_event_family(family, with_samples=True) for family in self._families]


def new_registry(events: Sequence[Family], sources: Sources) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one) with both collectors."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(EventCollector(events))
    registry.register(SourceCollector(sources))
    return registry


def _event_family(family: Family, *, with_samples: bool) -> Metric:
    labels = list(family.labels)
    if isinstance(family, Counter):
        counter = CounterMetricFamily(family.name, family.help, labels=labels)
        for values, value in family.series() if with_samples else []:
            counter.add_metric(list(values), value)
        return counter
    if isinstance(family, Histogram):
        histogram = HistogramMetricFamily(family.name, family.help, labels=labels)
        for series in family.series() if with_samples else []:
            buckets = [(_bound(bound), float(count)) for bound, count in series.buckets]
            histogram.add_metric(list(series.labels), buckets, series.total)
        return histogram
    assert isinstance(family, Gauge), family
    gauge = GaugeMetricFamily(family.name, family.help, labels=labels)
    for values, value in family.series() if with_samples else []:
        gauge.add_metric(list(values), value)
    return gauge


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _success(answered: dict[str, bool]) -> Metric:
    family = GaugeMetricFamily(
        SUCCESS,
        "1 when the source of a group of metrics answered this scrape in time, else 0.",
        labels=["collector"],
    )
    for name, ok in sorted(answered.items()):
        family.add_metric([name], float(ok))
    return family


def _families(results: dict[str, Any]) -> Iterator[Metric]:
    pool: PoolStats | None = results.get("pool")
    yield from _gauges(POOL_GAUGES, [], [((), pool)] if pool is not None else [])
    volumes: list[VolumeStats] = results.get("volumes") or []
    yield from _gauges(VOLUME_GAUGES, ["volume", "mode"], [((v.name, v.mode), v) for v in volumes])
    targets: list[TargetStats] = results.get("targets") or []
    yield from _gauges(TARGET_GAUGES, ["target"], [((t.name,), t) for t in targets])


def _gauges(
    gauges: Sequence[_Gauge], labels: list[str], records: Sequence[tuple[tuple[str, ...], Any]]
) -> Iterator[Metric]:
    for gauge in gauges:
        family = GaugeMetricFamily(gauge.name, gauge.help, labels=labels)
        for values, record in records:
            value = gauge.value(record)
            if value is not None:
                family.add_metric(list(values), float(value))
        yield family
