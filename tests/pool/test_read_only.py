"""Read-only attachments get a read-only loop device: `dd` to it fails (issue 11, item 4)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from amber.domain.errors import FailedPrecondition
from amber.domain.models import VolumeMode
from amber.domain.units import MiB
from amber.pool import Pool, VolumeRequest
from tests.pool.helpers import read_only_flag, read_only_while_free


def losetup_ro(device: Path) -> bool:
    out = subprocess.run(
        ["losetup", "--json", "--list", str(device)], capture_output=True, text=True, check=True
    ).stdout
    (entry,) = json.loads(out)["loopdevices"]
    return bool(entry["ro"])


def dd_to(device: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["dd", "if=/dev/zero", f"of={device}", "bs=4096", "count=1", "oflag=direct,sync"],
        capture_output=True,
        text=True,
        check=False,
    )


def assert_read_only(device: Path) -> None:
    assert losetup_ro(device)
    assert read_only_flag(device)
    done = dd_to(device)
    assert done.returncode != 0, "dd wrote to a read-only attachment"
    assert "Operation not permitted" in done.stderr or "Read-only" in done.stderr, done.stderr


def assert_writable(device: Path) -> None:
    assert not losetup_ro(device)
    assert not read_only_flag(device)
    assert dd_to(device).returncode == 0


@pytest.mark.parametrize("mode", [VolumeMode.BLOCK, VolumeMode.FILESYSTEM])
def test_a_read_only_device_refuses_writes(pool: Pool, mode: VolumeMode) -> None:
    pool.volumes.create(VolumeRequest("v", 16 * MiB, mode=mode))
    attachment = pool.attachments.expose("volume", "v", read_only=True)
    assert attachment.read_only
    assert_read_only(attachment.loop_device)
    pool.attachments.release("volume", "v")
    # The kernel keeps BLKROSET across detach: the next user of this device must not inherit it.
    assert not read_only_while_free(attachment.loop_device)

    writable = pool.attachments.expose("volume", "v")
    assert_writable(writable.loop_device)


def test_a_read_write_attachment_turns_the_device_writable_and_back(
    pool: Pool, work_dir: Path
) -> None:
    pool.volumes.create(VolumeRequest("v", 16 * MiB))
    device = pool.attachments.expose("volume", "v", read_only=True).loop_device
    pool.attachments.mount("volume", "v", work_dir / "rw", create_target=True)
    assert not read_only_flag(device)
    (work_dir / "rw" / "data").write_text("written")
    pool.attachments.release("volume", "v", work_dir / "rw")
    assert_read_only(device)


def test_a_read_only_device_is_refused_beside_a_writer(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("v", 16 * MiB))
    pool.attachments.mount("volume", "v", work_dir / "rw", create_target=True)
    with pytest.raises(FailedPrecondition, match=r"read-write at .*release it first"):
        pool.attachments.expose("volume", "v", read_only=True)
    assert [a.path for a in pool.attachments.list("volume", "v")] == [work_dir / "rw"]


def test_a_read_only_mount_has_a_read_only_device(pool: Pool, work_dir: Path) -> None:
    pool.volumes.create(VolumeRequest("v", 16 * MiB))
    attachment = pool.attachments.mount(
        "volume", "v", work_dir / "ro", read_only=True, create_target=True
    )
    assert_read_only(attachment.loop_device)
