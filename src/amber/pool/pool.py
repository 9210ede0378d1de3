"""A pool: the directory that holds every volume image, snapshot image and the metadata.

Layout of a pool directory:

    amber.db            SQLite metadata (volumes, snapshots, attachments, journal)
    volumes/<uid>.img   one sparse image per volume
    snapshots/<uid>.img one reflink copy per snapshot (mode 0400)
    locks/              one lock file per object (flock)

A pool may live in a loopback image, or on a block device, that Amber formatted as XFS with
reflink. Then the pool directory is its mount point, and a marker file `.amber-pool-image`
sits in the *underlying* directory (hidden while the filesystem is mounted): when Amber finds
the marker, the filesystem is not mounted — after a reboot — and Amber mounts it again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amber.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from amber.domain.models import PoolStatus
from amber.domain.numbers import check_range
from amber.domain.units import GiB, format_size
from amber.pool.attach import Attachments
from amber.pool.bases import bases_usage
from amber.pool.context import (
    DB_NAME,
    LOCKS_DIR,
    SNAPSHOTS_DIR,
    VOLUMES_DIR,
    PoolContext,
    PoolSettings,
    ensure_ballast,
    fsync_dir,
    no_failpoint,
    release_ballast_if_low,
)
from amber.pool.groups import Groups
from amber.pool.locks import LockTable
from amber.pool.recovery import recover
from amber.pool.snapshots import Snapshots
from amber.pool.store import MetadataStore
from amber.pool.volumes import Volumes
from amber.system import blockdev, fs, ioctl, loopdev, mount
from amber.system.run import run

MARKER = ".amber-pool-image"
log = logging.getLogger(__name__)
DEFAULT_POOL = Path("/var/lib/amber/pool")
DEFAULT_IMAGE = Path("/var/lib/amber/pool.img")


def default_image(root: Path) -> Path:
    """Where a loopback pool's image lives by default: beside its mount point."""
    return root.parent / f"{root.name}.img"


MIN_IMAGE_SIZE = 1 * GiB
DEFAULT_IMAGE_OVERPROVISIONING = 4.0
"""A new loopback pool's ratio: its image is sparse and so are the volumes in it, so volume
sizes may add up to 4x the image (what volumes really write is what fills it, and a full pool
still lets you unmount and delete). Directory and device pools default to 1."""


@dataclass(frozen=True)
class ReflinkProbe:
    """What a real FICLONE on the pool filesystem said."""

    supported: bool
    fs_type: str
    detail: str


def probe_reflink(directory: Path) -> ReflinkProbe:
    """Try a real reflink copy of a small file in `directory`."""
    fs_type = fs.fs_type_of(directory) or "unknown"
    source, target = directory / ".reflink-probe-src", directory / ".reflink-probe-dst"
    for path in (source, target):
        path.unlink(missing_ok=True)
    try:
        source.write_bytes(os.urandom(64 * 1024))
        ioctl.reflink(source, target)
        same = target.read_bytes() == source.read_bytes()
    except FailedPrecondition as e:
        return ReflinkProbe(False, fs_type, str(e))
    finally:
        for path in (source, target):
            path.unlink(missing_ok=True)
    if not same:
        return ReflinkProbe(False, fs_type, "reflink copy returned different data")
    return ReflinkProbe(True, fs_type, f"reflink copies work on {fs_type}")


