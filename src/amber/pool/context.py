"""What every pool operation shares: paths, the metadata store, locks, settings, failpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from amber.domain.errors import AmberError, OutOfSpace
from amber.domain.units import MiB, format_size
from amber.pool.locks import LockTable
from amber.pool.store import FULL_BYTES, MetadataStore
from amber.system import fs

DB_NAME = "amber.db"
VOLUMES_DIR = "volumes"
SNAPSHOTS_DIR = "snapshots"
LOCKS_DIR = "locks"
POOL_LOCK = "pool"
log = logging.getLogger(__name__)


def no_failpoint(_name: str) -> None:
    """The production failpoint: does nothing."""


@dataclass(frozen=True)
class PoolSettings:
    """Tunables of an open pool (read once at the edge, never from the environment here)."""

    lock_timeout: float = 60.0
    """Seconds to wait for another operation on the same object before failing with Busy."""
    freeze_limit: float = 10.0
    """Longest time a mounted filesystem stays frozen for a snapshot; past it the snapshot fails."""
    reserve_bytes: int = 64 * MiB
    """Free space always left on the pool filesystem; operations that would eat it are refused."""
    ballast_bytes: int = 32 * MiB
    """A preallocated file given back when the pool is nearly full, so that metadata can still
    be written (to unmount, delete and recover) even after volumes filled the filesystem."""


@dataclass
class PoolContext:
    """Shared state of one open pool."""

    root: Path
    store: MetadataStore
    locks: LockTable
    reflink: bool
    overprovisioning: float
    settings: PoolSettings = field(default_factory=PoolSettings)
    failpoint: Callable[[str], None] = no_failpoint

    def volume_image(self, uid: str) -> Path:
        return self.root / VOLUMES_DIR / f"{uid}.img"

    def snapshot_image(self, uid: str) -> Path:
        return self.root / SNAPSHOTS_DIR / f"{uid}.img"

    def capacity(self) -> int:
        """What volume sizes may add up to: the pool filesystem's size times overprovisioning."""
        return int(fs.usage(self.root).total * self.overprovisioning)

    def reserved(self) -> int:
        """Bytes promised to operations in progress (journaled creates and expansions)."""
        total = 0
        for entry in self.store.journal():
            total += int(entry.payload.get("reserve", 0))
        return total

    @contextmanager
    def hold_objects(self, keys: list[str]) -> Iterator[None]:
        """Hold the locks of objects (`volume:NAME`, `snapshot:NAME`) for the body.

        On the way out, while still holding them, the lock file of every object that does not
        exist (deleted, or never created) is removed, so that lock files do not pile up.
        """
        with self.locks.hold_all(keys, timeout=self.settings.lock_timeout) as held:
            try:
                yield
            finally:
                for key, lock in held.items():
                    if not self.object_exists(key):
                        lock.discard()

    def object_exists(self, key: str) -> bool:
        """Whether the object a lock key names exists (True for keys that name no object)."""
        kind, _, name = key.partition(":")
        try:
            if kind == "volume":
                return self.store.find_volume(name) is not None
            if kind == "snapshot":
                return self.store.find_snapshot(name) is not None
            if kind == "group":
                return self.store.find_group(name) is not None
        except AmberError:
            return True  # cannot tell (e.g. a full pool): keep the file
        return True

    def check_room_locked(self, new_bytes: int, what: str) -> None:
        """Refuse `what` if it does not fit; call with the pool lock held."""
        if new_bytes > 0:
            capacity = self.capacity()
            committed = self.store.provisioned() + self.reserved()
            if committed + new_bytes > capacity:
                raise OutOfSpace(
                    f"not enough pool capacity for {what}: needs {format_size(new_bytes)}, "
                    f"{format_size(max(capacity - committed, 0))} of "
                    f"{format_size(capacity)} left (overprovisioning {self.overprovisioning:g})"
                )
        self.check_free_space(what)

    def space_problem(self) -> str | None:
        """Why the pool filesystem is (nearly) full, or None while it has room.

        This is the filesystem's own free space, not the accounting: thin volumes can fill the
        filesystem long before their sizes add up to its capacity.
        """
        usage = fs.usage(self.root)
        if usage.available >= self.settings.reserve_bytes:
            return None
        return (
            f"the pool filesystem at {self.root} is nearly full ({format_size(usage.available)} "
            f"free of {format_size(usage.total)}): writes to thin volumes may fail and new "
            "volumes, snapshots and clones are refused — delete snapshots or volumes, or grow "
            "the pool"
        )

    def check_free_space(self, what: str) -> None:
        """Refuse `what` when the pool filesystem itself is (nearly) full."""
        available = fs.usage(self.root).available
        if available < self.settings.reserve_bytes:
            raise OutOfSpace(
                f"the pool filesystem at {self.root} is full ({format_size(available)} free); "
                f"{what} refused — delete snapshots or volumes, or grow the pool"
            )


BALLAST = "reserve.bin"


def ensure_ballast(ctx: PoolContext) -> None:
    """Preallocate the space reserve if it is missing and there is room for it."""
    path = ctx.root / BALLAST
    size = ctx.settings.ballast_bytes
    if size <= 0 or path.exists() or fs.usage(ctx.root).available < 4 * size:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
        os.fsync(fd)
    except OSError:
        os.close(fd)
        path.unlink(missing_ok=True)
        return
    os.close(fd)


def release_ballast_if_low(root: Path, size: int) -> bool:
    """Give the space reserve back when the pool filesystem is (nearly) full.

    Called before the metadata is opened (SQLite needs room for its WAL and shared-memory
    files just to open) and before every write. Returns whether it released the reserve.
    """
    path = root / BALLAST
    try:
        if fs.usage(root).available >= FULL_BYTES or not path.exists():
            return False
        path.unlink()
    except OSError:
        return False
    # INFO, not WARNING: the command's own answer (`pool status`, or its one error line)
    # already says the pool is full.
    log.info("pool %s is full: releasing its %s space reserve", root, format_size(size))
    return True


def fsync_dir(path: Path) -> None:
    """Make a directory entry change durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_file(path: Path) -> None:
    """Delete a file if it exists and make that durable."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)
