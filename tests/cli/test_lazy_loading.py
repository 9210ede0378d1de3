"""`amber` imports only what the invoked command needs (amber.cli.lazy).

Each probe runs the CLI's entry point in a fresh interpreter and reports the modules it ended
with: in the test process everything has long been imported.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from amber import __version__
from amber.cli.lazy import LazyCommand
from amber.cli.main import AmberGroup, app
from tests.cli.runner import amber_json

COMMANDS = (
    "demo",
    "node",
    "controller",
    "pool",
    "volume",
    "snapshot",
    "target",
    "backup",
    "dashboard",
    "schedule",
    "job",
    "csi",
)
COMMAND_MODULES = frozenset(
    f"amber.cli.{name}"
    for name in (
        "backup_cmd",
        "csi_cmd",
        "dashboard_cmd",
        "demo",
        "demo_backup",
        "import_cmd",
        "job_cmd",
        "node_cmd",
        "pool_cmd",
        "schedule_cmd",
        "snapshot_cmd",
        "target_cmd",
        "volume_cmd",
    )
)
RPC = frozenset({"grpc", "google.protobuf", "amber.csi"})
S3 = frozenset({"boto3", "botocore", "s3transfer"})
WEB = frozenset({"fastapi", "starlette", "uvicorn", "jinja2", "pydantic", "amber.web"})
PRUNE = frozenset({"amber.backup.gc", "amber.backup.retention"})
"""Imported by `backup prune` (and the operations that prune) when they run, by no other command."""
SERVING = frozenset(
    {
        "amber.metrics.server",
        "amber.metrics.prober",
        "amber.metrics.collectors",
        "prometheus_client",
    },
)
"""What serving or probing metrics needs: a command that records a backup's metrics serves none."""

_PROBE = """
import gc, json, sys
report, args = sys.argv[1], sys.argv[2:]
sys.argv = ["amber", *args]
from amber.cli.main import run
try:
    run()
except SystemExit as e:
    code = e.code
with open(report, "w") as f:
    gc_state = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
    json.dump({"code": code, "modules": sorted(sys.modules), "gc": gc_state}, f)
"""
_reports = itertools.count()


@dataclass(frozen=True)
class Probe:
    code: int
    stdout: str
    stderr: str
    modules: frozenset[str]
    gc_enabled: bool
    gc_frozen: int

    def loaded(self, packages: Iterable[str]) -> set[str]:
        """Which of these packages (or modules under them) the run imported."""
        return {p for p in packages for m in self.modules if m == p or m.startswith(f"{p}.")}


def probe(tmp_path: Path, *args: str) -> Probe:
    """Run `amber ARGS` in a fresh interpreter; its exit code, output and imported modules."""
    report = tmp_path / f"probe-{next(_reports)}.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=120,
        check=False,
    )
    assert report.exists(), done.stderr
    result = json.loads(report.read_text())
    gc_state = result["gc"]
    return Probe(
        result["code"],
        done.stdout,
        done.stderr,
        frozenset(result["modules"]),
        gc_state["enabled"],
        gc_state["frozen"],
    )


def test_version_imports_no_command_and_no_rich(tmp_path: Path) -> None:
    version = probe(tmp_path, "--version")
    assert version.code == 0
    assert version.stdout == f"amber {__version__}\n"
    assert version.loaded(COMMAND_MODULES | RPC | S3 | {"rich", "amber.pool", "sqlite3"}) == set()


def test_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    shown = probe(tmp_path, "--help")
    assert shown.code == 0
    assert tuple(re.findall(r"^│ (\w+) {2,}", shown.stdout, re.MULTILINE)) == COMMANDS
    for command in AmberGroup.lazy:
        for line in (command.help or "").splitlines():
            assert line in shown.stdout
    assert shown.loaded(COMMAND_MODULES | RPC | S3 | {"amber.pool"}) == set()


def test_help_lines_are_the_commands_own() -> None:
    """The help line the stand-in shows is the first paragraph of the real command's help."""
    assert tuple(command.name for command in AmberGroup.lazy) == COMMANDS
    for command in AmberGroup.lazy:
        real = command.command()
        assert command.help == inspect.cleandoc(real.help or "").split("\n\n")[0], command.name
        assert (command.hidden, command.deprecated) == (real.hidden, real.deprecated)


