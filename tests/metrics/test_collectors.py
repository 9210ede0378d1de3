"""Pool, volume and target metrics from plain records, read at scrape time and bounded."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from amber.metrics import Metrics, PoolStats, TargetStats, VolumeStats
from tests.metrics.helpers import samples, value

GiB = 1 << 30
POOL = PoolStats(
    size_bytes=64 * GiB,
    free_bytes=10 * GiB,
    capacity_bytes=256 * GiB,
    provisioned_bytes=100 * GiB,
    overprovisioning_ratio=4.0,
    volumes=3,
    snapshots=7,
    snapshots_bytes=5 * GiB,
    backup_bases=2,
    backup_bases_bytes=3 * GiB,
    full=False,
)


def scrape(metrics: Metrics) -> bytes:
    return metrics.exposition()[0]


def test_pool_values() -> None:
    metrics = Metrics()
    metrics.watch(pool=lambda: POOL)
    text = scrape(metrics)
    assert value(text, "amber_pool_size_bytes") == 64 * GiB
    assert value(text, "amber_pool_free_bytes") == 10 * GiB
    assert value(text, "amber_pool_capacity_bytes") == 256 * GiB
    assert value(text, "amber_pool_provisioned_bytes") == 100 * GiB
    assert value(text, "amber_pool_capacity_free_bytes") == 156 * GiB
    assert value(text, "amber_pool_overprovisioning_ratio") == 4.0
    assert value(text, "amber_pool_volumes") == 3
    assert value(text, "amber_pool_snapshots") == 7
    assert value(text, "amber_pool_snapshots_bytes") == 5 * GiB
    assert value(text, "amber_pool_backup_bases") == 2
    assert value(text, "amber_pool_backup_bases_bytes") == 3 * GiB
    assert value(text, "amber_pool_full") == 0
    assert value(text, "amber_scrape_collector_success", collector="pool") == 1


def test_capacity_free_is_never_negative() -> None:
    over = PoolStats(1, 0, 100, 150, 1.0, 0, 0, 0, 0, 0, True)
    assert over.capacity_free_bytes == 0


def test_volume_values_and_usage_only_when_mounted() -> None:
    metrics = Metrics()
    mounted = VolumeStats("pvc-a", "filesystem", 10 * GiB, GiB, False, 512, 1000, 11)
    idle = VolumeStats("pvc-b", "block", 2 * GiB, 0, True)
    metrics.watch(volumes=lambda: iter([mounted, idle]))
    text = scrape(metrics)
    a = {"volume": "pvc-a", "mode": "filesystem"}
    b = {"volume": "pvc-b", "mode": "block"}
    assert value(text, "amber_volume_capacity_bytes", **a) == 10 * GiB
    assert value(text, "amber_volume_allocated_bytes", **a) == GiB
    assert value(text, "amber_volume_used_bytes", **a) == 512
    assert value(text, "amber_volume_inodes", **a) == 1000
    assert value(text, "amber_volume_inodes_used", **a) == 11
    assert value(text, "amber_volume_condition_abnormal", **a) == 0
    assert value(text, "amber_volume_capacity_bytes", **b) == 2 * GiB
    assert value(text, "amber_volume_condition_abnormal", **b) == 1
    for name in ("amber_volume_used_bytes", "amber_volume_inodes", "amber_volume_inodes_used"):
        assert value(text, name, **b) is None
    # Read at every scrape: a volume gone is gone from the next scrape.
    metrics.watch(volumes=lambda: [mounted])
    assert value(scrape(metrics), "amber_volume_capacity_bytes", **b) is None


def test_target_values() -> None:
    metrics = Metrics()
    found = [TargetStats("s3", True, 1700.0, 0.25), TargetStats("nfs", False, 1800.0, None)]
    metrics.watch(targets=lambda: found)
    text = scrape(metrics)
    assert value(text, "amber_target_up", target="s3") == 1
    assert value(text, "amber_target_last_check_timestamp_seconds", target="s3") == 1700.0
    assert value(text, "amber_target_probe_latency_seconds", target="s3") == 0.25
    assert value(text, "amber_target_up", target="nfs") == 0
    assert value(text, "amber_target_probe_latency_seconds", target="nfs") is None


def test_nothing_watched_means_no_samples_but_every_family_is_described() -> None:
    metrics = Metrics()
    text = scrape(metrics).decode()
    assert "# TYPE amber_pool_size_bytes gauge" in text
    assert "# TYPE amber_target_up gauge" in text
    assert not [s for s in samples(text) if s.name.startswith(("amber_pool", "amber_volume"))]
    assert not [s for s in samples(text) if s.name == "amber_scrape_collector_success"]


def test_a_failing_source_loses_its_samples_only() -> None:
    metrics = Metrics()

    def broken() -> PoolStats:
        raise OSError("the pool database is locked")

    metrics.watch(pool=broken, targets=lambda: [TargetStats("s3", True, 1.0, 0.1)])
    text = scrape(metrics)
    assert value(text, "amber_scrape_collector_success", collector="pool") == 0
    assert value(text, "amber_pool_size_bytes") is None
    assert value(text, "amber_scrape_collector_success", collector="targets") == 1
    assert value(text, "amber_target_up", target="s3") == 1


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # never leave a source thread waiting


def test_a_hanging_source_does_not_hang_the_scrape(gate: threading.Event) -> None:
    calls = []

    def stuck() -> PoolStats:
        calls.append(1)
        gate.wait()
        return POOL

    metrics = Metrics(source_timeout=0.05)
    metrics.watch(pool=stuck, volumes=lambda: [])
    for _ in range(3):
        text = scrape(metrics)
        assert value(text, "amber_scrape_collector_success", collector="pool") == 0
        assert value(text, "amber_scrape_collector_success", collector="volumes") == 1
        assert value(text, "amber_pool_size_bytes") is None
    # The stuck read is waited for again, never started a second time.
    assert calls == [1]
    gate.set()
    # Once it has answered, a scrape starts a fresh read again (one per scrape at most: how many
    # it takes until one answers within 0.05 s depends on the machine's load).
    metrics = _wait_for_success(metrics)
    assert value(scrape(metrics), "amber_pool_size_bytes") == 64 * GiB
    assert len(calls) >= 2


def _wait_for_success(metrics: Metrics) -> Metrics:
    for _ in range(200):
        if value(scrape(metrics), "amber_scrape_collector_success", collector="pool") == 1:
            return metrics
    raise AssertionError("the released source never answered")
