"""kill -9 at every step of every multi-step operation leaves a consistent pool.

Each case prepares a pool, runs one `amber` command that SIGKILLs itself at a named failpoint,
then runs the next command (`amber pool check`, which recovers first) and checks that the pool
is consistent: no half volume, no orphan image, no journal entry, no leaked loop device or mount,
no frozen filesystem; and that the operation was either undone or finished, as documented.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from amber.system import loopdev, mount
from tests.cli.runner import amber, amber_json


@dataclass(frozen=True)
class Case:
    failpoint: str
    args: Callable[[Path], list[str]]
    setup: Callable[[Path, Path], None]
    expect: Callable[[Path, Path], None]


def _volume(pool: Path, work: Path) -> None:
    amber_json(pool, "volume", "create", "v", "--size", "128Mi")


def _mounted_volume(pool: Path, work: Path) -> None:
    _volume(pool, work)
    amber_json(pool, "volume", "mount", "v", str(work / "v"))
    (work / "v" / "data").write_text("payload")


def _snapshot(pool: Path, work: Path) -> None:
    _mounted_volume(pool, work)
    amber_json(pool, "snapshot", "create", "v", "s")


def _names(pool: Path, kind: str) -> list[str]:
    return [o["name"] for o in amber_json(pool, kind, "list")]


def _writable(directory: Path) -> bool:
    """Write and fsync in a subprocess, so that a frozen filesystem cannot hang the test."""
    probe = str(directory / "probe")
    code = f"import os; f=open({probe!r},'w'); f.write('x'); f.flush(); os.fsync(f.fileno())"
    try:
        subprocess.run([sys.executable, "-c", code], timeout=15, check=True)
    except subprocess.TimeoutExpired:
        return False
    return True


def _absent(kind: str, name: str) -> Callable[[Path, Path], None]:
    def check(pool: Path, work: Path) -> None:
        assert name not in _names(pool, kind)

    return check


def _absent_and_source_thawed(kind: str, name: str) -> Callable[[Path, Path], None]:
    def check(pool: Path, work: Path) -> None:
        assert name not in _names(pool, kind)
        assert _writable(work / "v"), "the source filesystem was left frozen"

    return check


def _expanded(pool: Path, work: Path) -> None:
    assert amber_json(pool, "volume", "show", "v")["volume"]["size"] == 256 * 1024 * 1024


def _not_mounted(pool: Path, work: Path) -> None:
    assert not mount.is_mounted(work / "m")
    assert amber_json(pool, "volume", "show", "v")["attachments"] == []


CREATE = ["volume.create.journaled", "volume.create.allocated", "volume.create.filled"]
COPY = ["volume.create.journaled", "copy.frozen", "volume.create.filled"]

CASES: list[Case] = [
    *[
        Case(
            fp,
            lambda p: ["volume", "create", "n", "--size", "64Mi"],
            lambda p, w: None,
            _absent("volume", "n"),
        )
        for fp in CREATE
    ],
    *[
        Case(
            fp,
            lambda p: ["volume", "create", "c", "--from-volume", "v"],
            _mounted_volume,
            _absent_and_source_thawed("volume", "c"),
        )
        for fp in COPY
    ],
    *[
        Case(
            fp,
            lambda p: ["volume", "create", "r", "--from-snapshot", "s", "--size", "256Mi"],
            _snapshot,
            _absent("volume", "r"),
        )
        for fp in ["volume.create.journaled", "volume.create.filled"]
    ],
    *[
        Case(
            fp,
            lambda p: ["snapshot", "create", "v", "s2"],
            _mounted_volume,
            _absent_and_source_thawed("snapshot", "s2"),
        )
        for fp in ["snapshot.create.journaled", "copy.frozen", "snapshot.create.copied"]
    ],
    *[
        Case(fp, lambda p: ["volume", "delete", "v"], _volume, _absent("volume", "v"))
        for fp in [
            "volume.delete.journaled",
            "volume.delete.row-removed",
            "volume.delete.file-removed",
        ]
    ],
    *[
        Case(fp, lambda p: ["snapshot", "delete", "s"], _snapshot, _absent("snapshot", "s"))
        for fp in [
            "snapshot.delete.journaled",
            "snapshot.delete.row-removed",
            "snapshot.delete.file-removed",
        ]
    ],
    *[
        Case(fp, lambda p: ["volume", "expand", "v", "--size", "256Mi"], _mounted_volume, _expanded)
        for fp in [
            "volume.expand.journaled",
            "volume.expand.image-grown",
            "volume.expand.device-refreshed",
        ]
    ],
    *[
        Case(
            fp,
            lambda p: ["volume", "mount", "v", str(p.parent / f"{p.name}-work" / "m")],
            _volume,
            _not_mounted,
        )
        for fp in ["attach.loop-attached", "attach.mounted"]
    ],
    *[
        Case(
            fp,
            lambda p: ["volume", "unmount", "v"],
            _mounted_volume,
            lambda p, w: (_not_mounted(p, w), None)[1],
        )
        for fp in ["detach.journaled", "detach.unmounted"]
    ],
]


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{' '.join(c.args(Path('/p'))[:2])}@{c.failpoint}" for c in CASES]
)
def test_kill_at_failpoint_leaves_pool_consistent(
    pool_dir: Path, work_dir: Path, case: Case
) -> None:
    case.setup(pool_dir, work_dir)
    crashed = amber(pool_dir, *case.args(pool_dir), crash_at=case.failpoint)
    assert crashed.returncode == -9, f"failpoint {case.failpoint} was not reached: {crashed.stderr}"

    checked = amber(pool_dir, "--output", "json", "pool", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = __import__("json").loads(checked.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    case.expect(pool_dir, work_dir)

    # Nothing of the pool is left in the kernel beyond what its rows say.
    images = {str(p) for p in pool_dir.rglob("*.img")}
    recorded = {
        a["loop_device"]
        for v in _names(pool_dir, "volume")
        for a in amber_json(pool_dir, "volume", "show", v)["attachments"]
    }
    for loop in loopdev.list_loops():
        if str(loop.backing_file) in images:
            assert str(loop.device) in recorded, f"leaked {loop.device}"
    # The pool keeps working after the crash.
    amber_json(pool_dir, "volume", "create", "after", "--size", "64Mi")
