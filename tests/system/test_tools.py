"""System tools' failures read right: exit codes that are not errors, and errors in the tool's
own words (real processes, real ext4 images)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from amber.domain.errors import Corrupt, SystemFailure
from amber.system import fs
from amber.system.run import ToolFailed, run


def test_a_failure_names_the_exit_code_and_the_reason_not_the_tools_hint() -> None:
    script = (
        "echo 'mount: /x: cannot mount /dev/loop9 read-only.' >&2; "
        "echo '       dmesg(1) may have more information after failed mount system call.' >&2; "
        "exit 32"
    )
    with pytest.raises(ToolFailed) as caught:
        run(["sh", "-c", script])
    assert caught.value.returncode == 32
    assert str(caught.value) == (
        "sh -c failed (exit 32): mount: /x: cannot mount /dev/loop9 read-only."
    )
    assert isinstance(caught.value, SystemFailure)


@pytest.fixture
def ext4(tmp_path: Path) -> Path:
    image = tmp_path / "fs.img"
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    fs.make(image, "ext4")
    return image


def debugfs(image: Path, request: str) -> None:
    subprocess.run(["debugfs", "-w", "-R", request, str(image)], check=True, capture_output=True)


def test_errors_e2fsck_corrected_are_a_success(ext4: Path) -> None:
    debugfs(ext4, "ssv state 0")  # "not cleanly unmounted": e2fsck -p checks, exits 1
    fs.check(ext4, "ext4")
    done = subprocess.run(["e2fsck", "-n", str(ext4)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_errors_e2fsck_cannot_repair_are_corruption(ext4: Path) -> None:
    debugfs(ext4, "clri <2>")  # the root directory's inode wiped: preen mode gives up (4)
    with pytest.raises(Corrupt, match="cannot repair safely"):
        fs.grow_offline("ext4", ext4)


def test_a_device_e2fsck_cannot_open_is_a_tool_failure(tmp_path: Path) -> None:
    with pytest.raises(ToolFailed) as caught:
        fs.check(tmp_path / "missing.img", "ext4")
    assert caught.value.returncode == 8
    assert "No such file or directory" in str(caught.value)
