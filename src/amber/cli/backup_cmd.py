"""`amber backup`: back snapshots up to a target, restore them anywhere, list, prune, check.

A backup is named by its id (32 hex digits) together with a target, or by a self-describing
handle `amber:v1:backup:<target>:<id>` (what a CSI snapshot id will carry). Progress bars go to
stderr when it is a terminal and the output is not JSON; the engine only sees callbacks.

No `from __future__ import annotations` here, unlike elsewhere: typer reads every subcommand's
signature when `amber backup ...` starts, and string annotations make it compile and evaluate
each one (`typing.get_type_hints`), 15-40 ms of a cold `backup create` that lasts ~0.4 s.
"""

import contextlib
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from amber.backup.backuper import SYSTEM_LABEL_PREFIX
from amber.backup.handles import LATEST, check_key, parse_backup_name, resolve_backup_id
from amber.backup.locks import DEFAULT_GRACE_SECONDS
from amber.backup.manifest import HOLE, ZERO, Manifest
from amber.backup.progress import NullProgress, Progress, interrupted_backup
from amber.backup.repository import Repository
from amber.backup.state import BackupState
from amber.backup.targets import Target, TargetRuntime, backup_handle
from amber.blobstore.retry import RetryWait
from amber.cli import output
from amber.cli.durations import Duration
from amber.cli.numbers import percent
from amber.cli.state import CliState, key_values, state
from amber.cli.target_cmd import ConfigOption, remember_config, runtime_for, targets_config
from amber.domain.errors import Corrupt, InvalidArgument, NotFound
from amber.domain.units import format_size, parse_size
from amber.ops.backups import Operations, check_policy, snapshot_to_back_up
from amber.pool import Pool

if TYPE_CHECKING:
    from amber.backup.check import CheckResult
    from amber.backup.gc import PruneResult

# `check`, `restorer`, `gc` and `retention` are imported by the commands that run them: every
# command pays for the modules imported here, and an incremental backup's own work is shorter
# than the imports.

app = typer.Typer(
    help="Back up snapshots to a target, restore backups into new volumes, list, prune, check.",
    no_args_is_help=True,
)

TargetOption = Annotated[
    str | None,
    typer.Option("--target", "-t", help="Backup target (default: the only one configured)."),
]
MaybeTarget = Annotated[
    str | None, typer.Option("--target", "-t", help="Backup target (not needed with a handle).")
]


@app.callback()
def group(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Backups."""
    remember_config(ctx, config)


M_ARENA_MAX = -8  # glibc <malloc.h>


def _one_malloc_arena() -> None:
    """Process tuning at start-up, before the engine starts threads: glibc gives every thread
    its own malloc arena, and freed 1 MiB chunk buffers then linger in each of them. One arena
    (the GIL serializes allocations anyway) lowered the peak RSS of a full backup by ~20 MB at
    no measurable CPU cost (docs/backup.md, Benchmarks). A libc without mallopt is left alone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)


def _progress(st: CliState) -> Progress:
    if st.json or not sys.stderr.isatty():
        return NullProgress()
    from amber.cli.bars import BarProgress  # rich only for a terminal

    return BarProgress(output.err_console())


# -- helpers ----------------------------------------------------------------------------------


BACKUP_HELP = "Backup id, unique id prefix, 'latest', or handle."
VolumeOption = Annotated[
    str | None, typer.Option("--volume", help=f"With {LATEST!r}: the newest backup of this volume.")
]


def _open_backup(
    ctx: typer.Context, ops: Operations, ref: str, target: str | None, volume: str | None = None
) -> tuple[str, str, Repository]:
    """(target, backup id, repository) of a backup named by id, unique id prefix, `latest`,
    handle or CSI snapshot ID; a snapshot ID by key counts only if the manifest under its id
    carries that key."""
    name = parse_backup_name(ref, target)
    if volume is not None and name.backup_id != LATEST:
        raise InvalidArgument(f"--volume goes with {LATEST!r}, not with a backup id")
    named = _target_name(ctx, name.target, ref)
    repo = ops.repository(named)
    if name.key is not None:
        check_key(repo.load_manifest(name.backup_id), name)
        return named, name.backup_id, repo
    backup_id = resolve_backup_id(repo, name.backup_id, volume=volume, where=f"target {named!r}")
    return named, backup_id, repo


