"""`amber snapshot diff`: the real command on a real pool."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.runner import amber, amber_json

KiB, MiB = 1024, 1024 * 1024


def _write(device: str, offset: int, data: bytes) -> None:
    fd = os.open(device, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _two_snapshots(pool: Path) -> None:
    amber_json(pool, "volume", "create", "blk", "--size", "64Mi", "--block")
    device = amber_json(pool, "volume", "attach", "blk")["loop_device"]
    _write(device, 2 * MiB, os.urandom(64 * KiB))
    amber_json(pool, "snapshot", "create", "blk", "a")
    _write(device, 2 * MiB + 16 * KiB, os.urandom(8 * KiB))
    _write(device, 40 * MiB, os.urandom(4 * KiB))
    amber_json(pool, "snapshot", "create", "blk", "b")
    amber_json(pool, "volume", "detach", "blk")


def test_diff_lists_the_changed_ranges_as_json_and_text(pool_dir: Path) -> None:
    _two_snapshots(pool_dir)
    found = amber_json(pool_dir, "snapshot", "diff", "a", "b")
    assert found["ranges"] == [
        {"offset": 2 * MiB + 16 * KiB, "length": 8 * KiB},
        {"offset": 40 * MiB, "length": 4 * KiB},
    ]
    assert found["changed_bytes"] == 12 * KiB
    assert (found["capacity"], found["block_size"], found["volume"]) == (64 * MiB, 4096, "blk")
    assert amber_json(pool_dir, "snapshot", "diff", "b", "b")["ranges"] == []

    done = amber(pool_dir, "snapshot", "diff", "a", "b")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split() == [str(2 * MiB + 16 * KiB), str(8 * KiB)]
    assert "b differs from a in 2 range(s)" in lines[-1]


def test_diff_errors_are_one_line(pool_dir: Path) -> None:
    _two_snapshots(pool_dir)
    amber_json(pool_dir, "volume", "create", "other", "--size", "16Mi", "--block")
    amber_json(pool_dir, "snapshot", "create", "other", "o")
    for args, code, words in (
        (["a", "missing"], 3, "snapshot 'missing' not found"),
        (["a", "o"], 2, "not snapshots of the same volume"),
        (["a"], 2, "Missing argument"),
    ):
        done = amber(pool_dir, "snapshot", "diff", *args)
        assert done.returncode == code, done.stderr
        assert done.stdout == ""
        assert done.stderr.startswith("error: ")
        assert words in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
