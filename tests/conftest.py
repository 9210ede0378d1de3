"""Shared fixtures: a real XFS (reflink) filesystem in a loopback image, and pools on it."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.pool import Pool
from amber.system import loopdev, mount

_counter = itertools.count()


def _have(tool: str) -> bool:
    return shutil.which(tool) is not None


def _cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


HAS_CAP_SYS_RESOURCE = _cap_sys_resource()


def pytest_configure(config: pytest.Config) -> None:
    """The CLI remembers unlocked keys in /run/amber/keys: the tests keep theirs to themselves
    (every `amber` subprocess inherits this), so the machine's cache is never touched."""
    if "AMBER_KEY_CACHE" not in os.environ:
        os.environ["AMBER_KEY_CACHE"] = tempfile.mkdtemp(prefix="amber-test-keys-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("AMBER_KEY_CACHE"), True))


def pytest_report_header() -> list[str]:
    loops = len(list(Path("/dev").glob("loop[0-9]*")))
    return [
        f"amber: root={os.geteuid() == 0} loop-control={Path('/dev/loop-control').exists()} "
        f"loop devices={loops} mkfs.xfs={_have('mkfs.xfs')} mkfs.ext4={_have('mkfs.ext4')} "
        f"CAP_SYS_RESOURCE (online ext4 grow)={HAS_CAP_SYS_RESOURCE}"
    ]


def make_xfs(directory: Path, size: str) -> tuple[Path, Path]:
    """A sparse image formatted XFS with reflink, mounted at directory/mnt."""
    image, mnt = directory / "xfs.img", directory / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    return image, mnt


def teardown_mounts_under(directory: Path) -> None:
    """Unmount everything below `directory` and free loop devices of images below it."""
    prefix = str(directory) + "/"
    # Find the loop devices first: once their filesystem is lazily unmounted, the kernel names
    # their backing files relative to the detached mount and they no longer match the prefix.
    loops = [
        loop.device for loop in loopdev.list_loops() if str(loop.backing_file).startswith(prefix)
    ]
    for entry in reversed(mount.mount_table()):
        if str(entry.target).startswith(prefix):
            subprocess.run(["umount", "-l", str(entry.target)], check=False)
    for device in loops:
        # Detaches now, or (if still open) as soon as the last user goes: never leaked.
        subprocess.run(["losetup", "-d", str(device)], check=False)


@pytest.fixture(scope="session")
def xfs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real XFS filesystem with reflink=1 in a loopback image (sparse, 64 GiB)."""
    if os.geteuid() != 0:
        pytest.fail("Amber's tests need root: they use real loop devices and mounts")
    base = tmp_path_factory.mktemp("xfs")
    image, mnt = make_xfs(base, "64G")
    yield mnt
    teardown_mounts_under(mnt)
    if subprocess.run(["umount", str(mnt)], check=False).returncode != 0:
        # Still busy (a process of a failed test holding a file): detach it now, and the kernel
        # frees the filesystem and its loop device when the last user goes. Never leaked.
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    image.unlink(missing_ok=True)


@pytest.fixture
def pool_dir(xfs_root: Path) -> Iterator[Path]:
    """A fresh pool directory on the reflink filesystem (overprovisioning 4)."""
    root = xfs_root / f"pool-{next(_counter)}"
    Pool.init_dir(root, overprovisioning=4.0)
    yield root
    teardown_mounts_under(root)
    work = xfs_root / f"{root.name}-work"
    teardown_mounts_under(work)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work_dir(xfs_root: Path, pool_dir: Path) -> Path:
    """A scratch directory for mount points, cleaned up with the pool."""
    path = xfs_root / f"{pool_dir.name}-work"
    path.mkdir()
    return path


@pytest.fixture
def pool(pool_dir: Path) -> Iterator[Pool]:
    opened = Pool.open(pool_dir)
    yield opened
    for att in opened.attachments.list():
        kind = "volume" if opened.volumes.find(att.object_name) else "snapshot"
        opened.attachments.release(kind, att.object_name)
    opened.close()
