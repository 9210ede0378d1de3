"""`amber snapshot`: instant read-only snapshots of volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amber.cli import diff_cmd, output
from amber.cli.group_cmd import register as register_group_commands
from amber.cli.state import state

app = typer.Typer(
    help="Take, list, mount and delete instant read-only snapshots.", no_args_is_help=True
)


def _show(ctx: typer.Context, name: str) -> None:
    st = state(ctx)
    pool = st.open_pool()
    snapshot = pool.snapshots.get(name)
    attachments = pool.attachments.list("snapshot", name)
    if st.json:
        output.print_json({"snapshot": snapshot, "attachments": attachments})
    else:
        output.console().print(output.snapshot_details(snapshot, attachments))


@app.command("create")
def create(ctx: typer.Context, volume: str, name: str) -> None:
    """Snapshot VOLUME as NAME: a reflink copy, taken with its filesystem frozen if mounted."""
    state(ctx).open_pool().snapshots.create(volume, name)
    _show(ctx, name)


@app.command("list")
def list_(
    ctx: typer.Context,
    volume: Annotated[
        str | None, typer.Option("--volume", help="Only snapshots of this volume.")
    ] = None,
) -> None:
    """Snapshots, oldest first."""
    st = state(ctx)
    snapshots = st.open_pool().snapshots.list(volume)
    if st.json:
        output.print_json(snapshots)
    else:
        output.console().print(output.snapshot_table(snapshots))


@app.command("show")
def show(ctx: typer.Context, name: str) -> None:
    """One snapshot in detail."""
    _show(ctx, name)


@app.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a snapshot (volumes restored from it are not affected)."""
    st = state(ctx)
    snapshot = st.open_pool().snapshots.delete(name)
    if st.json:
        output.print_json({"deleted": snapshot})
    else:
        output.console().print(f"Snapshot {name} deleted.")


@app.command("mount")
def mount(ctx: typer.Context, name: str, directory: Path) -> None:
    """Mount a snapshot read-only on a directory, to browse or copy files from it."""
    state(ctx).open_pool().attachments.mount(
        "snapshot", name, directory.absolute(), create_target=True
    )
    _show(ctx, name)


@app.command("unmount")
def unmount(ctx: typer.Context, name: str) -> None:
    """Unmount a snapshot everywhere."""
    st = state(ctx)
    released = st.open_pool().attachments.release("snapshot", name)
    if st.json:
        output.print_json({"released": released})
    else:
        output.console().print(f"Snapshot {name} unmounted ({len(released)} mount(s)).")


register_group_commands(app)  # create-group, list-groups, delete-group (amber.cli.group_cmd)
app.command("diff")(diff_cmd.diff)
