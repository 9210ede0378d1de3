"""`amber pool`: create and inspect the pool that holds every volume and snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amber.cli import output
from amber.cli.numbers import finite
from amber.cli.state import CliState, state
from amber.domain.errors import InvalidArgument
from amber.domain.units import format_size, parse_size
from amber.pool import ReflinkProbe
from amber.pool.bootstrap import (
    PoolSource,
    SourceKind,
    create_pool,
    describe_existing,
    ensure_pool,
    parse_source,
)
from amber.pool.settings import resize_pool, set_overprovisioning

app = typer.Typer(
    help="Create and inspect the pool (where volume images live).", no_args_is_help=True
)


SETTING_HELP = "A pool setting: image:SIZE, dir or device:/dev/NAME (see docs/install.md)."


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
    device: Annotated[
        Path | None,
        typer.Option(
            "--device",
            help="Format this EMPTY block device XFS with reflink and mount it at the pool path "
            "(refused if it holds any filesystem or partition signature).",
        ),
    ] = None,
    setting: Annotated[
        str | None, typer.Option("--source", envvar="AMBER_POOL_SOURCE", help=SETTING_HELP)
    ] = None,
    source_dir: Annotated[
        Path | None,
        typer.Option(
            "--source-dir",
            help="Read the setting from the file named after --node in this directory, else "
            "from its file `default` (a mounted ConfigMap).",
        ),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option("--node", envvar="AMBER_NODE_ID", help="This node's name (--source-dir)."),
    ] = None,
    if_missing: Annotated[
        bool,
        typer.Option(
            "--if-missing",
            help="Succeed without change when the pool exists as asked; fail if it exists "
            "otherwise.",
        ),
    ] = False,
    overprovisioning: Annotated[
        float | None,
        typer.Option(
            "--overprovisioning",
            callback=finite,
            help="How many times the pool size volume sizes may add up to (1 to 100; "
            "default 4 for a loopback image, whose volumes are thin, 1 otherwise).",
        ),
    ] = None,
) -> None:
    """Create the pool.

    With no option, Amber creates a sparse loopback image beside the pool path
    (/var/lib/amber/pool.img for the default pool /var/lib/amber/pool), formats it XFS with
    reflink and mounts it at the pool path (--pool). Amber re-mounts it after a reboot (a
    --device pool too). --if-missing makes it safe to run at every start (a node's init
    container does, with --source-dir).
    """
    st = state(ctx)
    given = [directory, image, device, setting, source_dir]
    if sum(option is not None for option in given) > 1:
        raise InvalidArgument("use only one of --dir, --image, --device, --source, --source-dir")
    source = _source(directory, image, size, device, setting, source_dir, node)
    where = directory or st.pool
    if if_missing:
        probe = ensure_pool(where, source, overprovisioning=overprovisioning)
    else:
        probe = create_pool(where, source, overprovisioning=overprovisioning)
    _report(st, where, source, probe, moved=directory is not None and directory != st.pool)


def _source(
    directory: Path | None,
    image: Path | None,
    size: str,
    device: Path | None,
    setting: str | None,
    source_dir: Path | None,
    node: str | None,
) -> PoolSource:
    """The pool setting the options give (default: an image beside the pool, of --size)."""
    if source_dir is not None:
        return parse_source(_read_setting(source_dir, node))
    if setting is not None:
        return parse_source(setting)
    if device is not None:
        return parse_source(f"device:{device}")
    if directory is not None:
        return PoolSource(SourceKind.DIR)
    return PoolSource(SourceKind.IMAGE, size=parse_size(size), image=image)


def _read_setting(source_dir: Path, node: str | None) -> str:
    """The file named after the node in `source_dir`, else its file `default`."""
    if not node:
        raise InvalidArgument("--source-dir needs this node's name: --node or AMBER_NODE_ID")
    for name in (node, "default"):
        path = source_dir / name
        if "/" not in name and path.is_file():
            return path.read_text()
    raise InvalidArgument(
        f"no pool setting for node {node!r} in {source_dir} (neither {node!r} nor 'default')"
    )


def _report(
    st: CliState, where: Path, source: PoolSource, probe: ReflinkProbe | None, *, moved: bool
) -> None:
    if probe is None:
        if st.json:
            output.print_json({"pool": str(where), "created": False, "source": str(source)})
        else:
            output.console().print(
                f"Pool at {where} exists ({describe_existing(where)}): nothing to do."
            )
        return
    if st.json:
        output.print_json(
            {
                "pool": str(where),
                "created": True,
                "source": str(source),
                "reflink": probe.supported,
                "detail": probe.detail,
            }
        )
        return
    output.console().print(f"Pool created at {where}: {probe.detail}.")
    if not probe.supported:
        output.err_console().print(
            "[bold yellow]warning:[/] this filesystem has no reflink support: snapshots and clones "
            "will be full sparse copies (slow, and they use real space). "
            "Use XFS with reflink or btrfs."
        )
    if moved:
        output.console().print(f"Use it with --pool {where} or AMBER_POOL={where}.")


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


@app.command("resize")
def resize(
    ctx: typer.Context,
    size: Annotated[
        str, typer.Option("--size", help="The image's new size, e.g. 50Gi (grow only).")
    ],
) -> None:
    """Grow the pool's loopback image and its XFS filesystem, online (volumes stay mounted)."""
    st = state(ctx)
    pool = st.open_pool()
    done = resize_pool(pool, parse_size(size))
    if st.json:
        output.print_json(
            {
                "image": str(done.image),
                "old_size": done.old_size,
                "size": done.new_size,
                "filesystem_size": done.filesystem_size,
                "changed": done.changed,
            }
        )
    elif done.changed:
        output.console().print(
            f"Pool image {done.image} grown from {format_size(done.old_size)} to "
            f"{format_size(done.new_size)}; its filesystem is now "
            f"{format_size(done.filesystem_size)}."
        )
    else:
        output.console().print(
            f"Pool image {done.image} is already {format_size(done.new_size)}: nothing to do."
        )


@app.command("set")
def set_(
    ctx: typer.Context,
    overprovisioning: Annotated[
        float,
        typer.Option(
            "--overprovisioning",
            callback=finite,
            help="How many times the pool size volume sizes may add up to (1 to 100).",
        ),
    ],
) -> None:
    """Change a setting of the pool (refused if the volumes already provisioned would not fit)."""
    st = state(ctx)
    pool = st.open_pool()
    old = set_overprovisioning(pool, overprovisioning)
    capacity = pool.ctx.capacity()
    if st.json:
        output.print_json(
            {"overprovisioning": overprovisioning, "previous": old, "capacity": capacity}
        )
    else:
        output.console().print(
            f"Overprovisioning {old:g} -> {overprovisioning:g}: volume sizes may now add up to "
            f"{format_size(capacity)}."
        )


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
