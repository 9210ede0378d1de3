"""Per-object locks that hold across processes and threads.

Each lock is `flock` on its own file under `<pool>/locks/`. Every acquisition opens the file
anew, so two threads of one process exclude each other just like two processes do, and a killed
process releases its locks with its file descriptors: recovery can tell a live operation (lock
held) from an interrupted one (lock free).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from amber.domain.errors import Busy, OutOfSpace


class LockTable:
    """Named exclusive locks in one directory."""

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._dir = directory
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._dir / (key.replace(":", "-").replace("/", "_") + ".lock")

    def try_acquire(self, key: str) -> int | None:
        """Take the lock without waiting; return its fd, or None if someone holds it."""
        try:
            fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(
                    f"the filesystem holding {self._dir} is full: cannot create a lock for {key}"
                ) from e
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        return fd

    @staticmethod
    def release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @contextmanager
    def hold(
        self, key: str, *, timeout: float | None = None, what: str | None = None
    ) -> Iterator[None]:
        """Hold the lock for the body, waiting up to `timeout` seconds, then raise Busy."""
        limit = self._timeout if timeout is None else timeout
        deadline = self._clock() + limit
        delay = 0.005
        while (fd := self.try_acquire(key)) is None:
            if self._clock() >= deadline:
                raise Busy(
                    f"{what or key} is busy: another operation has held it for over {limit:.0f}s; "
                    "retry when it finishes"
                )
            self._sleep(delay)
            delay = min(delay * 2, 0.1)
        try:
            yield
        finally:
            self.release(fd)

    @contextmanager
    def hold_all(self, keys: list[str], *, timeout: float | None = None) -> Iterator[None]:
        """Hold several locks, always taken in sorted order so that no two callers deadlock."""
        with ExitStack() as stack:
            for key in sorted(set(keys)):
                stack.enter_context(self.hold(key, timeout=timeout, what=key.replace(":", " ")))
            yield
