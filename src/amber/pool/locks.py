"""Per-object locks that hold across processes and threads.

Each lock is `flock` on its own file under `<pool>/locks/`. Every acquisition opens the file
anew, so two threads of one process exclude each other just like two processes do, and a killed
process releases its locks with its file descriptors: recovery can tell a live operation (lock
held) from an interrupted one (lock free).

The lock file of a deleted object is removed by the deleter while it still holds the lock, as
its last step (`HeldLock.discard`). A locker that opened the file just before it was removed
would then hold a lock on a file nobody else can open; so after `flock` every locker checks
that the path still names the file it locked, and starts over if not.
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

_ATTEMPTS = 1000


def _no_failpoint(_name: str) -> None:
    """The production failpoint: does nothing."""


class HeldLock:
    """A lock held by the body of `LockTable.hold`."""

    def __init__(self, table: LockTable, key: str, fd: int) -> None:
        self._table, self._key, self._fd = table, key, fd

    def discard(self) -> None:
        """Remove the lock file (its object is gone); the lock stays held until released."""
        self._table.discard(self._key, self._fd)


class LockTable:
    """Named exclusive locks in one directory."""

    def __init__(
        self,
        directory: Path,
        *,
        timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        failpoint: Callable[[str], None] = _no_failpoint,
    ) -> None:
        self._dir = directory
        self._failpoint = failpoint
        self._timeout = timeout
        self._clock = clock
        self._sleep = sleep
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._dir / (key.replace(":", "-").replace("/", "_") + ".lock")

    def try_acquire(self, key: str) -> int | None:
        """Take the lock without waiting; return its fd, or None if someone holds it."""
        path = self._path(key)
        for _ in range(_ATTEMPTS):
            fd = self._open(path, key)
            self._failpoint("lock.opened")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise
            if _names(path, fd):
                return fd
            self.release(fd)  # removed with its object after we opened it: open the new one
        raise Busy(f"the lock file {path} keeps being removed and created again; retry")

    def _open(self, path: Path, key: str) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise OutOfSpace(
                    f"the filesystem holding {self._dir} is full: cannot create a lock for {key}"
                ) from e
            raise

    def discard(self, key: str, fd: int) -> None:
        """Remove the lock file of `key`, whose lock `fd` holds (its object was deleted)."""
        path = self._path(key)
        if _names(path, fd):
            path.unlink(missing_ok=True)

    def is_held(self, key: str) -> bool:
        """Whether some process (this one included) holds the lock of `key` now, read from
        the kernel's lock list without taking the lock: a probe that took it, even for an
        instant, could make a real acquisition fail."""
        try:
            found = os.stat(self._path(key))
        except FileNotFoundError:
            return False
        return _flock_held(found.st_dev, found.st_ino)

    @staticmethod
    def release(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    @contextmanager
    def hold(
        self, key: str, *, timeout: float | None = None, what: str | None = None
    ) -> Iterator[HeldLock]:
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
            yield HeldLock(self, key, fd)
        finally:
            self.release(fd)

    @contextmanager
    def hold_all(
        self, keys: list[str], *, timeout: float | None = None
    ) -> Iterator[dict[str, HeldLock]]:
        """Hold several locks, always taken in sorted order so that no two callers deadlock."""
        with ExitStack() as stack:
            held = {}
            for key in sorted(set(keys)):
                what = key.replace(":", " ")
                held[key] = stack.enter_context(self.hold(key, timeout=timeout, what=what))
            yield held


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino)


_PROC_LOCKS = Path("/proc/locks")


def _flock_held(device: int, inode: int) -> bool:
    """Whether /proc/locks lists a granted `flock` on the file (device, inode). Its lines read
    `1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234 0 EOF` (major and minor in hex, the inode in
    decimal); a waiter's line has `->` after the number and holds nothing."""
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    for line in _PROC_LOCKS.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False
