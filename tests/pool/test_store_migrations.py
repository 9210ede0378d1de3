"""Pool metadata made by earlier Amber opens and migrates; a newer one is refused.

The fixtures are the DDL pool/store.py ran before migrations existed (with and without the
group-snapshot tables), executed the way that code did, with the meta rows it wrote.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from amber.domain.errors import FailedPrecondition
from amber.domain.models import SnapshotGroup
from amber.pool import Pool
from amber.pool.context import DB_NAME
from amber.pool.store import SCHEMA, MetadataStore
from amber.system.sqlite import user_version
from tests.cli.runner import amber

FIXTURES = Path(__file__).parent / "fixtures"
LEGACY = ["pool-db-v1.sql", "pool-db-v1-groups.sql"]


def make_legacy(path: Path, ddl: str) -> None:
    """A pool database as the code before migrations left it, with one volume and a journal."""
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript((FIXTURES / ddl).read_text())
        db.executescript(
            "INSERT INTO meta VALUES ('schema_version', '1'), ('reflink', '1'),"
            " ('overprovisioning', '4.0'), ('created', '1.0'), ('image', ''), ('device', '');"
            "INSERT INTO volumes VALUES ('u1', 'data', 1048576, 'filesystem', 'ext4', 2.0,"
            " 'none', NULL, 0, '/nowhere/u1.img');"
            "INSERT INTO journal (op, lock_key, payload, created) VALUES"
            " ('noop', 'volume:data', '{}', 3.0);"
        )
    finally:
        db.close()


def stored_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return user_version(db)
    finally:
        db.close()


@pytest.mark.parametrize("ddl", LEGACY)
def test_a_pool_database_made_before_migrations_opens_and_keeps_its_rows(
    tmp_path: Path, ddl: str
) -> None:
    path = tmp_path / DB_NAME
    make_legacy(path, ddl)

    store = MetadataStore(path)
    try:
        assert [v.name for v in store.volumes()] == ["data"]
        assert [e.op for e in store.journal()] == ["noop"]
        assert store.get_meta("overprovisioning") == "4.0"
        assert store.get_meta("schema_version") is None  # the header holds it now
        with store.transaction() as db:  # the group tables exist at version 2
            store.insert_group(db, SnapshotGroup("g1", "group", 4.0, ()))
        assert [g.name for g in store.groups()] == ["group"]
    finally:
        store.close()
    assert stored_version(path) == SCHEMA.version == 3


def test_a_fresh_pool_records_the_current_version(pool_dir: Path) -> None:
    assert stored_version(pool_dir / DB_NAME) == SCHEMA.version


def test_an_existing_pool_opens_after_the_upgrade(pool_dir: Path) -> None:
    make_legacy(pool_dir / DB_NAME, "pool-db-v1-groups.sql")
    with sqlite3.connect(pool_dir / DB_NAME) as db:
        db.execute("DELETE FROM volumes")  # its image does not exist
        db.execute("DELETE FROM journal")
    db.close()

    pool = Pool.open(pool_dir)
    try:
        assert pool.volumes.list() == []
    finally:
        pool.close()
    assert stored_version(pool_dir / DB_NAME) == SCHEMA.version


def make_newer(pool_dir: Path) -> None:
    with sqlite3.connect(pool_dir / DB_NAME) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA.version + 1}")
    db.close()


def test_a_newer_pool_database_is_refused_also_read_only(pool_dir: Path) -> None:
    make_newer(pool_dir)
    for read_only in (False, True):
        with pytest.raises(FailedPrecondition, match="newer than this Amber knows"):
            MetadataStore(pool_dir / DB_NAME, read_only_when_full=read_only)
    assert stored_version(pool_dir / DB_NAME) == SCHEMA.version + 1


def test_the_cli_refuses_a_newer_pool_in_one_line(pool_dir: Path) -> None:
    make_newer(pool_dir)

    done = amber(pool_dir, "volume", "list")

    assert done.returncode == FailedPrecondition.exit_code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: the pool metadata ")
    assert f"is at schema version {SCHEMA.version + 1}" in lines[0]


def test_the_node_plugin_refuses_a_newer_pool_and_exits(pool_dir: Path, tmp_path: Path) -> None:
    make_newer(pool_dir)
    socket = tmp_path / "csi.sock"

    done = amber(pool_dir, "node", "--node-id", "n1", "--endpoint", f"unix://{socket}", timeout=60)

    assert done.returncode == FailedPrecondition.exit_code, done.stderr
    assert "newer than this Amber knows" in done.stderr
    assert "Traceback" not in done.stderr
    assert not socket.exists()
