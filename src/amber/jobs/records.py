"""Run records and job bookkeeping, in SQLite in the pool directory (`jobs.db`).

- `runs`: one row per run of a job on one subject (a volume, or the target for prune and
  check): its slot, start, end, outcome (`ok`, `skipped`, `failed`), reason, what it created and
  deleted, and bytes. `amber job history` reads them.
- `slots`: the last slot each job ran for: the missed-run rule (`schedule.due`) needs it to run
  once after downtime.
- `items`: what each job created (a local snapshot or a backup), so retention only ever deletes
  a job's own items, never a hand-made snapshot or another job's backup.

A job runs once at a time across every process that shares its records (`amber schedule run`,
`amber job run-now`, the dashboard's Run now): a run holds the job's lock file,
`locks/<database stem>/<job>.lock` beside the database (in a pool: `<pool>/locks/jobs/`), with
`flock` (`amber.pool.locks`) for as long as it runs. The kernel releases it when the holder dies,
so a killed run never leaves the job locked.

The database opens through `amber.system.sqlite` (WAL, synchronous commits, numbered
migrations), like every other database in the pool.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from amber.pool.context import LOCKS_DIR
from amber.pool.locks import LockTable
from amber.system import sqlite
from amber.system.sqlite import Schema

__all__ = [
    "DB_NAME",
    "SCHEMA",
    "OwnedItem",
    "Records",
    "RunClaim",
    "RunLog",
    "RunOutcome",
    "RunRecord",
]

DB_NAME = "jobs.db"

_V1 = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, task TEXT NOT NULL,
    subject TEXT NOT NULL, slot REAL NOT NULL, start REAL NOT NULL, end REAL NOT NULL,
    outcome TEXT NOT NULL, reason TEXT NOT NULL, created TEXT NOT NULL, deleted TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX runs_by_job ON runs (job, id);
CREATE TABLE slots (job TEXT PRIMARY KEY, last_slot REAL NOT NULL);
CREATE TABLE items (
    job TEXT NOT NULL, volume TEXT NOT NULL, kind TEXT NOT NULL, item_id TEXT NOT NULL,
    created REAL NOT NULL, target TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, target, item_id)
);
CREATE INDEX items_by_job ON items (job, volume, kind);
"""

SCHEMA = Schema("the job records", (_V1,))
"""1: runs, slots, items."""


