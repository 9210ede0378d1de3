"""The metrics of one Amber process, in a registry of their own, and the helpers that record.

Events (a backup ended, a CSI call answered, a recurring job ran) are recorded where they
happen, through `Metrics.record_*` and `Metrics.inflight`. State (the pool, its volumes, the
targets' health) is read at scrape time from the sources given to `Metrics.watch`
(`amber.metrics.collectors`).

Every label takes values from a small, known set or names a configured object (a volume, a
target, a recurring job): never an id of a snapshot or backup, never an error text, never a
secret. The helpers refuse any other outcome or kind (ValueError: a programming error).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder

from amber.metrics.collectors import SourceCollector
from amber.metrics.stats import PoolStats, TargetStats, VolumeStats

__all__ = [
    "CSI_BUCKETS",
    "KINDS",
    "OPERATION_BUCKETS",
    "BackupRun",
    "Metrics",
    "Outcome",
    "RestoreRun",
]


class Outcome(StrEnum):
    """How an operation or a recurring job run ended (the `outcome` label)."""

    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    """Stopped on purpose (the snapshot was deleted, the process is stopping)."""
    SKIPPED = "skipped"
    """A recurring job found nothing changed since its last run (jobs only)."""


_OPERATION_OUTCOMES: Final = (Outcome.SUCCESS, Outcome.FAILURE, Outcome.CANCELLED)
_JOB_OUTCOMES: Final = (Outcome.SUCCESS, Outcome.SKIPPED, Outcome.FAILURE)
KINDS: Final = ("backup", "restore", "job")
"""Values of the `kind` label of `amber_operations_in_flight`."""

OPERATION_BUCKETS: Final = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds: a backup or restore takes from a second (nothing changed) to hours."""
CSI_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
"""Seconds: most calls answer in milliseconds; mkfs, mounts and freezes take seconds."""


@dataclass
class BackupRun:
    """What a backup reports before its block ends well (`Metrics.backup_run`)."""

    seconds: float | None = None
    """How long it took (None: the block's own duration)."""
    read: int = 0
    new: int = 0
    stored: int = 0

    def ended(self, seconds: float, read: int, new: int, stored: int) -> None:
        """The engine's own numbers of the backup."""
        self.seconds, self.read, self.new, self.stored = seconds, read, new, stored


@dataclass
class RestoreRun:
    """What a restore reports before its block ends well (`Metrics.restore_run`)."""

    seconds: float | None = None
    downloaded: int = 0

    def ended(self, seconds: float, downloaded: int) -> None:
        self.seconds, self.downloaded = seconds, downloaded


_STOPS: Final = (KeyboardInterrupt, SystemExit)


def _stopped(error: BaseException, cancelled: tuple[type[BaseException], ...]) -> Outcome:
    return Outcome.CANCELLED if isinstance(error, _STOPS + cancelled) else Outcome.FAILURE


def _outcome(value: Outcome | str, allowed: Sequence[Outcome]) -> str:
    try:
        outcome = Outcome(value)
    except ValueError:
        outcome = None
    if outcome is None or outcome not in allowed:
        raise ValueError(f"outcome {value!r} is not one of {', '.join(allowed)}")
    return outcome.value


