"""A loopback pool: created by `amber pool init --image`, re-mounted after a 'reboot'."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from amber.system import loopdev, mount
from tests.cli.runner import amber, amber_json
from tests.conftest import teardown_mounts_under


def test_loopback_pool_is_created_and_remounted_after_reboot(tmp_path: Path) -> None:
    root, image = tmp_path / "pool", tmp_path / "pool.img"
    try:
        done = amber(root, "--output", "json", "pool", "init", "--size", "2Gi")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["reflink"] is True
        assert image.exists()
        assert mount.is_mounted(root)
        status = amber_json(root, "pool", "status")
        assert status["fs_type"] == "xfs"
        assert status["image"] == str(image)
        assert 1.9 * 2**30 < status["size"] <= 2 * 2**30
        amber_json(root, "volume", "create", "keep", "--size", "64Mi")

        # A reboot: the pool's filesystem is gone, its loop device too.
        subprocess.run(["umount", str(root)], check=True)
        assert not mount.is_mounted(root)
        assert loopdev.find_loops(image) == []  # auto-cleared with the unmount

        volumes = amber_json(root, "volume", "list")  # any command mounts it again
        assert [v["name"] for v in volumes] == ["keep"]
        assert mount.is_mounted(root)

        again = amber(root, "pool", "init", "--size", "2Gi")
        assert again.returncode == 4
        assert "already exists" in again.stderr
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)


def test_pool_init_rejects_a_tiny_image(tmp_path: Path) -> None:
    done = amber(tmp_path / "p", "pool", "init", "--size", "10Mi")
    assert done.returncode == 2
    assert "at least" in done.stderr
    assert not (tmp_path / "p.img").exists()


def test_the_main_job_story_runs_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "pool"
    try:
        config = tmp_path / "targets.json"
        done = amber(
            root,
            "demo",
            "--image-size",
            "8Gi",
            "--data",
            "16Mi",
            "--targets-config",
            str(config),
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = " ".join(done.stdout.split())
        assert "restored data is byte-identical to the snapshot moment" in out
        assert "filesystem now 1.9 GiB, data intact" in out
        assert "the volume restored from the backup equals the snapshot moment" in out
        assert "chunks unchanged (not read)" in out
        assert re.search(r"\d+ read, \d+ patched \(only changed blocks read: [\d.]+ \w+\)", out)
        assert json.loads(config.read_text())["targets"]["local"]["url"] == (
            f"file://{tmp_path / 'backups'}"
        )
        assert (tmp_path / "backup.password").stat().st_mode & 0o777 == 0o600
        # Clean-up removed the demo's backups from the target.
        listed = amber(
            root, "--output", "json", "backup", "--config", str(config), "list", "--target", "local"
        )
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        assert (tmp_path / "pool.img").exists()
        assert amber_json(root, "volume", "list") == []
        assert amber_json(root, "snapshot", "list") == []
        assert amber_json(root, "pool", "check")["ok"] is True
        # ... and really: no pack, no backup base is left behind (issue 16, item 5).
        assert "packs only they used" in out
        packs = [p for p in (tmp_path / "backups" / "data").rglob("*") if p.is_file()]
        assert packs == []
        status = amber_json(root, "pool", "status")
        assert (status["backup_bases"], status["backup_bases_bytes"]) == (0, 0)
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)
