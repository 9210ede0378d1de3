"""Freezing a mounted filesystem for a point-in-time copy, bounded even if this process dies.

The freeze is held by a guard process (`amber.system.freezeguard`) in its own session, with a
pipe from this process: it thaws when this process asks, when the time limit passes, or when
the pipe closes because this process exited or was killed (SIGKILL included). A crash of this
process therefore never leaves an application's filesystem frozen for longer than it takes
the guard to see the pipe close. If the guard itself is killed with this process (a whole
container killed at once), the journal still names the frozen mount point and the next pool
open thaws it (`amber.pool.recovery`).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from amber.domain.errors import SystemFailure
from amber.system import ioctl

GUARD_MODULE = "amber.system.freezeguard"


def no_step(_name: str) -> None:
    """The production step hook: does nothing."""


@dataclass
class Freeze:
    """The outcome of one freeze, known once the body has finished."""

    mountpoint: Path
    expired: bool = False
    """True when the limit (or a lost guard) thawed the filesystem before the body finished:
    what the body made is not a point-in-time copy and must be discarded."""


def _start_guard(mountpoint: Path, limit: float) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            [sys.executable, "-m", GUARD_MODULE, str(mountpoint), f"{limit:g}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the caller's terminal does not reach it
            close_fds=True,
        )
    except OSError as e:
        raise SystemFailure(f"cannot start the freeze guard for {mountpoint}: {e}") from e


def _read_line(stream: IO[bytes] | None) -> str:
    assert stream is not None
    return stream.readline().decode(errors="replace").strip()


def _end_guard(guard: subprocess.Popen[bytes], on_step: Callable[[str], None]) -> bool:
    """Ask the guard to thaw; return True if the freeze held until now."""
    assert guard.stdin is not None
    try:
        guard.stdin.write(b"thaw\n")
        guard.stdin.close()
    except OSError:
        pass  # the guard already ended (the limit passed): its answer says so
    on_step("freeze.thaw-requested")
    answer = _read_line(guard.stdout)
    _close(guard)
    return answer == "thawed"


@contextmanager
def frozen(
    mountpoint: Path, limit: float, on_step: Callable[[str], None] = no_step
) -> Iterator[Freeze]:
    """Freeze the filesystem mounted at `mountpoint` for the body; always thaw.

    The filesystem is thawed after at most `limit` seconds even if the body is still running
    or this process died; then `Freeze.expired` is set and the caller must discard what it
    made. `on_step` names points of the window for crash tests (`freeze.guard-started`,
    `freeze.thaw-requested`).
    """
    guard = _start_guard(mountpoint, limit)
    state = Freeze(mountpoint)
    try:
        on_step("freeze.guard-started")
        answer = _read_line(guard.stdout)
    except BaseException:
        _abandon(guard, mountpoint)
        raise
    if answer != "frozen":  # not frozen by us: never thaw (it may be someone else's freeze)
        _close(guard)
        detail = answer.split(" ", 2)[-1] if answer.startswith("error") else "the guard exited"
        raise SystemFailure(f"cannot freeze {mountpoint}: {detail}")
    try:
        yield state
    except BaseException:
        _abandon(guard, mountpoint)
        raise
    state.expired = not _end_guard(guard, on_step)
    if state.expired:
        ioctl.thaw(mountpoint)  # harmless if already thawed; needed if the guard was lost


def _abandon(guard: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """The body failed: close the pipe (the guard thaws) and wait for the guard to end."""
    _close(guard)
    ioctl.thaw(mountpoint)


def _close(guard: subprocess.Popen[bytes]) -> None:
    """Wait for the guard to end (it does once its pipe is closed) and drop its pipes."""
    for stream in (guard.stdin, guard.stdout):
        if stream is not None:
            with suppress(OSError):
                stream.close()
    try:
        guard.wait(timeout=30)
    except subprocess.TimeoutExpired:
        guard.kill()
        guard.wait()
