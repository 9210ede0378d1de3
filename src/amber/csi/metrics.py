"""The driver's metrics: every CSI call counted by one interceptor, and the sources of the pool,
volume and target metrics wired to this node's pool and targets file.

`MetricsInterceptor` records each call's method, status code and latency (`amber.metrics`) --
one place for every servicer. `NodeMetrics` serves `/metrics` for `amber node`
(`--metrics-address`): it gives `amber.metrics` callables that read the pool's status, its
volumes' size, usage and condition (the same checks NodeGetVolumeStats makes), and the last
result of a background prober of the targets in the targets file. Targets a node learned from
a Kubernetes secret are not probed: their credentials live only in the calls that bring them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import grpc

from amber import metrics
from amber.backup.targets import TargetConfig, TargetRuntime, open_store
from amber.csi import health
from amber.csi._proto import csi_pb2
from amber.csi.interceptors import WrappingInterceptor
from amber.domain.models import Attachment, AttachmentKind, Volume, VolumeMode
from amber.metrics import (
    MetricsAddress,
    MetricsServer,
    PoolStats,
    ProbeOutcome,
    TargetProber,
    VolumeStats,
)
from amber.pool import Pool

__all__ = ["MetricsInterceptor", "NodeMetrics", "pool_stats", "volume_stats"]

_log = logging.getLogger(__name__)
PROBE_INTERVAL: Final = 60.0
"""Seconds between two probes of each target."""


class MetricsInterceptor(WrappingInterceptor):
    """Records every CSI call: method (short name), status code, seconds taken.

    Put it first (outermost) so that it sees the code the logging interceptor gives an
    exception no servicer mapped (INTERNAL).
    """

    def __init__(
        self,
        record: Callable[[str, str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._record = record or metrics.record_csi_call
        self._clock = clock

    def _wrap_unary(self, method: str, inner: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def behavior(request: Any, context: Any) -> Any:
            start = self._clock()
            raised = True
            try:
                response = inner(request, context)
                raised = False
                return response
            finally:
                self._done(method, context, start, raised=raised)

        return behavior

    def _wrap_stream(
        self, method: str, inner: Callable[[Any, Any], Iterator[Any]]
    ) -> Callable[..., Iterator[Any]]:
        def behavior(request: Any, context: Any) -> Iterator[Any]:
            start = self._clock()
            raised = True
            try:
                yield from inner(request, context)
                raised = False
            finally:
                self._done(method, context, start, raised=raised)

        return behavior

    def _done(self, method: str, context: Any, start: float, *, raised: bool) -> None:
        try:
            code = context.code()
            if code is None:
                if raised:
                    code = grpc.StatusCode.UNKNOWN  # what gRPC answers for an unmapped raise
                else:
                    active = context.is_active()
                    code = grpc.StatusCode.OK if active else grpc.StatusCode.CANCELLED
            short = method.rsplit("/", 1)[-1]  # the metric's label: NodeGetInfo
            self._record(short, code.name, self._clock() - start)
        except Exception:  # a metric must never fail the call
            _log.exception("could not record the metrics of %s", method)


# -- sources of the node's metrics ------------------------------------------------------------


def pool_stats(pool: Pool) -> PoolStats:
    """The pool as `amber pool status` sees it, plus the bytes its snapshots hold."""
    status = pool.status()
    return PoolStats(
        size_bytes=status.size,
        free_bytes=status.free,
        capacity_bytes=status.capacity,
        provisioned_bytes=status.provisioned,
        overprovisioning_ratio=status.overprovisioning,
        volumes=status.volumes,
        snapshots=status.snapshots,
        snapshots_bytes=sum(s.allocated for s in pool.snapshots.list()),
        backup_bases=status.backup_bases,
        backup_bases_bytes=status.backup_bases_bytes,
        full=status.full,
    )


def volume_stats(pool: Pool) -> list[VolumeStats]:
    """Every volume: size, bytes allocated, usage while mounted here, condition."""
    problem = pool.space_problem()
    uses: dict[str, list[Attachment]] = defaultdict(list)
    for attachment in pool.attachments.list():
        uses[attachment.object_uid].append(attachment)
    return [_volume(v, uses.get(v.uid, []), problem) for v in pool.volumes.list()]


def _volume(volume: Volume, uses: list[Attachment], problem: str | None) -> VolumeStats:
    conditions = [health.attachment_condition(volume, use, problem) for use in uses]
    abnormal = any(c.abnormal for c in conditions) or (
        not uses and health.image_condition(volume, problem).abnormal
    )
    try:
        allocated = os.stat(volume.image).st_blocks * 512
    except OSError:
        allocated = 0
    stats = VolumeStats(
        name=volume.name,
        mode=volume.mode.value,
        capacity_bytes=volume.size,
        allocated_bytes=allocated,
        abnormal=abnormal,
    )
    mounted = [
        use.path
        for use, condition in zip(uses, conditions, strict=True)
        if use.kind is AttachmentKind.MOUNT and not condition.abnormal
    ]
    if volume.mode is VolumeMode.FILESYSTEM and mounted:
        return _with_usage(stats, mounted[0])
    return stats


def _with_usage(stats: VolumeStats, path: Path) -> VolumeStats:
    try:
        usage = {u.unit: u for u in health.mount_usage(path)}
    except OSError:
        return stats
    unit = csi_pb2.VolumeUsage
    space, inodes = usage[unit.BYTES], usage[unit.INODES]
    return dataclasses.replace(
        stats, used_bytes=space.used, inodes=inodes.total, inodes_used=inodes.used
    )


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


class NodeMetrics:
    """`/metrics` of a driver: the HTTP server, and in node mode the pool's and targets'
    sources with the targets' prober."""

    def __init__(
        self,
        address: MetricsAddress,
        pool: Pool | None = None,
        targets_config: Path | None = None,
        *,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._address = address
        self._pool = pool
        self._prober: TargetProber | None = None
        if targets_config is not None:
            config = TargetConfig(targets_config)
            self._prober = TargetProber(
                lambda: target_names(config),
                lambda name: probe_target(config, name),
                interval=probe_interval,
            )
        self._server: MetricsServer | None = None

    def start(self) -> None:
        pool, prober = self._pool, self._prober
        metrics.watch(
            pool=None if pool is None else lambda: pool_stats(pool),
            volumes=None if pool is None else lambda: volume_stats(pool),
            targets=None if prober is None else prober.results,
        )
        try:
            self._server = metrics.serve(self._address)
        except BaseException:
            metrics.watch()
            raise
        if prober is not None:
            prober.start()
        _log.info(
            "metrics served on http://%s/metrics",
            MetricsAddress(self._address.host, self._server.port),
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._prober is not None:
            self._prober.stop()
        metrics.watch()  # the pool is about to close: scrapes must not read it any more
