"""Group snapshots: one point in time for several volumes.

A group snapshot freezes the filesystem of every mounted volume of the group (one freeze guard
per mount, all frozen before the first copy), reflinks every image, and thaws them all: what the
members hold is what a crash of the whole application at that instant would have left, across
all its volumes (a database's data and its log on two volumes stay in step). Raw block volumes
in use cannot be frozen; their loop devices are flushed before the freeze, as for a single
snapshot, so a group that holds busy block volumes is only crash consistent per volume.

The members are ordinary snapshots (listed, mounted, restored and cloned like any other),
named `<group>-<volume>` (hashed when that is too long), and recorded as members of the group.
A member cannot be deleted on its own while its group exists: deleting the group deletes them.

One journal entry covers the whole operation, so a crash at any step leaves the whole group or
nothing (recovery, `undo_create_group`/`finish_delete_group`), and the freeze guards thaw every
filesystem when this process dies; the frozen mount points are journaled too, so that the next
pool open thaws them should a guard die with it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SystemFailure,
)
from amber.domain.models import AttachmentKind, Snapshot, SnapshotGroup, Volume
from amber.domain.names import NAME_MAX, validate_name
from amber.pool.context import POOL_LOCK, PoolContext, remove_file
from amber.pool.copy import copy_image, flush_devices
from amber.pool.store import new_uid
from amber.system import freeze, loopdev

__all__ = ["Group", "Groups", "finish_delete_group", "member_name", "undo_create_group"]

_DIGEST_HEX = 16


@dataclass(frozen=True)
class Group:
    """A group snapshot and its member snapshots (in the order their volumes were given)."""

    uid: str
    name: str
    created: float
    members: tuple[Snapshot, ...]

    @property
    def volume_names(self) -> list[str]:
        return [m.volume_name for m in self.members]


@dataclass(frozen=True)
class _Member:
    uid: str
    name: str
    volume: Volume
    image: Path


def member_name(group: str, volume: str, limit: int = NAME_MAX) -> str:
    """The name of the member snapshot of `volume` in `group`: `<group>-<volume>`, or that
    name cut short with `--` and 16 hex digits of a hash when it would exceed `limit`."""
    plain = f"{group}-{volume}"
    if len(plain) <= limit:
        return plain
    digest = hashlib.sha256(f"{group}\0{volume}".encode()).hexdigest()[:_DIGEST_HEX]
    return f"{plain[: limit - _DIGEST_HEX - 2].rstrip('.-_')}--{digest}"


def _check_request(name: str, volume_names: list[str]) -> None:
    validate_name("snapshot group", name)
    if not volume_names:
        raise InvalidArgument(f"snapshot group {name!r} needs at least one volume")
    seen: set[str] = set()
    for volume in volume_names:
        validate_name("volume", volume)
        if volume in seen:
            raise InvalidArgument(f"volume {volume!r} is named twice in snapshot group {name!r}")
        seen.add(volume)


class Groups:
    """Group snapshot operations on one pool."""

    def __init__(self, ctx: PoolContext) -> None:
        self._ctx = ctx

    def _load(self, group: SnapshotGroup) -> Group:
        members = []
        for uid in group.member_uids:
            snapshot = self._ctx.store.snapshot_by_uid(uid)
            if snapshot is not None:
                members.append(snapshot)
        return Group(group.uid, group.name, group.created, tuple(members))

    def find(self, name: str) -> Group | None:
        found = self._ctx.store.find_group(name)
        return None if found is None else self._load(found)

    def get(self, name: str) -> Group:
        validate_name("snapshot group", name)
        found = self.find(name)
        if found is None:
            raise NotFound(f"snapshot group {name!r} not found (see `amber snapshot list-groups`)")
        return found

    def of_snapshot(self, snapshot: Snapshot) -> Group | None:
        """The group `snapshot` is a member of, if any."""
        found = self._ctx.store.group_of_snapshot(snapshot.uid)
        return None if found is None else self._load(found)

    # -- create ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        volume_names: list[str],
        *,
        exist_ok: bool = False,
        name_limit: int = NAME_MAX,
    ) -> Group:
        """Snapshot `volume_names` at one instant as the group `name`.

        With `exist_ok`, a group of that name of the same volumes (in any order) is returned
        as it is; a group of that name of other volumes is AlreadyExists either way.
        """
        _check_request(name, volume_names)
        names = {v: member_name(name, v, name_limit) for v in volume_names}
        keys = [f"group:{name}"]
        keys += [f"snapshot:{n}" for n in names.values()] + [f"volume:{v}" for v in names]
        ctx = self._ctx
        with ctx.hold_objects(keys):
            existing = self.find(name)
            if existing is not None:
                if exist_ok and sorted(existing.volume_names) == sorted(volume_names):
                    return existing
                raise AlreadyExists(
                    f"snapshot group {name!r} already exists "
                    f"(of volumes {', '.join(existing.volume_names)})"
                )
            plan = self._plan(names)
            return self._create_locked(name, plan)

    def _plan(self, names: dict[str, str]) -> list[_Member]:
        store = self._ctx.store
        plan = []
        for volume_name, snapshot_name in names.items():
            volume = store.volume(volume_name)
            taken = store.find_snapshot(snapshot_name)
            if taken is not None:
                raise AlreadyExists(
                    f"snapshot {snapshot_name!r} already exists (of volume "
                    f"{taken.volume_name!r}): choose another group name"
                )
            uid = new_uid()
            plan.append(_Member(uid, snapshot_name, volume, self._ctx.snapshot_image(uid)))
        return plan

    def _create_locked(self, name: str, plan: list[_Member]) -> Group:
        ctx = self._ctx
        uid = new_uid()
        payload: dict[str, Any] = {
            "uid": uid,
            "name": name,
            "members": [{"uid": m.uid, "name": m.name, "image": str(m.image)} for m in plan],
        }
        with ctx.locks.hold(POOL_LOCK, timeout=ctx.settings.lock_timeout, what="the pool"):
            ctx.check_free_space(f"snapshot group {name!r}")
            journal_id = ctx.store.journal_add("create_group", f"group:{name}", payload)
        ctx.failpoint("group.create.journaled")
        try:
            self._copy_all(plan, journal_id, payload)
            for member in plan:
                os.chmod(member.image, 0o400)
            ctx.failpoint("group.create.copied")
            return self._record(uid, name, plan, journal_id)
        except BaseException:
            for member in plan:
                remove_file(member.image)
            ctx.store.journal_remove(journal_id)
            raise

    def _copy_all(self, plan: list[_Member], journal_id: int, payload: dict[str, Any]) -> None:
        """Copy every image at one instant: all mounted filesystems frozen, then all copied."""
        ctx = self._ctx
        frozen: list[dict[str, str]] = []
        for member in plan:
            attachments = ctx.store.attachments(member.volume.uid)
            mounts = [
                a.path for a in attachments if a.kind is AttachmentKind.MOUNT and not a.read_only
            ]
            if mounts:
                frozen.append({"path": str(mounts[0]), "by": f"volume:{member.volume.name}"})
            else:
                flush_devices(sorted({a.loop_device for a in attachments}))
        if frozen:
            # Journaled before the first freeze: recovery thaws them if a guard dies with us.
            ctx.store.journal_update(journal_id, {**payload, "frozen": frozen})
        limit = ctx.settings.freeze_limit
        with ExitStack() as stack:
            held = [
                stack.enter_context(freeze.frozen(Path(f["path"]), limit, ctx.failpoint))
                for f in frozen
            ]
            ctx.failpoint("group.frozen")
            for member in plan:
                copy_image(ctx, member.volume.image, member.image)
            ctx.failpoint("group.copied")
        expired = [str(h.mountpoint) for h in held if h.expired]
        if expired:
            raise SystemFailure(
                f"copying took longer than the freeze limit of {limit:g}s; "
                f"{', '.join(expired)} thawed early and the group was discarded — retry"
            )

    def _record(self, uid: str, name: str, plan: list[_Member], journal_id: int) -> Group:
        ctx = self._ctx
        now = time.time()
        members = tuple(
            Snapshot(
                uid=m.uid,
                name=m.name,
                volume_name=m.volume.name,
                volume_uid=m.volume.uid,
                size=m.volume.size,
                mode=m.volume.mode,
                fs_type=m.volume.fs_type,
                created=now,
                image=m.image,
                allocated=os.stat(m.image).st_blocks * 512,
            )
            for m in plan
        )
        group = SnapshotGroup(uid, name, now, tuple(m.uid for m in plan))
        with ctx.store.transaction() as db:
            for snapshot in members:
                ctx.store.insert_snapshot(db, snapshot)
            ctx.store.insert_group(db, group)
            ctx.store.journal_remove(journal_id, db)
        return Group(uid, name, now, members)

    # -- delete ---------------------------------------------------------------------------

    def delete(self, name: str) -> Group:
        """Delete a group and all its member snapshots (refused while a member is in use)."""
        ctx = self._ctx
        validate_name("snapshot group", name)
        with ctx.hold_objects([f"group:{name}"]):
            group = self.get(name)
            with ctx.hold_objects([f"snapshot:{m.name}" for m in group.members]):
                for member in group.members:
                    in_use = ctx.store.attachments(member.uid)
                    if in_use:
                        where = ", ".join(str(a.path) for a in in_use)
                        raise FailedPrecondition(
                            f"snapshot group {name!r} is in use: its member {member.name!r} "
                            f"is mounted at {where}; unmount it first "
                            f"(`amber snapshot unmount {member.name}`)"
                        )
                payload = {
                    "uid": group.uid,
                    "name": name,
                    "members": [
                        {"uid": m.uid, "name": m.name, "image": str(m.image)} for m in group.members
                    ],
                }
                journal_id = ctx.store.journal_add("delete_group", f"group:{name}", payload)
                ctx.failpoint("group.delete.journaled")
                finish_delete_group(ctx, journal_id, payload)
        return group

    def list(self) -> list[Group]:  # last: the name shadows the builtin in the class body
        return [self._load(g) for g in self._ctx.store.groups()]


def finish_delete_group(ctx: PoolContext, journal_id: int, payload: Mapping[str, Any]) -> None:
    """Roll a journaled group delete forward: drop the rows, then every member's image."""
    with ctx.store.transaction() as db:
        ctx.store.delete_group_rows(db, str(payload["uid"]))
    ctx.failpoint("group.delete.rows-removed")
    for member in payload["members"]:
        image = Path(str(member["image"]))
        loopdev.detach_image(image)
        remove_file(image)
    ctx.failpoint("group.delete.files-removed")
    ctx.store.journal_remove(journal_id)


def undo_create_group(
    ctx: PoolContext,
    journal_id: int,
    payload: Mapping[str, Any],
    thaw_leftover: Callable[[PoolContext, dict[str, Any]], bool],
) -> bool:
    """Undo an interrupted group create: thaw what it froze, remove the images of a group
    that was not recorded. False when a freeze may belong to a live operation (retry later)."""
    for frozen in payload.get("frozen", []):
        if not thaw_leftover(ctx, {"frozen": frozen["path"], "frozen_by": frozen["by"]}):
            return False
    if ctx.store.group_by_uid(str(payload["uid"])) is None:
        for member in payload["members"]:
            if ctx.store.snapshot_by_uid(str(member["uid"])) is None:
                image = Path(str(member["image"]))
                loopdev.detach_image(image)
                remove_file(image)
    ctx.store.journal_remove(journal_id)
    return True
