"""Prometheus metrics: what one Amber process did and what its pool and targets look like.

Two kinds of metrics live in one registry per process (never prometheus_client's global one;
prometheus_client itself is imported only when the metrics are read or served, so that a
one-shot command pays nothing for recording):

- events, recorded where they happen: a backup or restore ended (`record_backup`,
  `record_restore`, or around a block `backup_run`, `restore_run`), an operation runs
  (`inflight`), a CSI call was answered (`record_csi_call`, from one gRPC interceptor), a
  recurring job ran (`record_job_run`);
- state, read at scrape time from callables the serving edge gives to `watch`: the pool, its
  volumes, the targets' last probe (a background `TargetProber`, never a probe per scrape).
  The callables return the plain records of `amber.metrics.stats`, so this package imports no
  pool, no target and no edge: it sits at the bottom of the layers, beside `amber.domain`.

Names follow Prometheus conventions (`amber_` prefix, base units, `_bytes`, `_seconds`,
counters ending in `_total`). Labels name a configured object (volume, target, job), a method,
a status code, an outcome or a kind: never a snapshot or backup id, an error text or a secret.

`serve(address)` exposes the registry over HTTP (`amber node --metrics-address`);
`exposition()` gives the same bytes to another server (the dashboard's `/metrics`). Every
metric, its labels and the alerts built on them: docs/metrics.md.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from amber import __version__
from amber.metrics.registry import KINDS, BackupRun, Metrics, Outcome, RestoreRun
from amber.metrics.stats import PoolStats, ProbeOutcome, TargetStats, VolumeStats

if TYPE_CHECKING:
    from amber.metrics.prober import TargetProber
    from amber.metrics.server import MetricsAddress, MetricsServer, parse_address

_LAZY = {
    "TargetProber": "amber.metrics.prober",
    "MetricsAddress": "amber.metrics.server",
    "MetricsServer": "amber.metrics.server",
    "parse_address": "amber.metrics.server",
}
"""Names imported at first use: a command that records a backup serves nothing and probes
nothing, and the server pulls in the address parser (`ipaddress`)."""


def __getattr__(name: str) -> Any:
    """`_LAZY`'s names, imported when first asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "KINDS",
    "BackupRun",
    "Metrics",
    "MetricsAddress",
    "MetricsServer",
    "Outcome",
    "PoolStats",
    "ProbeOutcome",
    "RestoreRun",
    "TargetProber",
    "TargetStats",
    "VolumeStats",
    "backup_run",
    "default",
    "exposition",
    "inflight",
    "parse_address",
    "record_backup",
    "record_csi_call",
    "record_job_run",
    "record_restore",
    "restore_run",
    "serve",
    "watch",
]

_default: Metrics | None = None
_default_lock = threading.Lock()


def default() -> Metrics:
    """The process's metrics (made at first use, not at import)."""
    global _default  # one registry per process, by design
    with _default_lock:
        if _default is None:
            _default = Metrics(version=__version__)
        return _default


def record_backup(
    outcome: Outcome | str, seconds: float, read: int = 0, new: int = 0, stored: int = 0
) -> None:
    """A backup ended (see `Metrics.record_backup`)."""
    default().record_backup(outcome, seconds, read, new, stored)


def record_restore(outcome: Outcome | str, seconds: float, downloaded: int = 0) -> None:
    """A restore ended (see `Metrics.record_restore`)."""
    default().record_restore(outcome, seconds, downloaded)


def inflight(kind: str) -> AbstractContextManager[None]:
    """Count an operation of `kind` ("backup", "restore", "job") as running in the block."""
    return default().inflight(kind)


def backup_run(
    cancelled: tuple[type[BaseException], ...] = (),
) -> AbstractContextManager[BackupRun]:
    """One backup, from the block (see `Metrics.backup_run`)."""
    return default().backup_run(cancelled)


def restore_run(
    cancelled: tuple[type[BaseException], ...] = (),
) -> AbstractContextManager[RestoreRun]:
    """One restore, from the block (see `Metrics.restore_run`)."""
    return default().restore_run(cancelled)


def record_csi_call(method: str, code: str, seconds: float) -> None:
    """A CSI call was answered (see `Metrics.record_csi_call`)."""
    default().record_csi_call(method, code, seconds)


def record_job_run(job: str, outcome: Outcome | str, when: float) -> None:
    """A recurring job's run ended (see `Metrics.record_job_run`)."""
    default().record_job_run(job, outcome, when)


def watch(
    *,
    pool: Callable[[], PoolStats] | None = None,
    volumes: Callable[[], Iterable[VolumeStats]] | None = None,
    targets: Callable[[], Iterable[TargetStats]] | None = None,
) -> None:
    """Read these sources at each scrape (see `Metrics.watch`)."""
    default().watch(pool=pool, volumes=volumes, targets=targets)


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """`(body, content_type)` of the process's metrics, for any HTTP server to send."""
    return default().exposition(accept)


def serve(address: MetricsAddress) -> MetricsServer:
    """Serve the process's metrics at `address` (started; `stop()` it when done)."""
    from amber.metrics.server import MetricsServer

    server = MetricsServer(address, default().registry)
    server.start()
    return server