def _target_name(ctx: typer.Context, given: str | None, ref: str | None = None) -> str:
    """The target given, or the only target there is."""
    if given is not None:
        return given
    config = targets_config(ctx)
    known = sorted(config.load())
    if len(known) == 1:
        return known[0]
    what = f"backup {ref!r}: say which target holds it" if ref else "say which target to use"
    hint = " with --target, or give its handle (amber:v1:backup:TARGET:ID)" if ref else ""
    count = "no targets are" if not known else f"{len(known)} targets are"
    raise InvalidArgument(f"{what}{hint or ' with --target'} ({count} configured in {config.path})")


def _operations(ctx: typer.Context, pool: Pool | None = None) -> Operations:
    """The backup operations of this command (`amber.ops.backups`: the rules every edge
    follows) on the targets of the targets file, with status lines while a target is out and
    the password of a target that asks for one."""

    def runtime(target: Target) -> TargetRuntime:
        waiting = TargetRuntime.for_commands(os.environ, on_retry=RetryNotices(target.name))
        return runtime_for(target, waiting)

    return Operations.on_targets_file(
        pool, targets_config(ctx).path, runtime_for=runtime, failpoint=state(ctx).failpoint()
    )


def _pool_if_any(st: CliState) -> Pool | None:
    """The pool, or None on a machine that has none (deleting a backup needs no pool)."""
    try:
        return st.open_pool()
    except NotFound:
        return None


class RetryNotices:
    """Status lines on stderr while a target is out (at most one a second): a long outage
    must not look like a hang."""

    def __init__(self, target: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._clock = clock
        self._last: float | None = None
        self._mutex = threading.Lock()

    def __call__(self, wait: RetryWait) -> None:
        with self._mutex:
            now = self._clock()
            if self._last is not None and now - self._last < 1.0:
                return
            self._last = now
        budget = f" of the {wait.budget:.0f} s retry budget" if wait.budget else ""
        sys.stderr.write(
            f"waiting for target {self._target}: {wait.message}; retrying in {wait.delay:.1f} s "
            f"({wait.waited:.0f} s{budget} used)\n"
        )
        sys.stderr.flush()


def _summary(target: str, m: Manifest) -> dict[str, Any]:
    return {
        "backup_id": m.backup_id,
        "handle": backup_handle(target, m.backup_id),
        "target": target,
        "volume": m.volume_name,
        "snapshot": m.source_snapshot,
        "created": m.created,
        "size": m.volume_size,
        "parent_id": m.parent_id,
        "bytes_read": m.stats.bytes_read,
        "bytes_new": m.stats.bytes_new,
        "bytes_stored": m.stats.bytes_stored,
        "duration_seconds": m.stats.duration_seconds,
        "labels": {k: v for k, v in m.labels.items() if not k.startswith(SYSTEM_LABEL_PREFIX)},
        "tags": list(m.tags),
    }


# -- create and restore -----------------------------------------------------------------------


@app.command("create")
def create(
    ctx: typer.Context,
    snapshot: Annotated[
        str, typer.Argument(help="The pool snapshot to back up (with --snapshot: a volume).")
    ],
    given: TargetOption = None,
    take_snapshot: Annotated[
        bool,
        typer.Option(
            "--snapshot",
            help="SNAPSHOT names a volume: snapshot it now (kept in the pool) and back that up.",
        ),
    ] = False,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="KEY=VALUE label (repeatable).")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Read every chunk (ignore the extent map).")
    ] = False,
) -> None:
    """Back up SNAPSHOT: only chunks changed since the last backup to TARGET are read."""
    target = _target_name(ctx, given)
    _one_malloc_arena()
    st = state(ctx)
    pool = st.open_pool()
    labels = key_values(label, "--label")
    snapshot = snapshot_to_back_up(pool, snapshot, take=take_snapshot)
    try:
        report = _operations(ctx, pool).create_backup(
            snapshot, target, labels=labels, tags=tag or [], full=full, progress=_progress(st)
        )
    except KeyboardInterrupt:
        output.err_console().print(interrupted_backup(snapshot, target), soft_wrap=True)
        raise
    handle = backup_handle(target, report.backup_id)
    if st.json:
        output.print_json({**output.to_jsonable(report), "handle": handle})
        return
    rows = [
        ("backup", report.backup_id),
        ("handle", handle),
        ("volume", f"{report.volume} ({format_size(report.size)})"),
        ("snapshot", report.snapshot),
        (
            "change detection",
            report.mode + (f" ({report.fallback_reason})" if report.fallback_reason else ""),
        ),
        (
            "chunks",
            f"{report.chunks_total}: {report.chunks_unchanged} unchanged (not read), "
            f"{report.chunks_read} read, {report.chunks_patched} patched (changed bytes "
            f"read), {report.chunks_hole} holes; {report.patches} patches",
        ),
        ("read", format_size(report.bytes_read)),
        ("new", f"{format_size(report.bytes_new)} in {report.chunks_new} chunks"),
        ("stored", format_size(report.bytes_stored)),
        ("duration", f"{report.duration_seconds:.2f} s"),
    ]
    output.console().print(output.details(f"Backup of {report.snapshot}", rows))


