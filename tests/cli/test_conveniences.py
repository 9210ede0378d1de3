"""restic's conveniences: durations, the only target by default, a volume where a snapshot is
wanted, shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from amber.domain.errors import InvalidArgument
from amber.domain.units import parse_duration
from tests.engine.helpers import PASSWORD_TEXT, Cli


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("2.5", 2.5), ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400),
     ("7d", 7 * 86400), ("2w", 14 * 86400), ("500ms", 0.5), (" 1d ", 86400)],
)  # fmt: skip
def test_durations_are_read_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "-5", "1 h", "h", "1y", "nan", "inf", "1e3", "", "1hh"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid duration"):
        parse_duration(text)


def test_zero_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidArgument, match="greater than zero"):
        parse_duration("0s")
    assert parse_duration("0", allow_zero=True) == 0
    with pytest.raises(InvalidArgument, match="century"):
        parse_duration("36600d")


@pytest.fixture
def cli(pool_dir: Path, tmp_path: Path) -> Cli:
    return Cli(pool_dir, tmp_path / "etc" / "targets.json")


@pytest.fixture
def only_target(cli: Cli, tmp_path: Path) -> str:
    password = tmp_path / "password"
    password.write_text(PASSWORD_TEXT + "\n")
    root = tmp_path / "repo"
    root.mkdir()
    cli.ok("target", "add", "fs", f"file://{root}", "--password-file", str(password), "--init")
    cli.volume("db")
    return "fs"


def test_the_only_target_is_the_default_and_durations_take_units(
    cli: Cli, only_target: str
) -> None:
    cli.snapshot("db", "db-1")
    made = cli.json("backup", "create", "db-1")
    assert made["handle"].startswith("amber:v1:backup:fs:")
    pruned = cli.json("backup", "prune", "--keep-last", "1", "--grace", "7d", "--dry-run")
    assert pruned["dry_run"] is True
    assert [b["backup_id"] for b in cli.json("backup", "list")] == [made["backup_id"]]
    cli.ok("backup", "check")
    bad = cli.run("backup", "prune", "--keep-last", "1", "--grace", "7 days")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "invalid duration '7 days'" in bad.stderr


def test_without_a_target_and_with_two_the_error_says_so(cli: Cli, only_target: str) -> None:
    cli.ok("target", "add", "other", "file:///nonexistent-amber-target", "--no-encryption")
    done = cli.run("backup", "list")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--target" in done.stderr
    assert "2 targets are configured" in done.stderr


def test_backup_create_of_a_volume_says_snapshot_first_or_does_it(
    cli: Cli, only_target: str
) -> None:
    refused = cli.run("backup", "create", "db")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "'db' is a volume" in refused.stderr
    assert "amber snapshot create db" in refused.stderr
    assert "--snapshot" in refused.stderr
    made = cli.json("backup", "create", "db", "--snapshot")
    assert made["volume"] == "db"
    assert made["snapshot"].startswith("db-backup-")
    assert [s["name"] for s in cli.json("snapshot", "list")] == [made["snapshot"]]
    missing = cli.run("backup", "create", "nope", "--snapshot")
    assert missing.returncode == 3
    assert "volume 'nope' not found" in missing.stderr


def test_shell_completion_is_offered_and_completes_lazy_commands() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "amber", "--help"], capture_output=True, text=True, check=True
    )
    assert "--install-completion" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_AMBER_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run(
            [str(Path(sys.executable).parent / "amber")],  # the installed entry point
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("amber vol") == ["volume"]
    assert "list" in complete("amber backup li")
    assert "--target" in complete("amber backup list --t")