class Pool:
    """An open pool. Construct with `Pool.open`; create with `Pool.init_dir`/`init_image`."""

    def __init__(self, ctx: PoolContext, recovered: list[str]) -> None:
        self.ctx = ctx
        self.volumes = Volumes(ctx)
        self.snapshots = Snapshots(ctx)
        self.groups = Groups(ctx)
        self.attachments = Attachments(ctx)
        self.recovered = recovered

    @property
    def root(self) -> Path:
        return self.ctx.root

    def close(self) -> None:
        self.ctx.store.close()

    # -- creating -------------------------------------------------------------------------

    @staticmethod
    def init_dir(
        root: Path,
        *,
        overprovisioning: float = 1.0,
        image: Path | None = None,
        device: Path | None = None,
    ) -> ReflinkProbe:
        """Make `root` a pool directory (it may exist, but must not hold a pool yet)."""
        check_range("overprovisioning", overprovisioning, 1.0, 100.0)
        root.mkdir(parents=True, exist_ok=True)
        if (root / DB_NAME).exists():
            raise AlreadyExists(f"{root} already holds an Amber pool")
        probe = probe_reflink(root)
        for sub in (VOLUMES_DIR, SNAPSHOTS_DIR, LOCKS_DIR):
            (root / sub).mkdir(exist_ok=True)
        store = MetadataStore(root / DB_NAME)
        try:
            store.set_meta("reflink", "1" if probe.supported else "0")
            store.set_meta("overprovisioning", repr(overprovisioning))
            store.set_meta("created", repr(time.time()))
            store.set_meta("image", str(image) if image else "")
            store.set_meta("device", str(device) if device else "")
        finally:
            store.close()
        fsync_dir(root)
        return probe

    @staticmethod
    def init_image(
        image: Path,
        size: int,
        root: Path,
        *,
        overprovisioning: float = DEFAULT_IMAGE_OVERPROVISIONING,
    ) -> ReflinkProbe:
        """Create a sparse image, format it XFS with reflink, mount it at `root`, make a pool."""
        check_range("overprovisioning", overprovisioning, 1.0, 100.0)  # before anything is made
        if size < MIN_IMAGE_SIZE:
            raise InvalidArgument(f"a pool image must be at least {format_size(MIN_IMAGE_SIZE)}")
        if image.exists():
            raise AlreadyExists(f"{image} already exists; remove it or choose another --image")
        if mount.is_mounted(root):
            raise AlreadyExists(f"something is already mounted at {root}")
        image.parent.mkdir(parents=True, exist_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        try:
            with open(image, "xb") as f:
                os.ftruncate(f.fileno(), size)
            _format_xfs(image, force=True)
            _write_marker(root, image)
            _mount_image(image, root)
        except BaseException:
            if mount.is_mounted(root):
                mount.unmount(root)
            (root / MARKER).unlink(missing_ok=True)
            image.unlink(missing_ok=True)
            raise
        return Pool.init_dir(root, overprovisioning=overprovisioning, image=image)

    @staticmethod
    def init_device(device: Path, root: Path, *, overprovisioning: float = 1.0) -> ReflinkProbe:
        """Format an empty block device XFS with reflink, mount it at `root`, make a pool.

        Refused (FailedPrecondition) when the device holds any filesystem, RAID, LVM or
        partition-table signature, or is in use: Amber never formats over data.
        """
        blockdev.check_empty(device)
        if mount.is_mounted(root):
            raise AlreadyExists(f"something is already mounted at {root}")
        root.mkdir(parents=True, exist_ok=True)
        _format_xfs(device, force=False)
        _write_marker(root, device, key="device")
        try:
            mount.mount(device, root, fstype="xfs", options=["rw", "noatime"])
        except BaseException:
            (root / MARKER).unlink(missing_ok=True)
            raise
        return Pool.init_dir(root, overprovisioning=overprovisioning, device=device)

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        settings: PoolSettings | None = None,
        failpoint: Callable[[str], None] = no_failpoint,
    ) -> Pool:
        """Open a pool, re-mounting its image if needed, and run recovery."""
        root = Path(os.path.abspath(root))
        ensure_mounted(root)
        if not (root / DB_NAME).exists():
            raise NotFound(f"no Amber pool at {root}: create one with `amber pool init`")
        settings = settings or PoolSettings()
        release_ballast_if_low(root, settings.ballast_bytes)
        store = MetadataStore(root / DB_NAME, read_only_when_full=True)
        try:
            return cls._open_with(store, root, settings, failpoint)
        except BaseException:
            store.close()  # an open database would keep the pool filesystem busy
            raise

    @classmethod
    def _open_with(
        cls,
        store: MetadataStore,
        root: Path,
        settings: PoolSettings,
        failpoint: Callable[[str], None],
    ) -> Pool:
        ctx = PoolContext(
            root=root,
            store=store,
            locks=LockTable(root / LOCKS_DIR),
            reflink=store.get_meta("reflink") == "1",
            overprovisioning=float(store.get_meta("overprovisioning") or "1.0"),
            settings=settings,
            failpoint=failpoint,
        )

        def before_write() -> None:
            release_ballast_if_low(root, settings.ballast_bytes)

        store.before_write = before_write
        if store.read_only:
            # Recovery decides from what the rows say: it must not act on a view it cannot
            # update. It runs at the first open after space was freed.
            log.info(
                "pool %s is full and its reserve is used up: its metadata is read-only "
                "(recovery skipped) until space is freed",
                root,
            )
            return cls(ctx, [])
        recovered = recover(ctx)
        ensure_ballast(ctx)
        log.debug(
            "opened pool %s (reflink %s, overprovisioning %g)",
            root,
            "yes" if ctx.reflink else "no",
            ctx.overprovisioning,
        )
        return cls(ctx, recovered)

    # -- reporting ------------------------------------------------------------------------

    def status(self) -> PoolStatus:
        usage = fs.usage(self.root)
        problem = self.ctx.space_problem()
        volumes, snapshots, attachments = self.ctx.store.counts()
        image = self.ctx.store.get_meta("image") or ""
        bases = bases_usage(self.root)
        return PoolStatus(
            path=self.root,
            image=Path(image) if image else None,
            fs_type=fs.fs_type_of(self.root) or "unknown",
            reflink=self.ctx.reflink,
            size=usage.total,
            used=usage.used,
            free=usage.available,
            provisioned=self.ctx.store.provisioned(),
            capacity=self.ctx.capacity(),
            overprovisioning=self.ctx.overprovisioning,
            volumes=volumes,
            snapshots=snapshots,
            attachments=attachments,
            full=problem is not None,
            space_problem=problem,
            backup_bases=bases.count,
            backup_bases_bytes=bases.allocated,
        )

    def space_problem(self) -> str | None:
        """Why the pool filesystem is (nearly) full, or None while it has room."""
        return self.ctx.space_problem()

    def check(self) -> list[str]:
        """Consistency problems: orphan or missing images, journal left over, leaked devices."""
        problems: list[str] = []
        store = self.ctx.store
        known = {v.image for v in store.volumes()} | {s.image for s in store.snapshots()}
        for sub in (VOLUMES_DIR, SNAPSHOTS_DIR):
            paths = sorted((self.root / sub).glob("*"))
            problems.extend(f"orphan image {p}" for p in paths if p not in known)
        problems += [f"missing image {p}" for p in sorted(known) if not p.exists()]
        problems += [f"unfinished {e.op} of {e.lock_key}" for e in store.journal()]
        problems += [
            f"snapshot group {g.name} lost its member {uid}"
            for g in store.groups()
            for uid in g.member_uids
            if store.snapshot_by_uid(uid) is None
        ]
        recorded = {a.loop_device for a in store.attachments()}
        for loop in loopdev.list_loops():
            inside = str(loop.backing_file).startswith(str(self.root) + "/")
            if not inside or loop.device in recorded:
                continue
            if loop.autoclear:
                problems.append(
                    f"loop device {loop.device} for {loop.backing_file} is detached but still "
                    "held open by another process"
                )
            else:
                problems.append(f"leaked loop device {loop.device} for {loop.backing_file}")
        for att in store.attachments():
            if att.path != att.loop_device and not mount.is_mounted(att.path):
                problems.append(f"recorded mount {att.path} of {att.object_name} is not mounted")
        return problems