@pytest.mark.parametrize(
    "args", [("backup", "--help"), ("backup", "create", "--help"), ("backup", "restore", "--help")]
)
def test_backup_help_imports_backup_but_no_rpc_or_s3(tmp_path: Path, args: tuple[str, ...]) -> None:
    shown = probe(tmp_path, *args)
    assert shown.code == 0, shown.stderr
    assert "Usage: amber " + " ".join(args[:-1]) in shown.stdout
    assert "amber.cli.backup_cmd" in shown.modules
    assert shown.loaded(RPC | S3 | {"amber.cli.node_cmd", "amber.cli.pool_cmd"}) == set()
    # Nor what only other commands run: pruning, checking, restoring, metrics.
    lazy = PRUNE | {"amber.metrics", "amber.backup.check", "amber.backup.restorer"}
    assert shown.loaded(lazy) == set()


def test_a_mistyped_command_is_suggested_without_importing_any(tmp_path: Path) -> None:
    typo = probe(tmp_path, "backu")
    assert typo.code == 2
    assert typo.stderr == "error: No such command 'backu'. Did you mean 'backup'?\n"
    assert typo.loaded(COMMAND_MODULES) == set()


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            real = sub.command() if isinstance(sub, LazyCommand) else sub
            yield from _command_paths(real, (*path, name))


def test_every_command_prints_its_help() -> None:
    """Each command's --help renders (help text is rich markup: a stray `[/x]` breaks it)."""
    paths = list(_command_paths(typer.main.get_command(app)))
    assert ("target", "add") in paths
    assert ("backup", "import") in paths
    for path in paths:
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert shown.exit_code == 0, (path, shown.output, shown.exception)
        assert "Usage:" in shown.output, path


def test_backup_import_stays_under_backup() -> None:
    shown = CliRunner().invoke(app, ["backup", "import", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "VolumeSnapshotContent + VolumeSnapshot" in shown.output
    assert CliRunner().invoke(app, ["import", "--help"]).exit_code == 2


def test_backup_and_restore_to_a_file_target_import_no_rpc_s3_or_rich(
    pool_dir: Path, tmp_path: Path
) -> None:
    config, repo, password = tmp_path / "targets.json", tmp_path / "repo", tmp_path / "password"
    repo.mkdir()
    password.write_text("correct horse battery staple\n")
    amber_json(pool_dir, "volume", "create", "v", "--size", "16Mi", "--block")
    amber_json(pool_dir, "snapshot", "create", "v", "s")
    amber_json(
        pool_dir,
        "target",
        "--config",
        str(config),
        "add",
        "t",
        f"file://{repo}",
        "--password-file",
        str(password),
        "--init",
    )
    common = ("--pool", str(pool_dir), "-o", "json", "backup", "--config", str(config))
    created = probe(tmp_path, *common, "create", "s", "--target", "t")
    assert created.code == 0, created.stderr
    backup_id = json.loads(created.stdout)["backup_id"]
    restored = probe(tmp_path, *common, "restore", backup_id, "r", "--target", "t")
    assert restored.code == 0, restored.stderr
    assert json.loads(restored.stdout)["complete"] is True
    for run in (created, restored):
        assert run.loaded(RPC | S3 | WEB | {"rich"}) == set()  # JSON for a script: no rich either
    # A backup loads neither the restorer nor the checker; a restore does load the restorer.
    assert created.loaded({"amber.backup.restorer", "amber.backup.check"}) == set()
    for run in (created, restored):  # they record their metrics, and prune nothing
        assert run.loaded(PRUNE | SERVING) == set()
        assert "amber.metrics.registry" in run.modules
    assert restored.loaded({"amber.backup.restorer"}) == {"amber.backup.restorer"}


def test_the_start_up_objects_are_frozen_and_collection_resumes(tmp_path: Path) -> None:
    """`run` imports a command without garbage collection, then freezes what start-up built
    and collects again (amber.cli.lazy.pause_collection)."""
    shown = probe(tmp_path, "backup", "create", "--help")
    assert shown.code == 0, shown.stderr
    assert shown.gc_enabled
    assert shown.gc_frozen > 10_000  # the modules' functions, classes, dicts


def test_the_cli_used_in_process_leaves_collection_alone() -> None:
    """A process that only uses the app (as tests do) keeps its garbage collectable: nothing
    is frozen, collection stays on."""
    code = (
        "import gc; from typer.testing import CliRunner; from amber.cli.main import app; "
        "r = CliRunner().invoke(app, ['backup', 'create', '--help']); "
        "print(r.exit_code, gc.isenabled(), gc.get_freeze_count())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["0", "True", "0"]
