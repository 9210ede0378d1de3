"""Everything the dashboard changes, in one module: the engine calls behind each button.

Form fields arrive as strings and are checked with the CLI's rules (`amber.domain` names and
sizes) before anything is made; errors are `AmberError`s with one human line. Quick actions
return that line; backups and restores start a background operation (`amber.web.operations`)
and return its record. Backup operations go through the operations layer (`amber.ops.backups`)
with the same rules as the CLI and the CSI driver (e.g. a backup being restored anywhere is
not deleted); pool operations call the pool as the CLI does.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from amber.backup.handles import resolve_backup_id
from amber.backup.progress import Progress
from amber.backup.repository import Repository
from amber.backup.state import forget_volume_bases
from amber.domain.errors import FailedPrecondition, InvalidArgument
from amber.domain.models import Snapshot, SourceKind, Volume
from amber.domain.names import validate_name
from amber.domain.units import format_size, parse_size
from amber.jobs.local import pool_candidates
from amber.jobs.records import RunOutcome, RunRecord
from amber.jobs.runner import select_volumes
from amber.ops.backups import Operations, snapshot_to_back_up
from amber.pool import VolumeRequest
from amber.web.context import WebContext
from amber.web.operations import Operation


@dataclass(frozen=True)
class Done:
    """A finished quick action: what to tell the user, and which page shows the result."""

    message: str
    location: str


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _size(text: str | None, what: str) -> int | None:
    """An optional size field: None when empty, else the CLI's size rules."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return parse_size(text)
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: {e.message}") from e


def _required(text: str | None, what: str) -> str:
    value = (text or "").strip()
    if not value:
        raise InvalidArgument(f"{what} is required")
    return value


def snapshot_now(ctx: WebContext, volume: str, name: str | None = None) -> Done:
    """Take a snapshot of `volume` (named `VOLUME-YYYYmmdd-HHMMSS` unless given)."""
    validate_name("volume", volume)
    snap = (name or "").strip() or f"{volume[:84]}-{_stamp()}"
    validate_name("snapshot", snap)
    ctx.pool.snapshots.create(volume, snap)
    return Done(f"snapshot {snap} of {volume} taken", f"/volumes/{volume}")


def _ops(ctx: WebContext) -> Operations:
    """The operations layer over the dashboard's pool and targets (one per action: its
    repositories live as long as the action)."""

    def open_repository(target: str, *, create: bool = False) -> Repository:
        return ctx.repository(target, create=create)

    return Operations(ctx.pool, open_repository, failpoint=ctx.failpoint)


def backup_now(
    ctx: WebContext, target: str, *, volume: str | None = None, snapshot: str | None = None
) -> Operation:
    """Back up a snapshot, or a new snapshot of a volume, to `target` in the background."""
    target = _required(target, "target")
    ctx.target(target)  # NotFound names the known targets, before anything is made
    if (volume is None) == (snapshot is None):
        raise InvalidArgument("back up either a volume or a snapshot")
    if volume is not None:  # the snapshot is taken now: the backup is of this moment
        snapshot = snapshot_to_back_up(ctx.pool, validate_name("volume", volume), take=True)
    assert snapshot is not None
    validate_name("snapshot", snapshot)
    source = ctx.pool.snapshots.get(snapshot)
    chosen = snapshot

    def work(progress: Progress) -> str:
        report = _ops(ctx).create_backup(chosen, target, progress=progress)
        return (
            f"backup {report.backup_id} of {chosen}: {format_size(report.bytes_read)} read, "
            f"{format_size(report.bytes_stored)} stored"
        )

    return ctx.operations.start(
        "backup", f"back up {chosen} (volume {source.volume_name}) to {target}", work
    )


def restore_snapshot(ctx: WebContext, snapshot: str, volume: str, size: str | None) -> Done:
    """A new volume with the snapshot's data (instant reflink copy; larger size allowed)."""
    validate_name("snapshot", snapshot)
    validate_name("volume", _required(volume, "new volume name"))
    _copy(ctx, ctx.pool.snapshots.get(snapshot), SourceKind.SNAPSHOT, volume, size)
    return Done(f"volume {volume} restored from snapshot {snapshot}", f"/volumes/{volume}")


def restore_backup(
    ctx: WebContext, target: str, backup: str, volume: str, size: str | None
) -> Operation:
    """Restore a backup (id, unique prefix or `latest`) into a new volume, in the background."""
    from amber.backup.restorer import describe_damage

    target = _required(target, "target")
    validate_name("volume", _required(volume, "new volume name"))
    nbytes = _size(size, "size")
    if ctx.pool.volumes.find(volume) is not None:
        raise FailedPrecondition(f"volume {volume} already exists: choose another name")
    ops = _ops(ctx)
    repo = ops.repository(target)
    backup_id = resolve_backup_id(repo, _required(backup, "backup"), where=f"target {target!r}")

    def work(progress: Progress) -> str:
        report = ops.restore_backup(target, backup_id, volume, size=nbytes, progress=progress)
        if report.damaged:
            return f"volume {volume} restored INCOMPLETE: {describe_damage(report.damaged)}"
        return f"volume {volume} restored from backup {backup_id} (every chunk verified)"

    return ctx.operations.start(
        "restore", f"restore backup {backup_id[:12]} from {target} into {volume}", work
    )


