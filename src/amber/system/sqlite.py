"""SQLite databases in the pool: one way to open them, one way to migrate them.

Amber keeps three SQLite files in a pool directory (the pool metadata, the backup engine's
bases, the CSI driver's upload jobs). Each opens here with the same settings: WAL, synchronous
commits (`synchronous=FULL`), a busy timeout so that the CLI and the node daemon can share a
file, and autocommit mode so that every write transaction is an explicit `BEGIN IMMEDIATE`.

**Migrations.** A database declares its `Schema`: an ordered list of steps, each SQL or a
function. Step *n* (counted from 1) brings the database from version *n - 1* to version *n*.
The version lives in the file header (`PRAGMA user_version`), written in the same transaction
as the step, so a step that fails leaves the previous version and schema intact. Each step runs
in its own write transaction that first reads the version again: two processes opening one
file at once apply each step once. A database at a version newer than the code knows is
refused (`FailedPrecondition`): Amber never downgrades a schema or writes to one it does not
understand.

**Errors.** Every SQLite failure reaches the caller as one domain error naming the file
(`storage_error`): a full filesystem is `OutOfSpace`, a file another process keeps locked past
the busy timeout is `Busy`, a damaged file (or one that is no database) is `Corrupt`, anything
else `SystemFailure`. Opening and migrating translate by themselves; later queries go through
`Database` (or, for a store that keeps its own connection, `translated`). A broken constraint
(`sqlite3.IntegrityError`) is not a storage failure: it passes, for the caller to word.

Files made before this module kept no `user_version` (it reads 0). A schema may name a
`legacy_version` function that tells, from what such a file holds, which version its tables
already are; it is asked only while `user_version` is 0.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from amber.domain.errors import (
    AmberError,
    Busy,
    Corrupt,
    FailedPrecondition,
    OutOfSpace,
    SystemFailure,
)
from amber.domain.units import MiB, format_size
from amber.system import fs

__all__ = [
    "BUSY_TIMEOUT",
    "FULL_BYTES",
    "Database",
    "Migration",
    "Schema",
    "check_version",
    "connect",
    "immediate",
    "migrate",
    "open_database",
    "split_statements",
    "storage_error",
    "table_columns",
    "translated",
    "user_version",
]

BUSY_TIMEOUT: Final = 30.0
"""Seconds a connection waits for another process's write lock before failing."""
FULL_BYTES: Final = 8 * MiB
"""Below this much free space a SQLite failure is reported as a full pool filesystem."""

Migration = str | Callable[[sqlite3.Connection], None]
"""One step: SQL statements (`;`-separated) or a function given the connection, in a
transaction it must not commit."""


@dataclass(frozen=True)
class Schema:
    """What a database is and how to bring it up to date."""

    label: str
    """What the file is, for messages ("the pool metadata")."""
    migrations: Sequence[Migration]
    """Step n brings version n - 1 to version n; the last step's number is the current one."""
    legacy_version: Callable[[sqlite3.Connection], int] | None = None
    """For files made before versions were recorded (`user_version` 0): the version their
    tables already are (0 for an empty file)."""

    @property
    def version(self) -> int:
        """The version this code writes."""
        return len(self.migrations)


_DAMAGED: Final = ("malformed", "not a database", "file is encrypted")
_LOCKED: Final = ("database is locked", "database table is locked", "busy")


def storage_error(
    path: Path, error: sqlite3.Error, what: str, label: str = "the pool metadata"
) -> AmberError:
    """A clear domain error for SQLite failing on `path`: Corrupt for a damaged file,
    OutOfSpace when its filesystem is full, Busy when another process held it locked for
    longer than the busy timeout, SystemFailure otherwise.

    SQLite reports a full filesystem in several words ("database or disk is full", "unable to
    open database file", "disk I/O error"): the free space decides, not the words.
    """
    text = str(error)
    if type(error) is sqlite3.DatabaseError or any(w in text for w in _DAMAGED):
        return Corrupt(
            f"{label} {path} is damaged ({text}): Amber {what}. Restore the file from a copy, "
            "or move it aside to start it afresh (what it recorded is then forgotten)"
        )
    root = path.parent
    try:
        free = fs.usage(root).available
    except OSError:
        free = -1
    if 0 <= free < FULL_BYTES or "full" in str(error):
        return OutOfSpace(
            f"the pool filesystem at {root} is full ({format_size(max(free, 0))} free): "
            f"Amber {what}. Stop the applications writing to its volumes, then free space "
            "(delete snapshots or volumes, or delete files in a volume and run fstrim on "
            "its mount point) or grow the pool filesystem"
        )
    if any(w in text for w in _LOCKED):
        return Busy(
            f"{label} {path} stayed locked by another process for over {BUSY_TIMEOUT:.0f}s: "
            f"Amber {what}; retry when that process has finished"
        )
    return SystemFailure(f"{label} {path} failed: {what} ({error})")


