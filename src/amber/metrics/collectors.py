"""Pool, volume and target metrics, read at scrape time from the sources an edge gave.

A scrape must answer even when a source hangs (a stuck mount, a pool whose metadata is locked):
each source runs on a thread of its own, all of them at once, and the scrape waits for them
until one shared deadline. A source that has not answered by then, or failed, contributes no
samples this time and `amber_scrape_collector_success{collector}` says 0; a source still
running from an earlier scrape is waited for again, never started twice.

Target health is not probed here: the sources read the last result of a background prober
(`amber.metrics.prober`), so an unreachable target never slows a scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from amber.metrics.stats import PoolStats, TargetStats, VolumeStats

__all__ = ["POOL_GAUGES", "TARGET_GAUGES", "VOLUME_GAUGES", "SourceCollector"]

_log = logging.getLogger(__name__)


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


class SourceCollector(Collector):
    """Collects the pool, volume and target families from the sources `set` gave."""

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

    def describe(self) -> Iterable[Metric]:
        return [*_families({}), _success({})]

    def collect(self) -> Iterable[Metric]:
        results, success = self._read_all()
        return [*_families(results), _success(success)]

    def _read_all(self) -> tuple[dict[str, Any], dict[str, bool]]:
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