def clone(ctx: WebContext, volume: str, new: str, size: str | None) -> Done:
    """An instant copy of a volume into a new one."""
    validate_name("volume", volume)
    validate_name("volume", _required(new, "new volume name"))
    _copy(ctx, ctx.pool.volumes.get(volume), SourceKind.VOLUME, new, size)
    return Done(f"volume {new} cloned from {volume}", f"/volumes/{new}")


def _copy(
    ctx: WebContext, source: Volume | Snapshot, kind: SourceKind, new: str, size: str | None
) -> None:
    """A new volume as an instant reflink copy of `source` (its size unless a larger is given)."""
    nbytes = _size(size, "size") or source.size
    request = VolumeRequest(new, nbytes, source.mode, source.fs_type, kind, source.name)
    ctx.pool.volumes.create(request)


def expand(ctx: WebContext, volume: str, size: str) -> Done:
    """Grow a volume (online when mounted)."""
    validate_name("volume", volume)
    nbytes = _size(_required(size, "new size"), "new size")
    assert nbytes is not None
    grown = ctx.pool.volumes.expand(volume, nbytes)
    note = "; its filesystem grows at its next mount" if grown.fs_resize_pending else ""
    return Done(f"volume {volume} is now {format_size(grown.size)}{note}", f"/volumes/{volume}")


def delete_volume(ctx: WebContext, volume: str) -> Done:
    """Delete a volume that is not in use; its snapshots and backups stay."""
    validate_name("volume", volume)
    ctx.pool.volumes.delete(volume)
    forget_volume_bases(ctx.pool, volume)
    return Done(f"volume {volume} deleted (its snapshots and backups stay)", "/volumes")


def delete_snapshot(ctx: WebContext, snapshot: str) -> Done:
    """Delete a snapshot."""
    validate_name("snapshot", snapshot)
    volume = ctx.pool.snapshots.get(snapshot).volume_name
    ctx.pool.snapshots.delete(snapshot)
    location = f"/volumes/{volume}" if ctx.pool.volumes.find(volume) else "/volumes"
    return Done(f"snapshot {snapshot} deleted", location)


def delete_backup(ctx: WebContext, target: str, backup: str) -> Done:
    """Delete one backup from a target (refused while it is being restored anywhere); its data
    goes at the target's next prune."""
    target = _required(target, "target")
    ops = _ops(ctx)
    repo = ops.repository(target)
    backup_id = resolve_backup_id(repo, _required(backup, "backup"), where=f"target {target!r}")
    manifest = ops.delete_backup(target, backup_id)
    location = f"/volumes/{manifest.volume_name}"
    if ctx.pool.volumes.find(manifest.volume_name) is None:
        location = "/backups"
    return Done(f"backup {backup_id} deleted from {target}; prune frees its data", location)


def run_job(ctx: WebContext, name: str) -> Operation:
    """Run a recurring job of the jobs file now, in the background (what `amber job run-now`
    does; refused while the job runs already)."""
    engine = ctx.jobs
    job = engine.find(_required(name, "job"))
    subjects = len(select_volumes(job, pool_candidates(ctx.pool))) if job.task.per_volume else 1
    # The engine's per-job rule (across processes), held from here: refused at once (409).
    claim = engine.scheduler().claim(job)

    def work(progress: Progress) -> str:
        try:
            progress.phase("volumes" if job.task.per_volume else "targets", subjects, unit="runs")
            done = engine.run_now(job, lambda _record: progress.advance(1), claim=claim)
        finally:
            claim.release()  # (released already by the run, unless the phase failed)
        return _job_result(job.name, done)

    try:
        return ctx.operations.start("job", f"run job {job.name} ({job.task.value}) now", work)
    except BaseException:
        claim.release()
        raise


def _job_result(job: str, done: list[RunRecord]) -> str:
    """One line for a job's run; FailedPrecondition (the operation fails) when a subject failed."""
    if not done:
        return f"job {job} selects no volume"
    outcomes = Counter(r.outcome.value for r in done)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
    created = [c for r in done for c in r.created]
    line = f"job {job}: {summary}" + (f"; created {', '.join(created)}" if created else "")
    failed = [r for r in done if r.outcome is RunOutcome.FAILED]
    if failed:
        raise FailedPrecondition(f"{line}; {failed[0].subject}: {failed[0].reason}")
    return line
