"""`amber pool`: create and inspect the pool that holds every volume and snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amber.cli import output
from amber.cli.numbers import finite
from amber.cli.state import state
from amber.domain.errors import InvalidArgument
from amber.domain.units import parse_size
from amber.pool import Pool, default_image

app = typer.Typer(
    help="Create and inspect the pool (where volume images live).", no_args_is_help=True
)


@app.command("init")
def init(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Use this existing directory (ideally on XFS with reflink, or btrfs)."
        ),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image",
            help="Create a loopback image formatted XFS with reflink "
            "(default: POOL.img beside the pool).",
        ),
    ] = None,
    size: Annotated[
        str, typer.Option("--size", help="Size of the loopback image (sparse), e.g. 20Gi.")
    ] = "20Gi",
    overprovisioning: Annotated[
        float,
        typer.Option(
            "--overprovisioning",
            callback=finite,
            help="How many times the pool size volume sizes may add up to (1 to 100).",
        ),
    ] = 1.0,
) -> None:
    """Create the pool.

    With no option, Amber creates a sparse loopback image beside the pool path
    (/var/lib/amber/pool.img for the default pool /var/lib/amber/pool), formats it XFS with
    reflink and mounts it at the pool path (--pool). Amber re-mounts it after a reboot.
    """
    st = state(ctx)
    if directory is not None and image is not None:
        raise InvalidArgument("use either --dir or --image, not both")
    if directory is not None:
        probe = Pool.init_dir(directory, overprovisioning=overprovisioning)
        where = directory
    else:
        probe = Pool.init_image(
            image or default_image(st.pool),
            parse_size(size),
            st.pool,
            overprovisioning=overprovisioning,
        )
        where = st.pool
    if st.json:
        output.print_json({"pool": str(where), "reflink": probe.supported, "detail": probe.detail})
        return
    output.console().print(f"Pool created at {where}: {probe.detail}.")
    if not probe.supported:
        output.err_console().print(
            "[bold yellow]warning:[/] this filesystem has no reflink support: snapshots and clones "
            "will be full sparse copies (slow, and they use real space). "
            "Use XFS with reflink or btrfs."
        )
    if directory is not None and directory != st.pool:
        output.console().print(f"Use it with --pool {directory} or AMBER_POOL={directory}.")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Size, use, provisioning, reflink support and object counts of the pool."""
    st = state(ctx)
    pool = st.open_pool()
    result = pool.status()
    if st.json:
        output.print_json(result)
    else:
        output.console().print(output.pool_details(result))


@app.command("check")
def check(ctx: typer.Context) -> None:
    """Look for inconsistencies: orphan images, unfinished operations, leaked loop devices."""
    st = state(ctx)
    pool = st.open_pool()
    problems = pool.check()
    if st.json:
        output.print_json({"ok": not problems, "problems": problems, "recovered": pool.recovered})
    else:
        for line in pool.recovered:
            output.console().print(f"recovered: {line}")
        for line in problems:
            output.console().print(f"problem: {line}")
        output.console().print(
            "pool is consistent" if not problems else f"{len(problems)} problem(s)"
        )
    if problems:
        raise typer.Exit(1)
