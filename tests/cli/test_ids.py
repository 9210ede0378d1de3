"""Backup ids as people type them: whole, a unique prefix (restic's rule), or `latest`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.engine.helpers import PASSWORD_TEXT, Cli


@pytest.fixture
def cli(pool_dir: Path, tmp_path: Path) -> Cli:
    return Cli(pool_dir, tmp_path / "etc" / "targets.json")


@pytest.fixture
def repo(cli: Cli, tmp_path: Path) -> Path:
    """The directory of target `fs` (the only target configured), with backups a1, b1, a2."""
    password = tmp_path / "password"
    password.write_text(PASSWORD_TEXT + "\n")
    root = tmp_path / "repo"
    root.mkdir()
    cli.ok("target", "add", "fs", f"file://{root}", "--password-file", str(password), "--init")
    for volume in ("a", "b"):
        cli.volume(volume)
    cli.snapshot("a", "a1")
    cli.snapshot("b", "b1")
    cli.snapshot("a", "a2")
    for snapshot in ("a1", "b1", "a2"):
        cli.backup(snapshot, "fs")
    return root


def _ids(cli: Cli) -> dict[str, str]:
    """Snapshot name -> backup id."""
    return {b["snapshot"]: b["backup_id"] for b in cli.json("backup", "list")}


def _shortest_unique_prefix(backup_id: str, others: list[str]) -> str:
    for length in range(1, 33):
        if not any(o.startswith(backup_id[:length]) for o in others):
            return backup_id[:length]
    raise AssertionError("ids are unique")


def test_a_unique_prefix_names_the_backup(cli: Cli, repo: Path) -> None:
    ids = _ids(cli)
    wanted = ids["b1"]
    prefix = _shortest_unique_prefix(wanted, [v for v in ids.values() if v != wanted])
    shown = cli.json("backup", "show", prefix)
    assert shown["backup_id"] == wanted
    assert shown["snapshot"] == "b1"
    restored = cli.json("backup", "restore", wanted[:12], "from-prefix")
    assert restored["backup_id"] == wanted


def test_an_ambiguous_prefix_is_a_usage_error_with_the_count(cli: Cli, repo: Path) -> None:
    ids = _ids(cli)
    wanted = ids["a1"]
    # a second manifest object whose id shares the first 8 digits (only its name matters here)
    twin = wanted[:8] + ("0" if wanted[8] != "0" else "1") + wanted[9:]
    shutil.copy(repo / "backups" / wanted, repo / "backups" / twin)
    done = cli.run("backup", "show", wanted[:8])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "ambiguous" in done.stderr
    assert "2 backups" in done.stderr
    assert cli.json("backup", "show", wanted[:9])["backup_id"] == wanted


def test_latest_per_target_and_per_volume(cli: Cli, repo: Path) -> None:
    ids = _ids(cli)
    assert cli.json("backup", "show", "latest")["backup_id"] == ids["a2"]
    assert cli.json("backup", "show", "latest", "--volume", "b")["backup_id"] == ids["b1"]
    assert cli.json("backup", "show", "amber:v1:backup:fs:latest")["backup_id"] == ids["a2"]
    cli.ok("backup", "delete", "latest", "--volume", "a")
    assert set(_ids(cli)) == {"a1", "b1"}
    restored = cli.json("backup", "restore", "latest", "from-latest", "--volume", "a")
    assert restored["backup_id"] == ids["a1"]


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("backup", "show", "ffffffffffff"), 3, "no backup id starts with 'ffffffffffff'"),
        (("backup", "show", "latest", "--volume", "nope"), 3, "no backup of volume 'nope'"),
        (("backup", "show", "not-hex"), 2, "invalid backup id 'not-hex'"),
        (("backup", "show", "abc", "--volume", "a"), 2, "--volume goes with 'latest'"),
    ],
)
def test_bad_ids_are_one_clear_line(
    cli: Cli, repo: Path, args: tuple[str, ...], code: int, words: str
) -> None:
    done = cli.run(*args)
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1
    assert words in done.stderr


def test_tables_show_whole_backup_ids(cli: Cli, repo: Path) -> None:
    ids = _ids(cli)
    listed = cli.ok("backup", "list").stdout
    bases = cli.ok("backup", "bases").stdout
    for backup_id in ids.values():
        assert backup_id in listed
        assert f"amber:v1:backup:fs:{backup_id}" in listed
    assert ids["a2"] in bases
