"""The `amber` command: noun-verb subcommands over one pool."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import click
import typer

from amber import __version__
from amber.cli import (
    backup_cmd,
    csi_cmd,
    demo,
    import_cmd,
    node_cmd,
    pool_cmd,
    snapshot_cmd,
    target_cmd,
    volume_cmd,
)
from amber.cli.output import err_console
from amber.cli.state import OutputFormat, make_state
from amber.domain.errors import AmberError

app = typer.Typer(
    help="Amber: node-local volumes with instant reflink snapshots, clones and restores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(pool_cmd.app, name="pool")
app.add_typer(volume_cmd.app, name="volume")
app.add_typer(snapshot_cmd.app, name="snapshot")
app.add_typer(target_cmd.app, name="target")
app.add_typer(backup_cmd.app, name="backup")
backup_cmd.app.command("import")(import_cmd.import_backup)
app.command("demo")(demo.demo)
app.command("node")(node_cmd.node)
app.command("controller")(node_cmd.controller)
app.add_typer(csi_cmd.app, name="csi")


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
        OutputFormat, typer.Option("--output", "-o", help="table for people, json for scripts.")
    ] = OutputFormat.table,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what Amber does.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = make_state(pool, output)


def run() -> None:
    """Entry point: every error becomes one line on stderr and a non-zero exit code."""
    try:
        code = app(standalone_mode=False)
    except AmberError as e:
        err_console.print(f"error: {e.message}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        err_console.print(
            f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except click.exceptions.Abort:
        err_console.print("error: aborted", markup=False)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
