"""Locks as objects: who is using the repository, how, and until when.

A lock is a sealed object `locks/<random id>` holding `{holder, kind, created, expires}` and,
since locks say what they are for, `operation` (`backup`, `restore`, `check`, `prune`,
`repair`) and `backup` (the backup a restore reads). Backups, restores and checks take *shared*
locks; prune and repair take an *exclusive* one. A lock whose
`expires` has passed (by the reader's clock) is stale: it is ignored, and anyone may delete it.

Taking a lock is write-then-verify: check for conflicts, write our lock, list again; if a
conflicting lock appeared meanwhile, delete ours and fail with `Busy`. Two racers may both back
off; they never both proceed. A holder must refresh before half the lifetime has passed. A
refresh writes a new lock object and then deletes the old one (objects are never overwritten),
after checking that the old one still exists and has not expired: if it was removed or it
expired, another process (a prune) may have acted on that, so the holder must stop.

An unreadable lock object counts as a live exclusive lock: failing safe means a damaged lock
blocks prune (and backups) until an operator removes it (`amber backup unlock`), rather than
letting prune delete data a running backup needs. Such a lock never expires, so waiting for it
is pointless: taking a lock that it blocks fails at once with `Corrupt` naming it. Readers
(check, restore) delete nothing and write nothing another process depends on, so they take
their shared lock *past* unreadable locks (`reader=True`); check reports them.

What a lock is for is read from those two fields (`LockInfo.restores`: "is this backup being
restored?"), never guessed from the holder name, which is for people. Locks written before the
fields existed carry the operation only in their holder name (`<host> pid <pid>: restore <id>
to <volume>`); for them, and only for them, the holder name is read. Older Amber versions ignore
the fields: the format version stays 1.

All times come from the injected clock; hosts are assumed to agree on
the time within a small fraction of the lock lifetime.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from amber.backup import _codec
from amber.backup.crypto import ObjectKind, Sealer
from amber.backup.layout import LOCKS_PREFIX, Clock, id_from_key, lock_key, new_id
from amber.blobstore.base import BlobStore, Payload
from amber.domain.errors import Busy, Corrupt, FailedPrecondition, InvalidArgument, NotFound

LOCK_VERSION = 1
DEFAULT_LOCK_TTL = 30 * 60.0
DEFAULT_GRACE_SECONDS = 24 * 3600.0
"""Prune never deletes a pack younger than this (`amber.backup.gc`): a backup may have
uploaded it and not yet named it in an index. Here, beside the lock lifetimes, rather than in
gc, so that `amber backup prune --grace` and the operations' defaults need not import gc."""


RESTORE = "restore"
BACKUP = "backup"
CHECK = "check"
PRUNE = "prune"
REPAIR = "repair"


@dataclass(frozen=True)
class LockPurpose:
    """What a lock is held for: an operation, and the backup it works on (a restore's)."""

    operation: str
    """`restore`, `backup`, `check`, `prune`, `repair` (a newer Amber may write others)."""
    backup_id: str | None = None

    @classmethod
    def restore(cls, backup_id: str) -> LockPurpose:
        """The purpose of a restore of `backup_id`."""
        return cls(RESTORE, backup_id)


