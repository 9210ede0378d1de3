"""Repository locks left behind by restores that ended, removed as soon as the target answers.

A restore holds a shared repository lock (`locks/<id>`, holder `<host> pid <pid>: restore
<backup> to <volume>`, `amber.backup.restorer.restore_holder`) and deletes it when it ends.
When the target became unreachable mid-restore, that delete fails too, and the lock would stay
until it expires (`DEFAULT_LOCK_TTL`, 30 minutes). All that time DeleteSnapshot of the backup
is refused, on every node and in every cluster: a live restore lock is how they all see that a
backup is being read (`lookup.restores_from`).

The process that ran the restore knows that it has ended, so it may remove that lock.
`LeftoverLocks` keeps the holder name of every restore that ended with an error (failed,
cancelled by DeleteVolume or by shutdown), and a thread deletes the lock objects of exactly that
holder, retrying with backoff until the target answers again or the lock has expired anyway.
DeleteSnapshot on this node does the same at once for the backup it deletes, rather than wait
for the next try.

Only the ended restores of this very process are touched: the holder name carries the host and
the pid, so other processes' and other nodes' locks -- live restores among them -- are never
removed here. A new restore with the same holder name (the same backup into the same volume)
starts only once the leftover of the one before is gone (`settle`), so a sweep never deletes
the lock of a restore that runs. The list lives in memory: after a restart, such locks expire
by themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from amber.backup.layout import Clock
from amber.backup.locks import DEFAULT_LOCK_TTL
from amber.backup.repository import Repository
from amber.domain.errors import AmberError
from amber.logs import scrub
from amber.ops.locks import KeyedLocks

__all__ = ["FIRST_PAUSE", "MAX_PAUSE", "LeftoverLocks"]

_log = logging.getLogger(__name__)

FIRST_PAUSE: Final = 1.0
"""Seconds before the second try to remove a leftover lock; the pause doubles each time."""
MAX_PAUSE: Final = 10.0
"""Longest pause between tries: once the target is back, its locks go within this long."""


@dataclass
class _Leftover:
    """The lock an ended restore may have left, and when to try removing it next."""

    holder: str
    backup_id: str
    repo: Repository = field(repr=False)
    secrets: tuple[str, ...] = field(repr=False)
    expires: float
    """By then the lock has expired anyway: nobody heeds it, and there is no need to remove it."""
    next_try: float
    pause: float
    failures: int = 0


class LeftoverLocks:
    """Locks of this process's ended restores that may still be on their targets."""

    def __init__(
        self,
        clock: Clock = time.time,
        *,
        first_pause: float = FIRST_PAUSE,
        max_pause: float = MAX_PAUSE,
    ) -> None:
        self._clock = clock
        self._first_pause = first_pause
        self._max_pause = max_pause
        self._pending: dict[str, _Leftover] = {}
        self._mutex = threading.Lock()
        self._holders = KeyedLocks()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="amber-lock-sweep", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> list[str]:
        """Holder names whose locks may still be on a target."""
        with self._mutex:
            return sorted(self._pending)

    # -- what the restores call ------------------------------------------------------------

    def add(
        self, holder_name: str, backup_id: str, repo: Repository, secrets: tuple[str, ...]
    ) -> None:
        """The restore holding `holder_name` has ended: remove its lock if it is still there."""
        now = self._clock()
        leftover = _Leftover(
            holder_name,
            backup_id,
            repo,
            secrets,
            expires=now + DEFAULT_LOCK_TTL,
            next_try=now,
            pause=self._first_pause,
        )
        with self._mutex:
            self._pending[holder_name] = leftover
        self._wake.set()

    def settle(self, holder_name: str) -> None:
        """Remove the leftover lock of `holder_name` now, if there may be one; raises what the
        target answers when it cannot be removed (a new lock of that holder must wait)."""
        with self._mutex:
            leftover = self._pending.get(holder_name)
        if leftover is None:
            return
        try:
            self._sweep(leftover)
        except AmberError as e:
            self._failed(leftover, scrub(e.message, leftover.secrets))
            raise

    def sweep_backup(self, backup_id: str) -> None:
        """Try once, now, to remove the leftover locks of restores of `backup_id` (those that
        stay are tried again in the background)."""
        with self._mutex:
            found = [lo for lo in self._pending.values() if lo.backup_id == backup_id]
        for leftover in found:
            self._try(leftover)

    # -- the thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            for leftover in self._due():
                self._try(leftover)
            self._wake.wait(self._idle_wait())

    def _due(self) -> list[_Leftover]:
        now = self._clock()
        with self._mutex:
            for name in [n for n, lo in self._pending.items() if lo.expires <= now]:
                _log.info("the repository lock of %r has expired; no longer removing it", name)
                del self._pending[name]
            return [lo for lo in self._pending.values() if lo.next_try <= now]

    def _idle_wait(self) -> float | None:
        with self._mutex:
            next_try = min((lo.next_try for lo in self._pending.values()), default=None)
        if next_try is None:
            return None  # until `add` or `stop`
        return min(max(next_try - self._clock(), 0.05), self._max_pause)

    def _try(self, leftover: _Leftover) -> None:
        try:
            self._sweep(leftover)
        except AmberError as e:
            self._failed(leftover, scrub(e.message, leftover.secrets))
        except Exception:
            _log.exception("removing the repository lock of %r failed", leftover.holder)
            self._failed(leftover, "internal error; see the log above")

    def _sweep(self, leftover: _Leftover) -> None:
        with self._holders.hold(leftover.holder, f"the lock of {leftover.holder!r}"):
            with self._mutex:
                if self._pending.get(leftover.holder) is not leftover:
                    return  # removed meanwhile by another caller
            removed = _remove_locks(leftover.repo, leftover.holder)
            with self._mutex:
                if self._pending.get(leftover.holder) is leftover:
                    del self._pending[leftover.holder]
        if removed:
            _log.info(
                "removed %d repository lock(s) of the ended restore %r", removed, leftover.holder
            )

    def _failed(self, leftover: _Leftover, message: str) -> None:
        with self._mutex:
            if self._pending.get(leftover.holder) is not leftover:
                return
            leftover.failures += 1
            leftover.next_try = self._clock() + leftover.pause
            leftover.pause = min(leftover.pause * 2, self._max_pause)
        log = _log.warning if leftover.failures == 1 else _log.debug
        log(
            "the repository lock of the ended restore %r could not be removed yet (it blocks "
            "deleting backup %s until it expires; retrying): %s",
            leftover.holder,
            leftover.backup_id,
            message,
        )


def _remove_locks(repo: Repository, holder_name: str) -> int:
    """Delete every lock object of `holder_name` (a refresh cut short may have left two)."""
    removed = 0
    for info in repo.locks.all():
        if info.readable and info.holder == holder_name:
            repo.locks.remove(info.lock_id)
            removed += 1
    return removed
