"""The `amber` command as users and scripts run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.runner import amber, amber_json


def test_volume_lifecycle_with_json_output(pool_dir: Path, work_dir: Path) -> None:
    created = amber_json(pool_dir, "volume", "create", "data", "--size", "256Mi")
    assert created["volume"]["size"] == 256 * 1024 * 1024
    assert created["volume"]["fs_type"] == "ext4"
    mounted = amber_json(pool_dir, "volume", "mount", "data", str(work_dir / "m"))
    assert mounted["attachments"][0]["path"] == str(work_dir / "m")
    (work_dir / "m" / "file").write_text("v1")
    snap = amber_json(pool_dir, "snapshot", "create", "data", "snap1")
    assert snap["snapshot"]["volume_name"] == "data"
    (work_dir / "m" / "file").write_text("v2")
    amber_json(pool_dir, "volume", "create", "back", "--from-snapshot", "snap1")
    amber_json(pool_dir, "volume", "mount", "back", str(work_dir / "b"), "--read-only")
    assert (work_dir / "b" / "file").read_text() == "v1"
    listed = amber_json(pool_dir, "volume", "list")
    assert [v["name"] for v in listed] == ["back", "data"]
    assert [s["name"] for s in amber_json(pool_dir, "snapshot", "list", "--volume", "data")] == [
        "snap1"
    ]
    status = amber_json(pool_dir, "pool", "status")
    assert status["reflink"] is True
    assert status["volumes"] == 2
    assert status["snapshots"] == 1
    assert status["attachments"] == 2
    assert status["provisioned"] == 512 * 1024 * 1024
    amber_json(pool_dir, "volume", "unmount", "back")
    amber_json(pool_dir, "volume", "unmount", "data")
    amber_json(pool_dir, "volume", "delete", "data")
    assert amber_json(pool_dir, "snapshot", "show", "snap1")["snapshot"]["name"] == "snap1"
    assert amber_json(pool_dir, "pool", "check")["ok"] is True


def test_table_output_is_readable(pool_dir: Path) -> None:
    amber(pool_dir, "volume", "create", "pretty", "--size", "64Mi")
    done = amber(pool_dir, "volume", "show", "pretty")
    assert done.returncode == 0
    assert "pretty" in done.stdout
    assert "64.0 MiB" in done.stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["volume", "create", "x", "--size", "lots"], 2, "invalid size 'lots'"),
        (["volume", "create", "a/b", "--size", "1Gi"], 2, "invalid volume name"),
        (["volume", "create", "x"], 2, "--size is required"),
        (["volume", "show", "missing"], 3, "volume 'missing' not found"),
        (["snapshot", "delete", "missing"], 3, "snapshot 'missing' not found"),
        (["volume", "expand", "missing", "--size", "1Gi"], 3, "not found"),
        (["volume", "create", "x", "--size", "1Gi", "--fs", "ntfs"], 2, "unsupported filesystem"),
        (["volume", "create", "x", "--size", "2Pi"], 2, "maximum"),
        (["volume", "frobnicate"], 2, "No such command"),
        (
            [
                "volume",
                "create",
                "x",
                "--size",
                "1Gi",
                "--from-snapshot",
                "a",
                "--from-volume",
                "b",
            ],
            2,
            "either",
        ),
    ],
)
def test_errors_are_one_line_and_non_zero(
    pool_dir: Path, args: list[str], code: int, words: str
) -> None:
    done = amber(pool_dir, *args)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert words in lines[0]
    assert done.stdout == ""


def test_duplicates_and_shrinking_are_refused(pool_dir: Path) -> None:
    amber_json(pool_dir, "volume", "create", "v", "--size", "128Mi")
    dup = amber(pool_dir, "volume", "create", "v", "--size", "128Mi")
    assert dup.returncode == 4
    assert "already exists" in dup.stderr
    shrink = amber(pool_dir, "volume", "expand", "v", "--size", "64Mi")
    assert shrink.returncode == 7
    assert "cannot shrink" in shrink.stderr
    assert amber_json(pool_dir, "volume", "show", "v")["volume"]["size"] == 128 * 1024 * 1024


def test_missing_pool_is_a_clear_error(tmp_path: Path) -> None:
    done = amber(tmp_path / "nothing", "volume", "list")
    assert done.returncode == 3
    assert "no Amber pool" in done.stderr
    assert "amber pool init" in done.stderr


def test_pool_init_dir_reports_reflink(xfs_root: Path, tmp_path: Path) -> None:
    target = xfs_root / "cli-init"
    done = amber(target, "--output", "json", "pool", "init", "--dir", str(target))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["reflink"] is True
    again = amber(target, "pool", "init", "--dir", str(target))
    assert again.returncode == 4
    assert "a pool already exists at" in again.stderr  # and whether it is healthy
    assert "healthy" in again.stderr
    # A filesystem without reflink (ext4 here... tmp_path is on the root fs) still works, warned.
    plain = tmp_path / "plain"
    done = amber(plain, "pool", "init", "--dir", str(plain))
    assert done.returncode == 0
    assert "no reflink support" in done.stderr.replace("\n", " ")