class LockKind(enum.StrEnum):
    """Shared locks coexist; an exclusive lock excludes every other lock."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True)
class LockInfo:
    """One lock object as read from the store."""

    lock_id: str
    holder: str
    kind: LockKind
    created: float  # when the holder first took the lock (kept across refreshes)
    expires: float
    readable: bool = True
    purpose: LockPurpose | None = None
    """What the lock is for (None: an unreadable lock, or one written before locks said it)."""

    def is_live(self, now: float) -> bool:
        """Whether the lock still holds at `now`."""
        return now < self.expires

    def restores(self, backup_id: str) -> bool:
        """Whether the lock is held by a restore of `backup_id` (on any host)."""
        if not self.readable:
            return False
        if self.purpose is not None:
            return self.purpose.operation == RESTORE and self.purpose.backup_id == backup_id
        return f": restore {backup_id} to " in self.holder  # written before `purpose` existed

    def conflicts_with(self, kind: LockKind) -> bool:
        """Whether this lock stops someone from taking a lock of `kind`."""
        return kind is LockKind.EXCLUSIVE or self.kind is LockKind.EXCLUSIVE

    def describe(self) -> str:
        """`exclusive lock locks/<id> held by <holder>, expires at <time>`."""
        if not self.readable:
            return (
                f"unreadable lock object {lock_key(self.lock_id)}: it blocks backups and prunes "
                f"until removed (`amber backup unlock --target TARGET {self.lock_id}`)"
            )
        return (
            f"{self.kind} lock {lock_key(self.lock_id)} held by {self.holder!r} since "
            f"{_when(self.created)}, expires at {_when(self.expires)}"
        )


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def encode_lock(info: LockInfo, sealer: Sealer) -> Payload:
    """Sealed JSON with the lock id as context."""
    document = {
        "version": LOCK_VERSION,
        "holder": info.holder,
        "kind": info.kind.value,
        "created": info.created,
        "expires": info.expires,
    }
    if info.purpose is not None:
        document["operation"] = info.purpose.operation
        if info.purpose.backup_id is not None:
            document["backup"] = info.purpose.backup_id
    return sealer.seal(ObjectKind.LOCK, _codec.dumps(document), context=info.lock_id.encode())


def decode_lock(lock_id: str, sealed: bytes, sealer: Sealer) -> LockInfo:
    """Open and parse a lock object; anything wrong is Corrupt."""
    what = f"lock {lock_key(lock_id)}"
    document = _codec.loads_object(
        sealer.open(ObjectKind.LOCK, sealed, what, context=lock_id.encode()), what
    )
    kind = _codec.get(document, "kind", str, what)
    if _codec.get(document, "version", int, what) != LOCK_VERSION or kind not in set(LockKind):
        raise Corrupt(f"{what} has an unknown version or kind")
    return LockInfo(
        lock_id=lock_id,
        holder=_codec.get(document, "holder", str, what),
        kind=LockKind(kind),
        created=_codec.get(document, "created", float, what),
        expires=_codec.get(document, "expires", float, what),
        purpose=_purpose(document, what),
    )


def _purpose(document: dict[str, Any], what: str) -> LockPurpose | None:
    operation = _codec.get_optional_str(document, "operation", what)
    if operation is None:
        return None
    return LockPurpose(operation, _codec.get_optional_str(document, "backup", what))


def _unreadable(lock_id: str) -> LockInfo:
    return LockInfo(lock_id, "?", LockKind.EXCLUSIVE, 0.0, math.inf, readable=False)


class LockTable:
    """The `locks/` objects of one repository."""

    def __init__(self, store: BlobStore, sealer: Sealer, clock: Clock) -> None:
        self.store = store
        self.sealer = sealer
        self.clock = clock

    def _read(self, lock_id: str) -> LockInfo | None:
        try:
            return decode_lock(lock_id, self.store.get(lock_key(lock_id)), self.sealer)
        except NotFound:
            return None  # released between listing and reading
        except Corrupt:
            return _unreadable(lock_id)

    def all(self, exclude: Iterable[str] = ()) -> list[LockInfo]:
        """Every lock object, stale ones included; unreadable ones as `readable=False`. The
        lock ids in `exclude` are left out unread (acquire knows its own lock)."""
        skip = set(exclude)
        locks = []
        for info in self.store.list(LOCKS_PREFIX):
            lock_id = id_from_key(LOCKS_PREFIX, info.key)
            if lock_id in skip:
                continue
            if lock_id is None:
                lock: LockInfo | None = _unreadable(info.key.removeprefix(LOCKS_PREFIX))
            else:
                lock = self._read(lock_id)
            if lock is not None:
                locks.append(lock)
        return sorted(locks, key=lambda lock: (lock.created, lock.lock_id))

    def active(self, kind: LockKind | None = None, exclude: Iterable[str] = ()) -> list[LockInfo]:
        """Live locks (of `kind`, if given), leaving out the lock ids in `exclude`."""
        now = self.clock()
        return [
            lock for lock in self.all(exclude) if lock.is_live(now) and kind in (None, lock.kind)
        ]

    def _raise_if_conflict(self, kind: LockKind, own: str | None, *, reader: bool = False) -> None:
        conflicts = [
            lock
            for lock in self.active(exclude=[own or ""])
            if lock.conflicts_with(kind) and (lock.readable or not reader)
        ]
        unreadable = [lock for lock in conflicts if not lock.readable]
        if unreadable:
            raise Corrupt(
                f"the backup repository at {self.store.describe()} has an unreadable lock "
                f"object {lock_key(unreadable[0].lock_id)} (damaged, or written by a newer "
                "Amber); it never expires and blocks backups and prunes: if no amber command "
                "is using the repository, remove it with `amber backup unlock --target TARGET "
                f"{unreadable[0].lock_id}`"
            )
        if conflicts:
            raise Busy(
                f"cannot take a {kind} lock on the backup repository at {self.store.describe()}: "
                f"{conflicts[0].describe()}; retry when it is released or has expired"
            )

    def write_new(
        self,
        holder: str,
        kind: LockKind,
        ttl: float,
        created: float | None = None,
        *,
        purpose: LockPurpose | None = None,
    ) -> LockInfo:
        """Write a lock object without any conflict check (acquire and refresh use this).
        `created` is kept across refreshes: it is when the holder started."""
        now = self.clock()
        started = now if created is None else created
        info = LockInfo(new_id(), holder, kind, started, now + ttl, purpose=purpose)
        self.store.put(lock_key(info.lock_id), encode_lock(info, self.sealer))
        return info

    def acquire(
        self,
        holder: str,
        kind: LockKind,
        ttl: float = DEFAULT_LOCK_TTL,
        *,
        reader: bool = False,
        purpose: LockPurpose | None = None,
    ) -> Lock:
        """Take a lock or raise Busy naming the conflicting lock (Corrupt for an unreadable
        one, unless `reader`: a shared lock for an operation that only reads). `purpose` is
        written into the lock (what others read to know what it is for)."""
        if ttl <= 0:
            raise InvalidArgument("a lock lifetime must be positive")
        if reader and kind is not LockKind.SHARED:
            raise InvalidArgument("only a shared lock can be taken as a reader")
        self._raise_if_conflict(kind, None, reader=reader)
        info = self.write_new(holder, kind, ttl, purpose=purpose)
        try:
            self._raise_if_conflict(kind, info.lock_id, reader=reader)
        except (Busy, Corrupt):
            self.store.delete(lock_key(info.lock_id))
            raise
        return Lock(self, info, ttl)

    def remove_stale(self) -> list[str]:
        """Delete expired lock objects (not unreadable ones); return their keys."""
        now = self.clock()
        stale = [
            lock_key(lock.lock_id) for lock in self.all() if lock.readable and not lock.is_live(now)
        ]
        for key in stale:
            self.store.delete(key)
        return stale

    def remove(self, lock_id: str) -> None:
        """Delete one lock object by id, whatever its state (an operator's way out)."""
        self.store.delete(lock_key(lock_id))


class Lock:
    """A lock this process holds. Use as a context manager, or call `release()`."""

    def __init__(self, table: LockTable, info: LockInfo, ttl: float) -> None:
        self._table = table
        self._ttl = ttl
        self.info = info
        self.released = False
        # The backup writer refreshes from its pack-flushing thread while the engine's keeper
        # refreshes from another: one refresh at a time, or both would replace the same lock.
        self._mutex = threading.RLock()

    @property
    def kind(self) -> LockKind:
        """Shared or exclusive."""
        return self.info.kind

    def _check_held(self) -> None:
        key = lock_key(self.info.lock_id)
        if self.released:
            raise FailedPrecondition(f"lock {key} was already released")
        if not self.info.is_live(self._table.clock()):
            raise FailedPrecondition(
                f"lock {key} expired at {_when(self.info.expires)} before it was refreshed; "
                "another process may have pruned the repository since: start the operation again"
            )
        if not self._table.store.exists(key):
            raise FailedPrecondition(
                f"lock {key} was removed by another process; start the operation again"
            )

    def refresh(self) -> None:
        """Replace the lock with a new one that expires a full lifetime from now."""
        with self._mutex:
            self._check_held()
            old = self.info
            self.info = self._table.write_new(
                old.holder, old.kind, self._ttl, created=old.created, purpose=old.purpose
            )
            self._table.store.delete(lock_key(old.lock_id))

    def refresh_if_due(self) -> None:
        """Refresh once half of the lifetime has passed (safe to call from any thread)."""
        with self._mutex:
            if self._table.clock() >= self.info.expires - self._ttl / 2:
                self.refresh()

    def ensure_live(self) -> None:
        """Raise FailedPrecondition unless the lock is still held and live."""
        self._check_held()

    def release(self) -> None:
        """Delete the lock object (idempotent)."""
        with self._mutex:
            if not self.released:
                self._table.store.delete(lock_key(self.info.lock_id))
                self.released = True

    def __enter__(self) -> Lock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
