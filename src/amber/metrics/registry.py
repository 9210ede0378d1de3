"""The metrics of one Amber process and the helpers that record.

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
from typing import TYPE_CHECKING, Final

from amber.metrics.events import Counter, Family, Gauge, Histogram
from amber.metrics.sources import Sources
from amber.metrics.stats import PoolStats, TargetStats, VolumeStats

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

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

    def __init__(self) -> None:
        self.backups = Counter("amber_backups", "Backups that ended, by outcome.", ("outcome",))
        self.backup_seconds = Histogram(
            "amber_backup_duration_seconds",
            "How long backups took, by outcome.",
            ("outcome",),
            bounds=OPERATION_BUCKETS,
        )
        self.read = Counter(
            "amber_backup_read_bytes",
            "Bytes backups read from snapshots (unchanged chunks are not read).",
        )
        self.new = Counter(
            "amber_backup_new_bytes",
            "Bytes of chunks backups found new to their target (before compression).",
        )
        self.stored = Counter(
            "amber_backup_stored_bytes",
            "Bytes backups uploaded to their targets (compressed, encrypted).",
        )
        self.restores = Counter("amber_restores", "Restores that ended, by outcome.", ("outcome",))
        self.restore_seconds = Histogram(
            "amber_restore_duration_seconds",
            "How long restores took, by outcome.",
            ("outcome",),
            bounds=OPERATION_BUCKETS,
        )
        self.downloaded = Counter(
            "amber_restore_downloaded_bytes", "Bytes restores downloaded from their targets."
        )
        self.in_flight = Gauge(
            "amber_operations_in_flight",
            "Backups, restores and recurring job runs running now, by kind.",
            ("kind",),
        )
        for outcome in _OPERATION_OUTCOMES:  # the counts exist from the start, at 0
            self.backups.touch((outcome.value,))
            self.restores.touch((outcome.value,))
        for counter in (self.read, self.new, self.stored, self.downloaded):
            counter.touch()
        for kind in KINDS:
            self.in_flight.set((kind,), 0.0)


class _Csi:
    def __init__(self) -> None:
        self.calls = Counter(
            "amber_csi_calls",
            "CSI calls answered, by method and gRPC status code.",
            ("method", "code"),
        )
        self.seconds = Histogram(
            "amber_csi_call_duration_seconds",
            "How long CSI calls took to answer, by method.",
            ("method",),
            bounds=CSI_BUCKETS,
        )


class _Jobs:
    def __init__(self) -> None:
        # Not `job`: Prometheus gives every series the scrape job's name under that label.
        self.runs = Counter(
            "amber_job_runs", "Runs of recurring jobs that ended.", ("recurring_job",)
        )
        self.failures = Counter(
            "amber_job_failures", "Runs of recurring jobs that failed.", ("recurring_job",)
        )
        self.last_success = Gauge(
            "amber_job_last_success_timestamp_seconds",
            "When a recurring job last ended well (a run that skipped an unchanged volume "
            "counts), seconds since the epoch.",
            ("recurring_job",),
        )


class Metrics:
    """Every metric of one process.

    The process has one (`amber.metrics.default()`); tests make their own. Recording is plain
    Python; prometheus_client is imported when the metrics are first read (`registry`).
    """

    def __init__(self, *, version: str = "unknown", source_timeout: float = 5.0) -> None:
        self._operations = _Operations()
        self._csi = _Csi()
        self._jobs = _Jobs()
        info = Gauge("amber_build_info", "Always 1; the version of Amber.", ("version",))
        info.set((version,), 1.0)
        self._events: tuple[Family, ...] = (
            *vars(self._operations).values(),
            *vars(self._csi).values(),
            *vars(self._jobs).values(),
            info,
        )
        self._sources = Sources(timeout=source_timeout)
        self._registry: CollectorRegistry | None = None
        self._lock = threading.Lock()

    @property
    def registry(self) -> CollectorRegistry:
        """The prometheus_client registry of these metrics (its own, not the global one)."""
        with self._lock:
            if self._registry is None:
                from amber.metrics.collectors import new_registry

                self._registry = new_registry(self._events, self._sources)
            return self._registry

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
        label = (_outcome(outcome, _OPERATION_OUTCOMES),)
        ops.backups.inc(label)
        ops.backup_seconds.observe(label, max(seconds, 0.0))
        ops.read.inc(amount=max(read, 0))
        ops.new.inc(amount=max(new, 0))
        ops.stored.inc(amount=max(stored, 0))

    def record_restore(self, outcome: Outcome | str, seconds: float, downloaded: int = 0) -> None:
        """A restore ended: its outcome, its duration and the bytes it downloaded."""
        ops = self._operations
        label = (_outcome(outcome, _OPERATION_OUTCOMES),)
        ops.restores.inc(label)
        ops.restore_seconds.observe(label, max(seconds, 0.0))
        ops.downloaded.inc(amount=max(downloaded, 0))

    @contextlib.contextmanager
    def inflight(self, kind: str) -> Iterator[None]:
        """Count an operation of `kind` (one of `KINDS`) as running while the block runs."""
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        gauge = self._operations.in_flight
        gauge.add((kind,), 1.0)
        try:
            yield
        finally:
            gauge.add((kind,), -1.0)

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
        self._csi.calls.inc((method, code))
        self._csi.seconds.observe((method,), max(seconds, 0.0))

    def record_job_run(self, job: str, outcome: Outcome | str, when: float) -> None:
        """A run of the recurring job `job` ended at `when` (seconds since the epoch)."""
        label = _outcome(outcome, _JOB_OUTCOMES)
        jobs = self._jobs
        jobs.runs.inc((job,))
        if label == Outcome.FAILURE:
            jobs.failures.inc((job,))
            return
        jobs.failures.touch((job,))  # the series exists (at 0) once the job has run
        with self._lock:  # never move the timestamp back when two runs end out of order
            latest = max(jobs.last_success.get((job,)) or when, when)
            jobs.last_success.set((job,), latest)

    # -- exposition ------------------------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The metrics in the text format Prometheus scrapes, and its content type (the
        OpenMetrics format when `accept`, an HTTP Accept header, asks for it)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def names(self) -> set[str]:
        """The name of every metric family (counters without `_total`)."""
        return {family.name for family in self.registry.collect()}
