"""`amber volume attach --read-only` prints a loop device that refuses writes."""

from __future__ import annotations

from pathlib import Path

from tests.cli.runner import amber, amber_json
from tests.pool.test_read_only import assert_read_only, assert_writable


def test_volume_attach_read_only_gives_a_read_only_device(pool_dir: Path, work_dir: Path) -> None:
    amber_json(pool_dir, "volume", "create", "raw", "--size", "16Mi", "--block")
    device = Path(amber_json(pool_dir, "volume", "attach", "raw", "--read-only")["loop_device"])
    assert_read_only(device)
    amber_json(pool_dir, "volume", "detach", "raw")

    assert_writable(Path(amber_json(pool_dir, "volume", "attach", "raw")["loop_device"]))
    amber_json(pool_dir, "volume", "detach", "raw")


def test_read_only_attach_beside_a_writer_is_one_clear_error(
    pool_dir: Path, work_dir: Path
) -> None:
    amber_json(pool_dir, "volume", "create", "v", "--size", "16Mi")
    amber_json(pool_dir, "volume", "mount", "v", str(work_dir / "v"))
    done = amber(pool_dir, "volume", "attach", "v", "--read-only")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "read-write" in done.stderr