class _Operations:
    """Backups, restores and what runs now."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backups = Counter(
            "amber_backups", "Backups that ended, by outcome.", ["outcome"], registry=registry
        )
        self.backup_seconds = Histogram(
            "amber_backup_duration_seconds",
            "How long backups took, by outcome.",
            ["outcome"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.read = Counter(
            "amber_backup_read_bytes",
            "Bytes backups read from snapshots (unchanged chunks are not read).",
            registry=registry,
        )
        self.new = Counter(
            "amber_backup_new_bytes",
            "Bytes of chunks backups found new to their target (before compression).",
            registry=registry,
        )
        self.stored = Counter(
            "amber_backup_stored_bytes",
            "Bytes backups uploaded to their targets (compressed, encrypted).",
            registry=registry,
        )
        self.restores = Counter(
            "amber_restores", "Restores that ended, by outcome.", ["outcome"], registry=registry
        )
        self.restore_seconds = Histogram(
            "amber_restore_duration_seconds",
            "How long restores took, by outcome.",
            ["outcome"],
            buckets=OPERATION_BUCKETS,
            registry=registry,
        )
        self.downloaded = Counter(
            "amber_restore_downloaded_bytes",
            "Bytes restores downloaded from their targets.",
            registry=registry,
        )
        self.in_flight = Gauge(
            "amber_operations_in_flight",
            "Backups, restores and recurring job runs running now, by kind.",
            ["kind"],
            registry=registry,
        )
        for outcome in _OPERATION_OUTCOMES:  # the counts exist from the start, at 0
            self.backups.labels(outcome.value)
            self.restores.labels(outcome.value)
        for kind in KINDS:
            self.in_flight.labels(kind)


class _Csi:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "amber_csi_calls",
            "CSI calls answered, by method and gRPC status code.",
            ["method", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "amber_csi_call_duration_seconds",
            "How long CSI calls took to answer, by method.",
            ["method"],
            buckets=CSI_BUCKETS,
            registry=registry,
        )


class _Jobs:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Not `job`: Prometheus gives every series the scrape job's name under that label.
        self.runs = Counter(
            "amber_job_runs",
            "Runs of recurring jobs that ended.",
            ["recurring_job"],
            registry=registry,
        )
        self.failures = Counter(
            "amber_job_failures",
            "Runs of recurring jobs that failed.",
            ["recurring_job"],
            registry=registry,
        )
        self.last_success = Gauge(
            "amber_job_last_success_timestamp_seconds",
            "When a recurring job last ended well (a run that skipped an unchanged volume "
            "counts), seconds since the epoch.",
            ["recurring_job"],
            registry=registry,
        )


class Metrics:
    """Every metric of one process, in its own registry (not prometheus_client's global one).

    The process has one (`amber.metrics.METRICS`); tests make their own.
    """

    def __init__(self, *, version: str = "unknown", source_timeout: float = 5.0) -> None:
        # `*_created` series double every counter's output and nothing here reads them; the
        # switch is process-wide, and Amber is the only user of prometheus_client in it.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self._operations = _Operations(self.registry)
        self._csi = _Csi(self.registry)
        self._jobs = _Jobs(self.registry)
        info = Gauge(
            "amber_build_info",
            "Always 1; the version of Amber.",
            ["version"],
            registry=self.registry,
        )
        info.labels(version).set(1)
        self._sources = SourceCollector(timeout=source_timeout)
        self.registry.register(self._sources)
        self._lock = threading.Lock()
        self._last_success: dict[str, float] = {}

    # -- state read at scrape time ---------------------------------------------------------

    def watch(
        self,
        *,
        pool: Callable[[], PoolStats] | None = None,
        volumes: Callable[[], Iterable[VolumeStats]] | None = None,
        targets: Callable[[], Iterable[TargetStats]] | None = None,
    ) -> None:
        """Read the pool, its volumes and the targets from these callables at each scrape
        (None: that part has no samples). Replaces what an earlier call gave."""
        self._sources.set(pool=pool, volumes=volumes, targets=targets)

    # -- events ----------------------------------------------------------------------------

    def record_backup(
        self,
        outcome: Outcome | str,
        seconds: float,
        read: int = 0,
        new: int = 0,
        stored: int = 0,
    ) -> None:
        """A backup ended: its outcome, its duration and the bytes it read, found new and
        uploaded (a failed one counts the bytes it moved before it failed, when known)."""
        ops = self._operations
        label = _outcome(outcome, _OPERATION_OUTCOMES)
        ops.backups.labels(label).inc()
        ops.backup_seconds.labels(label).observe(max(seconds, 0.0))
        ops.read.inc(max(read, 0))
        ops.new.inc(max(new, 0))
        ops.stored.inc(max(stored, 0))

    def record_restore(self, outcome: Outcome | str, seconds: float, downloaded: int = 0) -> None:
        """A restore ended: its outcome, its duration and the bytes it downloaded."""
        ops = self._operations
        label = _outcome(outcome, _OPERATION_OUTCOMES)
        ops.restores.labels(label).inc()
        ops.restore_seconds.labels(label).observe(max(seconds, 0.0))
        ops.downloaded.inc(max(downloaded, 0))

    @contextlib.contextmanager
    def inflight(self, kind: str) -> Iterator[None]:
        """Count an operation of `kind` (one of `KINDS`) as running while the block runs."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        gauge = self._operations.in_flight.labels(kind)
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    @contextlib.contextmanager
    def backup_run(self, cancelled: tuple[type[BaseException], ...] = ()) -> Iterator[BackupRun]:
        """One backup, from the block: in flight while it runs; a success when it ends well
        (with what it reported through `BackupRun.ended`), else a failure -- or cancelled for
        Ctrl-C, a stop, or an exception of the `cancelled` types."""
        run = BackupRun()
        started = time.monotonic()
        with self.inflight("backup"):
            try:
                yield run
            except BaseException as e:
                self.record_backup(_stopped(e, cancelled), time.monotonic() - started)
                raise
        seconds = time.monotonic() - started if run.seconds is None else run.seconds
        self.record_backup(Outcome.SUCCESS, seconds, run.read, run.new, run.stored)

    @contextlib.contextmanager
    def restore_run(self, cancelled: tuple[type[BaseException], ...] = ()) -> Iterator[RestoreRun]:
        """One restore, from the block (see `backup_run`)."""
        run = RestoreRun()
        started = time.monotonic()
        with self.inflight("restore"):
            try:
                yield run
            except BaseException as e:
                self.record_restore(_stopped(e, cancelled), time.monotonic() - started)
                raise
        seconds = time.monotonic() - started if run.seconds is None else run.seconds
        self.record_restore(Outcome.SUCCESS, seconds, run.downloaded)

    def record_csi_call(self, method: str, code: str, seconds: float) -> None:
        """A CSI call was answered: its method's short name (`CreateVolume`), the gRPC status
        code's name (`OK`, `INVALID_ARGUMENT`) and how long it took."""
        self._csi.calls.labels(method, code).inc()
        self._csi.seconds.labels(method).observe(max(seconds, 0.0))

    def record_job_run(self, job: str, outcome: Outcome | str, when: float) -> None:
        """A run of the recurring job `job` ended at `when` (seconds since the epoch)."""
        label = _outcome(outcome, _JOB_OUTCOMES)
        jobs = self._jobs
        jobs.runs.labels(job).inc()
        if label == Outcome.FAILURE:
            jobs.failures.labels(job).inc()
            return
        jobs.failures.labels(job)  # the series exists (at 0) once the job has run
        with self._lock:  # never move the timestamp back when two runs end out of order
            latest = max(self._last_success.get(job, when), when)
            self._last_success[job] = latest
            jobs.last_success.labels(job).set(latest)

    # -- exposition ------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the text format Prometheus scrapes, and its content type (the
        OpenMetrics format when `accept`, an HTTP Accept header, asks for it)."""
        if accept is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def names(self) -> set[str]:
        """The name of every metric family in the registry (counters without `_total`)."""
        return {family.name for family in self.registry.collect()}
