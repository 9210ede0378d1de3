"""The `amber` command: noun-verb subcommands over one pool.

Each subcommand's module is imported only when that subcommand runs (`amber.cli.lazy`), so
`amber backup create` does not pay for gRPC and the CSI commands. The help lines below are what
`amber --help` lists; tests/cli/test_lazy_loading.py checks they match the commands' own help.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, cast

import click
import typer

from amber import __version__
from amber.cli.lazy import LazyCommand, LazyGroup, Mountable, pause_collection
from amber.cli.state import OUTPUT_FLAGS, OUTPUT_HELP, OutputFormat, add_output_option, make_state
from amber.domain.errors import AmberError
from amber.logs import setup_cli_logging

# Each loader imports one command module; it runs once, when its command is first invoked.


def _attr(module: str, name: str) -> Callable[[], Mountable]:
    """A loader for `amber.cli.<module>.<name>` (a typer app or a command function)."""

    def load() -> Mountable:
        return cast(Mountable, getattr(importlib.import_module(f"amber.cli.{module}"), name))

    return load


def _backup() -> Mountable:
    """`amber backup`, with `amber backup import` from its own module mounted under it."""
    from amber.cli import backup_cmd, import_cmd

    backup_cmd.app.command("import")(import_cmd.import_backup)
    return backup_cmd.app


class Subcommand(LazyCommand):
    """A lazily loaded subcommand whose every command takes the shared `--output` option."""

    def command(self) -> click.Command:
        command = super().command()
        add_output_option(command)
        return command


class AmberGroup(LazyGroup):
    """The top-level group: every subcommand, in the order `amber --help` lists them."""

    lazy = (
        Subcommand(
            "demo",
            "Walk through the Amber story on the pool: volume, snapshot, restore, clone, expand,\n"
            "then a full and an incremental backup to a local target and a restore from it.",
            _attr("demo", "demo"),
        ),
        LazyCommand(
            "node",
            "Run the node plugin: Identity, Controller and Node services over this node's pool.",
            _attr("node_cmd", "node"),
        ),
        LazyCommand(
            "controller",
            "Run the controller endpoint for csi-resizer (volumes grow on their nodes).",
            _attr("node_cmd", "controller"),
        ),
        Subcommand(
            "pool",
            "Create and inspect the pool (where volume images live).",
            _attr("pool_cmd", "app"),
        ),
        Subcommand(
            "volume",
            "Create, clone, restore, grow, mount and delete volumes.",
            _attr("volume_cmd", "app"),
        ),
        Subcommand(
            "snapshot",
            "Take, list, mount and delete instant read-only snapshots.",
            _attr("snapshot_cmd", "app"),
        ),
        Subcommand(
            "target",
            "Add, list, check and remove backup targets (S3 buckets or directories).",
            _attr("target_cmd", "app"),
        ),
        Subcommand(
            "backup",
            "Back up snapshots to a target, restore backups into new volumes, list, prune, check.",
            _backup,
        ),
        LazyCommand(
            "dashboard",
            "Serve the web dashboard of the pool and its backup targets (Ctrl-C stops it).",
            _attr("dashboard_cmd", "dashboard"),
        ),
        Subcommand(
            "schedule",
            "Run recurring snapshot and backup jobs from a YAML file, in the foreground.",
            _attr("schedule_cmd", "app"),
        ),
        Subcommand(
            "job",
            "List recurring jobs, run one now, and show the history of their runs.",
            _attr("job_cmd", "app"),
        ),
        Subcommand(
            "csi",
            "Call a running Amber CSI driver over its socket (debugging without Kubernetes).",
            _attr("csi_cmd", "app"),
        ),
    )


app = typer.Typer(
    cls=AmberGroup,
    help="Amber: node-local volumes with instant reflink snapshots, clones and restores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"amber {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    pool: Annotated[
        Path | None,
        typer.Option(
            "--pool", envvar="AMBER_POOL", help="Pool directory (default /var/lib/amber/pool)."
        ),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option(*OUTPUT_FLAGS, help=OUTPUT_HELP)
    ] = OutputFormat.table,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log every detail of what Amber does (servers too)."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options."""
    setup_cli_logging(verbose=verbose)
    ctx.obj = make_state(pool, output, verbose=verbose)


def _print_error(message: str) -> None:
    """`error: MESSAGE` as one line on stderr. rich is imported here, not at start-up, so that
    `amber --version` does not pay ~30 ms for it."""
    from amber.cli.output import err_console

    err_console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def run() -> None:
    """Entry point: every error becomes one line on stderr and a non-zero exit code."""
    pause_collection()
    try:
        code = app(standalone_mode=False)
    except AmberError as e:
        _print_error(e.message)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        _print_error(e.format_message())
        sys.exit(2)
    except click.exceptions.Abort:
        _print_error("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