def _format_xfs(target: Path, *, force: bool) -> None:
    """mkfs.xfs with reflink; without `force`, mkfs itself refuses an existing filesystem."""
    argv = ["mkfs.xfs", "-q", "-K", "-m", "reflink=1", "-L", "amber-pool", str(target)]
    if force:
        argv.insert(2, "-f")
    run(argv, timeout=300)


def _write_marker(root: Path, source: Path, *, key: str = "image") -> None:
    (root / MARKER).write_text(json.dumps({key: str(source)}) + "\n")


def _mount_image(image: Path, root: Path) -> None:
    device = loopdev.attach(image)
    try:
        mount.mount(device, root, fstype="xfs", options=["rw", "noatime"])
    except BaseException:
        loopdev.detach(device, backing=image)
        raise
    # The kernel frees the loop device once the pool is unmounted.
    run(["losetup", "--detach", str(device)], timeout=30, check=False)


def ensure_mounted(root: Path) -> None:
    """Mount a loopback pool's image at `root` if the marker says it should be there."""
    marker = root / MARKER
    if not marker.exists() or mount.is_mounted(root):
        return
    lock = LockTable(root.parent / f".{root.name}.locks")
    with lock.hold("mount", what=f"mounting pool {root}"):
        if mount.is_mounted(root):
            return
        recorded = json.loads(marker.read_text())
        if "device" in recorded:
            device = Path(recorded["device"])
            if not device.exists():
                raise NotFound(f"the pool device {device} for {root} is missing")
            mount.mount(device, root, fstype="xfs", options=["rw", "noatime"])
            return
        image = Path(recorded["image"])
        if not image.exists():
            raise NotFound(f"the pool image {image} for {root} is missing")
        _mount_image(image, root)
