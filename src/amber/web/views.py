"""The view model: every read the pages and the JSON API make, as plain records.

Each function takes the `WebContext` and returns dataclasses (or lists of them); the HTML
templates render them and `/api/...` returns them as JSON (`jsonable`). Nothing here changes
anything. Reads of the pool come from its metadata and one `stat` per image, so a page of a
pool with thousands of volumes and snapshots stays fast (bench/dashboard_bench.py).
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.backup.manifest import HOLE, ZERO, Manifest
from amber.backup.state import BackupState, BaseRecord
from amber.backup.targets import backup_handle
from amber.domain.errors import AmberError
from amber.domain.models import PoolStatus, Snapshot, Volume
from amber.domain.units import format_size
from amber.jobs.executor import Candidate
from amber.jobs.local import labelled_candidates, pool_candidates
from amber.jobs.runner import select_volumes
from amber.jobs.spec import JobSpec, Retention, Task
from amber.jobs.status import JobStatus
from amber.ops.jobs import JOBS_DB, JobStore, UploadState
from amber.system import fs
from amber.web.context import WebContext
from amber.web.operations import Operation, State

RECENT_FAILURES = 10


@dataclass(frozen=True)
class Health:
    """One line of the overview's health list."""

    level: str  # ok, warning, error
    message: str


@dataclass(frozen=True)
class Overview:
    """The overview page."""

    pool: PoolStatus
    used_percent: float
    provisioned_percent: float
    health: list[Health]
    targets: int
    running: int
    failures: list[Operation]
    failed_uploads: list[UploadRow]


@dataclass(frozen=True)
class LastBackup:
    """The newest backup this pool made of a volume (from the engine's base records)."""

    target: str
    backup_id: str
    created: float
    snapshot: str


@dataclass(frozen=True)
class VolumeRow:
    """One volume on the volumes page."""

    name: str
    size: int
    used: int
    mode: str
    fs_type: str | None
    source: str | None
    created: float
    in_use: list[str]
    snapshots: int
    last_backup: LastBackup | None
    schedule: str | None
    resize_pending: bool


@dataclass(frozen=True)
class TimelineEntry:
    """A snapshot or a backup of a volume, in time order."""

    kind: str  # snapshot, backup
    name: str
    created: float
    size: int
    detail: str
    target: str | None = None
    handle: str | None = None


@dataclass(frozen=True)
class VolumeDetail:
    """A volume's page: the volume and its timeline of snapshots and backups."""

    volume: VolumeRow
    timeline: list[TimelineEntry]
    snapshots: list[str]
    problems: list[str]


@dataclass(frozen=True)
class BackupRow:
    """One backup in a target."""

    backup_id: str
    handle: str
    volume: str
    snapshot: str | None
    created: float
    size: int
    data: int
    bytes_new: int
    bytes_stored: int
    tags: list[str]


@dataclass(frozen=True)
class TargetBackups:
    """The backups of a target with what deduplication saved."""

    target: str
    backups: list[BackupRow]
    logical: int
    """Bytes of data the backups describe (holes and zeros left out)."""
    unique: int
    """Bytes of distinct chunks among them (before compression)."""
    stored: int
    """Bytes the backups added to the repository (compressed, encrypted)."""
    error: str | None = None

    @property
    def dedup_ratio(self) -> float | None:
        """How many times deduplication shrank the data (logical / unique)."""
        return self.logical / self.unique if self.unique else None

    @property
    def total_ratio(self) -> float | None:
        """Logical data per stored byte (dedup and compression together)."""
        return self.logical / self.stored if self.stored else None


@dataclass(frozen=True)
class TargetRow:
    """A target with its health, as `amber target status` sees it (no secret)."""

    name: str
    url: str
    encryption: str
    credential: str
    reachable: bool | None
    writable: bool | None
    latency_ms: float | None
    initialized: bool
    backups: int | None
    size_bytes: int | None
    unlocked: bool | None
    error: str | None
    checked: float


@dataclass(frozen=True)
class JobRow:
    """A recurring job with its next and last run (`amber.jobs.status`)."""

    name: str
    task: str
    cron: str
    timezone: str
    selection: str
    """Which volumes: names, labels, groups (or the target, for prune and check)."""
    retain: str
    next_run: float
    running: bool
    last_run: float | None = None
    last_subject: str | None = None
    last_outcome: str | None = None
    last_reason: str | None = None


