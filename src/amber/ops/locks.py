"""Named in-process locks: one operation at a time on one object (a volume, a snapshot name).

The CSI node service holds one per volume: one stage/publish/unpublish/expand at a time.

The pool's own locks (flock, across processes) make each pool operation atomic. A node RPC is
several steps -- look at what is mounted where, then mount or release -- and those steps must
not interleave with another RPC on the same volume, or two "single writer" publications could
both see "nobody else" and both succeed. So a node RPC holds this in-process lock for its whole
body and calls the pool inside it (the TopoLVM pattern: a public server takes a per-volume lock
and calls an unlocked core).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from amber.domain.errors import Busy

__all__ = ["KeyedLocks"]


class KeyedLocks:
    """Named mutexes, created on first use and dropped when nobody holds or waits for them."""

    def __init__(self, timeout: float = 60.0) -> None:
        self._timeout = timeout
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def _enter(self, key: str) -> threading.Lock:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
            return lock

    def _leave(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    @contextmanager
    def hold(self, key: str, what: str) -> Iterator[None]:
        """Hold the lock of `key`; Busy (ABORTED) after waiting `timeout` seconds."""
        lock = self._enter(key)
        try:
            if not lock.acquire(timeout=self._timeout):
                raise Busy(
                    f"another operation on {what} has been running for over "
                    f"{self._timeout:.0f}s; retry when it finishes"
                )
            try:
                yield
            finally:
                lock.release()
        finally:
            self._leave(key)
