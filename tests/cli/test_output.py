"""What `amber` prints: whole identifiers in tables, `--output` before the noun or after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from amber.cli.main import app
from tests.cli.runner import amber

LONG_VOLUME = "pvc-0a1b2c3d-4e5f-6789-abcd-ef0123456789-with-a-long-tail"
LONG_SNAPSHOT = "snapshot-9f8e7d6c-5b4a-3210-fedc-ba9876543210-also-long"


def _on_terminal(pool: Path, columns: int, *args: str) -> str:
    """stdout of `amber` as rich renders it for a terminal `columns` wide."""
    env = {**os.environ, "TTY_COMPATIBLE": "1", "COLUMNS": str(columns), "NO_COLOR": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "amber", "--pool", str(pool), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_piped_tables_print_whole_names(pool_dir: Path) -> None:
    assert amber(pool_dir, "volume", "create", LONG_VOLUME, "--size", "64Mi").returncode == 0
    assert amber(pool_dir, "snapshot", "create", LONG_VOLUME, LONG_SNAPSHOT).returncode == 0
    volumes = amber(pool_dir, "volume", "list")
    assert "…" not in volumes.stdout
    assert [line for line in volumes.stdout.splitlines() if LONG_VOLUME in line]
    snapshots = amber(pool_dir, "snapshot", "list")
    assert "…" not in snapshots.stdout
    assert [line for line in snapshots.stdout.splitlines() if LONG_SNAPSHOT in line]
    # a terminal too narrow for the whole table still shows each name whole, on one line
    for columns in (80, 120):
        narrow = _on_terminal(pool_dir, columns, "volume", "list")
        assert "…" not in narrow
        assert [line for line in narrow.splitlines() if LONG_VOLUME in line]
    narrow = _on_terminal(pool_dir, 120, "snapshot", "list")
    assert [line for line in narrow.splitlines() if LONG_SNAPSHOT in line and LONG_VOLUME in line]


def _leaves(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(command, click.Group):
        found = []
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            assert sub is not None
            real = getattr(sub, "command", None)
            found += _leaves(real() if callable(real) else sub, (*path, name))
        return found
    return [path]


DAEMONS = {("node",), ("controller",), ("dashboard",)}


def test_every_command_that_prints_takes_output_after_the_verb() -> None:
    import typer

    root = typer.main.get_command(app)
    leaves = [p for p in _leaves(root) if p not in DAEMONS]
    assert len(leaves) > 30
    for path in leaves:
        done = subprocess.run(
            [sys.executable, "-m", "amber", *path, "--help"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (path, done.stderr)
        assert "--output" in done.stdout, path


@pytest.mark.parametrize(
    "args",
    [
        ("volume", "list"),
        ("volume", "show", "v1"),
        ("snapshot", "list"),
        ("snapshot", "show", "s1"),
        ("pool", "status"),
        ("pool", "check"),
    ],
)
def test_output_json_before_the_noun_or_after_the_verb(
    pool_dir: Path, args: tuple[str, ...]
) -> None:
    amber(pool_dir, "volume", "create", "v1", "--size", "64Mi")
    amber(pool_dir, "snapshot", "create", "v1", "s1")
    before = amber(pool_dir, "-o", "json", *args)
    after = amber(pool_dir, *args, "--output", "json")
    short = amber(pool_dir, *args, "-o", "json")
    assert before.returncode == after.returncode == short.returncode == 0, after.stderr
    answers = [_steady(json.loads(done.stdout)) for done in (before, after, short)]
    assert answers[0] == answers[1] == answers[2]
    # after the verb it wins over the one before the noun
    assert amber(pool_dir, "-o", "json", *args, "-o", "table").stdout.lstrip()[:1] not in "[{"


def _steady(answer: object) -> object:
    """The answer without the pool filesystem's used/free bytes: XFS settles its space
    accounting in the background, so they may differ between two calls a moment apart."""
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k not in ("used", "free")}
    return answer


def test_a_bad_output_value_is_a_usage_error(pool_dir: Path) -> None:
    done = amber(pool_dir, "volume", "list", "-o", "yaml")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "yaml" in done.stderr
