"""Node bootstrap: `amber pool init --if-missing` from a node's setting, on real loop devices."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.system import loopdev, mount
from tests.cli.runner import amber, amber_json
from tests.conftest import teardown_mounts_under


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real block device: a loop device over a sparse 1.5 GiB file."""
    backing = tmp_path / "disk.raw"
    subprocess.run(["truncate", "-s", "1536M", str(backing)], check=True)
    out = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], check=True, capture_output=True, text=True
    )
    device = Path(out.stdout.strip())
    yield device
    teardown_mounts_under(tmp_path)  # detaches it too: never `losetup -d` a name freed since
    loopdev.detach(device, backing=backing)


def test_device_pool_is_made_once_and_remounted_after_reboot(tmp_path: Path, disk: Path) -> None:
    root = tmp_path / "amber" / "pool"
    first = amber(root, "--output", "json", "pool", "init", "--if-missing", "--device", str(disk))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["created"] is True
    assert mount.is_mounted(root)
    amber_json(root, "volume", "create", "keep", "--size", "64Mi")

    again = amber(root, "--output", "json", "pool", "init", "--if-missing", "--device", str(disk))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] is False
    assert [v["name"] for v in amber_json(root, "volume", "list")] == ["keep"]

    # A reboot: the filesystem is no longer mounted; bootstrap mounts it and changes nothing.
    subprocess.run(["umount", str(root)], check=True)
    third = amber(root, "pool", "init", "--if-missing", "--device", str(disk))
    assert third.returncode == 0, third.stderr
    assert "nothing to do" in third.stdout
    assert [v["name"] for v in amber_json(root, "volume", "list")] == ["keep"]
    assert amber_json(root, "pool", "status")["fs_type"] == "xfs"


def test_a_device_holding_ext4_data_is_refused_and_left_intact(tmp_path: Path, disk: Path) -> None:
    subprocess.run(["mkfs.ext4", "-q", "-F", str(disk)], check=True)
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", str(disk), str(data)], check=True)
    (data / "precious.txt").write_text("do not format me\n")
    subprocess.run(["umount", str(data)], check=True)

    root = tmp_path / "amber" / "pool"
    for args in (["--device", str(disk)], ["--source", f"device:{disk}"]):
        done = amber(root, "pool", "init", "--if-missing", *args)
        assert done.returncode == 5, done.stdout + done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "not empty" in done.stderr
        assert "ext4" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (root / "amber.db").exists()
    assert not mount.is_mounted(root)

    subprocess.run(["mount", "-o", "ro", str(disk), str(data)], check=True)
    assert (data / "precious.txt").read_text() == "do not format me\n"
    # ... and while it is mounted, it is refused as in use.
    busy = amber(root, "pool", "init", "--device", str(disk))
    assert busy.returncode == 5
    assert "in use" in busy.stderr
    subprocess.run(["umount", str(data)], check=True)


def test_a_partitioned_device_is_refused(tmp_path: Path, disk: Path) -> None:
    # An MBR partition table with one Linux partition (sectors 2048-4095), written by hand.
    entry = bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + (2048).to_bytes(4, "little")
    entry += (2048).to_bytes(4, "little")
    with open(disk, "r+b") as f:
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    done = amber(tmp_path / "pool", "pool", "init", "--device", str(disk))
    assert done.returncode == 5, done.stdout + done.stderr
    assert "dos" in done.stderr


def test_image_setting_from_the_node_config_is_idempotent(tmp_path: Path) -> None:
    settings = tmp_path / "settings"
    settings.mkdir()
    (settings / "default").write_text("image:1Gi\n")
    (settings / "node-b").write_text("image:2Gi\n")
    root = tmp_path / "pool"
    args = ["pool", "init", "--if-missing", "--source-dir", str(settings)]
    try:
        first = amber(root, *args, "--node", "node-a")
        assert first.returncode == 0, first.stderr
        assert (tmp_path / "pool.img").stat().st_size == 2**30
        second = amber(root, *args, "--node", "node-a")
        assert second.returncode == 0, second.stderr
        assert "nothing to do" in second.stdout
        # The same pool under another setting (node-b's key): a clear error, nothing changed.
        other = amber(root, *args, "--node", "node-b")
        assert other.returncode == 5
        assert "is 1.0 GiB, smaller than the setting image:2Gi" in other.stderr
        assert "amber pool resize --size 2Gi" in other.stderr  # how to make it match
        assert (tmp_path / "pool.img").stat().st_size == 2**30
        missing = amber(root, "pool", "init", "--if-missing", "--source-dir", str(tmp_path))
        assert missing.returncode == 2
        assert "--node" in missing.stderr
    finally:
        teardown_mounts_under(tmp_path)
        subprocess.run(["umount", str(root)], check=False)


def test_bad_settings_are_one_line_usage_errors(tmp_path: Path) -> None:
    for setting in ("image", "disk:/dev/sda", "device:sda", "dir:/x"):
        done = amber(tmp_path / "pool", "pool", "init", "--source", setting)
        assert done.returncode == 2, setting
        assert done.stderr.count("\n") == 1, done.stderr
    both = amber(tmp_path / "pool", "pool", "init", "--dir", str(tmp_path), "--source", "dir")
    assert both.returncode == 2
    assert "only one of" in both.stderr
