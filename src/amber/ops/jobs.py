"""The driver's record of backup snapshots in progress and done, in the pool directory.

`<pool>/csi-backups.db` (SQLite, WAL, synchronous writes) holds one row per backup snapshot
this node was asked for (by CSI name) and one row per volume restored from a backup (the
snapshot ID it came from, which CreateVolume must report as the content source). No
credential is ever stored: a job names its target, and the target is found again by name.

Upload states:

    uploading --(backup committed)--> ready
        |  \\--(permanent failure or retries exhausted)--> failed
        \\--(DeleteSnapshot)--> deleting --(backup and local snapshot removed)--> (row gone)
    ready --(DeleteSnapshot)--> (backup removed, row gone)
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from amber.system import sqlite

__all__ = ["JOBS_DB", "SCHEMA", "GroupJob", "JobStore", "UploadJob", "UploadState"]

JOBS_DB: Final = "csi-backups.db"

_TABLES: Final = """
CREATE TABLE uploads (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    volume TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    backup_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    started INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    UNIQUE (target, key)
);
CREATE TABLE restored (
    volume TEXT PRIMARY KEY,
    snapshot_id TEXT NOT NULL
);
"""
_KEEP_LOCAL: Final = "ALTER TABLE uploads ADD COLUMN keep_local INTEGER NOT NULL DEFAULT 0"
_GROUP_UPLOADS: Final = """
CREATE TABLE group_uploads (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    created REAL NOT NULL,
    members TEXT NOT NULL,
    keep_local INTEGER NOT NULL DEFAULT 0
);
"""


def _legacy_version(db: sqlite3.Connection) -> int:
    """Files made before versions were recorded: 1 without `keep_local`, 2 with it."""
    columns = sqlite.table_columns(db, "uploads")
    if not columns:
        return 0
    return 2 if "keep_local" in columns else 1


SCHEMA: Final = sqlite.Schema(
    "the CSI backup jobs", (_TABLES, _KEEP_LOCAL, _GROUP_UPLOADS), _legacy_version
)
"""1: uploads and restored volumes; 2: `keep_local` (class parameter `keepLocalSnapshot`);
3: `group_uploads` (group snapshots of backup classes)."""


class UploadState(StrEnum):
    UPLOADING = "uploading"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"


@dataclass(frozen=True)
class UploadJob:
    """One backup snapshot of this node."""

    name: str
    """The CSI snapshot name."""
    target: str
    key: str
    volume: str
    """The source volume's pool name."""
    volume_id: str
    snapshot: str
    """The local (reflink) snapshot the upload reads; dropped once the backup is committed
    unless `keep_local`."""
    size: int
    created: float
    state: UploadState
    backup_id: str | None = None
    attempts: int = 0
    next_try: float = 0.0
    started: bool = False
    """An upload began at least once (after a crash, look for its backup before redoing it)."""
    error: str | None = None
    error_kind: str | None = None
    """The domain error class of a failure (its gRPC code is that class's)."""
    keep_local: bool = False
    """Keep the local snapshot after the upload (class parameter `keepLocalSnapshot`); it is
    removed with the backup by DeleteSnapshot."""


@dataclass(frozen=True)
class GroupJob:
    """One group snapshot of a backup class: its members are upload jobs that commit as one
    unit (see `amber.ops.groups`)."""

    name: str
    """The pool name of the group (its local group snapshot has it too)."""
    target: str
    created: float
    members: tuple[str, ...]
    """The upload jobs (by name) of the members, in the order of the source volumes."""
    keep_local: bool = False


_COLUMNS: Final = (
    "name, target, key, volume, volume_id, snapshot, size, created, state, backup_id, "
    "attempts, next_try, started, error, error_kind, keep_local"
)


def _job(row: tuple[Any, ...]) -> UploadJob:
    values = list(row)
    values[8] = UploadState(values[8])
    values[12] = bool(values[12])
    values[15] = bool(values[15])
    return UploadJob(*values)


class JobStore:
    """Upload jobs and restored-volume records of one pool (thread-safe)."""

    def __init__(self, pool_root: Path) -> None:
        self._db = sqlite.open_database(pool_root / JOBS_DB, SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[UploadJob]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM uploads {sql}", args).fetchall()
        return [_job(row) for row in rows]

    def get(self, name: str) -> UploadJob | None:
        found = self._all("WHERE name = ?", (name,))
        return found[0] if found else None

    def by_key(self, target: str, key: str) -> UploadJob | None:
        found = self._all("WHERE target = ? AND key = ?", (target, key))
        return found[0] if found else None

    def by_backup(self, target: str, backup_id: str) -> UploadJob | None:
        found = self._all("WHERE target = ? AND backup_id = ?", (target, backup_id))
        return found[0] if found else None

    def jobs(self) -> list[UploadJob]:
        return self._all("ORDER BY name")

    def due(self, now: float) -> list[UploadJob]:
        """Jobs the worker should run now (uploads and deletions), oldest first."""
        return self._all(
            "WHERE state IN (?, ?) AND next_try <= ? ORDER BY next_try, created",
            (UploadState.UPLOADING, UploadState.DELETING, now),
        )

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_try) FROM uploads WHERE state IN (?, ?)",
                (UploadState.UPLOADING, UploadState.DELETING),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def put(self, job: UploadJob) -> UploadJob:
        values = (
            *(getattr(job, f) for f in _COLUMNS.replace(" ", "").split(",")[:8]),
            job.state.value,
            job.backup_id,
            job.attempts,
            job.next_try,
            int(job.started),
            job.error,
            job.error_kind,
            int(job.keep_local),
        )
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO uploads ({_COLUMNS}) VALUES ({','.join('?' * 16)})",
                values,
            )
        return job

    def update(self, job: UploadJob, **changes: Any) -> UploadJob:
        return self.put(replace(job, **changes))

    def remove(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE name = ?", (name,))

    # -- group snapshots of backup classes ------------------------------------------------

    def put_group(self, group: GroupJob) -> GroupJob:
        values = (group.name, group.target, group.created, json.dumps(list(group.members)))
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO group_uploads VALUES (?, ?, ?, ?, ?)",
                (*values, int(group.keep_local)),
            )
        return group

    def get_group(self, name: str) -> GroupJob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, target, created, members, keep_local FROM group_uploads "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return GroupJob(row[0], row[1], row[2], tuple(json.loads(row[3])), bool(row[4]))

    def remove_group(self, name: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM group_uploads WHERE name = ?", (name,))

    # -- restored volumes --------------------------------------------------------------------

    def record_restore(self, volume: str, snapshot_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO restored VALUES (?, ?)", (volume, snapshot_id))

    def restored_from(self, volume: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT snapshot_id FROM restored WHERE volume = ?", (volume,)
            ).fetchone()
        return None if row is None else str(row[0])

    def forget_restore(self, volume: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM restored WHERE volume = ?", (volume,))
