"""kill -9 of `amber snapshot create-group|delete-group` at each of their failpoints.

The next command (`amber pool check`, which recovers first) must find a consistent pool: the
whole group or nothing, no orphan image, no journal entry, and no frozen filesystem. The checks
of writability run before any `amber` command: the freeze guards alone must have thawed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.runner import amber, amber_json
from tests.pool.frozen import no_guard_left, writable_within

CREATE_POINTS = [
    "group.create.journaled",
    "freeze.guard-started",
    "group.frozen",
    "group.copied",
    "freeze.thaw-requested",
    "group.create.copied",
]
DELETE_POINTS = [
    "group.delete.journaled",
    "group.delete.rows-removed",
    "group.delete.files-removed",
]


def _two_mounted(pool: Path, work: Path) -> list[Path]:
    mounts = []
    for name in ("a", "b"):
        amber_json(pool, "volume", "create", name, "--size", "128Mi")
        amber_json(pool, "volume", "mount", name, str(work / name))
        (work / name / "data").write_text(f"payload {name}")
        mounts.append(work / name)
    return mounts


def _consistent(pool: Path) -> None:
    checked = amber(pool, "--output", "json", "pool", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)["problems"] == []


@pytest.mark.parametrize("failpoint", CREATE_POINTS)
def test_kill_during_create_group_leaves_nothing_and_nothing_frozen(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    mounts = _two_mounted(pool_dir, work_dir)

    crashed = amber(pool_dir, "snapshot", "create-group", "g", "a", "b", crash_at=failpoint)

    assert crashed.returncode == -9, f"failpoint {failpoint} was not reached: {crashed.stderr}"
    for mnt in mounts:
        assert writable_within(mnt), f"{mnt} stayed frozen after kill -9 at {failpoint}"
        assert no_guard_left(mnt), "a freeze guard outlived its parent"
    _consistent(pool_dir)
    assert amber_json(pool_dir, "snapshot", "list-groups") == []
    assert amber_json(pool_dir, "snapshot", "list") == []
    # The pool keeps working: the same group can be taken now.
    group = amber_json(pool_dir, "snapshot", "create-group", "g", "a", "b")
    assert [m["name"] for m in group["members"]] == ["g-a", "g-b"]


@pytest.mark.parametrize("failpoint", DELETE_POINTS)
def test_kill_during_delete_group_finishes_the_delete(
    pool_dir: Path, work_dir: Path, failpoint: str
) -> None:
    _two_mounted(pool_dir, work_dir)
    amber_json(pool_dir, "snapshot", "create-group", "g", "a", "b")

    crashed = amber(pool_dir, "snapshot", "delete-group", "g", crash_at=failpoint)

    assert crashed.returncode == -9, f"failpoint {failpoint} was not reached: {crashed.stderr}"
    _consistent(pool_dir)
    assert amber_json(pool_dir, "snapshot", "list-groups") == []
    assert amber_json(pool_dir, "snapshot", "list") == []
    assert list((pool_dir / "snapshots").iterdir()) == []
