"""Shared fixtures: a real XFS (reflink) filesystem in a loopback image, and pools on it.

Mounts and loop devices outlive a test process that forgets them, so every fixture that makes
one releases it in its teardown (`release_xfs`, `teardown_mounts_under`), a SIGTERM tears the
session down like Ctrl-C does, and at the end of the session `_no_leftovers` fails the run when a
mount or loop device of this session's temporary directories is still there (and releases it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

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


WORKERS_EXIT_TIMEOUT = 300.0
"""How long a terminated pytest-xdist controller waits for its workers' teardowns."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _children() -> list[int]:
    """This process's live (not zombie) child processes."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if ppid == me and state != "Z":
            found.append(int(stat.parent.name))
    return found


DONE_DIR = "AMBER_TEST_WORKERS_DONE"
"""Where pytest-xdist workers mark (a file named by their pid) that their session has ended."""


def _terminate_workers(signum: int, frame: FrameType | None) -> None:
    """In a pytest-xdist controller: pass the signal on to the workers and wait until each has
    ended its session (teardowns included) or exited, and only then stop: xdist itself gives a
    worker 15 s to stop, then kills it, mid-teardown."""
    children, done = _children(), Path(os.environ[DONE_DIR])
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    deadline = time.monotonic() + WORKERS_EXIT_TIMEOUT
    while time.monotonic() < deadline:
        alive = set(_children())
        if all(pid not in alive or (done / str(pid)).exists() for pid in children):
            break
        time.sleep(0.1)
    _terminate(signum, frame)


def pytest_unconfigure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") and DONE_DIR in os.environ:
        (Path(os.environ[DONE_DIR]) / str(os.getpid())).touch()


def pytest_configure(config: pytest.Config) -> None:
    """The CLI remembers unlocked keys in /run/amber/keys: the tests keep theirs to themselves
    (every `amber` subprocess inherits this), so the machine's cache is never touched.

    SIGTERM (a CI time limit, `kill`) ends the session like Ctrl-C: the fixtures' teardowns run,
    so the session's mounts and loop devices are released instead of outliving it.
    """
    if "AMBER_KEY_CACHE" not in os.environ:
        os.environ["AMBER_KEY_CACHE"] = tempfile.mkdtemp(prefix="amber-test-keys-")
        config.add_cleanup(lambda: shutil.rmtree(os.environ.pop("AMBER_KEY_CACHE"), True))
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        workers = config.getoption("numprocesses", default=None)  # pytest-xdist's -n
        controller = bool(workers) and not hasattr(config, "workerinput")
        if controller:
            os.environ[DONE_DIR] = tempfile.mkdtemp(prefix="amber-test-workers-")
            config.add_cleanup(lambda: shutil.rmtree(os.environ.pop(DONE_DIR), True))
        signal.signal(signal.SIGTERM, _terminate_workers if controller else _terminate)
        config.add_cleanup(lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))


def pytest_report_header() -> list[str]:
    loops = len(list(Path("/dev").glob("loop[0-9]*")))
    return [
        f"amber: root={os.geteuid() == 0} loop-control={Path('/dev/loop-control').exists()} "
        f"loop devices={loops} mkfs.xfs={_have('mkfs.xfs')} mkfs.ext4={_have('mkfs.ext4')} "
        f"CAP_SYS_RESOURCE (online ext4 grow)={HAS_CAP_SYS_RESOURCE}"
    ]


def make_xfs(directory: Path, size: str) -> tuple[Path, Path]:
    """A sparse image formatted XFS with reflink, mounted at directory/mnt (release it with
    `release_xfs`)."""
    image, mnt = directory / "xfs.img", directory / "mnt"
    mnt.mkdir(parents=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    return image, mnt


def _loops_under(prefix: str) -> list[loopdev.LoopDevice]:
    return [loop for loop in loopdev.list_loops() if str(loop.backing_file).startswith(prefix)]


def teardown_mounts_under(directory: Path) -> None:
    """Unmount everything below `directory` and free the loop devices of images below it, with
    every mount of those loop devices, wherever it is (a volume of a pool below `directory`
    staged in a scratch directory beside it)."""
    prefix = str(directory) + "/"
    # Detach the loop devices first: once their filesystem is lazily unmounted, the kernel names
    # their backing files relative to the detached mount and they no longer match the prefix.
    # A device still mounted is freed when its last mount goes. Never `losetup -d` a name listed
    # before an unmount: the unmount may free it, and another test (another xdist worker) may
    # attach its volume to that name in between (`loopdev.detach` checks what it detaches).
    loops = _loops_under(prefix)
    sources = {str(loop.device) for loop in loops}
    for loop in loops:
        loopdev.detach(loop.device, backing=loop.backing_file)
    for entry in reversed(mount.mount_table()):
        if str(entry.target).startswith(prefix) or entry.source in sources:
            subprocess.run(["umount", "-l", str(entry.target)], check=False)


def release_xfs(image: Path, mnt: Path) -> None:
    """Undo `make_xfs`: what is mounted below it, then its own mount and loop device, then the
    image. A filesystem still busy is detached lazily (the kernel frees it and its loop device
    when its last user goes) and named on stderr."""
    teardown_mounts_under(mnt)
    # Detached before the unmount, which frees it: its name may be another test's device after.
    loopdev.detach_image(image)
    if subprocess.run(["umount", str(mnt)], check=False, capture_output=True).returncode != 0:
        print(f"conftest: {mnt} is busy at teardown: detached lazily", file=sys.stderr)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    image.unlink(missing_ok=True)


def leftovers_under(directory: Path) -> list[str]:
    """The mounts and loop devices of files below `directory`, one line each."""
    prefix = str(directory) + "/"
    found = [f"mount {e.target} ({e.source})" for e in mount.mount_table()]
    found = [line for line in found if line.split()[1].startswith(prefix)]
    found += [f"loop {loop.device} -> {loop.backing_file}" for loop in _loops_under(prefix)]
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_leftovers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session (after every other fixture's teardown): no mount and no loop
    device of this session's temporary directories may be left. Any that is fails the run
    loudly, naming them, and is released so it does not outlive the run."""
    base = tmp_path_factory.getbasetemp()
    yield
    left = leftovers_under(base)
    if left:
        teardown_mounts_under(base)
        for entry in reversed(mount.mount_table()):
            if str(entry.target).startswith(f"{base}/"):
                subprocess.run(["umount", "-l", str(entry.target)], check=False)
        lines = "\n  ".join(left)
        pytest.fail(f"the tests left mounts or loop devices behind:\n  {lines}", pytrace=False)