@app.command("restore")
def restore(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help=BACKUP_HELP)],
    volume: Annotated[str, typer.Argument(help="Name of the new volume.")],
    target: MaybeTarget = None,
    volume_of: VolumeOption = None,
    size: Annotated[
        str | None, typer.Option("--size", help="Size of the new volume (default: as backed up).")
    ] = None,
    allow_partial: Annotated[
        bool,
        typer.Option("--allow-partial", help="Restore what is intact; damaged ranges stay zero."),
    ] = False,
) -> None:
    """Restore a backup into a new volume (on any machine that has the target)."""
    from amber.backup.restorer import describe_damage

    _one_malloc_arena()
    st = state(ctx)
    wanted = parse_size(size) if size else None
    ops = _operations(ctx)
    named, backup_id, _ = _open_backup(ctx, ops, backup, target, volume_of)
    ops.pool = st.open_pool()
    report = ops.restore_backup(
        named,
        backup_id,
        volume,
        size=wanted,
        allow_partial=allow_partial,
        progress=_progress(st),
    )
    if st.json:
        output.print_json({**output.to_jsonable(report), "complete": report.complete})
    else:
        rows = [
            ("backup", report.backup_id),
            ("volume", f"{report.volume} ({format_size(report.size)})"),
            ("written", f"{format_size(report.bytes_written)} in {report.chunks_written} chunks"),
            ("sparse", f"{report.chunks_sparse} chunks (holes and zeros, not written)"),
            ("downloaded", format_size(report.bytes_downloaded)),
            ("duration", f"{report.duration_seconds:.2f} s"),
        ]
        rows += [("LOST", f"bytes {r.start}-{r.end}: {r.reason}") for r in report.damaged]
        output.console().print(output.details(f"Restore of {report.backup_id}", rows))
    if report.damaged:
        raise Corrupt(
            f"volume {volume} was restored INCOMPLETE: {describe_damage(report.damaged)} are zero"
        )


# -- listing ----------------------------------------------------------------------------------


@app.command("list")
def list_(
    ctx: typer.Context,
    given: TargetOption = None,
    volume: Annotated[str | None, typer.Option("--volume", help="Only this volume.")] = None,
) -> None:
    """Backups in a target, oldest first."""
    target = _target_name(ctx, given)
    st = state(ctx)
    manifests = _operations(ctx).repository(target).load_manifests()
    rows = [_summary(target, m) for m in manifests if volume in (None, m.volume_name)]
    if st.json:
        output.print_json(rows)
        return
    table = output.new_table(title=f"Backups in {target}", title_justify="left")
    for column in ("ID", "VOLUME", "CREATED", "SIZE", "NEW", "STORED", "TAGS", "HANDLE"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["backup_id"],
            r["volume"],
            output.when(r["created"]),
            format_size(r["size"]),
            format_size(r["bytes_new"]),
            format_size(r["bytes_stored"]),
            ",".join(r["tags"]) or "-",
            r["handle"],
        )
    output.console().print(output.fit(table, "ID", "VOLUME", "HANDLE"))


