"""The CLI follows the rules of `amber.ops.backups` (the real `amber` command, a real pool and a
file target): the same rules the CSI driver follows."""

from __future__ import annotations

import os
from pathlib import Path

from amber.backup.locks import LockKind, LockPurpose
from amber.backup.repository import Repository
from amber.backup.targets import TargetConfig, open_target_repository
from tests.cli.runner import add_file_target, amber, amber_json


def _backed_up(pool_dir: Path, work_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    config = add_file_target(pool_dir, tmp_path)
    amber_json(pool_dir, "volume", "create", "db", "--size", "32Mi")
    assert amber(pool_dir, "volume", "mount", "db", str(work_dir / "db")).returncode == 0
    (work_dir / "db" / "data").write_bytes(os.urandom(1 << 20))
    assert amber(pool_dir, "volume", "unmount", "db").returncode == 0
    amber_json(pool_dir, "snapshot", "create", "db", "s1")
    made = amber_json(pool_dir, "backup", "--config", str(config), "create", "s1", "-t", "t")
    return config, str(made["backup_id"])


def _repository(config: Path) -> Repository:
    return open_target_repository(TargetConfig(config).get("t"))


def test_backup_delete_is_refused_while_a_restore_of_it_runs_elsewhere(
    pool_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    config, backup_id = _backed_up(pool_dir, work_dir, tmp_path)
    repo = _repository(config)
    restore = repo.locks.acquire(
        "node-b pid 4242: restore into pvc-9",
        LockKind.SHARED,
        reader=True,
        purpose=LockPurpose.restore(backup_id),
    )

    done = amber(pool_dir, "backup", "--config", str(config), "delete", backup_id, "-t", "t")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "being restored" in lines[0]
    assert "node-b pid 4242" in lines[0]
    listed = amber_json(pool_dir, "backup", "--config", str(config), "list", "-t", "t")
    assert [b["backup_id"] for b in listed] == [backup_id]

    restore.release()
    done = amber(pool_dir, "backup", "--config", str(config), "delete", backup_id, "-t", "t")
    assert done.returncode == 0, done.stderr
    assert amber_json(pool_dir, "backup", "--config", str(config), "list", "-t", "t") == []


def test_backup_delete_drops_the_incremental_base_it_pointed_at(
    pool_dir: Path, work_dir: Path, tmp_path: Path
) -> None:
    config, backup_id = _backed_up(pool_dir, work_dir, tmp_path)
    bases = amber_json(pool_dir, "backup", "--config", str(config), "bases")
    assert [b["backup_id"] for b in bases] == [backup_id]
    done = amber(pool_dir, "backup", "--config", str(config), "delete", backup_id, "-t", "t")
    assert done.returncode == 0, done.stderr
    assert amber_json(pool_dir, "backup", "--config", str(config), "bases") == []
