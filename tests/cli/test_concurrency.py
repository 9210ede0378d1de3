"""Concurrent `amber` commands on one volume are serialized and all converge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.cli.runner import amber_json


def _spawn(pool: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "amber", "--pool", str(pool), "--output", "json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_parallel_snapshots_and_expansion_of_one_mounted_volume(
    pool_dir: Path, work_dir: Path
) -> None:
    amber_json(pool_dir, "volume", "create", "v", "--size", "320Mi", "--fs", "xfs")
    amber_json(pool_dir, "volume", "mount", "v", str(work_dir / "v"))
    procs = [_spawn(pool_dir, "snapshot", "create", "v", f"s{i}") for i in range(8)]
    procs.append(_spawn(pool_dir, "volume", "expand", "v", "--size", "640Mi"))
    procs += [_spawn(pool_dir, "snapshot", "create", "v", f"t{i}") for i in range(4)]
    results = [
        (
            p.wait(timeout=120),
            p.stdout.read() if p.stdout else "",
            p.stderr.read() if p.stderr else "",
        )
        for p in procs
    ]
    for code, _out, err in results:
        assert code == 0, err
    names = sorted(s["name"] for s in amber_json(pool_dir, "snapshot", "list"))
    assert names == sorted([f"s{i}" for i in range(8)] + [f"t{i}" for i in range(4)])
    assert amber_json(pool_dir, "volume", "show", "v")["volume"]["size"] == 640 * 1024 * 1024
    sizes = {s["size"] for s in amber_json(pool_dir, "snapshot", "list")}
    assert sizes <= {320 * 1024 * 1024, 640 * 1024 * 1024}
    assert amber_json(pool_dir, "pool", "check")["ok"] is True


def test_racing_creates_of_one_name_yield_exactly_one_volume(pool_dir: Path) -> None:
    procs = [_spawn(pool_dir, "volume", "create", "same", "--size", "64Mi") for _ in range(8)]
    codes = [p.wait(timeout=120) for p in procs]
    assert codes.count(0) == 1
    assert sorted(codes) == [0] + [4] * 7  # the others: AlreadyExists
    volumes = amber_json(pool_dir, "volume", "list")
    assert [v["name"] for v in volumes] == ["same"]
    files = list((pool_dir / "volumes").iterdir())
    assert len(files) == 1
    assert json.loads(json.dumps(amber_json(pool_dir, "pool", "check")))["ok"] is True
