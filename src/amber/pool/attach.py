"""Using volumes and snapshots on this machine: loop devices, mounts and exposed devices.

An object has at most one loop device. Its first filesystem mount mounts the device; further
mounts bind the first one, so every mount shares one filesystem instance (which is what online
expansion and freezing act on). Snapshots are always attached and mounted read-only.

The loop device itself refuses writes (BLKROSET; `ro` in sysfs and `losetup`) while every
attachment of its object is read-only: a read-only bind of a device node alone would not stop
`dd`. A read-only device is refused while the object is attached read-write (it would share a
writable loop device); a read-write attachment made later turns the loop device writable again,
and releasing it turns it back. Snapshots' loop devices are attached read-only for good. Every
attachment is a row in the pool database, written after the kernel state exists; recovery
removes kernel state that has no row and rows whose kernel state is gone (after a reboot).
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from amber.domain.models import Attachment, AttachmentKind, Snapshot, Volume, VolumeMode
from amber.domain.names import validate_name
from amber.pool.context import PoolContext
from amber.pool.volumes import grow_filesystem_if_mounted
from amber.system import fs, ioctl, loopdev, mount

KINDS = ("volume", "snapshot")


@dataclass(frozen=True)
class _Target:
    """The object being attached, whichever kind it is."""

    kind: str
    uid: str
    name: str
    image: Path
    mode: VolumeMode
    fs_type: str | None
    snapshot: bool
    volume: Volume | None


def _normalize_path(path: Path) -> Path:
    text = str(path)
    if not text.startswith("/") or "\0" in text or "\n" in text:
        raise InvalidArgument(f"path {text!r} must be an absolute path")
    return Path(os.path.normpath(text))


def _check_options(options: Sequence[str]) -> list[str]:
    for option in options:
        if not option or any(c in option for c in ", \t\n\0") or option.startswith("-"):
            raise InvalidArgument(f"invalid mount option {option!r}")
    return list(options)


class Attachments:
    """Mount, expose and release volumes and snapshots."""

    def __init__(self, ctx: PoolContext) -> None:
        self._ctx = ctx

    def list(self, kind: str | None = None, name: str | None = None) -> builtins.list[Attachment]:
        if kind is None or name is None:
            return self._ctx.store.attachments()
        return self._ctx.store.attachments(self._target(kind, name).uid)

    def _target(self, kind: str, name: str) -> _Target:
        if kind not in KINDS:
            raise InvalidArgument(f"unknown object kind {kind!r}")
        validate_name(kind, name)
        if kind == "volume":
            v = self._ctx.store.volume(name)
            return _Target(kind, v.uid, v.name, v.image, v.mode, v.fs_type, False, v)
        s: Snapshot = self._ctx.store.snapshot(name)
        return _Target(kind, s.uid, s.name, s.image, s.mode, s.fs_type, True, None)

    def _lock(self, kind: str, name: str) -> AbstractContextManager[None]:
        return self._ctx.hold_objects([f"{kind}:{name}"])

    # -- filesystem mounts ----------------------------------------------------------------

    def mount(
        self,
        kind: str,
        name: str,
        target: Path,
        *,
        read_only: bool = False,
        options: Sequence[str] = (),
        create_target: bool = False,
    ) -> Attachment:
        """Mount the object's filesystem at `target` (idempotent for the same object)."""
        target = _normalize_path(target)
        extra = _check_options(options)
        with self._lock(kind, name):
            obj = self._target(kind, name)
            if obj.mode is VolumeMode.BLOCK:
                raise FailedPrecondition(
                    f"{kind} {name!r} is a block volume: it has no filesystem to mount "
                    f"(use `amber {kind} attach {name}` for its device)"
                )
            existing = self._ctx.store.attachment_at(target)
            if existing is not None and existing.object_uid == obj.uid and mount.is_mounted(target):
                return existing
            self._prepare_dir(target, create_target)
            read_only = read_only or obj.snapshot
            attachment = self._journaled_attach(
                obj, target, lambda: self._mount_locked(obj, target, read_only, extra)
            )
            fresh = self._ctx.store.volume_by_uid(obj.uid)
            if fresh is not None and fresh.fs_resize_pending and not read_only:
                grow_filesystem_if_mounted(self._ctx, fresh)
            return attachment

    @staticmethod
    def _prepare_dir(target: Path, create: bool) -> None:
        if create:
            target.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            raise NotFound(f"mount point {target} does not exist or is not a directory")
        if mount.is_mounted(target):
            raise FailedPrecondition(f"something else is already mounted at {target}")

    def _mount_locked(
        self, obj: _Target, target: Path, read_only: bool, extra: builtins.list[str]
    ) -> Attachment:
        ctx = self._ctx
        loop = self._loop_for(obj, writable=not read_only)
        ctx.failpoint("attach.loop-attached")
        mounted = [
            a
            for a in ctx.store.attachments(obj.uid)
            if a.kind is AttachmentKind.MOUNT and mount.is_mounted(a.path)
        ]
        assert obj.fs_type is not None
        if mounted:
            mount.bind_mount(mounted[0].path, target, read_only=read_only, options=extra)
        else:
            if obj.fs_type == "ext4" and not obj.snapshot and not read_only:
                self._check_and_grow_offline(obj, loop)
            options = fs.mount_options(obj.fs_type, read_only=read_only, snapshot=obj.snapshot)
            mount.mount(loop, target, fstype=obj.fs_type, options=[*options, *extra])
        ctx.failpoint("attach.mounted")
        return Attachment(obj.uid, obj.name, AttachmentKind.MOUNT, target, loop, read_only)

    def _check_and_grow_offline(self, obj: _Target, loop: Path) -> None:
        """Check an ext4 volume before its first mount, and grow it there if it is due."""
        assert obj.fs_type is not None
        if obj.volume is not None and obj.volume.fs_resize_pending:
            fs.grow_offline(obj.fs_type, loop)
            self._ctx.store.set_resize_pending(obj.uid, False)
        else:
            fs.check(loop, obj.fs_type)

    def _loop_for(self, obj: _Target, *, writable: bool) -> Path:
        """The object's loop device: the recorded one if it still backs the image, else new.

        A `writable` use gets a device that accepts writes (a read-only one is switched back).
        """
        device = self._live_loop(obj)
        if device is None:
            return loopdev.attach(obj.image, read_only=obj.snapshot)
        if writable and not obj.snapshot and ioctl.is_read_only(device):
            ioctl.set_read_only(device, False)
        return device

    def _live_loop(self, obj: _Target) -> Path | None:
        # A device with autoclear set was detached while something held it open: the kernel
        # frees it at that holder's close, which may come between our e2fsck and our mount.
        live = {loop.device for loop in loopdev.find_loops(obj.image) if not loop.autoclear}
        for attachment in self._ctx.store.attachments(obj.uid):
            if attachment.loop_device in live:
                return attachment.loop_device
        for device in live:  # attached but unrecorded: a leftover, reuse it
            return device
        return None

    # -- block devices --------------------------------------------------------------------

    def expose(
        self, kind: str, name: str, target: Path | None = None, *, read_only: bool = False
    ) -> Attachment:
        """Attach the object to a loop device; with `target`, bind the device onto that file."""
        with self._lock(kind, name):
            obj = self._target(kind, name)
            path = _normalize_path(target) if target is not None else None
            if path is not None:
                existing = self._ctx.store.attachment_at(path)
                if (
                    existing is not None
                    and existing.object_uid == obj.uid
                    and mount.is_mounted(path)
                ):
                    return existing
                if mount.is_mounted(path):
                    raise FailedPrecondition(f"something else is already mounted at {path}")
            read_only = read_only or obj.snapshot
            if read_only:
                self._check_no_writer(obj)
            return self._journaled_attach(
                obj, path, lambda: self._expose_locked(obj, path, read_only)
            )

    def _check_no_writer(self, obj: _Target) -> None:
        writers = [a for a in self._ctx.store.attachments(obj.uid) if not a.read_only]
        if writers:
            where = ", ".join(str(a.path) for a in writers)
            raise FailedPrecondition(
                f"{obj.kind} {obj.name!r} is attached read-write at {where}: a read-only device "
                f"would share its writable loop device; release it first "
                f"(`amber {obj.kind} unmount {obj.name}`)"
            )

    def _journaled_attach(
        self, obj: _Target, target: Path | None, attach: Callable[[], Attachment]
    ) -> Attachment:
        """Journal an attach, do it, record it; undo it on any failure (the object's lock held)."""
        payload = {"uid": obj.uid, "image": str(obj.image), "target": str(target or "")}
        journal_id = self._ctx.store.journal_add("attach", f"{obj.kind}:{obj.name}", payload)
        try:
            attachment = attach()
            with self._ctx.store.transaction() as db:
                self._ctx.store.add_attachment(db, attachment)
                self._ctx.store.journal_remove(journal_id, db)
            sync_device_read_only(self._ctx, obj.uid, obj.image)
        except BaseException:
            undo_attach(self._ctx, payload)
            self._ctx.store.journal_remove(journal_id)
            raise
        return attachment

    def _expose_locked(self, obj: _Target, path: Path | None, read_only: bool) -> Attachment:
        loop = self._loop_for(obj, writable=not read_only)
        if path is None:
            return Attachment(obj.uid, obj.name, AttachmentKind.DEVICE, loop, loop, read_only)
        if not path.exists():
            path.touch(mode=0o600)
        mount.bind_mount(loop, path, read_only=read_only)
        return Attachment(obj.uid, obj.name, AttachmentKind.DEVICE, path, loop, read_only)

    # -- release --------------------------------------------------------------------------

    def release(
        self, kind: str, name: str, target: Path | None = None
    ) -> builtins.list[Attachment]:
        """Unmount one target (or all); free the loop device once nothing uses it."""
        wanted = _normalize_path(target) if target is not None else None
        with self._lock(kind, name):
            obj = self._target(kind, name)
            attachments = self._ctx.store.attachments(obj.uid)
            chosen = [a for a in attachments if wanted is None or a.path == wanted]
            payload = {
                "uid": obj.uid,
                "image": str(obj.image),
                "targets": [str(a.path) for a in chosen],
            }
            journal_id = self._ctx.store.journal_add("detach", f"{kind}:{name}", payload)
            self._ctx.failpoint("detach.journaled")
            finish_detach(self._ctx, journal_id, payload)
            return chosen