class RunOutcome(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class RunRecord:
    """One run of a job on one subject."""

    job: str
    task: str
    subject: str
    """The volume, or `target:<name>` for prune and check."""
    slot: float
    """The scheduled instant the run was for (seconds since the epoch)."""
    start: float
    end: float
    outcome: RunOutcome
    reason: str = ""
    created: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    bytes: int = 0
    id: int = 0
    """Assigned when recorded."""


@dataclass(frozen=True)
class OwnedItem:
    """Something a job created, as `items` records it."""

    job: str
    volume: str
    kind: str
    item_id: str
    created: float
    target: str = ""


class RunClaim(Protocol):
    """A job's one run, held until `release` (idempotent)."""

    def release(self) -> None: ...


class RunLog(Protocol):
    """What the scheduler needs of a run store: `Records` in a pool, or the Kubernetes
    operator's own (status on the RecurringJob resource). Methods are called from threads."""

    def add(self, run: RunRecord) -> int:
        """Record one run; its id."""
        ...

    def last_slot(self, job: str) -> float | None:
        """The slot the job last ran for (seconds since the epoch), None if it never ran."""
        ...

    def set_last_slot(self, job: str, slot: float) -> None: ...

    def try_claim(self, job: str) -> RunClaim | None:
        """Hold the job's one run across every process sharing these records; None when
        another run holds it."""
        ...

    def is_claimed(self, job: str) -> bool:
        """Whether a run of `job` holds it now, in any process sharing these records."""
        ...


class _FileClaim:
    """A job's lock file, held with `flock` by one open file."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            LockTable.release(fd)


class Records:
    """The job database of one pool (a `RunLog`); thread-safe, each method one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite.open_database(path, SCHEMA)
        self._claims: LockTable | None = None

    @classmethod
    def in_pool(cls, root: Path) -> Records:
        return cls(root / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, args: Sequence[object]) -> int:
        with self._lock:
            try:
                with sqlite.immediate(self._db) as db:
                    return int(db.execute(sql, tuple(args)).lastrowid or 0)
            except sqlite3.OperationalError as e:
                raise sqlite.storage_error(
                    self.path, e, "cannot write its job records", SCHEMA.label
                ) from e

    def _read(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return [tuple(r) for r in self._db.execute(sql, tuple(args)).fetchall()]
            except sqlite3.OperationalError as e:
                raise sqlite.storage_error(
                    self.path, e, "cannot read its job records", SCHEMA.label
                ) from e

    # -- runs -------------------------------------------------------------------------------

    def add(self, run: RunRecord) -> int:
        """Record one run; its id."""
        return self._write(
            "INSERT INTO runs (job, task, subject, slot, start, end, outcome, reason, created,"
            " deleted, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.job,
                run.task,
                run.subject,
                run.slot,
                run.start,
                run.end,
                run.outcome.value,
                run.reason,
                json.dumps(list(run.created)),
                json.dumps(list(run.deleted)),
                run.bytes,
            ),
        )

    def history(self, job: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The newest runs first (of `job`, or of every job)."""
        columns = (
            "id, job, task, subject, slot, start, end, outcome, reason, created, deleted, bytes"
        )
        if job is None:
            rows = self._read(f"SELECT {columns} FROM runs ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._read(
                f"SELECT {columns} FROM runs WHERE job = ? ORDER BY id DESC LIMIT ?", (job, limit)
            )
        return [_run(row) for row in rows]

    def last_run(self, job: str) -> RunRecord | None:
        found = self.history(job, 1)
        return found[0] if found else None

    # -- slots ------------------------------------------------------------------------------

    def last_slot(self, job: str) -> float | None:
        rows = self._read("SELECT last_slot FROM slots WHERE job = ?", (job,))
        return float(str(rows[0][0])) if rows else None

    def set_last_slot(self, job: str, slot: float) -> None:
        self._write(
            "INSERT INTO slots (job, last_slot) VALUES (?, ?)"
            " ON CONFLICT(job) DO UPDATE SET last_slot = excluded.last_slot",
            (job, slot),
        )

    # -- one run per job -------------------------------------------------------------------

    def try_claim(self, job: str) -> RunClaim | None:
        """Hold the job's lock file (see the module docstring); None when another run holds
        it, in this process or another."""
        fd = self._claim_table().try_acquire(job)
        return None if fd is None else _FileClaim(fd)

    def is_claimed(self, job: str) -> bool:
        """Whether a run holds the job's lock file now (read without taking it)."""
        return self._claim_table().is_held(job)

    def _claim_table(self) -> LockTable:
        with self._lock:
            if self._claims is None:
                self._claims = LockTable(self.path.parent / LOCKS_DIR / self.path.stem)
            return self._claims

    # -- items ------------------------------------------------------------------------------

    def add_item(self, item: OwnedItem) -> None:
        self._write(
            "INSERT OR REPLACE INTO items (job, volume, kind, item_id, created, target)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (item.job, item.volume, item.kind, item.item_id, item.created, item.target),
        )

    def items(
        self, job: str | None, volume: str, kind: str, target: str | None = None
    ) -> list[OwnedItem]:
        """The items of `job` (or of every job) for `volume`, oldest first."""
        sql = "SELECT job, volume, kind, item_id, created, target FROM items WHERE volume = ?"
        args: list[object] = [volume]
        for column, value in (("job", job), ("kind", kind), ("target", target)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        rows = self._read(sql + " ORDER BY created, item_id", args)
        return [
            OwnedItem(str(r[0]), str(r[1]), str(r[2]), str(r[3]), float(str(r[4])), str(r[5]))
            for r in rows
        ]

    def remove_item(self, kind: str, item_id: str, target: str = "") -> None:
        self._write(
            "DELETE FROM items WHERE kind = ? AND target = ? AND item_id = ?",
            (kind, target, item_id),
        )


def _run(row: tuple[object, ...]) -> RunRecord:
    return RunRecord(
        id=int(str(row[0])),
        job=str(row[1]),
        task=str(row[2]),
        subject=str(row[3]),
        slot=float(str(row[4])),
        start=float(str(row[5])),
        end=float(str(row[6])),
        outcome=RunOutcome(str(row[7])),
        reason=str(row[8]),
        created=tuple(json.loads(str(row[9]))),
        deleted=tuple(json.loads(str(row[10]))),
        bytes=int(str(row[11])),
    )
