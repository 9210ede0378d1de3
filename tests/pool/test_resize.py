"""`amber pool resize` and `amber pool set`: change an existing pool (real loopback XFS)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from amber.domain.units import GiB
from amber.system import mount
from tests.cli.runner import amber, amber_json
from tests.conftest import teardown_mounts_under


def test_an_image_pool_grows_online_and_never_shrinks(tmp_path: Path) -> None:
    root, image = tmp_path / "pool", tmp_path / "pool.img"
    mnt = tmp_path / "mnt"
    try:
        amber_json(root, "pool", "init", "--size", "2Gi")
        amber_json(root, "volume", "create", "db", "--size", "64Mi")
        assert amber(root, "volume", "mount", "db", str(mnt)).returncode == 0
        (mnt / "data").write_bytes(b"kept" * 1024)

        done = amber_json(root, "pool", "resize", "--size", "5Gi")
        assert done["changed"] is True
        assert image.stat().st_size == 5 * GiB
        status = amber_json(root, "pool", "status")
        assert 4.9 * GiB < status["size"] <= 5 * GiB  # the filesystem grew, not only the file
        assert mount.is_mounted(mnt)
        assert (mnt / "data").read_bytes() == b"kept" * 1024

        shrink = amber(root, "pool", "resize", "--size", "3Gi")
        assert shrink.returncode == 7, shrink.stderr
        assert shrink.stderr.count("\n") == 1
        assert "cannot shrink" in shrink.stderr
        assert image.stat().st_size == 5 * GiB

        same = amber(root, "pool", "resize", "--size", "5Gi")
        assert same.returncode == 0
        assert "nothing to do" in same.stdout
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)


def test_a_directory_pool_cannot_be_resized(pool_dir: Path) -> None:
    done = amber(pool_dir, "pool", "resize", "--size", "100Gi")
    assert done.returncode == 5
    assert "is a directory" in done.stderr
    assert done.stderr.count("\n") == 1


def test_overprovisioning_is_validated_and_refused_below_what_is_provisioned(
    pool_dir: Path,
) -> None:
    for bad, code in (("nan", 2), ("inf", 2), ("0.5", 2), ("101", 2), ("two", 2)):
        done = amber(pool_dir, "pool", "set", "--overprovisioning", bad)
        assert done.returncode == code, (bad, done.stderr)
        assert done.stderr.count("\n") == 1, done.stderr
    size = amber_json(pool_dir, "pool", "status")["size"]
    # Provision 1.5x the pool (the fixture pool has overprovisioning 4).
    amber_json(pool_dir, "volume", "create", "big", "--size", str(int(size * 1.5) // 2**20 * 2**20))
    refused = amber(pool_dir, "pool", "set", "--overprovisioning", "1")
    assert refused.returncode == 5, refused.stderr
    assert "already provision" in refused.stderr
    assert amber_json(pool_dir, "pool", "status")["overprovisioning"] == 4.0

    done = amber_json(pool_dir, "pool", "set", "--overprovisioning", "2")
    assert done["previous"] == 4.0
    status = amber_json(pool_dir, "pool", "status")
    assert status["overprovisioning"] == 2.0
    assert status["capacity"] == int(status["size"] * 2)
    # The new ratio is what capacity checks use.
    over = amber(pool_dir, "volume", "create", "more", "--size", str(int(size * 0.6)))
    assert over.returncode == 6, over.stderr


def test_the_default_image_pool_holds_the_quick_start(tmp_path: Path) -> None:
    """README's quick start provisions 50Gi (db 20Gi, a 20Gi restore, a 10Gi clone) on the
    default 20 GiB image: a new loopback pool overprovisions."""
    root = tmp_path / "pool"
    try:
        created = json.loads(amber(root, "-o", "json", "pool", "init").stdout)
        assert created["created"] is True
        assert amber_json(root, "pool", "status")["overprovisioning"] == 4.0
        again = amber(root, "pool", "init")
        assert again.returncode == 4
        assert "a pool already exists at" in again.stderr
        assert "healthy" in again.stderr
        assert "remove it" not in again.stderr
        accepted = amber(root, "pool", "init", "--if-missing")
        assert accepted.returncode == 0
        assert "exists (image " in accepted.stdout
        assert "healthy): nothing to do" in accepted.stdout
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)


def test_a_grown_image_pool_still_matches_its_node_setting(tmp_path: Path) -> None:
    """The init container runs `pool init --if-missing --source image:SIZE` at every start:
    a pool grown past the setting is the same pool; a setting past the image says how to grow."""
    root = tmp_path / "pool"
    try:
        setting = ("pool", "init", "--if-missing", "--source")
        assert amber(root, *setting, "image:2Gi").returncode == 0
        amber_json(root, "pool", "resize", "--size", "3Gi")
        same = amber(root, *setting, "image:2Gi")
        assert same.returncode == 0, same.stderr
        assert "nothing to do" in same.stdout
        bigger = amber(root, *setting, "image:4Gi")
        assert bigger.returncode == 5
        assert "amber pool resize --size 4Gi" in bigger.stderr
        assert bigger.stderr.count("\n") == 1
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)
