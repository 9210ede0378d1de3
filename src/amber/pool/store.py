"""The pool's metadata: SQLite in WAL mode with synchronous commits.

Rows are the truth about which volumes and snapshots exist. An image file without a row is
either part of a journaled operation (and is finished or rolled back by recovery) or an
orphan that `amber pool check` reports. A row is only written after its image is complete.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.domain.errors import AlreadyExists, NotFound, OutOfSpace
from amber.domain.models import (
    Attachment,
    AttachmentKind,
    Snapshot,
    SnapshotGroup,
    SourceKind,
    Volume,
    VolumeMode,
)
from amber.system import fs, sqlite
from amber.system.sqlite import FULL_BYTES as FULL_BYTES  # where the pool checks fullness
from amber.system.sqlite import Schema, table_columns

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE volumes (
    uid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
    mode TEXT NOT NULL, fs_type TEXT, created REAL NOT NULL,
    source_kind TEXT NOT NULL, source_name TEXT,
    fs_resize_pending INTEGER NOT NULL DEFAULT 0, image TEXT NOT NULL
);
CREATE TABLE snapshots (
    uid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, volume_name TEXT NOT NULL,
    volume_uid TEXT NOT NULL, size INTEGER NOT NULL, mode TEXT NOT NULL, fs_type TEXT,
    created REAL NOT NULL, image TEXT NOT NULL
);
CREATE TABLE attachments (
    object_uid TEXT NOT NULL, object_name TEXT NOT NULL, kind TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE, loop_device TEXT NOT NULL, read_only INTEGER NOT NULL
);
CREATE TABLE journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, lock_key TEXT NOT NULL,
    payload TEXT NOT NULL, created REAL NOT NULL
);
"""
_GROUPS = """
-- IF NOT EXISTS: pools made by the first group-snapshot code have these tables at version 1.
CREATE TABLE IF NOT EXISTS snapshot_groups (
    uid TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    group_uid TEXT NOT NULL, snapshot_uid TEXT NOT NULL UNIQUE, position INTEGER NOT NULL
);
-- The version lives in the file header (PRAGMA user_version) from now on.
DELETE FROM meta WHERE key = 'schema_version';
"""


_LABELS = """
CREATE TABLE volume_labels (
    volume_uid TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (volume_uid, key)
);
"""


def _legacy_version(db: sqlite3.Connection) -> int:
    """Pools made before versions were recorded in the file header kept `schema_version`
    (always "1") in the meta table."""
    if "key" not in table_columns(db, "meta"):
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


SCHEMA = Schema("the pool metadata", (_TABLES, _GROUPS, _LABELS), _legacy_version)
"""1: volumes, snapshots, attachments, journal; 2: snapshot groups; 3: volume labels."""


@dataclass(frozen=True)
class JournalEntry:
    """An operation in progress (or interrupted): what recovery needs to finish or undo it."""

    id: int
    op: str
    lock_key: str
    payload: dict[str, Any]


def new_uid() -> str:
    """A fresh object uid (also the image file's name)."""
    return uuid.uuid4().hex


