"""Volumes: create (empty, cloned or restored), delete, expand.

Every operation holds the volume's lock (and its source's), journals what it is about to make
before touching the disk, and commits the row and drops the journal entry in one transaction.
Recovery (`amber.pool.recovery`) undoes or finishes whatever a crash interrupted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    OutOfRange,
    OutOfSpace,
    SystemFailure,
)
from amber.domain.labels import check_label_key, check_labels
from amber.domain.models import AttachmentKind, Snapshot, SourceKind, Volume, VolumeMode
from amber.domain.names import validate_name
from amber.domain.units import MiB, format_size, round_up
from amber.pool.context import POOL_LOCK, PoolContext, remove_file
from amber.pool.copy import consistent_copy
from amber.pool.store import new_uid
from amber.system import fs, loopdev

ALIGNMENT = MiB
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VolumeRequest:
    """What a caller asks for; `source_kind`/`source_name` name a clone or restore source."""

    name: str
    size: int
    mode: VolumeMode = VolumeMode.FILESYSTEM
    fs_type: str | None = "ext4"
    source_kind: SourceKind = SourceKind.NONE
    source_name: str | None = None
    source_size: int = 0
    """For a BACKUP source: the size of the image the writer produces (the backed-up volume)."""


ImageWriter = Callable[[Path], None]
"""Fills a new, sparse, already-sized image file (e.g. a restore from a backup)."""


def _source_lock(request: VolumeRequest) -> list[str]:
    if request.source_kind is SourceKind.VOLUME and request.source_name:
        return [f"volume:{request.source_name}"]
    if request.source_kind is SourceKind.SNAPSHOT and request.source_name:
        return [f"snapshot:{request.source_name}"]
    return []


class Volumes:
    """Volume operations on one pool."""

    def __init__(self, ctx: PoolContext) -> None:
        self._ctx = ctx

    def get(self, name: str) -> Volume:
        return self._ctx.store.volume(name)

    def find(self, name: str) -> Volume | None:
        return self._ctx.store.find_volume(name)

    def list(self) -> list[Volume]:
        return self._ctx.store.volumes()

    # -- labels ---------------------------------------------------------------------------

    def labels(self, name: str | None = None) -> dict[str, dict[str, str]]:
        """`volume name -> labels` (of one volume, or of every volume; unlabelled: `{}`)."""
        store = self._ctx.store
        volumes = [store.volume(validate_name("volume", name))] if name else store.volumes()
        by_uid = store.volume_labels(volumes[0].uid if name else None)
        return {v.name: by_uid.get(v.uid, {}) for v in volumes}

    def label(
        self, name: str, add: Mapping[str, str], remove: Sequence[str] = ()
    ) -> dict[str, str]:
        """Set labels `add` and drop the keys `remove` of volume `name`; its labels after.

        Keys and values follow `amber.domain.labels`; a key both set and removed is refused.
        """
        validate_name("volume", name)
        added = check_labels(add)
        dropped = [check_label_key(key) for key in remove]
        both = sorted(set(added) & set(dropped))
        if both:
            raise InvalidArgument(f"label {both[0]!r} is both set and removed: choose one")
        ctx = self._ctx
        with ctx.hold_objects([f"volume:{name}"]):
            volume = ctx.store.volume(name)
            after = {**ctx.store.volume_labels(volume.uid).get(volume.uid, {}), **added}
            for key in dropped:
                after.pop(key, None)
            check_labels(after)
            with ctx.store.transaction() as db:
                ctx.store.update_volume_labels(db, volume.uid, added, dropped)
        return after

    # -- create ---------------------------------------------------------------------------

    def create(
        self, request: VolumeRequest, *, exist_ok: bool = False, writer: ImageWriter | None = None
    ) -> Volume:
        """Create a volume; with `exist_ok`, return an identical existing one (idempotency).

        A BACKUP source needs a `writer` that fills the image (`request.source_size` bytes of
        content); it runs with the volume's lock held and the creation journaled, so a crash or
        an exception in it leaves no volume behind.
        """
        if (request.source_kind is SourceKind.BACKUP) != (writer is not None):
            raise InvalidArgument("a volume restored from a backup needs an image writer")
        request = self._normalize(request)
        if request.source_name == request.name and request.source_kind is SourceKind.VOLUME:
            raise InvalidArgument(f"volume {request.name!r} cannot be cloned from itself")
        ctx = self._ctx
        keys = [f"volume:{request.name}", *_source_lock(request)]
        with ctx.hold_objects(keys):
            existing = ctx.store.find_volume(request.name)
            if existing is not None:
                return self._existing(existing, request, exist_ok)
            request = self._resolve_source(request)
            return self._create_locked(request, writer)

    def _normalize(self, request: VolumeRequest) -> VolumeRequest:
        validate_name("volume", request.name)
        if request.source_name is not None:
            validate_name(request.source_kind.value, request.source_name)
        if request.size <= 0:
            raise InvalidArgument(f"volume size must be positive, not {request.size}")
        size = round_up(request.size, ALIGNMENT)
        fs_type = request.fs_type if request.mode is VolumeMode.FILESYSTEM else None
        if fs_type is not None:
            fs.check_fstype(fs_type)
        return VolumeRequest(
            request.name,
            size,
            request.mode,
            fs_type,
            request.source_kind,
            request.source_name,
            request.source_size,
        )

    @staticmethod
    def _existing(existing: Volume, request: VolumeRequest, exist_ok: bool) -> Volume:
        same = (
            existing.size >= request.size
            and existing.mode is request.mode
            and existing.source_kind is request.source_kind
            and existing.source_name == request.source_name
            and (request.source_kind is not SourceKind.NONE or existing.fs_type == request.fs_type)
        )
        if exist_ok and same:
            return existing
        if exist_ok:
            raise AlreadyExists(
                f"volume {request.name!r} already exists with different parameters "
                f"({format_size(existing.size)}, {existing.mode.value})"
            )
        raise AlreadyExists(f"volume {request.name!r} already exists")

    def _resolve_source(self, request: VolumeRequest) -> VolumeRequest:
        """Fill mode and filesystem from the source; check that the size fits it."""
        if request.source_kind is SourceKind.NONE or request.source_name is None:
            self._check_min_size(request)
            return request
        if request.source_kind is SourceKind.BACKUP:
            if request.size < request.source_size:
                raise OutOfRange(
                    f"requested size {format_size(request.size)} is smaller than the backed-up "
                    f"volume ({format_size(request.source_size)})"
                )
            return request
        src: Volume | Snapshot
        if request.source_kind is SourceKind.VOLUME:
            src = self._ctx.store.volume(request.source_name)
        else:
            src = self._ctx.store.snapshot(request.source_name)
        if request.mode is not src.mode:
            raise InvalidArgument(
                f"{request.source_kind.value} {src.name!r} is a {src.mode.value} volume; "
                f"a {request.mode.value} volume cannot be made from it"
            )
        size = max(request.size, src.size) if request.size == 0 else request.size
        if size < src.size:
            raise OutOfRange(
                f"requested size {format_size(size)} is smaller than the source "
                f"{request.source_kind.value} {src.name!r} ({format_size(src.size)})"
            )
        return VolumeRequest(
            request.name, size, src.mode, src.fs_type, request.source_kind, request.source_name
        )

    @staticmethod
    def _check_min_size(request: VolumeRequest) -> None:
        if request.fs_type is not None and request.size < fs.MIN_SIZE[request.fs_type]:
            raise OutOfRange(
                f"a {request.fs_type} volume must be at least "
                f"{format_size(fs.MIN_SIZE[request.fs_type])}, not {format_size(request.size)}"
            )

    def _create_locked(self, request: VolumeRequest, writer: ImageWriter | None) -> Volume:
        ctx = self._ctx
        uid = new_uid()
        image = ctx.volume_image(uid)
        payload = {"uid": uid, "name": request.name, "image": str(image), "reserve": request.size}
        with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
            ctx.check_room_locked(request.size, f"volume {request.name!r}")
            journal_id = ctx.store.journal_add("create_volume", f"volume:{request.name}", payload)
        ctx.failpoint("volume.create.journaled")
        try:
            resize_pending = self._fill_image(request, image, journal_id, payload, writer)
            ctx.failpoint("volume.create.filled")
            volume = Volume(
                uid=uid,
                name=request.name,
                size=request.size,
                mode=request.mode,
                fs_type=request.fs_type,
                created=time.time(),
                source_kind=request.source_kind,
                source_name=request.source_name,
                fs_resize_pending=resize_pending,
                image=image,
            )
            with ctx.store.transaction() as db:
                ctx.store.insert_volume(db, volume)
                ctx.store.journal_remove(journal_id, db)
        except BaseException:
            remove_file(image)
            ctx.store.journal_remove(journal_id)
            raise
        return volume

    def _fill_image(
        self,
        request: VolumeRequest,
        path: Path,
        journal_id: int,
        payload: Mapping[str, Any],
        writer: ImageWriter | None,
    ) -> bool:
        """Write the new image: a copy of the source, or a fresh sparse file (formatted).

        Returns whether the filesystem must still grow to the image size (at its next mount).
        """
        ctx = self._ctx
        if request.source_kind is SourceKind.BACKUP:
            assert writer is not None
            _make_sparse(path, request.source_size)
            writer(path)
            return _grow_image(path, request)
        if request.source_kind is SourceKind.NONE:
            _make_sparse(path, request.size)
            if request.fs_type is not None:
                ctx.failpoint("volume.create.allocated")
                _mkfs(path, request.fs_type, request.name)
            return False
        src_uid, src_image, _ = self._source_image(request)
        consistent_copy(
            ctx,
            source_uid=src_uid,
            source=src_image,
            target=path,
            journal_id=journal_id,
            payload=dict(payload),
        )
        return _grow_image(path, request)

    def _source_image(self, request: VolumeRequest) -> tuple[str, Path, int]:
        assert request.source_name is not None
        src: Volume | Snapshot
        if request.source_kind is SourceKind.VOLUME:
            src = self._ctx.store.volume(request.source_name)
        else:
            src = self._ctx.store.snapshot(request.source_name)
        return src.uid, src.image, src.size

    # -- delete ---------------------------------------------------------------------------

    def delete(self, name: str) -> Volume:
        """Delete a volume that is not in use; its snapshots stay."""
        validate_name("volume", name)
        ctx = self._ctx
        with ctx.hold_objects([f"volume:{name}"]):
            volume = ctx.store.volume(name)
            delete_unused_locked(ctx, "volume", volume.uid, name, volume.image)
        return volume

    # -- expand ---------------------------------------------------------------------------

    def expand(self, name: str, size: int) -> Volume:
        """Grow a volume; online if mounted (image, loop device, then filesystem)."""
        validate_name("volume", name)
        ctx = self._ctx
        with ctx.hold_objects([f"volume:{name}"]):
            volume = ctx.store.volume(name)
            new_size = round_up(size, ALIGNMENT)
            if size <= 0 or new_size < volume.size:
                raise OutOfRange(
                    f"volume {name!r} is {format_size(volume.size)}; it cannot shrink to "
                    f"{format_size(max(size, 0))} (volumes only grow)"
                )
            if new_size == volume.size:
                if volume.fs_resize_pending:
                    grow_filesystem_if_mounted(ctx, volume)
                return ctx.store.volume(name)
            delta = new_size - volume.size
            payload = {"uid": volume.uid, "name": name, "size": new_size, "reserve": delta}
            with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
                ctx.check_room_locked(delta, f"expanding volume {name!r}")
                journal_id = ctx.store.journal_add("expand_volume", f"volume:{name}", payload)
            ctx.failpoint("volume.expand.journaled")
            finish_expand(ctx, journal_id, volume, new_size)
            return ctx.store.volume(name)


def _grow_image(path: Path, request: VolumeRequest) -> bool:
    """Grow a copied image to the requested size; True if its filesystem must grow too."""
    with open(path, "r+b") as f:
        if os.fstat(f.fileno()).st_size >= request.size:
            os.fsync(f.fileno())
            return False
        os.ftruncate(f.fileno(), request.size)
        os.fsync(f.fileno())
    return request.fs_type is not None


def _make_sparse(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as e:
        raise OutOfSpace(f"cannot allocate the volume image: {e.strerror}") from e
    finally:
        os.close(fd)


def _mkfs(path: Path, fs_type: str, name: str) -> None:
    try:
        fs.make(path, fs_type, label=name)
    except SystemFailure as e:
        if "space" in str(e).lower():
            raise OutOfSpace(f"the pool filled up while formatting volume {name!r}") from e
        raise


def delete_unused_locked(ctx: PoolContext, kind: str, uid: str, name: str, image: Path) -> None:
    """Journal and carry out the delete of an object that nothing uses (its lock held)."""
    in_use = ctx.store.attachments(uid)
    if in_use:
        where = ", ".join(str(a.path) for a in in_use)
        raise FailedPrecondition(
            f"{kind} {name!r} is in use at {where}; "
            f"unmount it first (`amber {kind} unmount {name}`)"
        )
    payload = {"uid": uid, "name": name, "image": str(image)}
    journal_id = ctx.store.journal_add(f"delete_{kind}", f"{kind}:{name}", payload)
    ctx.failpoint(f"{kind}.delete.journaled")
    finish_delete(ctx, journal_id, payload, kind=kind)


def finish_delete(
    ctx: PoolContext, journal_id: int, payload: Mapping[str, Any], *, kind: str
) -> None:
    """Roll a journaled delete forward: drop the row, free the loop devices, remove the image."""
    uid, image = str(payload["uid"]), payload["image"]
    with ctx.store.transaction() as db:
        if kind == "volume":
            ctx.store.delete_volume_row(db, uid)
        else:
            ctx.store.delete_snapshot_row(db, uid)
    ctx.failpoint(f"{kind}.delete.row-removed")
    loopdev.detach_image(Path(str(image)))
    remove_file(Path(str(image)))
    ctx.failpoint(f"{kind}.delete.file-removed")
    ctx.store.journal_remove(journal_id)


def finish_expand(ctx: PoolContext, journal_id: int, volume: Volume, new_size: int) -> None:
    """Roll a journaled expansion forward: grow the image, refresh loops, grow a mounted fs."""
    with open(volume.image, "r+b") as f:
        if os.fstat(f.fileno()).st_size < new_size:
            os.ftruncate(f.fileno(), new_size)
            os.fsync(f.fileno())
    ctx.failpoint("volume.expand.image-grown")
    for loop in loopdev.find_loops(volume.image):
        if not loop.autoclear:  # one on its way out may be freed before losetup gets to it
            loopdev.refresh_capacity(loop.device)
    ctx.failpoint("volume.expand.device-refreshed")
    pending = volume.mode is VolumeMode.FILESYSTEM
    with ctx.store.transaction() as db:
        ctx.store.update_volume_size(db, volume.uid, new_size, fs_resize_pending=pending)
        ctx.store.journal_remove(journal_id, db)
    if pending:
        grown = ctx.store.volume_by_uid(volume.uid)
        if grown is not None:
            grow_filesystem_if_mounted(ctx, grown)


def grow_filesystem_if_mounted(ctx: PoolContext, volume: Volume) -> bool:
    """Grow the filesystem of a mounted volume to its image size; clear the pending flag."""
    mounts = [a for a in ctx.store.attachments(volume.uid) if a.kind is AttachmentKind.MOUNT]
    if not mounts or volume.fs_type is None:
        return False
    writable = [a for a in mounts if not a.read_only] or mounts
    if not fs.grow(volume.fs_type, writable[0].loop_device, writable[0].path):
        # INFO: the caller says it (the CLI's note, the CSI reply); a WARNING would say it twice.
        log.info(
            "volume %s: the kernel refused to grow ext4 online (no CAP_SYS_RESOURCE); "
            "it grows at its next mount",
            volume.name,
        )
        return False
    ctx.store.set_resize_pending(volume.uid, False)
    return True
