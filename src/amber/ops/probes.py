"""The state sources of a process's metrics: its pool, its volumes, its targets' health.

Every process that shows metrics of a pool registers the same sources (`MetricsSources`):
`amber node` for its metrics server (`amber.csi.metrics`), and the dashboard for its
`/metrics` (`amber dashboard`, the node's dashboard). The pool and volume records come from
`amber.pool.stats`; the targets of the targets file are probed by a background prober
(`amber.metrics.TargetProber`), never per scrape. Targets a node learned from a Kubernetes
secret are not probed: their credentials live only in the calls that bring them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from amber import metrics
from amber.backup.targets import TargetConfig, TargetRuntime, open_store
from amber.metrics import ProbeOutcome, TargetProber
from amber.pool import Pool
from amber.pool.stats import pool_stats, volume_stats

__all__ = ["PROBE_INTERVAL", "MetricsSources", "probe_target", "target_names"]

PROBE_INTERVAL: Final = 60.0
"""Seconds between two probes of each target."""


def target_names(config: TargetConfig) -> list[str]:
    """The targets of the targets file (probed for the metrics)."""
    return sorted(config.load())


def probe_target(config: TargetConfig, name: str) -> ProbeOutcome:
    """One probe of a target of the targets file, without retries (a failed probe is the
    answer: the next one comes soon)."""
    from amber.blobstore.target import probe  # imports the S3 client

    store = open_store(config.get(name), TargetRuntime(attempts=1))
    found = probe(store)
    latency = None if found.latency_ms is None else found.latency_ms / 1000.0
    return ProbeOutcome(up=found.reachable and found.writable, latency_seconds=latency)


class MetricsSources:
    """The pool's, volumes' and targets' sources of the process's metrics (`amber.metrics`),
    from `start` to `stop`."""

    def __init__(
        self,
        pool: Pool | None,
        targets_config: Path | None,
        *,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._pool = pool
        self._prober: TargetProber | None = None
        if targets_config is not None:
            config = TargetConfig(targets_config)
            self._prober = TargetProber(
                lambda: target_names(config),
                lambda name: probe_target(config, name),
                interval=probe_interval,
            )

    def start(self) -> None:
        """Register the sources (read at each scrape) and start probing the targets."""
        pool, prober = self._pool, self._prober
        metrics.watch(
            pool=None if pool is None else lambda: pool_stats(pool),
            volumes=None if pool is None else lambda: volume_stats(pool),
            targets=None if prober is None else prober.results,
        )
        if prober is not None:
            prober.start()

    def stop(self) -> None:
        """Stop probing and forget the sources (the pool is about to close: scrapes must not
        read it any more)."""
        if self._prober is not None:
            self._prober.stop()
        metrics.watch()