@contextmanager
def translated(path: Path, what: str, label: str) -> Iterator[None]:
    """Raise the SQLite failures of the body as domain errors (`storage_error`); a broken
    constraint (IntegrityError) passes unchanged."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.Error as e:
        raise storage_error(path, e, what, label) from e


class Database:
    """One SQLite file opened with `open_database`, whose every query fails as a domain
    error; safe to share between threads (one statement at a time)."""

    def __init__(self, path: Path, schema: Schema) -> None:
        self.path = path
        self.label = schema.label
        self._db = open_database(path, schema)
        self._mutex = threading.Lock()

    def close(self) -> None:
        with self._mutex:
            self._db.close()

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row `sql` selects."""
        with self._mutex, translated(self.path, "cannot read its records", self.label):
            return list(self._db.execute(sql, args).fetchall())

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """The first row `sql` selects, or None."""
        rows = self.query(sql, args)
        return rows[0] if rows else None

    def write(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one changing statement (committed at once: autocommit)."""
        with self._mutex, translated(self.path, "cannot record a change", self.label):
            self._db.execute(sql, args)


def connect(path: Path, query: str = "mode=rwc") -> sqlite3.Connection:
    """A connection to `path` (URI `query`: "mode=ro", "mode=ro&immutable=1"...), in autocommit
    mode, usable from any thread (callers serialize with their own lock)."""
    uri = f"{path.absolute().as_uri()}?{query}"
    try:
        return sqlite3.connect(
            uri, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, uri=True
        )
    except sqlite3.Error as e:
        raise storage_error(path, e, "cannot open its metadata") from e


def open_database(path: Path, schema: Schema) -> sqlite3.Connection:
    """Open (creating if needed) `path` with the shared settings and migrate it to `schema`.

    The connection is closed again if anything fails: an open file would keep the pool
    filesystem busy (no unmount).
    """
    db = connect(path)
    try:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise storage_error(path, e, "cannot open its metadata", schema.label) from e
        migrate(db, schema, path)
    except BaseException:
        db.close()
        raise
    return db


def user_version(db: sqlite3.Connection) -> int:
    """The version recorded in the file header (0 when none was)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def table_columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The column names of `table` (empty when there is no such table)."""
    return {str(row[1]) for row in db.execute(f"PRAGMA table_info({table})")}


def _stored_version(db: sqlite3.Connection, schema: Schema) -> int:
    version = user_version(db)
    if version == 0 and schema.legacy_version is not None:
        version = schema.legacy_version(db)
    return version


def _refuse_newer(version: int, schema: Schema, path: Path) -> None:
    if version > schema.version:
        raise FailedPrecondition(
            f"{schema.label} {path} is at schema version {version}, newer than this Amber "
            f"knows ({schema.version}): a newer Amber wrote it. Run that version (or newer); "
            "Amber never downgrades a database"
        )


def check_version(db: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """The stored version, read without writing; FailedPrecondition if newer than known."""
    try:
        version = _stored_version(db, schema)
    except sqlite3.Error as e:
        raise storage_error(path, e, "cannot read its metadata", schema.label) from e
    _refuse_newer(version, schema, path)
    return version


def migrate(db: sqlite3.Connection, schema: Schema, path: Path) -> int:
    """Apply the steps `db` is missing, one write transaction each; return the version.

    `db` must be in autocommit mode (`connect` makes it so).
    """
    version = check_version(db, schema, path)
    if version == schema.version and user_version(db) == version:
        return version  # up to date: no write lock taken
    try:
        while not _advance(db, schema, path):
            pass
    except sqlite3.Error as e:
        what = "cannot update its metadata to the current version"
        raise storage_error(path, e, what, schema.label) from e
    return schema.version


def _advance(db: sqlite3.Connection, schema: Schema, path: Path) -> bool:
    """Record a legacy file's version or apply the next step, in one write transaction that
    reads the version again under the write lock; True when the file is up to date."""
    with immediate(db):
        version = _stored_version(db, schema)
        _refuse_newer(version, schema, path)
        if version == schema.version and user_version(db) == version:
            return True
        if version < schema.version:
            _apply(db, schema.migrations[version])
            version += 1
        db.execute(f"PRAGMA user_version = {version:d}")
        return version == schema.version


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE (the write lock, waiting up to the busy timeout) ... COMMIT; rolled back
    when the body raises. `db` must be in autocommit mode."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back already (a full disk, for one)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _apply(db: sqlite3.Connection, step: Migration) -> None:
    if callable(step):
        step(db)
        return
    for statement in split_statements(step):
        db.execute(statement)


def split_statements(sql: str) -> Iterator[str]:
    """The complete statements of `sql`, one at a time (`executescript` would commit first)."""
    pending = ""
    *pieces, last = sql.split(";")
    for piece in pieces:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):  # not a `;` inside a string or a trigger
            if pending.strip() != ";":
                yield pending.strip()
            pending = ""
    rest = (pending + last).strip()
    if rest:
        yield rest
