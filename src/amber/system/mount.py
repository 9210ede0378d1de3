"""Mounting, bind mounts and reading the mount table (/proc/self/mountinfo)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import Busy, SystemFailure
from amber.system.run import run

_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class MountEntry:
    """One line of the mount table."""

    target: Path
    source: str
    fstype: str
    options: frozenset[str]
    root: str  # the subtree of the source that is mounted (bind mounts of a file show it)
    device: str  # major:minor

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def _unescape(field: str) -> str:
    return (
        field.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
    )


def mount_table() -> list[MountEntry]:
    """The current mount table of this process's namespace."""
    entries = []
    for line in _MOUNTINFO.read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        options = set(fields[5].split(",")) | set(tail[2].split(",") if len(tail) > 2 else [])
        entries.append(
            MountEntry(
                target=Path(_unescape(fields[4])),
                source=_unescape(tail[1]) if len(tail) > 1 else "",
                fstype=tail[0],
                options=frozenset(options),
                root=_unescape(fields[3]),
                device=fields[2],
            )
        )
    return entries


def mounts_at(target: Path) -> list[MountEntry]:
    """Mount entries stacked on `target` (normalized path), newest last."""
    wanted = Path(os.path.normpath(os.path.abspath(target)))
    return [entry for entry in mount_table() if entry.target == wanted]


def is_mounted(target: Path) -> bool:
    """Whether something is mounted exactly at `target`."""
    return bool(mounts_at(target))


def mount(source: Path, target: Path, *, fstype: str | None, options: Sequence[str] = ()) -> None:
    """Mount `source` (a device or directory) at `target`."""
    argv = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    run([*argv, str(source), str(target)], timeout=120)


def bind_mount(source: Path, target: Path, *, read_only: bool, options: Sequence[str] = ()) -> None:
    """Bind `source` at `target`, then set its per-mount flags in a second remount step.

    The remount also runs for a read-write bind: a new bind mount inherits the flags of the
    mount it was made from, so a bind of a read-only bind would otherwise stay read-only.
    """
    run(["mount", "--bind", str(source), str(target)], timeout=60)
    extra = [opt for opt in options if opt not in ("bind", "rw", "ro")]
    flags = ["remount", "bind", "ro" if read_only else "rw", *extra]
    try:
        run(["mount", "-o", ",".join(flags), str(target)], timeout=60)
    except SystemFailure:
        unmount(target)
        raise


def unmount(target: Path, *, attempts: int = 20) -> None:
    """Unmount everything stacked at `target`; retry briefly if busy, never lazily."""
    while is_mounted(target):
        for attempt in range(attempts):
            try:
                run(["umount", str(target)], timeout=120)
                break
            except SystemFailure as e:
                if not is_mounted(target):
                    break
                if attempt == attempts - 1:
                    raise Busy(f"{target} is busy and cannot be unmounted: {e}") from e
                time.sleep(0.05 * (attempt + 1))
