"""Fixtures for the driver tests: a pool per test module, a real driver process serving it.

Starting a driver takes a fraction of a second, mkfs a little more: one pool and one driver per
module keeps the suite fast, and every test uses names of its own. Tests that restart or stop
the driver start their own (`start_driver`, `running_driver`).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.pool import Pool
from tests.conftest import teardown_mounts_under
from tests.csi.driver import Csi, DriverProcess, start_driver

_pools = itertools.count()


def make_pool(xfs_root: Path) -> Path:
    root = xfs_root / f"csi-pool-{next(_pools)}"
    Pool.init_dir(root, overprovisioning=4.0)
    (xfs_root / f"{root.name}-work").mkdir()
    return root


def remove_pool(root: Path) -> None:
    work = root.parent / f"{root.name}-work"
    teardown_mounts_under(work)
    teardown_mounts_under(root)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def csi_pool(xfs_root: Path) -> Iterator[Path]:
    """A pool for the whole module (overprovisioning 4 on the 64 GiB test filesystem)."""
    root = make_pool(xfs_root)
    yield root
    remove_pool(root)


@pytest.fixture(scope="module")
def work(csi_pool: Path) -> Path:
    """Where the module's staging and target paths go (cleaned up with the pool)."""
    return csi_pool.parent / f"{csi_pool.name}-work"


@pytest.fixture(scope="module")
def driver(csi_pool: Path) -> Iterator[DriverProcess]:
    """A real `amber node` process on the module's pool; stopped with SIGTERM at the end."""
    process = start_driver(csi_pool)
    try:
        yield process
        process.stop()
    finally:
        process.cleanup()


@pytest.fixture(scope="module")
def csi(driver: DriverProcess) -> Csi:
    return driver.client()


@pytest.fixture
def fresh_pool(xfs_root: Path) -> Iterator[Path]:
    """A pool of a test's own (for tests that restart or stop the driver)."""
    root = make_pool(xfs_root)
    yield root
    remove_pool(root)