@dataclass(frozen=True)
class JobsPage:
    """The jobs page: the jobs file, its jobs, or the one line saying why it cannot be read."""

    file: str | None
    jobs: list[JobRow]
    error: str | None = None


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole > 0 else 0.0


def overview(ctx: WebContext) -> Overview:
    """Pool capacity, health, counts and the latest failures."""
    status = ctx.pool.status()
    health: list[Health] = []
    if status.space_problem:
        health.append(Health("error", status.space_problem))
    if not status.reflink:
        health.append(Health("warning", "reflink is off: copies are full sparse copies"))
    if status.provisioned > status.capacity:
        health.append(Health("warning", "volumes are provisioned past the pool's capacity"))
    if not health:
        health.append(Health("ok", "pool is healthy"))
    ops = ctx.operations.list()
    failures = [o for o in ops if o.state is State.FAILED][:RECENT_FAILURES]
    uploads = driver_uploads(ctx)
    return Overview(
        pool=status,
        used_percent=_percent(status.used, status.size),
        provisioned_percent=_percent(status.provisioned, status.capacity),
        health=health,
        targets=len(_targets_or_empty(ctx)),
        running=sum(o.state is State.RUNNING for o in ops)
        + sum(u.state == UploadState.UPLOADING for u in uploads),
        failures=failures,
        failed_uploads=[u for u in uploads if u.state == UploadState.FAILED][:RECENT_FAILURES],
    )


def _targets_or_empty(ctx: WebContext) -> dict[str, Any]:
    try:
        return dict(ctx.targets.load())
    except AmberError:
        return {}


def _last_backups(ctx: WebContext) -> dict[str, LastBackup]:
    """The newest base record per volume (a backup this pool made)."""
    with BackupState(ctx.pool) as state:
        records = state.records()
    newest: dict[str, BaseRecord] = {}
    for r in records:
        if r.volume not in newest or r.created > newest[r.volume].created:
            newest[r.volume] = r
    return {v: LastBackup(r.target, r.backup_id, r.created, r.snapshot) for v, r in newest.items()}


def _schedules(ctx: WebContext, candidates: Callable[[], list[Candidate]]) -> dict[str, str]:
    """Volume name -> the recurring jobs that select it, with their cron, among `candidates`
    (read only when there are jobs; a bad jobs file: none here, the jobs page says why)."""
    try:
        jobs = ctx.jobs.load()
    except AmberError:
        return {}
    if not jobs:
        return {}
    among = candidates()
    found: dict[str, list[str]] = {}
    for job in jobs:
        if not job.task.per_volume:
            continue
        for name in select_volumes(job, among):
            found.setdefault(name, []).append(f"{job.name} ({job.cron} {job.timezone})")
    return {name: ", ".join(schedules) for name, schedules in found.items()}


def _row(
    v: Volume,
    mounts: dict[str, list[str]],
    counts: Counter[str],
    last: dict[str, LastBackup],
    schedules: dict[str, str],
) -> VolumeRow:
    return VolumeRow(
        name=v.name,
        size=v.size,
        used=fs.allocated_bytes(v.image) or 0,
        mode=v.mode.value,
        fs_type=v.fs_type,
        source=f"{v.source_kind.value}:{v.source_name}" if v.source_name else None,
        created=v.created,
        in_use=mounts.get(v.uid, []),
        snapshots=counts[v.name],
        last_backup=last.get(v.name),
        schedule=schedules.get(v.name),
        resize_pending=v.fs_resize_pending,
    )


def _mounts(ctx: WebContext) -> dict[str, list[str]]:
    mounts: dict[str, list[str]] = {}
    for att in ctx.pool.ctx.store.attachments():
        mounts.setdefault(att.object_uid, []).append(str(att.path))
    return mounts


