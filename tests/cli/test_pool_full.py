"""A pool whose filesystem was filled by writes to thin volumes still obeys every command.

A 400 MiB XFS pool holds two 300 MiB thin volumes (overprovisioning 4); `dd` fills them until
the pool filesystem has no space left. Then the pool must still be seen (`pool status`, `pool
check`, `volume list`), its volumes unmounted and deleted, and it must recover, each command
answering with its result or one clear line, never a traceback.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.pool.store import FULL_BYTES
from amber.system import fs
from tests.cli.runner import amber, amber_json
from tests.conftest import make_xfs, release_xfs, teardown_mounts_under
from tests.pool.test_full import fill_up


@pytest.fixture
def small_pool(tmp_path: Path) -> Iterator[Path]:
    image, mnt = make_xfs(tmp_path, "400M")
    pool = mnt / "pool"
    try:
        amber_json(pool, "pool", "init", "--dir", str(pool), "--overprovisioning", "4")
        yield pool
    finally:
        teardown_mounts_under(tmp_path / "work")
        release_xfs(image, mnt)  # a busy mount is detached lazily, its loop device freed


def fill(directory: Path, mib: int) -> None:
    """Write random data until `mib` MiB are written or the volume's writes fail."""
    subprocess.run(
        [
            "dd",
            "if=/dev/urandom",
            f"of={directory / 'fill'}",
            "bs=1M",
            f"count={mib}",
            "conv=fsync",
        ],
        capture_output=True,
        check=False,
        timeout=300,
    )


def ok(pool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = amber(pool, *args)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def full_pool(small_pool: Path, tmp_path: Path) -> Path:
    for name in ("a", "b"):
        amber_json(small_pool, "volume", "create", name, "--size", "300Mi")
        amber_json(small_pool, "volume", "mount", name, str(tmp_path / "work" / name))
    for name in ("a", "b"):
        fill(tmp_path / "work" / name, 290)
    assert fs.usage(small_pool).available < FULL_BYTES, "the test did not fill the pool"
    return small_pool


def test_a_full_pool_can_be_seen_unmounted_deleted_and_recovered(full_pool: Path) -> None:
    status = json.loads(ok(full_pool, "--output", "json", "pool", "status").stdout)
    assert status["full"] is True
    assert "nearly full" in status["space_problem"]
    assert status["free"] < 64 * 1024 * 1024
    assert "FULL" in ok(full_pool, "pool", "status").stdout
    assert json.loads(ok(full_pool, "--output", "json", "pool", "check").stdout)["ok"] is True
    assert {v["name"] for v in amber_json(full_pool, "volume", "list")} == {"a", "b"}

    ok(full_pool, "volume", "unmount", "a")
    ok(full_pool, "volume", "delete", "a")

    status = json.loads(ok(full_pool, "--output", "json", "pool", "status").stdout)
    assert status["full"] is False
    assert status["space_problem"] is None
    ok(full_pool, "volume", "create", "c", "--size", "64Mi")
    assert json.loads(ok(full_pool, "--output", "json", "pool", "check").stdout)["ok"] is True


def test_what_needs_room_is_refused_with_one_clear_line(full_pool: Path) -> None:
    for args in (
        ["snapshot", "create", "b", "s"],
        ["volume", "create", "c", "--from-volume", "b"],
        ["volume", "create", "d", "--size", "64Mi"],
    ):
        done = amber(full_pool, *args)
        assert done.returncode == 6, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: "), lines
        assert "full" in lines[0], lines
    assert amber_json(full_pool, "snapshot", "list") == []


def test_with_its_reserve_used_up_the_pool_is_still_seen(full_pool: Path) -> None:
    ok(full_pool, "pool", "status")  # gives the reserve back...
    fill_up(full_pool.parent)  # ...and the writers eat it too

    status = json.loads(ok(full_pool, "--output", "json", "pool", "status").stdout)
    assert status["full"] is True
    assert {v["name"] for v in amber_json(full_pool, "volume", "list")} == {"a", "b"}
    ok(full_pool, "pool", "check")
    done = amber(full_pool, "volume", "unmount", "a")
    assert done.returncode == 6, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: the pool filesystem at "), lines
    assert "is full" in lines[0], lines

    (full_pool.parent / "filler").unlink()
    ok(full_pool, "volume", "unmount", "a")
    ok(full_pool, "volume", "delete", "a")