@pytest.fixture(scope="session")
def xfs_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A real XFS filesystem with reflink=1 in a loopback image (sparse, 64 GiB)."""
    if os.geteuid() != 0:
        pytest.fail("Amber's tests need root: they use real loop devices and mounts")
    image, mnt = make_xfs(tmp_path_factory.mktemp("xfs"), "64G")
    yield mnt
    release_xfs(image, mnt)


@pytest.fixture
def pool_dir(xfs_root: Path) -> Iterator[Path]:
    """A fresh pool directory on the reflink filesystem (overprovisioning 4)."""
    root = xfs_root / f"pool-{next(_counter)}"
    Pool.init_dir(root, overprovisioning=4.0)
    yield root
    work = xfs_root / f"{root.name}-work"
    teardown_mounts_under(work)
    teardown_mounts_under(root)
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


HEAVY_FIRST = ("tests/e2e/", "tests/sanity/")
"""Under pytest-xdist, the groups that take longest are handed out first (no long tail)."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n N --dist loadgroup`): a module's tests run in one worker, so its
    module-scoped pools and drivers start once, and the end-to-end modules share one worker and
    its one control plane; the longest groups go first."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers
        return
    for item in items:
        path = item.nodeid.split("::")[0]
        group = "tests/e2e" if path.startswith("tests/e2e/") else path
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: not item.nodeid.startswith(HEAVY_FIRST))
