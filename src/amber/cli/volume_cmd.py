"""`amber volume`: create, clone, restore, grow, mount and delete volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amber.cli import output
from amber.cli.state import key_values, state
from amber.domain.errors import InvalidArgument
from amber.domain.models import SourceKind, VolumeMode
from amber.domain.units import parse_size
from amber.pool import VolumeRequest

app = typer.Typer(
    help="Create, clone, restore, grow, mount and delete volumes.", no_args_is_help=True
)


def _show(ctx: typer.Context, name: str) -> None:
    st = state(ctx)
    pool = st.open_pool()
    volume = pool.volumes.get(name)
    attachments = pool.attachments.list("volume", name)
    labels = pool.volumes.labels(name)[name]
    if st.json:
        output.print_json({"volume": volume, "attachments": attachments, "labels": labels})
    else:
        output.console().print(output.volume_details(volume, attachments, labels))


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Volume name: letters, digits, '.', '_', '-'.")],
    size: Annotated[
        str | None,
        typer.Option(
            "--size",
            help="Size, e.g. 10Gi (powers of 1024) or 10G (powers of 1000). "
            "Optional with --from-*, where it defaults to the source's size.",
        ),
    ] = None,
    fs_type: Annotated[str, typer.Option("--fs", help="Filesystem: ext4 or xfs.")] = "ext4",
    block: Annotated[
        bool, typer.Option("--block", help="A raw block volume with no filesystem.")
    ] = False,
    from_snapshot: Annotated[
        str | None, typer.Option("--from-snapshot", help="Restore this snapshot.")
    ] = None,
    from_volume: Annotated[
        str | None, typer.Option("--from-volume", help="Clone this volume.")
    ] = None,
) -> None:
    """Create a volume: empty, a clone of a volume, or a restore of a snapshot (instant)."""
    st = state(ctx)
    if from_snapshot and from_volume:
        raise InvalidArgument("use either --from-snapshot or --from-volume, not both")
    kind = (
        SourceKind.SNAPSHOT
        if from_snapshot
        else SourceKind.VOLUME
        if from_volume
        else SourceKind.NONE
    )
    source = from_snapshot or from_volume
    pool = st.open_pool()
    if size is None:
        if source is None:
            raise InvalidArgument("--size is required for a new empty volume")
        src = pool.snapshots.get(source) if from_snapshot else pool.volumes.get(source)
        nbytes, mode = src.size, src.mode
    else:
        nbytes, mode = parse_size(size), VolumeMode.BLOCK if block else VolumeMode.FILESYSTEM
        if source is not None:
            src = pool.snapshots.get(source) if from_snapshot else pool.volumes.get(source)
            mode = src.mode
    request = VolumeRequest(name, nbytes, mode, None if block else fs_type, kind, source)
    pool.volumes.create(request)
    _show(ctx, name)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """All volumes with size, mode, source and where they are in use."""
    st = state(ctx)
    pool = st.open_pool()
    volumes = pool.volumes.list()
    labels = pool.volumes.labels()
    if st.json:
        output.print_json(
            [{**output.to_jsonable(v), "labels": labels.get(v.name, {})} for v in volumes]
        )
    else:
        output.console().print(output.volume_table(volumes, pool.attachments.list(), labels))


@app.command("label")
def label(
    ctx: typer.Context,
    name: str,
    changes: Annotated[
        list[str] | None,
        typer.Argument(help="KEY=VALUE to set, KEY- to remove (group=a,b puts it in groups)."),
    ] = None,
) -> None:
    """Set or remove labels of a volume (recurring jobs select volumes by label and group)."""
    st = state(ctx)
    add: dict[str, str] = {}
    remove: list[str] = []
    for change in changes or []:
        if "=" not in change and change.endswith("-") and len(change) > 1:
            remove.append(change[:-1])
        else:
            add.update(key_values([change], "label"))
    labels = st.open_pool().volumes.label(name, add, remove)
    if st.json:
        output.print_json({"volume": name, "labels": labels})
    else:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "none"
        output.console().print(f"Volume {name} labels: {shown}")


@app.command("show")
def show(ctx: typer.Context, name: str) -> None:
    """One volume in detail, with its loop device and mount points."""
    _show(ctx, name)


@app.command("delete")
def delete(ctx: typer.Context, name: str) -> None:
    """Delete a volume that is not mounted. Its snapshots are kept; the base images its
    incremental backups compared against go with it (its backups stay in their targets)."""
    from amber.backup.state import forget_volume_bases

    st = state(ctx)
    pool = st.open_pool()
    volume = pool.volumes.delete(name)
    bases = forget_volume_bases(pool, name)
    if st.json:
        output.print_json({"deleted": volume, "backup_bases_dropped": len(bases)})
        return
    output.console().print(f"Volume {name} deleted.")
    if bases:
        targets = ", ".join(sorted(b.target for b in bases))
        output.console().print(
            f"Dropped {len(bases)} backup base(s) of {name} (target(s) {targets}); "
            "its backups stay in their targets."
        )


@app.command("expand")
def expand(
    ctx: typer.Context,
    name: str,
    size: Annotated[str, typer.Option("--size", help="The new, larger size, e.g. 20Gi.")],
) -> None:
    """Grow a volume. A mounted volume grows online: image, loop device, then filesystem."""
    st = state(ctx)
    pool = st.open_pool()
    volume = pool.volumes.expand(name, parse_size(size))
    if not st.json and volume.fs_resize_pending:
        output.err_console().print(
            f"note: the filesystem of {name} grows at its next mount "
            "(it is not mounted, or the kernel refused an online ext4 resize)"
        )
    _show(ctx, name)


@app.command("mount")
def mount(
    ctx: typer.Context,
    name: str,
    directory: Annotated[Path, typer.Argument(help="Mount point (created if missing).")],
    read_only: Annotated[bool, typer.Option("--read-only", help="Mount read-only.")] = False,
) -> None:
    """Mount a filesystem volume on a directory, for use without Kubernetes."""
    st = state(ctx)
    pool = st.open_pool()
    pool.attachments.mount(
        "volume", name, directory.absolute(), read_only=read_only, create_target=True
    )
    _show(ctx, name)


@app.command("unmount")
def unmount(
    ctx: typer.Context,
    name: str,
    directory: Annotated[
        Path | None, typer.Argument(help="Only this mount point (default: all).")
    ] = None,
) -> None:
    """Unmount a volume (everywhere, or at one directory) and free its loop device."""
    st = state(ctx)
    released = st.open_pool().attachments.release(
        "volume", name, directory.absolute() if directory else None
    )
    if st.json:
        output.print_json({"released": released})
    elif not released:
        output.console().print(f"Volume {name} was not mounted.")
    else:
        output.console().print(
            f"Volume {name} unmounted from {', '.join(str(a.path) for a in released)}."
        )


@app.command("attach")
def attach(
    ctx: typer.Context,
    name: str,
    read_only: Annotated[bool, typer.Option("--read-only", help="Attach read-only.")] = False,
) -> None:
    """Attach a volume to a loop device and print the device (for block volumes)."""
    st = state(ctx)
    att = st.open_pool().attachments.expose("volume", name, None, read_only=read_only)
    if st.json:
        output.print_json(att)
    else:
        output.console().print(str(att.loop_device))


@app.command("detach")
def detach(ctx: typer.Context, name: str) -> None:
    """Release every use of a volume (same as unmount with no directory)."""
    unmount(ctx, name, None)
