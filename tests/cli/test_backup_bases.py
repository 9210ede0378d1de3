"""Backup bases (reflink images kept for incrementals) are shown by `pool status` and go with
their volume (issue 16, item 5)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli.runner import add_file_target, amber, amber_json


def test_pool_status_counts_bases_and_volume_delete_frees_them(
    pool_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    config = add_file_target(pool_dir, tmp_path)
    amber_json(pool_dir, "volume", "create", "db", "--size", "64Mi")
    assert amber(pool_dir, "volume", "mount", "db", str(work_dir / "db")).returncode == 0
    with open(work_dir / "db" / "data", "wb") as f:
        f.write(os.urandom(4 << 20))
    assert amber(pool_dir, "volume", "unmount", "db").returncode == 0
    amber_json(pool_dir, "snapshot", "create", "db", "s1")
    done = amber(pool_dir, "backup", "--config", str(config), "create", "s1", "--target", "t")
    assert done.returncode == 0, done.stderr
    amber_json(pool_dir, "snapshot", "delete", "s1")

    status = amber_json(pool_dir, "pool", "status")
    assert status["backup_bases"] == 1
    assert status["backup_bases_bytes"] >= 4 << 20
    text = amber(pool_dir, "pool", "status").stdout
    assert "backup bases" in text

    deleted = amber(pool_dir, "volume", "delete", "db")
    assert deleted.returncode == 0, deleted.stderr
    assert "Dropped 1 backup base(s) of db" in deleted.stdout
    status = amber_json(pool_dir, "pool", "status")
    assert (status["backup_bases"], status["backup_bases_bytes"]) == (0, 0)
    assert amber_json(pool_dir, "backup", "--config", str(config), "bases") == []