def volumes(ctx: WebContext) -> list[VolumeRow]:
    """Every volume with its size, used bytes, snapshots, last backup and schedule."""
    store = ctx.pool.ctx.store
    counts = Counter(store.snapshot_counts())
    every = store.volumes()

    def candidates() -> list[Candidate]:  # the volumes already read, with their labels
        labels = store.volume_labels()
        return labelled_candidates({v.name: labels.get(v.uid, {}) for v in every})

    mounts, last, schedules = _mounts(ctx), _last_backups(ctx), _schedules(ctx, candidates)
    return [_row(v, mounts, counts, last, schedules) for v in every]


def volume(ctx: WebContext, name: str) -> VolumeDetail:
    """A volume and its timeline: its snapshots and its backups in every target."""
    v = ctx.pool.volumes.get(name)
    snaps = ctx.pool.snapshots.list(name)
    schedules = _schedules(ctx, lambda: pool_candidates(ctx.pool, name))
    row = _row(v, _mounts(ctx), Counter({name: len(snaps)}), _last_backups(ctx), schedules)
    timeline = [_snapshot_entry(s) for s in snaps]
    problems: list[str] = []
    for target in sorted(_targets_or_empty(ctx)):
        found = target_backups(ctx, target, volume=name)
        if found.error:
            problems.append(f"target {target}: {found.error}")
        timeline += [_backup_entry(target, b) for b in found.backups]
    timeline.sort(key=lambda e: e.created, reverse=True)
    return VolumeDetail(row, timeline, [s.name for s in snaps], problems)


def _snapshot_entry(s: Snapshot) -> TimelineEntry:
    return TimelineEntry(
        "snapshot", s.name, s.created, s.size, f"{format_size(s.allocated)} allocated"
    )


def _backup_entry(target: str, b: BackupRow) -> TimelineEntry:
    return TimelineEntry(
        "backup",
        b.backup_id,
        b.created,
        b.size,
        f"of {b.snapshot or '?'}: {format_size(b.bytes_new)} new, "
        f"{format_size(b.bytes_stored)} stored",
        target=target,
        handle=b.handle,
    )


