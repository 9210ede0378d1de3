"""`amber snapshot create-group|list-groups|delete-group` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.runner import amber, amber_json


def _volumes(pool: Path, *names: str) -> None:
    for name in names:
        amber_json(pool, "volume", "create", name, "--size", "16Mi", "--block")


def test_create_list_and_delete_a_group(pool_dir: Path) -> None:
    _volumes(pool_dir, "db", "wal")

    group = amber_json(pool_dir, "snapshot", "create-group", "nightly", "db", "wal")

    assert group["name"] == "nightly"
    assert [(m["name"], m["volume_name"]) for m in group["members"]] == [
        ("nightly-db", "db"),
        ("nightly-wal", "wal"),
    ]
    assert [g["name"] for g in amber_json(pool_dir, "snapshot", "list-groups")] == ["nightly"]
    listed = {s["name"] for s in amber_json(pool_dir, "snapshot", "list")}
    assert listed == {"nightly-db", "nightly-wal"}
    human = amber(pool_dir, "snapshot", "list-groups")
    assert human.returncode == 0
    assert "nightly-wal <- wal" in human.stdout

    deleted = amber_json(pool_dir, "snapshot", "delete-group", "nightly")

    assert deleted["deleted"]["name"] == "nightly"
    assert amber_json(pool_dir, "snapshot", "list-groups") == []
    assert amber_json(pool_dir, "snapshot", "list") == []


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["snapshot", "create-group", "g"], 2, "Missing argument"),
        (["snapshot", "create-group", "g", "db", "db"], 2, "named twice"),
        (["snapshot", "create-group", "h", "nope"], 3, "volume 'nope' not found"),
        (["snapshot", "create-group", "bad/name", "db"], 2, "invalid snapshot group name"),
        (["snapshot", "create-group", "g", "db", "wal"], 4, "already exists"),
        (["snapshot", "delete", "g-db"], 5, "member of the snapshot group 'g'"),
        (["snapshot", "delete-group", "nope"], 3, "snapshot group 'nope' not found"),
    ],
)
def test_errors_are_one_clear_line(pool_dir: Path, args: list[str], code: int, words: str) -> None:
    _volumes(pool_dir, "db", "wal")
    amber_json(pool_dir, "snapshot", "create-group", "g", "db")

    done = amber(pool_dir, *args)

    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1, done.stderr
    assert words in lines[0], done.stderr
    assert [g["name"] for g in amber_json(pool_dir, "snapshot", "list-groups")] == ["g"]
