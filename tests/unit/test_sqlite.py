"""The SQLite helper: fresh files, upgrades, refusals, failed steps, concurrent openers.

Real database files in a temporary directory; no pool is needed.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from amber.domain.errors import FailedPrecondition, OutOfSpace, SystemFailure
from amber.system.sqlite import (
    Schema,
    check_version,
    open_database,
    split_statements,
    storage_error,
    user_version,
)

STEPS = (
    "CREATE TABLE items (name TEXT PRIMARY KEY);",
    "ALTER TABLE items ADD COLUMN size INTEGER NOT NULL DEFAULT 0; CREATE TABLE notes (text TEXT);",
    lambda db: db.execute("UPDATE items SET size = length(name)"),
)
SCHEMA = Schema("the test database", STEPS)


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    db.close()
    return {str(r[0]) for r in rows}


def version_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return user_version(db)
    finally:
        db.close()


def test_a_fresh_file_gets_every_step_and_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    db = open_database(path, SCHEMA)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert not db.in_transaction
    finally:
        db.close()
    assert tables(path) == {"items", "notes"}
    assert version_of(path) == 3


@pytest.mark.parametrize("start", [1, 2])
def test_an_older_file_is_upgraded_and_keeps_its_rows(tmp_path: Path, start: int) -> None:
    path = tmp_path / "old.db"
    open_database(path, Schema("old", STEPS[:start])).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO items (name) VALUES ('abcd')")
    db.close()

    open_database(path, SCHEMA).close()

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, size FROM items").fetchall() == [("abcd", 4)]
    db.close()
    assert version_of(path) == 3


def test_a_newer_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_database(path, SCHEMA).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 7")
    db.close()

    with pytest.raises(FailedPrecondition) as caught:
        open_database(path, SCHEMA)

    message = caught.value.message
    assert "\n" not in message
    assert f"the test database {path} is at schema version 7" in message
    assert "newer than this Amber knows (3)" in message
    assert version_of(path) == 7


def test_a_failed_sql_step_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "fail.db"
    open_database(path, Schema("t", STEPS[:1])).close()
    broken = Schema(
        "the test file", (STEPS[0], "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);")
    )

    with pytest.raises(SystemFailure, match=r"^the test file .* \(no such table: nowhere\)"):
        open_database(path, broken)

    assert tables(path) == {"items"}  # `half` was rolled back with the step
    assert version_of(path) == 1
    open_database(path, SCHEMA).close()  # and the file still upgrades
    assert version_of(path) == 3


def test_a_failed_function_step_leaves_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "fail.db"

    def explode(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half (x)")
        raise ValueError("step failed")

    with pytest.raises(ValueError, match="step failed"):
        open_database(path, Schema("t", (STEPS[0], explode)))

    assert tables(path) == {"items"}
    assert version_of(path) == 1


def test_a_legacy_file_reports_its_version_once(tmp_path: Path) -> None:
    path = tmp_path / "legacy.db"
    with sqlite3.connect(path) as db:  # as code before versions would have left it
        db.execute("CREATE TABLE items (name TEXT PRIMARY KEY, size INTEGER NOT NULL DEFAULT 0)")
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO items VALUES ('ab', 0)")
    db.close()
    asked: list[int] = []

    def legacy(db: sqlite3.Connection) -> int:
        asked.append(user_version(db))
        return 2 if "notes" in tables(path) else 0

    open_database(path, Schema("t", STEPS, legacy)).close()

    assert version_of(path) == 3
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name, size FROM items").fetchall() == [("ab", 2)]
    db.close()
    asked.clear()
    open_database(path, Schema("t", STEPS, legacy)).close()
    assert asked == []  # a recorded version is never guessed again


def test_check_version_reads_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    open_database(path, Schema("t", STEPS[:1])).close()
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        assert check_version(db, SCHEMA, path) == 1
        with pytest.raises(FailedPrecondition):
            check_version(db, Schema("t", ()), path)
    finally:
        db.close()


def _open_in_child(path: str, log: str, started: object, go: object) -> None:
    def slow_step(db: sqlite3.Connection) -> None:
        with open(log, "a") as f:
            f.write("ran\n")
        started.set()  # type: ignore[attr-defined]
        go.wait(30)  # type: ignore[attr-defined]  # the other opener is under way now
        db.execute("CREATE TABLE slow (x)")

    open_database(Path(path), Schema("t", (*STEPS, slow_step))).close()


def test_two_processes_opening_at_once_migrate_once(tmp_path: Path) -> None:
    path, log = tmp_path / "shared.db", tmp_path / "ran.log"
    mp = multiprocessing.get_context("fork")
    started, go = mp.Event(), mp.Event()
    first = mp.Process(target=_open_in_child, args=(str(path), str(log), started, go))
    first.start()
    assert started.wait(30)  # the first opener holds the write lock inside the last step
    second = mp.Process(target=_open_in_child, args=(str(path), str(log), mp.Event(), go))
    second.start()
    go.set()
    first.join(60)
    second.join(60)

    assert (first.exitcode, second.exitcode) == (0, 0)
    assert log.read_text() == "ran\n"
    assert version_of(path) == 4


def test_statements_split_where_sqlite_says_they_end() -> None:
    sql = """
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t AFTER INSERT ON a BEGIN
        DELETE FROM a WHERE x = ';';
    END;
    """
    assert [s.split()[:2] for s in split_statements(sql)] == [
        ["CREATE", "TABLE"],
        ["CREATE", "TRIGGER"],
    ]


def test_a_full_disk_error_becomes_out_of_space(tmp_path: Path) -> None:
    error = storage_error(
        tmp_path / "x.db", sqlite3.OperationalError("database or disk is full"), "cannot write"
    )
    assert isinstance(error, OutOfSpace)
    other = storage_error(tmp_path / "x.db", sqlite3.OperationalError("boom"), "cannot write")
    assert isinstance(other, SystemFailure)
