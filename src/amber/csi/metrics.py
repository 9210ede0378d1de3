"""The driver's metrics: every CSI call counted by one interceptor, and `/metrics` of a node.

`MetricsInterceptor` records each call's method, status code and latency (`amber.metrics`) --
one place for every servicer. `NodeMetrics` serves `/metrics` for `amber node`
(`--metrics-address`) with the sources of `amber.ops.probes` (the pool's status, its volumes'
size, usage and condition, the last probe of each target of the targets file), the same
sources the dashboard's `/metrics` registers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from amber import metrics
from amber.csi.interceptors import WrappingInterceptor
from amber.metrics import MetricsAddress, MetricsServer
from amber.ops.probes import PROBE_INTERVAL, MetricsSources
from amber.pool import Pool

__all__ = ["MetricsInterceptor", "NodeMetrics"]

_log = logging.getLogger(__name__)


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


class NodeMetrics:
    """`/metrics` of a driver: the HTTP server, and in node mode the pool's and targets'
    sources (`amber.ops.probes`, the same as the dashboard's)."""

    def __init__(
        self,
        address: MetricsAddress,
        pool: Pool | None = None,
        targets_config: Path | None = None,
        *,
        probe_interval: float = PROBE_INTERVAL,
    ) -> None:
        self._address = address
        self._sources = MetricsSources(pool, targets_config, probe_interval=probe_interval)
        self._server: MetricsServer | None = None

    def start(self) -> None:
        self._sources.start()
        try:
            self._server = metrics.serve(self._address)
        except BaseException:
            self._sources.stop()
            raise
        _log.info(
            "metrics served on http://%s/metrics",
            MetricsAddress(self._address.host, self._server.port),
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
        self._sources.stop()