def _release_paths(ctx: PoolContext, paths: list[str]) -> None:
    # A bind mount does not depend on the mount it was made from, so the order is free.
    for text in paths:
        path = Path(text)
        if not text.startswith("/dev/") and mount.is_mounted(path):
            mount.unmount(path)
        with ctx.store.transaction() as db:
            ctx.store.remove_attachment(db, path)


def _detach_if_unused(ctx: PoolContext, uid: str, image: Path) -> None:
    if ctx.store.attachments(uid):
        return
    loopdev.detach_image(image)


def finish_detach(ctx: PoolContext, journal_id: int, payload: Mapping[str, Any]) -> None:
    """Roll a journaled release forward: unmount the targets, drop rows, free the loop."""
    targets = payload.get("targets", [])
    assert isinstance(targets, list)
    _release_paths(ctx, [str(t) for t in targets])
    ctx.failpoint("detach.unmounted")
    _detach_if_unused(ctx, str(payload["uid"]), Path(str(payload["image"])))
    sync_device_read_only(ctx, str(payload["uid"]), Path(str(payload["image"])))
    ctx.store.journal_remove(journal_id)


def sync_device_read_only(ctx: PoolContext, uid: str, image: Path) -> None:
    """Make the object's loop device read-only iff every attachment of it is read-only."""
    attachments = ctx.store.attachments(uid)
    if not attachments:
        return
    wanted = all(a.read_only for a in attachments)
    for loop in loopdev.find_loops(image):
        if loop.autoclear:
            continue  # on its way out: a flag set now would stay on the freed device number
        if ioctl.is_read_only(loop.device) != wanted:
            ioctl.set_read_only(loop.device, wanted)


def undo_attach(ctx: PoolContext, payload: Mapping[str, Any]) -> None:
    """Undo an interrupted attach: unmount an unrecorded target, free an unused loop."""
    target = str(payload.get("target") or "")
    if target and ctx.store.attachment_at(Path(target)) is None and mount.is_mounted(Path(target)):
        mount.unmount(Path(target))
    _detach_if_unused(ctx, str(payload["uid"]), Path(str(payload["image"])))
