"""The freeze guard: a small process that holds a filesystem frozen and always thaws it.

A frozen filesystem blocks every writer, so the bound on a freeze must hold even if the process
that asked for it is killed with SIGKILL (a thread of that process would die with it). The
guard is a separate process in its own session; it freezes the filesystem itself and thaws it at
the first of:

- the parent writes `thaw` on the guard's stdin (the normal end of a snapshot);
- the parent's end of the pipe closes: the parent exited or was killed;
- the time limit passes;
- the guard gets SIGTERM, SIGINT or SIGHUP.

Protocol (one line each, on the guard's stdout): `frozen` once the freeze holds, or
`error ERRNO MESSAGE` if it failed; later `thawed` (thawed on request, within the limit) or
`expired` (the limit thawed it first: the caller's copy is not a point-in-time copy).

Run as `python -m amber.system.freezeguard MOUNTPOINT LIMIT_SECONDS`. It imports nothing but
the standard library so that it starts fast.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import sys
import time
from types import FrameType

FIFREEZE = 0xC0045877
FITHAW = 0xC0045878


def _ioctl(mountpoint: str, request: int) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, request, 0)
    finally:
        os.close(fd)


def _thaw(mountpoint: str) -> None:
    try:
        _ioctl(mountpoint, FITHAW)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            raise


def _say(line: str) -> None:
    with contextlib.suppress(OSError):  # the parent is gone: thawing is all that is left
        os.write(1, (line + "\n").encode())


def _wait_for_parent(deadline: float) -> str:
    """Block until the parent says `thaw`, closes the pipe, or the deadline passes."""
    buffered = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "expired"
        ready, _, _ = select.select([0], [], [], left)
        if not ready:
            continue
        chunk = os.read(0, 64)
        if not chunk:
            return "closed"
        buffered += chunk
        if b"\n" in buffered:
            return "thaw"


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def guard(mountpoint: str, limit: float) -> int:
    """Freeze `mountpoint`, then thaw it on request, parent death, signal or time limit."""
    stops = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    for signum in stops:
        signal.signal(signum, _stop)
    # A signal between the freeze and the `try` below would leave the filesystem frozen:
    # hold them back until the thaw is guaranteed.
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        _ioctl(mountpoint, FIFREEZE)
    except OSError as e:
        _say(f"error {e.errno} {e.strerror}")
        return 1
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
        _say("frozen")
        reason = _wait_for_parent(time.monotonic() + limit)
    finally:
        _thaw(mountpoint)
    _say("expired" if reason == "expired" else "thawed")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m amber.system.freezeguard MOUNTPOINT LIMIT_SECONDS", file=sys.stderr)
        return 2
    return guard(argv[0], float(argv[1]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
