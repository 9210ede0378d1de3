"""The CSI upload jobs and the backup state open files made before migrations, and migrate.

Fixtures hold the DDL those modules ran on every open before (captured from git): the jobs
table before and after `keep_local`, and the backup state's tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from amber.backup import state
from amber.backup.state import STATE_DB, BackupState
from amber.domain.errors import FailedPrecondition
from amber.ops import jobs
from amber.ops.jobs import JOBS_DB, JobStore, UploadJob, UploadState
from amber.pool import Pool
from amber.system.sqlite import open_database, user_version
from tests.cli.runner import amber

FIXTURES = Path(__file__).parent / "fixtures"


def legacy(path: Path, ddl: str, *rows: str) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript((FIXTURES / ddl).read_text())
        for row in rows:
            db.execute(row)
    finally:
        db.close()


def version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return user_version(db)
    finally:
        db.close()


UPLOAD = (
    "INSERT INTO uploads (name, target, key, volume, volume_id, snapshot, size, created, state)"
    " VALUES ('snap-1', 's3', 'k1', 'vol', 'vol-id', 'snap-local', 4096, 1.0, 'uploading')"
)
RESTORED = "INSERT INTO restored VALUES ('vol-2', 'backup:s3:abc')"


@pytest.mark.parametrize("ddl", ["csi-backups-v1.sql", "csi-backups-v2.sql"])
def test_upload_jobs_made_before_migrations_open_with_their_rows(tmp_path: Path, ddl: str) -> None:
    legacy(tmp_path / JOBS_DB, ddl, UPLOAD, RESTORED)

    store = JobStore(tmp_path)
    try:
        job = store.get("snap-1")
        assert job is not None
        assert (job.state, job.keep_local, job.size) == (UploadState.UPLOADING, False, 4096)
        assert store.restored_from("vol-2") == "backup:s3:abc"
        store.update(job, keep_local=True)  # the migrated column is written and read
        kept = store.get("snap-1")
        assert kept is not None
        assert kept.keep_local
    finally:
        store.close()
    assert version(tmp_path / JOBS_DB) == jobs.SCHEMA.version == 3


def test_fresh_upload_jobs_have_every_column(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    try:
        store.put(UploadJob("s", "t", "k", "v", "vid", "snap", 1, 1.0, UploadState.READY))
        assert [j.name for j in store.jobs()] == ["s"]
    finally:
        store.close()
    assert version(tmp_path / JOBS_DB) == 3


def test_newer_upload_jobs_are_refused(tmp_path: Path) -> None:
    JobStore(tmp_path).close()
    with sqlite3.connect(tmp_path / JOBS_DB) as db:
        db.execute(f"PRAGMA user_version = {jobs.SCHEMA.version + 1}")
    db.close()
    with pytest.raises(FailedPrecondition, match=r"the CSI backup jobs .* newer than this Amber"):
        JobStore(tmp_path)


def test_backup_state_made_before_migrations_is_recorded_at_version_1(tmp_path: Path) -> None:
    path = tmp_path / STATE_DB
    legacy(
        path,
        "backup-state-v1.sql",
        "INSERT INTO runs VALUES ('vol', 's3', 5.0)",
    )

    open_database(path, state.SCHEMA).close()

    assert version(path) == state.SCHEMA.version == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT * FROM runs").fetchall() == [("vol", "s3", 5.0)]
    db.close()


def test_backup_state_of_a_pool_keeps_its_interrupted_run(pool: Pool) -> None:
    legacy(pool.root / STATE_DB, "backup-state-v1.sql", "INSERT INTO runs VALUES ('v', 't', 1.0)")

    with BackupState(pool) as backup_state:
        assert backup_state.begin_run("v", "t")  # the earlier run is still known
        assert backup_state.records() == []

    assert version(pool.root / STATE_DB) == 1


def test_newer_backup_state_is_refused(pool: Pool) -> None:
    BackupState(pool).close()
    with sqlite3.connect(pool.root / STATE_DB) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(FailedPrecondition, match=r"the backup state .* newer than this Amber"):
        BackupState(pool)


def test_the_node_plugin_refuses_newer_upload_jobs_and_exits(
    pool_dir: Path, tmp_path: Path
) -> None:
    JobStore(pool_dir).close()
    with sqlite3.connect(pool_dir / JOBS_DB) as db:
        db.execute(f"PRAGMA user_version = {jobs.SCHEMA.version + 1}")
    db.close()
    socket = tmp_path / "csi.sock"

    done = amber(pool_dir, "node", "--node-id", "n1", "--endpoint", f"unix://{socket}")

    assert done.returncode == FailedPrecondition.exit_code, done.stderr
    assert "error: the CSI backup jobs " in done.stderr
    assert "Traceback" not in done.stderr
    assert not socket.exists()
