"""Group snapshots on a real reflink pool: one instant for several volumes, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest
from amber.pool.groups import member_name
from tests.pool.frozen import guards_of, no_guard_left, writable_within
from tests.pool.helpers import sha256, tree_digest, write_random


class Boom(Exception):
    pass


def _two_mounted(pool: Pool, work_dir: Path) -> tuple[Path, Path]:
    pool.volumes.create(VolumeRequest("data", 256 * MiB, fs_type="ext4"))
    pool.volumes.create(VolumeRequest("log", 320 * MiB, fs_type="xfs"))
    data, log = work_dir / "data", work_dir / "log"
    pool.attachments.mount("volume", "data", data, create_target=True)
    pool.attachments.mount("volume", "log", log, create_target=True)
    return data, log


def test_every_mounted_filesystem_is_frozen_before_the_first_copy(
    pool: Pool, work_dir: Path
) -> None:
    data, log = _two_mounted(pool, work_dir)
    seen: dict[str, list[int]] = {}

    def at(name: str) -> None:
        if name == "group.frozen":
            seen["data"], seen["log"] = guards_of(data), guards_of(log)

    pool.ctx.failpoint = at
    pool.groups.create("g", ["data", "log"])

    assert len(seen["data"]) == 1, "data was not frozen while the images were copied"
    assert len(seen["log"]) == 1, "log was not frozen while the images were copied"
    assert no_guard_left(data)
    assert no_guard_left(log)
    assert writable_within(data)
    assert writable_within(log)


def test_members_are_ordinary_snapshots_that_restore_the_moment(pool: Pool, work_dir: Path) -> None:
    data, log = _two_mounted(pool, work_dir)
    pool.volumes.create(VolumeRequest("raw", 64 * MiB, mode=VolumeMode.BLOCK))
    write_random(data / "table", 8 * MiB, seed=1)
    write_random(log / "wal", 4 * MiB, seed=2)
    at_moment = {"data": tree_digest(data), "log": tree_digest(log)}
    raw_before = sha256(pool.volumes.get("raw").image)

    group = pool.groups.create("g", ["data", "log", "raw"])
    write_random(data / "table", 8 * MiB, seed=3)
    write_random(log / "wal", 4 * MiB, seed=4)

    assert [m.name for m in group.members] == ["g-data", "g-log", "g-raw"]
    assert [m.volume_name for m in group.members] == ["data", "log", "raw"]
    listed = {s.name for s in pool.snapshots.list()}
    assert listed == {"g-data", "g-log", "g-raw"}
    for volume in ("data", "log"):
        pool.volumes.create(
            VolumeRequest(
                f"r-{volume}",
                320 * MiB,
                source_kind=SourceKind.SNAPSHOT,
                source_name=f"g-{volume}",
            )
        )
        target = work_dir / f"r-{volume}"
        pool.attachments.mount("volume", f"r-{volume}", target, create_target=True)
        assert tree_digest(target) == at_moment[volume]
    assert sha256(pool.snapshots.get("g-raw").image) == raw_before


def test_create_is_idempotent_by_name_and_refuses_other_volumes(pool: Pool) -> None:
    for name in ("a", "b", "c"):
        pool.volumes.create(VolumeRequest(name, 64 * MiB, mode=VolumeMode.BLOCK))
    first = pool.groups.create("g", ["a", "b"])

    again = pool.groups.create("g", ["b", "a"], exist_ok=True)
    assert again.uid == first.uid
    assert [m.uid for m in again.members] == [m.uid for m in first.members]
    with pytest.raises(AlreadyExists, match="of volumes a, b"):
        pool.groups.create("g", ["a", "c"], exist_ok=True)
    with pytest.raises(AlreadyExists):
        pool.groups.create("g", ["a", "b"])
    assert [g.name for g in pool.groups.list()] == ["g"]


@pytest.mark.parametrize(
    ("volumes", "error"),
    [([], InvalidArgument), (["a", "a"], InvalidArgument), (["a", "nope"], NotFound)],
)
def test_bad_requests_leave_nothing(pool: Pool, volumes: list[str], error: type) -> None:
    pool.volumes.create(VolumeRequest("a", 64 * MiB, mode=VolumeMode.BLOCK))
    with pytest.raises(error):
        pool.groups.create("g", volumes)
    assert pool.groups.list() == []
    assert pool.snapshots.list() == []
    assert pool.ctx.store.journal() == []


def test_a_failure_after_the_copies_leaves_nothing_and_thaws(pool: Pool, work_dir: Path) -> None:
    data, log = _two_mounted(pool, work_dir)

    def at(name: str) -> None:
        if name == "group.copied":
            raise Boom

    pool.ctx.failpoint = at
    with pytest.raises(Boom):
        pool.groups.create("g", ["data", "log"])

    assert writable_within(data)
    assert writable_within(log)
    assert pool.groups.list() == []
    assert pool.snapshots.list() == []
    assert list((pool.root / "snapshots").iterdir()) == []
    assert pool.ctx.store.journal() == []


def test_a_member_is_deleted_only_with_its_group(pool: Pool, work_dir: Path) -> None:
    for name in ("a", "b"):
        pool.volumes.create(VolumeRequest(name, 64 * MiB))
    group = pool.groups.create("g", ["a", "b"])

    with pytest.raises(FailedPrecondition, match="member of the snapshot group 'g'"):
        pool.snapshots.delete("g-a")
    pool.attachments.mount("snapshot", "g-b", work_dir / "gb", create_target=True)
    with pytest.raises(FailedPrecondition, match="in use"):
        pool.groups.delete("g")
    assert pool.groups.get("g").uid == group.uid
    pool.attachments.release("snapshot", "g-b")

    pool.groups.delete("g")

    assert pool.groups.list() == []
    assert pool.snapshots.list() == []
    assert all(not m.image.exists() for m in group.members)
    with pytest.raises(NotFound):
        pool.groups.delete("g")


def test_a_group_survives_its_volumes(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("a", 64 * MiB, mode=VolumeMode.BLOCK))
    pool.groups.create("g", ["a"])
    pool.volumes.delete("a")
    assert [m.name for m in pool.groups.get("g").members] == ["g-a"]


def test_long_member_names_are_hashed_and_stay_distinct() -> None:
    group, limit = "g" * 60, 80
    a, b = member_name(group, "v" * 50 + "a", limit), member_name(group, "v" * 50 + "b", limit)
    assert a != b
    assert len(a) <= limit
    assert len(b) <= limit
    assert member_name("g", "v") == "g-v"