@app.command("show")
def show(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help=BACKUP_HELP)],
    target: MaybeTarget = None,
    volume: VolumeOption = None,
) -> None:
    """One backup in detail."""
    st = state(ctx)
    name, backup_id, repo = _open_backup(ctx, _operations(ctx), backup, target, volume)
    manifest = repo.load_manifest(backup_id)
    summary = _summary(name, manifest)
    chunks = manifest.chunk_map
    summary["chunks"] = {
        "total": len(chunks),
        "data": sum(isinstance(c, bytes) for c in chunks),
        "distinct": len(manifest.chunk_ids()),
        "zero": sum(c == ZERO for c in chunks),
        "hole": sum(c == HOLE for c in chunks),
    }
    summary["patches"] = {
        "count": len(manifest.patches),
        "bytes": sum(p.length for p in manifest.patches),
    }
    summary["system_labels"] = {
        k: v for k, v in manifest.labels.items() if k.startswith(SYSTEM_LABEL_PREFIX)
    }
    if st.json:
        output.print_json(summary)
        return
    counts = summary["chunks"]
    rows = [
        ("backup", backup_id),
        ("handle", summary["handle"]),
        ("volume", f"{manifest.volume_name} ({format_size(manifest.volume_size)})"),
        ("snapshot", manifest.source_snapshot or "-"),
        ("created", output.when(manifest.created)),
        ("parent", manifest.parent_id or "-"),
        (
            "chunks",
            f"{counts['total']}: {counts['data']} data ({counts['distinct']} distinct), "
            f"{counts['zero']} zero, {counts['hole']} holes",
        ),
        (
            "patches",
            f"{summary['patches']['count']} ({format_size(summary['patches']['bytes'])})",
        ),
        ("read", format_size(manifest.stats.bytes_read)),
        ("new", format_size(manifest.stats.bytes_new)),
        ("stored", format_size(manifest.stats.bytes_stored)),
        ("duration", f"{manifest.stats.duration_seconds:.2f} s"),
        ("labels", ", ".join(f"{k}={v}" for k, v in summary["labels"].items()) or "-"),
        ("tags", ", ".join(manifest.tags) or "-"),
        ("system labels", ", ".join(f"{k}={v}" for k, v in summary["system_labels"].items())),
    ]
    output.console().print(output.details(f"Backup {backup_id}", rows))


@app.command("delete")
def delete(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help=BACKUP_HELP)],
    target: MaybeTarget = None,
    volume: VolumeOption = None,
) -> None:
    """Delete one backup; its data goes at the next prune (if no other backup uses it).

    Refused while a restore of it runs (on any machine that uses the target)."""
    st = state(ctx)
    ops = _operations(ctx)
    name, backup_id, _ = _open_backup(ctx, ops, backup, target, volume)
    ops.pool = _pool_if_any(st)
    ops.delete_backup(name, backup_id)
    if st.json:
        output.print_json({"deleted": backup_id, "target": name})
    else:
        output.console().print(f"Backup {backup_id} deleted from {name}; prune frees its data.")


# -- prune and check --------------------------------------------------------------------------


@app.command("prune")
def prune_(
    ctx: typer.Context,
    given: TargetOption = None,
    keep_last: Annotated[int, typer.Option("--keep-last", help="Keep the N newest.")] = 0,
    keep_hourly: Annotated[int, typer.Option("--keep-hourly", help="Keep N hourly.")] = 0,
    keep_daily: Annotated[int, typer.Option("--keep-daily", help="Keep N daily.")] = 0,
    keep_weekly: Annotated[int, typer.Option("--keep-weekly", help="Keep N weekly.")] = 0,
    keep_monthly: Annotated[int, typer.Option("--keep-monthly", help="Keep N monthly.")] = 0,
    keep_yearly: Annotated[int, typer.Option("--keep-yearly", help="Keep N yearly.")] = 0,
    keep_tag: Annotated[
        list[str] | None, typer.Option("--keep-tag", help="Always keep backups with this tag.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would go.")] = False,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            click_type=Duration(),
            help="Never delete packs younger than this (90s, 1h, 7d; a bare number: seconds).",
        ),
    ] = DEFAULT_GRACE_SECONDS,
) -> None:
    """Forget backups by policy (per volume), then delete the data no kept backup uses."""
    target = _target_name(ctx, given)
    st = state(ctx)
    from amber.backup.retention import RetentionPolicy  # only prune pays for gc and retention

    policy = RetentionPolicy(
        keep_last=keep_last,
        keep_hourly=keep_hourly,
        keep_daily=keep_daily,
        keep_weekly=keep_weekly,
        keep_monthly=keep_monthly,
        keep_yearly=keep_yearly,
        keep_tags=frozenset(keep_tag or []),
    )
    check_policy(policy)
    progress = _progress(st)
    try:
        result = _operations(ctx).prune(
            target, policy, dry_run=dry_run, grace=grace, progress=progress
        )
    finally:
        progress.done()
    _print_prune(st, target, result)


