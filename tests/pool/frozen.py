"""Probes for the freeze tests: is a filesystem writable, is a freeze guard still running.

Nothing here runs an `amber` command: after a kill -9 the tests must see the filesystem thawed
by the guard process alone.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from amber.pool import PoolSettings
from amber.system import ioctl
from amber.system.freeze import GUARD_MODULE

FREEZE_LIMIT = PoolSettings().freeze_limit


def start_write(directory: Path) -> subprocess.Popen[bytes]:
    """A child that writes and fsyncs a file in `directory` (it blocks while that is frozen)."""
    probe = str(directory / "probe")
    code = f"import os; f=open({probe!r},'w'); f.write('x'); f.flush(); os.fsync(f.fileno())"
    return subprocess.Popen([sys.executable, "-c", code])


def writable_within(directory: Path, seconds: float = FREEZE_LIMIT) -> bool:
    """Write and fsync a file in `directory` from a child process that must finish in time.

    A write to a frozen filesystem blocks uninterruptibly, so on a timeout the probe thaws the
    filesystem itself (test cleanup, after the verdict) to let the child end.
    """
    child = start_write(directory)
    try:
        return child.wait(timeout=seconds) == 0
    except subprocess.TimeoutExpired:
        ioctl.thaw(directory)
        child.wait()
        return False


def guards_of(mountpoint: Path) -> list[int]:
    """Pids of freeze guard processes holding (or about to hold) `mountpoint`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if GUARD_MODULE.encode() in argv and str(mountpoint).encode() in argv:
            found.append(int(entry.name))
    return found


def no_guard_left(mountpoint: Path, wait: float = 30.0) -> bool:
    """True once no guard of `mountpoint` runs (a guard exits right after it thaws)."""
    deadline = time.monotonic() + wait
    while guards_of(mountpoint):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
