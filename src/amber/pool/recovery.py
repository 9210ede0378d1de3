"""Start-up recovery: finish or undo what an interrupted process left in the journal.

Each journal entry names the lock its operation held. If that lock can be taken now, its
owner is gone (a killed process releases its flocks), so the entry is stale:

| op              | recovery                                                         |
|-----------------|------------------------------------------------------------------|
| create_volume   | undo: thaw a frozen source*, remove the image if it has no row     |
| create_snapshot | undo: the same                                                   |
| delete_volume   | finish: drop the row, free loop devices, remove the image          |
| delete_snapshot | finish: the same                                                 |
| expand_volume   | finish: grow image and loop, record the size; fs grows at mount    |
| attach          | undo: unmount an unrecorded target, free an unused loop device     |
| detach          | finish: unmount the targets, drop rows, free the loop device       |
| create_group    | undo: thaw every frozen source*, remove member images if no group  |
| delete_group    | finish: drop the group and member rows, remove the member images   |

*The freeze guard normally thawed it already when its process died; recovery covers a guard
killed with it. It thaws only when it can take the source volume's lock: a live operation on
the source may hold a freeze of its own, so the entry then waits for a later open.

Lock files of objects that no longer exist after recovery are removed.

Then attachment rows whose kernel state is gone (after a reboot) are dropped, so that the next
mount or CSI stage call converges.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from amber.domain.models import AttachmentKind
from amber.pool.attach import finish_detach, undo_attach
from amber.pool.context import PoolContext, remove_file
from amber.pool.groups import finish_delete_group, undo_create_group
from amber.pool.store import JournalEntry
from amber.pool.volumes import finish_delete, finish_expand
from amber.system import ioctl, loopdev, mount

log = logging.getLogger(__name__)


def recover(ctx: PoolContext) -> list[str]:
    """Recover every stale journal entry and stale attachment; return what was done."""
    done: list[str] = []
    for entry in ctx.store.journal():
        fd = ctx.locks.try_acquire(entry.lock_key)
        if fd is None:
            continue  # its operation is running in a live process
        try:
            if not any(e.id == entry.id for e in ctx.store.journal()):
                continue  # finished while we waited for the lock
            if not _recover_entry(ctx, entry):
                continue
            done.append(f"recovered interrupted {entry.op} of {entry.lock_key}")
            if not ctx.object_exists(entry.lock_key):
                ctx.locks.discard(entry.lock_key, fd)
        finally:
            ctx.locks.release(fd)
    done += _reconcile_attachments(ctx)
    for line in done:
        log.warning("%s", line)
    return done


def _thaw_leftover(ctx: PoolContext, payload: dict[str, Any]) -> bool:
    """Thaw what a killed copy froze, unless a live operation holds the source volume now
    (a freeze may then be its own); return False if the entry must wait for a later open.

    The freeze guard thaws when its process dies; this covers a guard killed with it.
    """
    if not payload.get("frozen"):
        return True
    owner = str(payload.get("frozen_by") or "")
    fd = ctx.locks.try_acquire(owner) if owner else None
    if owner and fd is None:
        return False
    try:
        ioctl.thaw(Path(payload["frozen"]))
    finally:
        if fd is not None:
            ctx.locks.release(fd)
    return True


def _undo_create(ctx: PoolContext, entry: JournalEntry, payload: dict[str, Any]) -> bool:
    if not _thaw_leftover(ctx, payload):
        return False
    uid = str(payload["uid"])
    known = ctx.store.volume_by_uid(uid) or ctx.store.snapshot_by_uid(uid)
    if known is None:
        loopdev.detach_image(Path(payload["image"]))
        remove_file(Path(payload["image"]))
    ctx.store.journal_remove(entry.id)
    return True


def _recover_entry(ctx: PoolContext, entry: JournalEntry) -> bool:
    """Finish or undo one stale entry; False if it must wait (left for a later open)."""
    payload = entry.payload
    if entry.op in ("create_volume", "create_snapshot"):
        return _undo_create(ctx, entry, payload)
    if entry.op in ("delete_volume", "delete_snapshot"):
        finish_delete(ctx, entry.id, payload, kind=entry.op.removeprefix("delete_"))
    elif entry.op == "expand_volume":
        volume = ctx.store.volume_by_uid(str(payload["uid"]))
        if volume is None:
            ctx.store.journal_remove(entry.id)
        else:
            finish_expand(ctx, entry.id, volume, int(payload["size"]))
    elif entry.op == "attach":
        undo_attach(ctx, payload)
        ctx.store.journal_remove(entry.id)
    elif entry.op == "detach":
        finish_detach(ctx, entry.id, payload)
    elif entry.op == "create_group":
        return undo_create_group(ctx, entry.id, payload, _thaw_leftover)
    elif entry.op == "delete_group":
        finish_delete_group(ctx, entry.id, payload)
    else:
        log.error("unknown journal operation %r left in place", entry.op)
        return False
    return True


def _reconcile_attachments(ctx: PoolContext) -> list[str]:
    """Drop rows whose mount or loop device no longer exists (e.g. after a reboot)."""
    done = []
    loops = {loop.device: loop.backing_file for loop in loopdev.list_loops()}
    for att in ctx.store.attachments():
        kind = "volume" if ctx.store.volume_by_uid(att.object_uid) else "snapshot"
        key = f"{kind}:{att.object_name}"
        fd = ctx.locks.try_acquire(key)
        if fd is None:
            continue
        try:
            alive = att.loop_device in loops
            if att.kind is AttachmentKind.MOUNT or att.path != att.loop_device:
                alive = alive and mount.is_mounted(att.path)
            if not alive:
                with ctx.store.transaction() as db:
                    ctx.store.remove_attachment(db, att.path)
                done.append(f"dropped stale attachment of {att.object_name} at {att.path}")
                _free_unused_loop(ctx, att.object_uid)
        finally:
            ctx.locks.release(fd)
    return done


def _free_unused_loop(ctx: PoolContext, uid: str) -> None:
    if ctx.store.attachments(uid):
        return
    obj = ctx.store.volume_by_uid(uid) or ctx.store.snapshot_by_uid(uid)
    if obj is None:
        return
    for loop in loopdev.find_loops(obj.image):
        if not any(e.source == str(loop.device) for e in mount.mount_table()):
            loopdev.detach(loop.device, backing=obj.image)
