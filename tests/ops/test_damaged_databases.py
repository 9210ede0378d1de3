"""A damaged or locked SQLite file reads as one clear domain error, never a raw sqlite3 error
(issue 13, part 1, step 4): the pool metadata, the backup state and the upload jobs alike."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from amber.backup.state import STATE_DB
from amber.domain.errors import Busy, Corrupt, SystemFailure
from amber.ops.jobs import JOBS_DB, JobStore
from amber.system.sqlite import Database, Schema, storage_error
from tests.cli.runner import amber, amber_json


def damage_tables(path: Path) -> None:
    """Overwrite every page but the first (the header and the schema stay readable, so the
    file opens; the first read of a table finds garbage)."""
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) > page_size, "the file has no table page to damage"
    data[page_size:] = b"\xa5" * (len(data) - page_size)
    path.write_bytes(bytes(data))


def test_sqlite_failures_become_the_domain_error_of_their_cause(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    malformed = storage_error(path, sqlite3.DatabaseError("database disk image is malformed"), "x")
    assert isinstance(malformed, Corrupt)
    assert str(path) in malformed.message
    locked = storage_error(path, sqlite3.OperationalError("database is locked"), "x", "the jobs")
    assert isinstance(locked, Busy)
    assert locked.message.startswith(f"the jobs {path} stayed locked")
    assert isinstance(storage_error(path, sqlite3.OperationalError("boom"), "x"), SystemFailure)


def test_a_query_on_a_damaged_file_is_corrupt(tmp_path: Path) -> None:
    schema = Schema("the test records", ("CREATE TABLE t (a TEXT)",))
    path = tmp_path / "t.db"
    db = Database(path, schema)
    for i in range(200):
        db.write("INSERT INTO t VALUES (?)", (f"row {i} " * 20,))
    assert len(db.query("SELECT a FROM t")) == 200
    db.close()
    damage_tables(path)
    db = Database(path, schema)  # the header is intact: it opens
    with pytest.raises(Corrupt, match=r"the test records .* is damaged"):
        db.query("SELECT a FROM t")
    db.close()


def test_damaged_upload_jobs_are_corrupt(tmp_path: Path) -> None:
    JobStore(tmp_path).close()
    damage_tables(tmp_path / JOBS_DB)
    store = JobStore(tmp_path)
    with pytest.raises(Corrupt, match="the CSI backup jobs"):
        store.jobs()
    store.close()


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == Corrupt.exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_damaged_pool_metadata_file_is_one_line_through_the_cli(pool_dir: Path) -> None:
    for name in ("a", "b", "c"):
        amber_json(pool_dir, "volume", "create", name, "--size", "16Mi")
    damage_tables(pool_dir / "amber.db")
    line = _one_error_line(amber(pool_dir, "volume", "list"))
    assert line.startswith("error: the pool metadata ")
    assert "is damaged" in line


def test_a_damaged_backup_state_file_is_one_line_through_the_cli(
    pool_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "targets.json"
    path = pool_dir / STATE_DB
    amber_json(pool_dir, "backup", "--config", str(config), "bases")  # creates the file
    with sqlite3.connect(path) as db:  # rows, as backups leave them
        for i in range(100):
            db.execute("INSERT INTO runs VALUES (?, ?, ?)", (f"volume-{i}" * 10, "t", float(i)))
    damage_tables(path)
    line = _one_error_line(amber(pool_dir, "backup", "--config", str(config), "bases"))
    assert line.startswith("error: the backup state ")
    assert "is damaged" in line
