"""Holding a repository lock for a long operation: wait to take it, keep it fresh.

A repository lock expires unless refreshed (`amber.backup.locks`). A backup refreshes it as
packs go out, but a backup that finds every chunk already stored, a restore or a check may run
for an hour without writing anything, so `LockKeeper` refreshes from a background thread. If a
refresh fails (the lock expired or an operator removed it), the keeper remembers why and the
operation stops at its next `check()`: a prune may have run, and going on could commit a backup
that names deleted chunks.

`acquire` takes a lock, waiting (with backoff) while a conflicting lock is held: a backup that
starts during a prune waits for the prune instead of failing, and the other way round. Holders
are named `<host> pid <pid>: <what>` (`holder()`); a conflicting lock whose holder is a process
of *this* host that no longer exists (killed, crashed) is removed at once instead of blocking
everyone until it expires. Locks of other hosts are only ever given up by expiry.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType

from amber.backup.layout import LOCKS_PREFIX, lock_key
from amber.backup.locks import Lock, LockInfo, LockKind, LockPurpose
from amber.backup.repository import Repository
from amber.domain.errors import AmberError, Busy, FailedPrecondition, NotFound

DEFAULT_LOCK_WAIT = 300.0

log = logging.getLogger(__name__)


_HOLDER = re.compile(r"^(?P<host>\S+) pid (?P<pid>\d+): ")


def holder(what: str) -> str:
    """A lock holder name: `<host> pid <pid>: <what>`."""
    return f"{os.uname().nodename} pid {os.getpid()}: {what}"


def release_quietly(lock: Lock) -> None:
    """Release `lock` at the end of an operation; a failure is logged, not raised.

    The operation's outcome is already decided (a committed backup, a restored volume, or the
    error that stopped it): a target that stops answering just then must not turn a success
    into a failure nor hide the real error. The lock expires by itself."""
    try:
        lock.release()
    except AmberError as e:
        log.warning(
            "could not remove repository lock %s (%s); it expires by itself: %s",
            lock.info.lock_id,
            lock.info.holder,
            e.message,
        )


def _dead_local(holder_name: str) -> bool:
    match = _HOLDER.match(holder_name)
    if match is None or match["host"] != os.uname().nodename:
        return False
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_dead_local_locks(repo: Repository) -> list[str]:
    """Delete live-looking locks held by processes of this host that no longer exist."""
    removed = []
    for info in repo.active_locks():
        if info.readable and _dead_local(info.holder):
            repo.locks.remove(info.lock_id)
            removed.append(info.holder)
    return removed


@dataclass(frozen=True)
class UnlockResult:
    """What `unlock` removed (lock keys) and the locks still there."""

    removed: tuple[str, ...]
    remaining: tuple[LockInfo, ...]


def unlock(
    repo: Repository, lock_ids: Sequence[str] = (), *, remove_all: bool = False
) -> UnlockResult:
    """Remove repository locks: the named ones (`<id>` or `locks/<id>`, whatever their state:
    NotFound if one does not exist), or every lock with `remove_all`, or else only those that
    cannot be in use: expired ones and those of processes of this host that no longer exist.

    Removing a lock that a live process holds makes that process stop at its next refresh
    (and a prune that runs meanwhile may delete what it was about to use): name only locks
    you know to be dead, such as an unreadable one."""
    locks = repo.locks.all()
    if lock_ids:
        wanted = {lock_id.removeprefix(LOCKS_PREFIX) for lock_id in lock_ids}
        unknown = sorted(wanted - {lock.lock_id for lock in locks})
        if unknown:
            raise NotFound(
                f"no lock {lock_key(unknown[0])} in the backup repository at "
                f"{repo.store.describe()} (`amber backup check` lists the locks)"
            )
        chosen = [lock for lock in locks if lock.lock_id in wanted]
    elif remove_all:
        chosen = locks
    else:
        now = repo.clock()
        chosen = [
            lock
            for lock in locks
            if lock.readable and (not lock.is_live(now) or _dead_local(lock.holder))
        ]
    for lock in chosen:
        repo.locks.remove(lock.lock_id)
    removed = {lock.lock_id for lock in chosen}
    return UnlockResult(
        tuple(lock_key(lock.lock_id) for lock in chosen),
        tuple(lock for lock in locks if lock.lock_id not in removed),
    )


def acquire(
    repo: Repository,
    holder_name: str,
    kind: LockKind = LockKind.SHARED,
    *,
    wait: float = DEFAULT_LOCK_WAIT,
    on_wait: Callable[[str], None] | None = None,
    reader: bool = False,
    purpose: LockPurpose | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Lock:
    """Take a lock, retrying for up to `wait` seconds while it is Busy; `on_wait` hears why.

    An unreadable lock object in the way is not waited for (it never expires): Corrupt at once.
    `reader` takes a shared lock past unreadable lock objects (check, restore); `purpose` says
    in the lock what it is for (`amber.backup.locks.LockPurpose`)."""
    deadline = clock() + wait
    delay = 0.5
    while True:
        try:
            return repo.locks.acquire(holder_name, kind, reader=reader, purpose=purpose)
        except Busy as e:
            if remove_dead_local_locks(repo):
                continue
            if clock() + delay > deadline:
                raise
            if on_wait is not None:
                on_wait(e.message)
        sleep(delay)
        delay = min(delay * 2, 10.0)


class LockKeeper:
    """Refreshes `lock` every `interval` seconds from a daemon thread while in the `with`."""

    def __init__(self, lock: Lock, interval: float = 30.0) -> None:
        self._lock = lock
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amber-lock-keeper", daemon=True)
        self.error: AmberError | None = None

    @property
    def lock(self) -> Lock:
        """The lock being kept."""
        return self._lock

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._lock.refresh_if_due()
            except AmberError as e:
                self.error = e
                return

    def check(self) -> None:
        """Raise FailedPrecondition if the lock could not be kept."""
        if self.error is not None:
            raise FailedPrecondition(
                f"lost the repository lock: {self.error.message}"
            ) from self.error

    def __enter__(self) -> LockKeeper:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def held(
    repo: Repository,
    what: str,
    kind: LockKind = LockKind.SHARED,
    *,
    reader: bool = False,
    wait: float = DEFAULT_LOCK_WAIT,
) -> Iterator[LockKeeper]:
    """Hold a lock for the operation `what` (`check`, `prune`, `repair`: its holder name is
    `holder(what)`, its purpose says `what`) for the body: taken with `acquire`, kept fresh by
    a `LockKeeper`, released after (a release that fails raises: a command reports it)."""
    lock = acquire(repo, holder(what), kind, reader=reader, wait=wait, purpose=LockPurpose(what))
    try:
        with LockKeeper(lock) as keeper:
            yield keeper
    finally:
        lock.release()
