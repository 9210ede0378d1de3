"""Bad input gets a clear error and changes nothing; a full pool leaves nothing behind."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.domain.errors import (
    AlreadyExists,
    AmberError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    OutOfSpace,
)
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import GiB, MiB
from amber.pool import Pool, VolumeRequest
from tests.conftest import make_xfs, teardown_mounts_under
from tests.pool.helpers import write_random


def _state(pool: Pool) -> tuple[object, ...]:
    files = sorted(p.name for p in (pool.root / "volumes").iterdir()) + sorted(
        p.name for p in (pool.root / "snapshots").iterdir()
    )
    return (
        [v.name for v in pool.volumes.list()],
        [s.name for s in pool.snapshots.list()],
        files,
        pool.ctx.store.journal(),
    )


HOSTILE_NAMES = [
    "",
    "a/b",
    "..",
    "../x",
    "x\ny",
    "x\x00y",
    "-lead",
    ".hidden",
    "a" * 101,
    "ü",
    "a b",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_bad_names_are_refused(pool: Pool, name: str) -> None:
    before = _state(pool)
    with pytest.raises(InvalidArgument, match="invalid volume name"):
        pool.volumes.create(VolumeRequest(name, 64 * MiB))
    pool.volumes.create(VolumeRequest("ok", 64 * MiB))
    with pytest.raises(InvalidArgument, match="invalid snapshot name"):
        pool.snapshots.create("ok", name)
    pool.volumes.delete("ok")
    assert _state(pool) == before


def test_errors_name_the_object_and_change_nothing(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("v", 64 * MiB))
    before = _state(pool)
    cases: list[tuple[type[AmberError], object]] = [
        (AlreadyExists, lambda: pool.volumes.create(VolumeRequest("v", 64 * MiB))),
        (NotFound, lambda: pool.volumes.get("nope")),
        (NotFound, lambda: pool.volumes.delete("nope")),
        (NotFound, lambda: pool.snapshots.create("nope", "s")),
        (NotFound, lambda: pool.snapshots.delete("nope")),
        (OutOfRange, lambda: pool.volumes.expand("v", 32 * MiB)),
        (OutOfRange, lambda: pool.volumes.create(VolumeRequest("tiny", MiB))),
        (InvalidArgument, lambda: pool.volumes.create(VolumeRequest("neg", -5))),
        (
            InvalidArgument,
            lambda: pool.volumes.create(VolumeRequest("fat", 64 * MiB, fs_type="fat")),
        ),
        (
            NotFound,
            lambda: pool.volumes.create(
                VolumeRequest("c", 64 * MiB, source_kind=SourceKind.VOLUME, source_name="nope")
            ),
        ),
        (
            OutOfRange,
            lambda: pool.volumes.create(
                VolumeRequest("c", 32 * MiB, source_kind=SourceKind.VOLUME, source_name="v")
            ),
        ),
        (
            InvalidArgument,
            lambda: pool.volumes.create(
                VolumeRequest("v2", 64 * MiB, source_kind=SourceKind.VOLUME, source_name="v2")
            ),
        ),
    ]
    for error, call in cases:
        with pytest.raises(error) as info:
            call()  # type: ignore[operator]
        assert str(info.value)
        assert "\n" not in str(info.value)
        assert _state(pool) == before


def test_duplicate_snapshot_name_is_refused(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("v", 64 * MiB))
    pool.snapshots.create("v", "s")
    with pytest.raises(AlreadyExists, match="snapshot 's' already exists"):
        pool.snapshots.create("v", "s")
    assert pool.snapshots.create("v", "s", exist_ok=True).name == "s"


def test_idempotent_create_returns_the_same_volume(pool: Pool) -> None:
    first = pool.volumes.create(VolumeRequest("idem", 64 * MiB), exist_ok=True)
    again = pool.volumes.create(VolumeRequest("idem", 64 * MiB), exist_ok=True)
    assert again.uid == first.uid
    with pytest.raises(AlreadyExists, match="different parameters"):
        pool.volumes.create(VolumeRequest("idem", 64 * MiB, mode=VolumeMode.BLOCK), exist_ok=True)


def test_in_use_volume_cannot_be_deleted(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("busy", 64 * MiB))
    pool.attachments.mount("volume", "busy", work_dir / "m", create_target=True)
    with pytest.raises(FailedPrecondition, match="in use"):
        pool.volumes.delete("busy")
    assert pool.volumes.get("busy")


def test_hostile_mount_paths_are_refused(pool: Pool) -> None:
    pool.volumes.create(VolumeRequest("v", 64 * MiB))
    for target in ["relative/dir", "/tmp/x\x00y"]:
        with pytest.raises(InvalidArgument):
            pool.attachments.mount("volume", "v", Path(target))
    with pytest.raises(InvalidArgument, match="mount option"):
        pool.attachments.mount("volume", "v", Path("/tmp"), options=["ro,exec"])
    assert pool.attachments.list() == []


def test_capacity_accounting_refuses_what_does_not_fit(pool: Pool) -> None:
    capacity = pool.status().capacity
    pool.volumes.create(VolumeRequest("most", capacity - 512 * MiB, mode=VolumeMode.BLOCK))
    before = _state(pool)
    with pytest.raises(OutOfSpace, match="not enough pool capacity"):
        pool.volumes.create(VolumeRequest("more", 1 * GiB, mode=VolumeMode.BLOCK))
    with pytest.raises(OutOfSpace, match="not enough pool capacity"):
        pool.volumes.expand("most", capacity + GiB)
    assert _state(pool) == before


@pytest.fixture
def tiny_pool(tmp_path: Path) -> Iterator[Pool]:
    """A pool on its own 400 MiB XFS, to fill up for real."""
    _, mnt = make_xfs(tmp_path, "400M")
    Pool.init_dir(mnt / "pool", overprovisioning=20.0)
    pool = Pool.open(mnt / "pool")
    yield pool
    pool.close()
    teardown_mounts_under(tmp_path)
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_full_pool_filesystem_refuses_and_leaves_nothing_behind(
    tiny_pool: Pool, tmp_path: Path
) -> None:
    pool = tiny_pool
    pool.volumes.create(VolumeRequest("filler", 1 * GiB))
    target = tmp_path / "filler"
    pool.attachments.mount("volume", "filler", target, create_target=True)
    with pytest.raises(OSError, match=r"No space|Input/output"):
        write_random(target / "big", 1 * GiB, seed=1)  # the pool fills up under the volume
    before = _state(pool)
    with pytest.raises(OutOfSpace, match="full"):
        pool.volumes.create(VolumeRequest("late", 64 * MiB))
    with pytest.raises(OutOfSpace, match="full"):
        pool.snapshots.create("filler", "late-snap")
    assert _state(pool) == before
    pool.attachments.release("volume", "filler")
    assert pool.check() == []
