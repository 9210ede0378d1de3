"""Backups and restores that the shared operations run (the CLI, the scheduler, the dashboard)
are counted once each, with the engine's bytes; a failure or a Ctrl-C counts under its outcome.

A real pool on XFS and a real repository in a directory (FileStore); the process registry is
read before and after, so only this test's operations are compared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amber import metrics
from amber.backup.repository import Repository, init_repository
from amber.blobstore.filestore import FileStore
from amber.domain.errors import NotFound
from amber.domain.models import VolumeMode
from amber.domain.units import MiB
from amber.ops import Operations
from amber.pool import Pool, VolumeRequest
from tests.backup.helpers import FAST_SCRYPT, PASSWORD
from tests.metrics.helpers import total


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repository"
    root.mkdir()
    return init_repository(FileStore(root), PASSWORD, scrypt=FAST_SCRYPT)


def operations(pool: Pool, repo: Repository) -> Operations:
    def open_repository(target: str, *, create: bool = False) -> Repository:
        if target != "t":
            raise NotFound(f"no backup target named {target!r}")
        return repo

    return Operations(pool, open_repository)


def scrape() -> bytes:
    return metrics.exposition()[0]


def grew(before: bytes, after: bytes, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


class Interrupt:
    """Ctrl-C as the first phase starts (what the CLI's progress bar would see)."""

    def phase(self, name: str, total: int | None, unit: str = "bytes") -> None:
        raise KeyboardInterrupt

    def advance(self, amount: int) -> None:
        pass

    def done(self) -> None:
        pass


def test_backups_and_restores_of_the_operations_are_counted(pool: Pool, repo: Repository) -> None:
    pool.volumes.create(VolumeRequest("v", 8 * MiB, VolumeMode.BLOCK))
    image = pool.volumes.get("v").image
    fd = os.open(image, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(2 * MiB), 0)
    finally:
        os.close(fd)
    ops = operations(pool, repo)
    before = scrape()
    report = ops.create_backup("v", "t", take_snapshot=True)
    pool.snapshots.create("v", "s1")
    with pytest.raises(NotFound):
        ops.create_backup("s1", "no-such-target")
    restored = ops.restore_backup("t", report.backup_id, "v-restored")
    after = scrape()
    assert grew(before, after, "amber_backups_total", outcome="success") == 1
    assert grew(before, after, "amber_backups_total", outcome="failure") == 1
    assert grew(before, after, "amber_backup_read_bytes_total") == report.bytes_read
    assert grew(before, after, "amber_backup_new_bytes_total") == report.bytes_new
    assert grew(before, after, "amber_backup_stored_bytes_total") == report.bytes_stored
    assert report.bytes_read >= 2 * MiB
    assert grew(before, after, "amber_restores_total", outcome="success") == 1
    downloaded = grew(before, after, "amber_restore_downloaded_bytes_total")
    assert downloaded == restored.bytes_downloaded > 0
    assert total(after, "amber_operations_in_flight", kind="backup") == 0


def test_an_interrupted_backup_is_cancelled_not_failed(pool: Pool, repo: Repository) -> None:
    pool.volumes.create(VolumeRequest("w", 8 * MiB, VolumeMode.BLOCK))
    before = scrape()
    with pytest.raises(KeyboardInterrupt):
        operations(pool, repo).create_backup("w", "t", take_snapshot=True, progress=Interrupt())
    after = scrape()
    assert grew(before, after, "amber_backups_total", outcome="cancelled") == 1
    assert grew(before, after, "amber_backups_total", outcome="failure") == 0
    assert total(after, "amber_operations_in_flight", kind="backup") == 0