class MetadataStore:
    """Thread-safe access to the pool database; each public method is one transaction."""

    def __init__(
        self,
        path: Path,
        before_write: Callable[[], None] | None = None,
        *,
        read_only_when_full: bool = False,
    ) -> None:
        self.before_write = before_write
        """Called before each write transaction (the pool frees its space reserve there)."""
        self._lock = threading.RLock()
        self._path = path
        self.read_only = False
        """True when the filesystem was too full to open the database for writing and it was
        opened read-only instead (`read_only_when_full`): reads work, writes raise OutOfSpace."""
        try:
            self._db = sqlite.open_database(path, SCHEMA)
        except OutOfSpace:
            if not read_only_when_full:
                raise
            self._db = self._open_read_only()
            self.read_only = True
        self._db.row_factory = sqlite3.Row

    def _open_read_only(self) -> sqlite3.Connection:
        db = sqlite.connect(self._path, self._read_only_query())
        try:
            sqlite.check_version(db, SCHEMA, self._path)  # a newer pool is refused here too
        except BaseException:
            db.close()
            raise
        return db

    def _read_only_query(self) -> str:
        """Read-only access that needs no new file: through the live WAL files if a writer
        keeps them, else the database file alone (it holds everything once no WAL is left)."""
        wal = self._path.with_name(self._path.name + "-wal")
        shm = self._path.with_name(self._path.name + "-shm")
        if wal.exists() and shm.exists():
            return "mode=ro"
        return "mode=ro&immutable=1"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success."""
        with self._lock:
            if self.before_write is not None:
                self.before_write()
            with (
                sqlite.translated(self._path, "cannot write its metadata", SCHEMA.label),
                sqlite.immediate(self._db) as db,
            ):
                yield db

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock, sqlite.translated(self._path, "cannot read its metadata", SCHEMA.label):
            return list(self._db.execute(sql, args).fetchall())

    # -- settings -------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- journal --------------------------------------------------------------------------

    def journal_add(self, op: str, lock_key: str, payload: dict[str, Any]) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO journal(op, lock_key, payload, created) VALUES (?, ?, ?, ?)",
                (op, lock_key, json.dumps(payload), time.time()),
            )
            return int(cur.lastrowid or 0)

    def journal_update(self, entry_id: int, payload: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE journal SET payload = ? WHERE id = ?", (json.dumps(payload), entry_id)
            )

    def journal_remove(self, entry_id: int, db: sqlite3.Connection | None = None) -> None:
        if db is not None:
            db.execute("DELETE FROM journal WHERE id = ?", (entry_id,))
            return
        with self.transaction() as tx:
            tx.execute("DELETE FROM journal WHERE id = ?", (entry_id,))

    def journal(self) -> list[JournalEntry]:
        rows = self._query("SELECT * FROM journal ORDER BY id")
        return [
            JournalEntry(r["id"], r["op"], r["lock_key"], json.loads(r["payload"])) for r in rows
        ]

    # -- volumes --------------------------------------------------------------------------

    @staticmethod
    def _volume(row: sqlite3.Row) -> Volume:
        return Volume(
            uid=row["uid"],
            name=row["name"],
            size=row["size"],
            mode=VolumeMode(row["mode"]),
            fs_type=row["fs_type"],
            created=row["created"],
            source_kind=SourceKind(row["source_kind"]),
            source_name=row["source_name"],
            fs_resize_pending=bool(row["fs_resize_pending"]),
            image=Path(row["image"]),
        )

    def insert_volume(self, db: sqlite3.Connection, volume: Volume) -> None:
        try:
            db.execute(
                "INSERT INTO volumes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    volume.uid,
                    volume.name,
                    volume.size,
                    volume.mode.value,
                    volume.fs_type,
                    volume.created,
                    volume.source_kind.value,
                    volume.source_name,
                    int(volume.fs_resize_pending),
                    str(volume.image),
                ),
            )
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"volume {volume.name!r} already exists") from e

    def find_volume(self, name: str) -> Volume | None:
        rows = self._query("SELECT * FROM volumes WHERE name = ?", (name,))
        return self._volume(rows[0]) if rows else None

    def volume(self, name: str) -> Volume:
        found = self.find_volume(name)
        if found is None:
            raise NotFound(f"volume {name!r} not found (see `amber volume list`)")
        return found

    def volume_by_uid(self, uid: str) -> Volume | None:
        rows = self._query("SELECT * FROM volumes WHERE uid = ?", (uid,))
        return self._volume(rows[0]) if rows else None

    def volumes(self) -> list[Volume]:
        return [self._volume(r) for r in self._query("SELECT * FROM volumes ORDER BY name")]

    def update_volume_size(
        self, db: sqlite3.Connection, uid: str, size: int, *, fs_resize_pending: bool
    ) -> None:
        db.execute(
            "UPDATE volumes SET size = ?, fs_resize_pending = ? WHERE uid = ?",
            (size, int(fs_resize_pending), uid),
        )

    def set_resize_pending(self, uid: str, pending: bool) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE volumes SET fs_resize_pending = ? WHERE uid = ?", (int(pending), uid)
            )

    def delete_volume_row(self, db: sqlite3.Connection, uid: str) -> None:
        db.execute("DELETE FROM volume_labels WHERE volume_uid = ?", (uid,))
        db.execute("DELETE FROM volumes WHERE uid = ?", (uid,))

    # -- volume labels --------------------------------------------------------------------

    def volume_labels(self, uid: str | None = None) -> dict[str, dict[str, str]]:
        """`volume uid -> {key: value}` (of one volume, or of every labelled volume)."""
        sql = "SELECT volume_uid, key, value FROM volume_labels"
        rows = (
            self._query(sql + " WHERE volume_uid = ? ORDER BY key", (uid,))
            if uid
            else (self._query(sql + " ORDER BY volume_uid, key"))
        )
        found: dict[str, dict[str, str]] = {}
        for row in rows:
            found.setdefault(row["volume_uid"], {})[row["key"]] = row["value"]
        return found

    def update_volume_labels(
        self, db: sqlite3.Connection, uid: str, add: dict[str, str], remove: list[str]
    ) -> None:
        db.executemany(
            "DELETE FROM volume_labels WHERE volume_uid = ? AND key = ?",
            [(uid, key) for key in remove],
        )
        db.executemany(
            "INSERT OR REPLACE INTO volume_labels (volume_uid, key, value) VALUES (?, ?, ?)",
            [(uid, key, value) for key, value in add.items()],
        )

    # -- snapshots ------------------------------------------------------------------------

    @staticmethod
    def _snapshot(row: sqlite3.Row) -> Snapshot:
        image = Path(row["image"])
        allocated = fs.allocated_bytes(image) or 0
        return Snapshot(
            uid=row["uid"],
            name=row["name"],
            volume_name=row["volume_name"],
            volume_uid=row["volume_uid"],
            size=row["size"],
            mode=VolumeMode(row["mode"]),
            fs_type=row["fs_type"],
            created=row["created"],
            image=image,
            allocated=allocated,
        )

    def insert_snapshot(self, db: sqlite3.Connection, snap: Snapshot) -> None:
        try:
            db.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    snap.uid,
                    snap.name,
                    snap.volume_name,
                    snap.volume_uid,
                    snap.size,
                    snap.mode.value,
                    snap.fs_type,
                    snap.created,
                    str(snap.image),
                ),
            )
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"snapshot {snap.name!r} already exists") from e

    def find_snapshot(self, name: str) -> Snapshot | None:
        rows = self._query("SELECT * FROM snapshots WHERE name = ?", (name,))
        return self._snapshot(rows[0]) if rows else None

    def snapshot(self, name: str) -> Snapshot:
        found = self.find_snapshot(name)
        if found is None:
            raise NotFound(f"snapshot {name!r} not found (see `amber snapshot list`)")
        return found

    def snapshot_by_uid(self, uid: str) -> Snapshot | None:
        rows = self._query("SELECT * FROM snapshots WHERE uid = ?", (uid,))
        return self._snapshot(rows[0]) if rows else None

    def snapshots(self, volume_name: str | None = None) -> list[Snapshot]:
        if volume_name is None:
            rows = self._query("SELECT * FROM snapshots ORDER BY created, name")
        else:
            rows = self._query(
                "SELECT * FROM snapshots WHERE volume_name = ? ORDER BY created, name",
                (volume_name,),
            )
        return [self._snapshot(r) for r in rows]

    def snapshot_uids(self) -> set[str]:
        """The uid of every snapshot (one column: cheap for many snapshots)."""
        return {str(r[0]) for r in self._query("SELECT uid FROM snapshots")}

    def snapshot_images(self) -> dict[str, Path]:
        """uid -> image of every snapshot, from the rows alone (no `stat`)."""
        rows = self._query("SELECT uid, image FROM snapshots")
        return {str(r["uid"]): Path(r["image"]) for r in rows}

    def delete_snapshot_row(self, db: sqlite3.Connection, uid: str) -> None:
        db.execute("DELETE FROM snapshots WHERE uid = ?", (uid,))

    # -- snapshot groups ------------------------------------------------------------------

    def insert_group(self, db: sqlite3.Connection, group: SnapshotGroup) -> None:
        try:
            db.execute(
                "INSERT INTO snapshot_groups VALUES (?, ?, ?)",
                (group.uid, group.name, group.created),
            )
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"snapshot group {group.name!r} already exists") from e
        db.executemany(
            "INSERT INTO group_members VALUES (?, ?, ?)",
            [(group.uid, uid, i) for i, uid in enumerate(group.member_uids)],
        )

    def _group(self, row: sqlite3.Row) -> SnapshotGroup:
        members = self._query(
            "SELECT snapshot_uid FROM group_members WHERE group_uid = ? ORDER BY position",
            (row["uid"],),
        )
        return SnapshotGroup(
            uid=row["uid"],
            name=row["name"],
            created=row["created"],
            member_uids=tuple(str(m["snapshot_uid"]) for m in members),
        )

    def find_group(self, name: str) -> SnapshotGroup | None:
        rows = self._query("SELECT * FROM snapshot_groups WHERE name = ?", (name,))
        return self._group(rows[0]) if rows else None

    def group_by_uid(self, uid: str) -> SnapshotGroup | None:
        rows = self._query("SELECT * FROM snapshot_groups WHERE uid = ?", (uid,))
        return self._group(rows[0]) if rows else None

    def groups(self) -> list[SnapshotGroup]:
        rows = self._query("SELECT * FROM snapshot_groups ORDER BY created, name")
        return [self._group(r) for r in rows]

    def group_of_snapshot(self, snapshot_uid: str) -> SnapshotGroup | None:
        rows = self._query(
            "SELECT g.* FROM snapshot_groups g JOIN group_members m ON m.group_uid = g.uid"
            " WHERE m.snapshot_uid = ?",
            (snapshot_uid,),
        )
        return self._group(rows[0]) if rows else None

    def delete_group_rows(self, db: sqlite3.Connection, uid: str) -> None:
        """Drop a group, its member list and its members' snapshot rows."""
        db.execute(
            "DELETE FROM snapshots WHERE uid IN"
            " (SELECT snapshot_uid FROM group_members WHERE group_uid = ?)",
            (uid,),
        )
        db.execute("DELETE FROM group_members WHERE group_uid = ?", (uid,))
        db.execute("DELETE FROM snapshot_groups WHERE uid = ?", (uid,))

    # -- attachments ----------------------------------------------------------------------

    @staticmethod
    def _attachment(row: sqlite3.Row) -> Attachment:
        return Attachment(
            object_uid=row["object_uid"],
            object_name=row["object_name"],
            kind=AttachmentKind(row["kind"]),
            path=Path(row["path"]),
            loop_device=Path(row["loop_device"]),
            read_only=bool(row["read_only"]),
        )

    def add_attachment(self, db: sqlite3.Connection, att: Attachment) -> None:
        db.execute(
            "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?, ?, ?)",
            (
                att.object_uid,
                att.object_name,
                att.kind.value,
                str(att.path),
                str(att.loop_device),
                int(att.read_only),
            ),
        )

    def remove_attachment(self, db: sqlite3.Connection, path: Path) -> None:
        db.execute("DELETE FROM attachments WHERE path = ?", (str(path),))

    def attachments(self, object_uid: str | None = None) -> list[Attachment]:
        if object_uid is None:
            rows = self._query("SELECT * FROM attachments ORDER BY path")
        else:
            rows = self._query(
                "SELECT * FROM attachments WHERE object_uid = ? ORDER BY path", (object_uid,)
            )
        return [self._attachment(r) for r in rows]

    def attachment_at(self, path: Path) -> Attachment | None:
        rows = self._query("SELECT * FROM attachments WHERE path = ?", (str(path),))
        return self._attachment(rows[0]) if rows else None

    def counts(self) -> tuple[int, int, int]:
        rows = self._query(
            "SELECT (SELECT COUNT(*) FROM volumes), (SELECT COUNT(*) FROM snapshots),"
            " (SELECT COUNT(*) FROM attachments)"
        )
        return int(rows[0][0]), int(rows[0][1]), int(rows[0][2])

    def snapshot_counts(self) -> dict[str, int]:
        """Snapshots per volume name (one query: no image is looked at)."""
        rows = self._query("SELECT volume_name, COUNT(*) FROM snapshots GROUP BY volume_name")
        return {str(r[0]): int(r[1]) for r in rows}

    def provisioned(self) -> int:
        rows = self._query("SELECT COALESCE(SUM(size), 0) FROM volumes")
        return int(rows[0][0])
