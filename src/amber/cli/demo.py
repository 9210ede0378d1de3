"""`amber demo`: the story of the README, on the real pool, with timings.

Creates the default loopback pool if it is missing, then: create a volume, write data,
snapshot, change the data, restore the snapshot into a new volume and compare, clone, and grow
a mounted volume online. Every step prints what happened and how long it took.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from amber.backup.targets import DEFAULT_CONFIG, TargetConfig
from amber.cli.demo_backup import backup_story, forget_backups
from amber.cli.output import console
from amber.cli.state import state
from amber.domain.errors import AmberError, Corrupt
from amber.domain.models import SourceKind
from amber.domain.units import GiB, MiB, format_size, parse_size
from amber.pool import Pool, VolumeRequest, default_image
from amber.pool.context import DB_NAME
from amber.pool.pool import MARKER
from amber.web.config import DEFAULT_ADDRESS

DEFAULT_URL = f"http://{DEFAULT_ADDRESS}/"


@contextmanager
def _step(title: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    elapsed = (time.perf_counter() - start) * 1000
    console().print(f"  [green]✓[/] {title} [dim]({elapsed:.1f} ms)[/]", soft_wrap=True)


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _write(directory: Path, name: str, nbytes: int) -> None:
    with open(directory / name, "wb") as f:
        for _ in range(nbytes // MiB):
            f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())


def ensure_pool(root: Path, image_size: int) -> Pool:
    """Open the pool, creating the default loopback pool if there is none."""
    if not (root / DB_NAME).exists() and not (root / MARKER).exists():
        console().print(f"No pool at {root}: creating a {format_size(image_size)} loopback pool…")
        image = default_image(root)
        with _step(f"pool image {image} formatted XFS (reflink) and mounted at {root}"):
            Pool.init_image(image, image_size, root)
    return Pool.open(root)


def demo(
    ctx: typer.Context,
    data: Annotated[
        str, typer.Option("--data", help="How much data to write into the volume.")
    ] = "256Mi",
    image_size: Annotated[
        str, typer.Option("--image-size", help="Size of a new default pool image.")
    ] = "20Gi",
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the demo's volumes, snapshots and backups.")
    ] = False,
    targets_config: Annotated[
        Path,
        typer.Option(
            "--targets-config",
            help="Targets file; the demo adds a 'local' file target to it if it has none.",
        ),
    ] = DEFAULT_CONFIG,
) -> None:
    """Walk through the Amber story on the pool: volume, snapshot, restore, clone, expand,
    then a full and an incremental backup to a local target and a restore from it."""
    st = state(ctx)
    data_size, pool_size = parse_size(data), parse_size(image_size)  # before anything is made
    pool = ensure_pool(st.pool, pool_size)
    tag = time.strftime("%Y%m%d-%H%M%S")
    work = Path(f"/run/amber/demo-{tag}")
    kinds = ("app", "snap", "restored", "clone", "snap2", "from-backup")
    names: dict[str, str] = {k: f"demo-{k}-{tag}" for k in kinds}
    config = TargetConfig(targets_config)
    backups: list[str] = []
    console().print(
        f"[bold]Amber demo[/] on pool {pool.root} (reflink: {'yes' if pool.ctx.reflink else 'no'})"
    )
    try:
        before = _story(pool, work, names, data_size)
        backup_story(
            pool,
            config,
            names,
            _step,
            lambda name: _quiet(pool.snapshots.create(names["app"], name)),
            lambda directory: _digest(directory) == before,
            work / "from-backup",
            backups,
        )
    finally:
        if not keep:
            pruned = forget_backups(pool, config, backups, names["app"])
            if pruned is not None:
                console().print(
                    f"  deleted the demo's {len(backups)} backup(s) and "
                    f"{format_size(pruned.freed_bytes)} of packs only they used from "
                    "target 'local'"
                )
            _cleanup(pool, names, work)
    status = pool.status()
    console().print(
        f"Pool: {format_size(status.used)} used of {format_size(status.size)}, "
        f"{status.volumes} volume(s), {status.snapshots} snapshot(s)."
    )
    console().print(
        f"See it in a browser: `amber dashboard` serves {DEFAULT_URL} (scripts/run.sh serves "
        "it with the CSI driver).",
        soft_wrap=True,
    )


def _quiet(_value: object) -> None:
    """Discard a result (for lambdas that must return None)."""


def _story(pool: Pool, work: Path, names: dict[str, str], nbytes: int) -> str:
    """The local part of the story; returns the digest of the data at the snapshot moment."""
    app_dir, restored_dir, clone_dir = work / "app", work / "restored", work / "clone"
    with _step(f"created volume {names['app']} (1 GiB, ext4)"):
        pool.volumes.create(VolumeRequest(names["app"], 1 * GiB))
    with _step(f"mounted it at {app_dir}"):
        pool.attachments.mount("volume", names["app"], app_dir, create_target=True)
    with _step(f"wrote {format_size(nbytes)} of data"):
        _write(app_dir, "data.bin", nbytes)
        (app_dir / "version.txt").write_text("v1\n")
    before = _digest(app_dir)
    with _step(f"snapshot {names['snap']} taken (filesystem frozen for the clone)"):
        pool.snapshots.create(names["app"], names["snap"])
    with _step("changed the data (an 'upgrade' went wrong)"):
        (app_dir / "version.txt").write_text("v2-broken\n")
        _write(app_dir, "data.bin", 16 * MiB)
    _check(lambda: _digest(app_dir) != before, "the volume should differ from the snapshot now")
    with _step(f"restored the snapshot into {names['restored']} (2 GiB: larger than the source)"):
        pool.volumes.create(
            VolumeRequest(
                names["restored"],
                2 * GiB,
                source_kind=SourceKind.SNAPSHOT,
                source_name=names["snap"],
            )
        )
        pool.attachments.mount("volume", names["restored"], restored_dir, create_target=True)
    _check(lambda: _digest(restored_dir) == before, "restored data differs from the snapshot")
    console().print("    restored data is byte-identical to the snapshot moment")
    with _step(f"cloned {names['app']} into {names['clone']}"):
        pool.volumes.create(
            VolumeRequest(
                names["clone"], 1 * GiB, source_kind=SourceKind.VOLUME, source_name=names["app"]
            )
        )
        pool.attachments.mount("volume", names["clone"], clone_dir, create_target=True)
    _check(lambda: _digest(clone_dir) == _digest(app_dir), "the clone differs from its source")
    with _step(f"expanded {names['app']} to 2 GiB while mounted"):
        grown = pool.volumes.expand(names["app"], 2 * GiB)
    if grown.fs_resize_pending:
        console().print(
            "    the kernel refused to grow ext4 online (no CAP_SYS_RESOURCE here): "
            "it grows at the next mount",
            soft_wrap=True,
        )
        with _step("remounted it: the filesystem was checked and grown"):
            pool.attachments.release("volume", names["app"])
            pool.attachments.mount("volume", names["app"], app_dir)
    st = os.statvfs(app_dir)
    console().print(f"    filesystem now {format_size(st.f_blocks * st.f_frsize)}, data intact")
    _check(lambda: (app_dir / "version.txt").read_text() == "v2-broken\n", "data lost")
    return before


def _check(condition: Callable[[], bool], message: str) -> None:
    if not condition():
        raise Corrupt(f"demo check failed: {message}")


def _cleanup(pool: Pool, names: dict[str, str], work: Path) -> None:
    for kind, key in (
        ("volume", "from-backup"),
        ("volume", "clone"),
        ("volume", "restored"),
        ("volume", "app"),
    ):
        try:
            if pool.volumes.find(names[key]) is not None:
                pool.attachments.release(kind, names[key])
                pool.volumes.delete(names[key])
        except AmberError as e:
            console().print(f"  cleanup of {names[key]} failed: {e}")
    for key in ("snap", "snap2"):
        if pool.snapshots.find(names[key]) is not None:
            pool.snapshots.delete(names[key])
    for sub in ("app", "restored", "clone", "from-backup"):
        (work / sub).rmdir() if (work / sub).exists() else None
    if work.exists():
        work.rmdir()
    console().print("  cleaned up the demo's volumes, snapshots and backups (--keep keeps them)")
