"""A pool open that fails after the database opened closes it (or the pool cannot unmount)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amber.pool import Pool
from amber.pool.context import DB_NAME
from amber.pool.store import MetadataStore


def open_db_fds(db: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            if os.readlink(fd).startswith(str(db)):
                count += 1
        except OSError:
            continue
    return count


def test_a_failed_recovery_closes_the_database(pool_dir: Path) -> None:
    store = MetadataStore(pool_dir / DB_NAME)
    store.journal_add("delete_volume", "volume:broken", {"no": "uid"})  # recovery will fail
    store.close()
    assert open_db_fds(pool_dir / DB_NAME) == 0

    with pytest.raises(KeyError):
        Pool.open(pool_dir)

    assert open_db_fds(pool_dir / DB_NAME) == 0
