"""The backup part of `amber demo`: a local file target, a full and an incremental backup,
and a restore compared with the snapshot moment.

The embedded default target is `local`: `file://<pool parent>/backups`, encrypted with a
random password generated once into `<pool parent>/backup.password` (mode 0600) — Amber has no
built-in default password. An existing `local` target in the targets file is used as it is.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from amber.backup.backuper import backup_snapshot
from amber.backup.gc import PruneResult, prune
from amber.backup.restorer import restore_backup
from amber.backup.retention import RetentionPolicy
from amber.backup.state import forget_volume_bases
from amber.backup.targets import Target, TargetConfig, open_target_repository
from amber.cli.output import console
from amber.domain.units import format_size
from amber.pool import Pool

TARGET = "local"
Step = Callable[[str], AbstractContextManager[None]]


def ensure_local_target(config: TargetConfig, root: Path) -> Target:
    """The `local` target, defined (with a fresh random password) if the file lacks it."""
    existing = config.load().get(TARGET)
    if existing is not None:
        return existing
    directory, password = root.parent / "backups", root.parent / "backup.password"
    directory.mkdir(parents=True, exist_ok=True)
    if not password.exists():
        password.touch(mode=0o600)
        password.write_text(secrets.token_urlsafe(32) + "\n")
    target = Target(name=TARGET, url=f"file://{directory}", password_file=str(password))
    config.add(target)
    return target


def backup_story(
    pool: Pool,
    config: TargetConfig,
    names: dict[str, str],
    step: Step,
    snapshot_again: Callable[[str], None],
    same_as_snapshot: Callable[[Path], bool],
    mount_dir: Path,
    made: list[str],
) -> None:
    """Back up the demo snapshot, then an incremental one, restore the first and compare.

    The ids of the backups it made are appended to `made`, for the caller's clean-up.
    """
    target = ensure_local_target(config, pool.root)
    with step(f"opened target '{TARGET}' ({target.url}, encrypted)"):
        repo = open_target_repository(target, create=True)
    with step(f"backed up snapshot {names['snap']} (full)"):
        first = backup_snapshot(pool, repo, TARGET, names["snap"])
    console().print(
        f"    read {format_size(first.bytes_read)}, stored {format_size(first.bytes_stored)} "
        "(zstd, AES-256-GCM; holes and zeros skipped)",
        soft_wrap=True,
    )
    made.append(first.backup_id)
    snapshot_again(names["snap2"])
    with step(f"backed up snapshot {names['snap2']} (incremental: extent maps compared)"):
        second = backup_snapshot(pool, repo, TARGET, names["snap2"])
    console().print(
        f"    {second.chunks_unchanged} chunks unchanged (not read), {second.chunks_read} read, "
        f"{second.chunks_patched} patched (only changed blocks read: "
        f"{format_size(second.bytes_read)}), {format_size(second.bytes_new)} new",
        soft_wrap=True,
    )
    made.append(second.backup_id)
    with step(f"restored the first backup into {names['from-backup']} (every chunk verified)"):
        restore_backup(pool, repo, first.backup_id, names["from-backup"])
        pool.attachments.mount("volume", names["from-backup"], mount_dir, create_target=True)
    if not same_as_snapshot(mount_dir):
        raise AssertionError("the restored backup differs from the snapshot")
    console().print("    the volume restored from the backup equals the snapshot moment")


KEEP_EVERY_OTHER = RetentionPolicy(keep_last=1 << 30)
"""Prune's policy after the demo deleted its own backups: every other backup stays."""


def forget_backups(
    pool: Pool, config: TargetConfig, backup_ids: list[str], volume: str
) -> PruneResult | None:
    """Delete the demo's backups, the packs only they used, and the incremental base left.

    The packs go with a prune that keeps every other backup and has no grace period: the
    demo's packs are the newest in the repository. A backup running beside it keeps its packs
    (prune spares packs as new as any other live lock) or makes the prune wait (Busy).
    """
    forget_volume_bases(pool, volume)
    target = config.load().get(TARGET)
    if target is None or not backup_ids:
        return None
    repo = open_target_repository(target)
    for backup_id in backup_ids:
        repo.delete_backup(backup_id)
    return prune(repo, KEEP_EVERY_OTHER, grace_seconds=0.0, holder="amber demo clean-up")
