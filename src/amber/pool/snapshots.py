"""Snapshots: read-only, point-in-time reflink copies of a volume's image.

A snapshot is its own image file, not a chain link: deleting the volume, or any other snapshot,
never affects it, and the number of snapshots does not slow the volume down.

A snapshot's image never changes once its row exists: it is read-only (mode 0400) and was
fsynced by the copy before the row was written. So the bytes allocated to it (`st_blocks`) are
read once per open pool and kept by uid (`allocated_bytes`, read at every metrics scrape).
"""

from __future__ import annotations

import os
import threading
import time

from amber.domain.errors import AlreadyExists, FailedPrecondition
from amber.domain.models import Snapshot
from amber.domain.names import validate_name
from amber.pool.context import POOL_LOCK, PoolContext, remove_file
from amber.pool.copy import consistent_copy
from amber.pool.store import new_uid
from amber.pool.volumes import delete_unused_locked
from amber.system import fs


class Snapshots:
    """Snapshot operations on one pool."""

    def __init__(self, ctx: PoolContext) -> None:
        self._ctx = ctx
        self._allocated: dict[str, int] = {}
        """uid -> bytes allocated to the snapshot's image (see the module docstring)."""
        self._allocated_lock = threading.Lock()

    def get(self, name: str) -> Snapshot:
        return self._ctx.store.snapshot(name)

    def find(self, name: str) -> Snapshot | None:
        return self._ctx.store.find_snapshot(name)

    def list(self, volume: str | None = None) -> list[Snapshot]:
        if volume is not None:
            validate_name("volume", volume)
        return self._ctx.store.snapshots(volume)

    def allocated_bytes(self) -> int:
        """The bytes allocated to every snapshot's image: the sum of `list()`'s `allocated`,
        with each image's `stat` done once (the set of snapshots is read each time)."""
        store = self._ctx.store
        uids = store.snapshot_uids()
        with self._allocated_lock:
            known = self._allocated
            found = {uid: known[uid] for uid in uids & known.keys()}
            if len(found) < len(uids):  # new snapshots: their images
                images = store.snapshot_images()
                for uid in uids - found.keys():
                    allocated = fs.allocated_bytes(images[uid]) if uid in images else None
                    if allocated is not None:
                        found[uid] = allocated
            self._allocated = found
            return sum(found.values())

    def create(self, volume_name: str, name: str, *, exist_ok: bool = False) -> Snapshot:
        """Snapshot `volume_name` as `name` (freezing its filesystem if mounted)."""
        validate_name("volume", volume_name)
        validate_name("snapshot", name)
        ctx = self._ctx
        keys = [f"snapshot:{name}", f"volume:{volume_name}"]
        with ctx.hold_objects(keys):
            existing = ctx.store.find_snapshot(name)
            if existing is not None:
                if exist_ok and existing.volume_name == volume_name:
                    return existing
                raise AlreadyExists(
                    f"snapshot {name!r} already exists (of volume {existing.volume_name!r})"
                )
            volume = ctx.store.volume(volume_name)
            uid = new_uid()
            image = ctx.snapshot_image(uid)
            payload = {"uid": uid, "name": name, "image": str(image)}
            with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
                ctx.check_free_space(f"snapshot {name!r}")
                journal_id = ctx.store.journal_add("create_snapshot", f"snapshot:{name}", payload)
            ctx.failpoint("snapshot.create.journaled")
            try:
                consistent_copy(
                    ctx,
                    source_uid=volume.uid,
                    source=volume.image,
                    target=image,
                    journal_id=journal_id,
                    payload=payload,
                )
                os.chmod(image, 0o400)
                ctx.failpoint("snapshot.create.copied")
                snapshot = Snapshot(
                    uid=uid,
                    name=name,
                    volume_name=volume.name,
                    volume_uid=volume.uid,
                    size=volume.size,
                    mode=volume.mode,
                    fs_type=volume.fs_type,
                    created=time.time(),
                    image=image,
                    allocated=os.stat(image).st_blocks * 512,
                )
                with ctx.store.transaction() as db:
                    ctx.store.insert_snapshot(db, snapshot)
                    ctx.store.journal_remove(journal_id, db)
            except BaseException:
                remove_file(image)
                ctx.store.journal_remove(journal_id)
                raise
            return snapshot

    def delete(self, name: str) -> Snapshot:
        """Delete a snapshot that is not mounted."""
        validate_name("snapshot", name)
        ctx = self._ctx
        with ctx.hold_objects([f"snapshot:{name}"]):
            snapshot = ctx.store.snapshot(name)
            group = ctx.store.group_of_snapshot(snapshot.uid)
            if group is not None:
                raise FailedPrecondition(
                    f"snapshot {name!r} is a member of the snapshot group {group.name!r}: "
                    f"delete the group (`amber snapshot delete-group {group.name}`)"
                )
            delete_unused_locked(ctx, "snapshot", snapshot.uid, name, snapshot.image)
        return snapshot
