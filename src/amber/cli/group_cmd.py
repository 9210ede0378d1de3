"""`amber snapshot create-group|list-groups|delete-group`: snapshots of several volumes at once.

Registered on the `amber snapshot` app by `register`; the engine is `amber.pool.groups`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import typer

from amber.cli import output
from amber.cli.state import state

if TYPE_CHECKING:
    from rich.table import Table

    from amber.pool.groups import Group


def group_table(groups: Sequence[Group]) -> Table:
    table = output.new_table(title="Snapshot groups", title_justify="left")
    for column in ("NAME", "MEMBERS (snapshot <- volume)", "CREATED"):
        table.add_column(column)
    for g in groups:
        members = "\n".join(f"{m.name} <- {m.volume_name}" for m in g.members)
        table.add_row(g.name, members or "-", output.when(g.created))
    return table


def create_group(ctx: typer.Context, name: str, volumes: list[str]) -> None:
    """Snapshot VOLUMES together as group NAME, at one instant: every mounted filesystem is
    frozen before the first copy. Each member is a snapshot named NAME-VOLUME."""
    st = state(ctx)
    group = st.open_pool().groups.create(name, volumes)
    if st.json:
        output.print_json(group)
    else:
        output.console().print(group_table([group]))


def list_groups(ctx: typer.Context) -> None:
    """Snapshot groups, oldest first, with their members."""
    st = state(ctx)
    groups = st.open_pool().groups.list()
    if st.json:
        output.print_json(groups)
    else:
        output.console().print(group_table(groups))


def delete_group(ctx: typer.Context, name: str) -> None:
    """Delete a snapshot group and all its member snapshots."""
    st = state(ctx)
    group = st.open_pool().groups.delete(name)
    if st.json:
        output.print_json({"deleted": group})
    else:
        output.console().print(f"Snapshot group {name} deleted ({len(group.members)} snapshots).")


def register(app: typer.Typer) -> None:
    """Add the group commands to the `amber snapshot` app."""
    app.command("create-group")(create_group)
    app.command("list-groups")(list_groups)
    app.command("delete-group")(delete_group)
