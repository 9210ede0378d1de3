"""The backup engine's own state in the pool: the base of the next incremental backup.

For each (volume, target) the engine remembers the last backup it made and keeps a **base
image**: a reflink copy of the snapshot that backup read, in `<pool>/backup-bases/`. The next
backup of that volume to that target compares extent maps against the base image
(`amber.backup.extents`) and reads only the chunks that changed.

Why a private reflink copy rather than the user's snapshot itself: a reflink copy costs no
data blocks (it shares them; it holds on to the blocks of the last backed-up state, exactly as
keeping that snapshot would), and it makes change tracking independent of the user's
snapshots. Deleting a snapshot, which users and Kubernetes do all the time, never turns the
next backup into a full read, and the engine never deletes or blocks a user's snapshot. The
base images are not pool snapshots, so `amber snapshot list` does not show them; `amber backup
bases` does, and `amber backup bases --forget` drops them (the next backup then reads
everything once).

The records live in SQLite (`<pool>/backup-state.db`, WAL, synchronous writes). A record names
the repository id as well as the target name, so a target re-pointed at another repository
never reuses chunk ids that repository does not hold. Installing a new base is crash-safe:
reflink to a new file name, fsync, commit the record, then delete the old file; a crash leaves
at worst an unreferenced file, removed the next time the pair is backed up.

Concurrent backups of one volume to one target exclude each other with a pool lock
(`backup-<volume>-<target>`), so a base is replaced by one process at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amber.backup.layout import Clock, new_id
from amber.domain.errors import Busy
from amber.pool import Pool
from amber.pool.bases import BASES_DIR
from amber.pool.context import fsync_dir
from amber.system import ioctl, sqlite

STATE_DB = "backup-state.db"

_TABLES = """
CREATE TABLE bases (
    volume TEXT NOT NULL,
    target TEXT NOT NULL,
    repository_id TEXT NOT NULL,
    volume_uid TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    snapshot_uid TEXT NOT NULL,
    backup_id TEXT NOT NULL,
    image TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (volume, target)
);
CREATE TABLE runs (
    volume TEXT NOT NULL,
    target TEXT NOT NULL,
    started REAL NOT NULL,
    PRIMARY KEY (volume, target)
);
"""


def _legacy_version(db: sqlite3.Connection) -> int:
    """Files made before versions were recorded hold version 1's tables, or nothing."""
    return 1 if sqlite.table_columns(db, "bases") else 0


SCHEMA = sqlite.Schema("the backup state", (_TABLES,), _legacy_version)
"""1: base records and running backups."""


@dataclass(frozen=True)
class BaseRecord:
    """The base of the next incremental backup of `volume` to `target`."""

    volume: str
    target: str
    repository_id: str
    volume_uid: str
    snapshot: str
    """The snapshot the base backup read (it may since have been deleted)."""
    snapshot_uid: str
    backup_id: str
    image: Path
    """The engine's reflink copy of that snapshot's image."""
    size: int
    created: float


class BackupState:
    """Base records and base images of one pool."""

    def __init__(self, pool: Pool, clock: Clock = time.time) -> None:
        self._pool = pool
        self._clock = clock
        self._dir = pool.root / BASES_DIR
        self._db = sqlite.Database(pool.root / STATE_DB, SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> BackupState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def hold(self, volume: str, target: str) -> Iterator[None]:
        """Exclude other backups of `volume` to `target` (Busy at once if one runs)."""
        key = f"backup-{volume}-{target}"
        fd = self._pool.ctx.locks.try_acquire(key)
        if fd is None:
            raise Busy(
                f"another backup of volume {volume!r} to target {target!r} is running; "
                "retry when it has finished"
            )
        try:
            yield
        finally:
            self._pool.ctx.locks.release(fd)

    def begin_run(self, volume: str, target: str) -> bool:
        """Mark a backup of the pair as running; True if the previous one never finished
        (it was killed: its uploads may sit in packs no index lists yet). Call with the pair
        held."""
        interrupted = self._db.one(
            "SELECT 1 FROM runs WHERE volume = ? AND target = ?", (volume, target)
        )
        self._db.write(
            "INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", (volume, target, self._clock())
        )
        return interrupted is not None

    def end_run(self, volume: str, target: str) -> None:
        """The pair's backup finished (or failed cleanly, having indexed its uploads)."""
        self._db.write("DELETE FROM runs WHERE volume = ? AND target = ?", (volume, target))

    def get(self, volume: str, target: str) -> BaseRecord | None:
        """The base record of the pair, or None."""
        row = self._db.one("SELECT * FROM bases WHERE volume = ? AND target = ?", (volume, target))
        return None if row is None else _record(row)

    def records(self) -> list[BaseRecord]:
        """Every base record, by volume and target."""
        rows = self._db.query("SELECT * FROM bases ORDER BY volume, target")
        return [_record(row) for row in rows]

    def install(self, record: BaseRecord, snapshot_image: Path) -> BaseRecord:
        """Make a reflink copy of `snapshot_image` the pair's new base; drop the old one.

        Call with the pair held. Returns the record as stored (with its image path).
        """
        directory = self._dir / record.volume / record.target
        directory.mkdir(parents=True, exist_ok=True)
        image = directory / f"{new_id()}.img"
        ioctl.reflink(snapshot_image, image)
        os.chmod(image, 0o400)
        fsync_dir(directory)
        stored = dataclasses.replace(record, image=image, created=self._clock())
        self._db.write(
            "INSERT OR REPLACE INTO bases VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                stored.volume,
                stored.target,
                stored.repository_id,
                stored.volume_uid,
                stored.snapshot,
                stored.snapshot_uid,
                stored.backup_id,
                str(stored.image),
                stored.size,
                stored.created,
            ),
        )
        self.sweep(record.volume, record.target)
        return stored

    def forget(self, volume: str, target: str | None = None) -> list[BaseRecord]:
        """Drop the base of `volume` (to one target, or to all); return what was dropped."""
        dropped = [r for r in self.records() if r.volume == volume and target in (None, r.target)]
        for record in dropped:
            self._db.write(
                "DELETE FROM bases WHERE volume = ? AND target = ?", (record.volume, record.target)
            )
            self.sweep(record.volume, record.target)
        return dropped

    def sweep(self, volume: str, target: str) -> None:
        """Delete the pair's base image files that no record names (left by crashes)."""
        directory = self._dir / volume / target
        if not directory.is_dir():
            return
        current = self.get(volume, target)
        keep = None if current is None else current.image
        for path in directory.iterdir():
            if path != keep:
                path.unlink(missing_ok=True)
        fsync_dir(directory)


def forget_volume_bases(pool: Pool, volume: str) -> list[BaseRecord]:
    """Drop every base of `volume` (it was deleted: a base of a deleted volume can never serve
    an incremental, since a new volume of that name has another uid). No state, no change."""
    if not (pool.root / STATE_DB).exists():
        return []
    with BackupState(pool) as state:
        return state.forget(volume)


def _record(row: tuple[object, ...]) -> BaseRecord:
    volume, target, repo_id, volume_uid, snapshot, snapshot_uid, backup_id, image, size, created = (
        row
    )
    return BaseRecord(
        volume=str(volume),
        target=str(target),
        repository_id=str(repo_id),
        volume_uid=str(volume_uid),
        snapshot=str(snapshot),
        snapshot_uid=str(snapshot_uid),
        backup_id=str(backup_id),
        image=Path(str(image)),
        size=int(str(size)),
        created=float(str(created)),
    )