def _print_prune(st: CliState, target: str, result: "PruneResult") -> None:
    if st.json:
        output.print_json(result)
        return
    verb = "would be" if result.dry_run else "were"
    table = output.new_table(title=f"Prune of {target}" + (" (dry run)" if result.dry_run else ""))
    table.add_column("BACKUP")
    table.add_column("DECISION")
    for backup_id, reason in sorted(result.kept_backups.items()):
        table.add_row(backup_id, f"keep: {reason}")
    for backup_id in result.removed_backups:
        table.add_row(backup_id, "remove")
    output.console().print(output.fit(table, "BACKUP"))
    output.console().print(
        f"{len(result.removed_backups)} backup(s) and {len(result.deleted_packs)} pack(s) {verb} "
        f"removed, freeing {format_size(result.freed_bytes)}; {len(result.protected_packs)} "
        f"unused pack(s) kept (young or written while a backup runs); "
        f"{format_size(result.reclaimable_bytes)} more sit in partly used packs; "
        f"{len(result.leftovers_removed)} leftover temporary file(s) of interrupted uploads "
        f"{verb} removed ({format_size(result.leftover_bytes)})."
    )


@app.command("check")
def check_(
    ctx: typer.Context,
    given: TargetOption = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also download and verify every byte.")
    ] = False,
    subset: Annotated[
        float,
        typer.Option(
            "--subset",
            callback=percent,
            help="With --read-data: percentage of packs to read.",
        ),
    ] = 100.0,
) -> None:
    """Verify the repository's structure (and with --read-data, its data)."""
    target = _target_name(ctx, given)
    st = state(ctx)
    progress = _progress(st)
    try:
        result = _operations(ctx).check(
            target, read_data=read_data, subset=subset, progress=progress
        )
    finally:
        progress.done()
    _print_check(st, target, result)
    if not result.ok:
        raise Corrupt(
            f"check of target {target!r} found {len(result.errors)} error(s) in "
            f"{len(result.damaged_backups())} backup(s)"
        )


def _print_check(st: CliState, target: str, result: "CheckResult") -> None:
    if st.json:
        output.print_json({**output.to_jsonable(result), "ok": result.ok})
        return
    for problem in result.problems:
        output.console().print(f"{problem.severity}: {problem.message}", markup=False)
    output.console().print(
        f"{target}: {result.backups_checked} backup(s), {result.packs_checked} pack(s) checked, "
        f"{result.packs_read} read, {result.chunks_verified} chunk(s) verified: "
        f"{len(result.errors)} error(s), {len(result.warnings)} warning(s)"
    )


@app.command("repair")
def repair_(ctx: typer.Context, given: TargetOption = None) -> None:
    """Rebuild the index from the pack headers; adopt or remove what killed backups left.

    Use it after `check` reports a damaged or missing index object. Takes the exclusive lock.
    """
    target = _target_name(ctx, given)
    from amber.cli.backup_repair_cmd import run_repair

    run_repair(state(ctx), target, _operations(ctx), _progress(state(ctx)))


@app.command("unlock")
def unlock_(
    ctx: typer.Context,
    given: TargetOption = None,
    lock_id: Annotated[
        list[str] | None,
        typer.Argument(help="Locks to remove (ids or locks/<id>), whatever their state."),
    ] = None,
    remove_all: Annotated[
        bool,
        typer.Option("--remove-all", help="Remove every lock (only when no amber runs)."),
    ] = False,
) -> None:
    """Remove repository locks: stale ones, named ones, or (--remove-all) every lock.

    Without arguments: expired locks and locks of dead processes of this host. Name a lock
    (e.g. the unreadable one an error or `check` names) to remove it whatever its state.
    """
    target = _target_name(ctx, given)
    from amber.cli.backup_repair_cmd import run_unlock

    if lock_id and remove_all:
        raise InvalidArgument("give lock ids or --remove-all, not both")
    repo = _operations(ctx).repository(target)
    run_unlock(state(ctx), target, repo, lock_id or [], remove_all=remove_all)


@app.command("bases")
def bases(
    ctx: typer.Context,
    forget: Annotated[
        str | None, typer.Option("--forget", help="Drop the bases of this volume.")
    ] = None,
    target: MaybeTarget = None,
) -> None:
    """The base images incremental backups compare against (reflink copies in the pool)."""
    st = state(ctx)
    with BackupState(st.open_pool()) as backup_state:
        if forget is not None:
            dropped = backup_state.forget(forget, target)
            if not st.json:
                output.console().print(f"Dropped {len(dropped)} base(s) of volume {forget}.")
        records = backup_state.records()
    if st.json:
        output.print_json(records)
        return
    table = output.new_table(title="Backup bases", title_justify="left")
    for column in ("VOLUME", "TARGET", "SNAPSHOT", "BACKUP", "SINCE", "IMAGE"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.volume, r.target, r.snapshot, r.backup_id, output.when(r.created), str(r.image)
        )
    output.console().print(output.fit(table, "VOLUME", "TARGET", "SNAPSHOT", "BACKUP"))