def _backup_row(target: str, m: Manifest) -> BackupRow:
    data = sum(1 for c in m.chunk_map if c not in (ZERO, HOLE)) * m.chunk_size
    # Patches over zero or hole chunks add data; those over data chunks replace some.
    data += sum(
        p.length for p in m.patches if m.chunk_map[p.offset // m.chunk_size] in (ZERO, HOLE)
    )
    return BackupRow(
        backup_id=m.backup_id,
        handle=backup_handle(target, m.backup_id),
        volume=m.volume_name,
        snapshot=m.source_snapshot,
        created=m.created,
        size=m.volume_size,
        data=data,
        bytes_new=m.stats.bytes_new,
        bytes_stored=m.stats.bytes_stored,
        tags=list(m.tags),
    )


def target_backups(ctx: WebContext, target: str, *, volume: str | None = None) -> TargetBackups:
    """The backups in a target (newest first) with logical, unique and stored bytes."""
    try:
        manifests = ctx.read_repository(target).load_manifests()
    except AmberError as e:
        return TargetBackups(target, [], 0, 0, 0, error=e.message)
    manifests = [m for m in manifests if volume in (None, m.volume_name)]
    distinct: set[bytes] = set()
    patch_chunks: dict[bytes, int] = {}  # a patch's chunk holds only the bytes it patched
    chunk_size = 0
    for m in manifests:
        distinct.update(c for c in m.chunk_map if isinstance(c, bytes))
        for p in m.patches:
            patch_chunks[p.chunk_id] = max(
                patch_chunks.get(p.chunk_id, 0), p.chunk_offset + p.length
            )
        chunk_size = m.chunk_size
    rows = [_backup_row(target, m) for m in manifests]
    rows.sort(key=lambda r: r.created, reverse=True)
    return TargetBackups(
        target,
        rows,
        logical=sum(r.data for r in rows),
        unique=len(distinct) * chunk_size
        + sum(n for c, n in patch_chunks.items() if c not in distinct),
        stored=sum(r.bytes_stored for r in rows),
    )


def targets(ctx: WebContext, *, refresh: bool = False) -> list[TargetRow]:
    """Every target with its health (reachable, writable, latency, repository), as checked
    at most `health_ttl` seconds ago (or now, with `refresh`)."""
    rows = []
    for name, target in sorted(ctx.targets.load().items()):
        public = target.public()
        checked, status = ctx.target_health(target, refresh=refresh)
        rows.append(
            TargetRow(
                name=name,
                url=public["url"],
                encryption=public["encryption"],
                credential=public["credential"],
                reachable=status.reachable,
                writable=status.writable,
                latency_ms=status.latency_ms,
                initialized=status.initialized,
                backups=status.backups,
                size_bytes=status.size_bytes,
                unlocked=status.unlocked,
                error=status.error,
                checked=checked,
            )
        )
    return rows


def jobs(ctx: WebContext) -> JobsPage:
    """The recurring jobs of the dashboard's jobs file with their next and last run."""
    engine = ctx.jobs
    file = None if engine.jobs_file is None else str(engine.jobs_file)
    try:
        specs = engine.load()
        if not specs:  # no job records opened (nor made) for nothing
            return JobsPage(file, [])
        statuses = engine.statuses(specs)
    except AmberError as e:
        return JobsPage(file, [], error=e.message)
    scheduler = engine.scheduler()
    return JobsPage(file, [_job_row(s, scheduler.running(s.job.name)) for s in statuses])


def _job_row(status: JobStatus, running: bool) -> JobRow:
    job, last = status.job, status.last_run
    return JobRow(
        name=job.name,
        task=job.task.value,
        cron=job.cron,
        timezone=job.timezone,
        selection=_selection(job),
        retain=_retention(job),
        next_run=status.next_run.timestamp(),
        running=running,
        last_run=None if last is None else last.start,
        last_subject=None if last is None else last.subject,
        last_outcome=None if last is None else last.outcome.value,
        last_reason=None if last is None else last.reason,
    )


def _selection(job: JobSpec) -> str:
    if not job.task.per_volume:
        return f"target {job.target}"
    chosen = job.selection
    parts = []
    if chosen.volumes:
        parts.append("volumes " + ", ".join(chosen.volumes))
    if chosen.match_labels:
        parts.append("labels " + ", ".join(f"{k}={v}" for k, v in chosen.match_labels))
    if chosen.groups:
        parts.append("groups " + ", ".join(chosen.groups))
    text = "; ".join(parts)
    return f"{text} -> target {job.target}" if job.target else text


def _policy(retention: Retention) -> str:
    keep = retention.keep
    parts = [f"last {retention.retain}"] if retention.retain else []
    parts += [
        f"{n} {period}"
        for period, n in (
            ("hourly", keep.hourly),
            ("daily", keep.daily),
            ("weekly", keep.weekly),
            ("monthly", keep.monthly),
            ("yearly", keep.yearly),
        )
        if n
    ]
    return ", ".join(parts) or "-"


def _retention(job: JobSpec) -> str:
    if not job.task.retains:
        return "-"
    if job.task is Task.BACKUP:
        return f"backups: {_policy(job.retention)}; snapshots: {_policy(job.local_retention)}"
    return _policy(job.retention)


def operations(ctx: WebContext) -> list[Operation]:
    """The dashboard's background operations, newest first."""
    return ctx.operations.list()


@dataclass(frozen=True)
class UploadRow:
    """A backup snapshot the CSI driver of this node uploads (or failed to)."""

    name: str
    volume: str
    target: str
    state: str
    created: float
    attempts: int
    backup_id: str | None
    error: str | None


def driver_uploads(ctx: WebContext) -> list[UploadRow]:
    """The CSI driver's backup snapshots that are uploading or failed, newest first (none
    when the driver never made one in this pool)."""
    if not (ctx.pool.root / JOBS_DB).exists():
        return []
    store = JobStore(ctx.pool.root)
    try:
        jobs = store.jobs()
    finally:
        store.close()
    shown = [j for j in jobs if j.state in (UploadState.UPLOADING, UploadState.FAILED)]
    shown.sort(key=lambda j: j.created, reverse=True)
    return [
        UploadRow(
            j.name, j.volume, j.target, j.state.value, j.created, j.attempts, j.backup_id, j.error
        )
        for j in shown
    ]


def jsonable(value: Any) -> Any:
    """A view record as JSON-ready data (dataclasses, enums, paths, nested)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for prop in ("percent", "dedup_ratio", "total_ratio"):
            if hasattr(type(value), prop):
                out[prop] = getattr(value, prop)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
