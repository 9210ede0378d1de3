"""Bootstrap: give a node its pool from one setting, idempotently, without formatting data.

A node's setting (Kubernetes: a key of the ConfigMap `amber-pool`, see docs/install.md) says
where its pool comes from:

    image:SIZE       a sparse loopback image beside the pool path, formatted XFS with reflink
    dir              the pool path as it is, on a filesystem with reflink (XFS, btrfs)
    device:/dev/X    an empty block device, formatted XFS with reflink, mounted at the pool path

`ensure_pool` creates the pool when there is none, does nothing when there is one made from
the same setting, and refuses (FailedPrecondition) when the existing pool was made otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

from amber.domain.errors import AlreadyExists, AmberError, FailedPrecondition, InvalidArgument
from amber.domain.numbers import check_range
from amber.domain.units import GiB, MiB, format_size, parse_size
from amber.pool.context import DB_NAME
from amber.pool.pool import (
    DEFAULT_IMAGE_OVERPROVISIONING,
    MARKER,
    Pool,
    ReflinkProbe,
    default_image,
    ensure_mounted,
    probe_reflink,
)
from amber.pool.store import MetadataStore

__all__ = [
    "PoolSource",
    "SourceKind",
    "create_pool",
    "default_overprovisioning",
    "describe_existing",
    "ensure_pool",
    "parse_source",
]


class SourceKind(Enum):
    IMAGE = "image"
    DIR = "dir"
    DEVICE = "device"


@dataclass(frozen=True)
class PoolSource:
    """Where a pool comes from: one node's setting, understood."""

    kind: SourceKind
    size: int = 0
    """Size of the loopback image (IMAGE)."""
    device: Path | None = None
    """The block device (DEVICE)."""
    image: Path | None = None
    """The image file (IMAGE); None: beside the pool path (`default_image`)."""

    def __str__(self) -> str:
        if self.kind is SourceKind.IMAGE:
            where = f" ({self.image})" if self.image else ""
            return f"image:{_setting_size(self.size)}{where}"
        if self.kind is SourceKind.DEVICE:
            return f"device:{self.device}"
        return "dir"


def _setting_size(size: int) -> str:
    """A size as a setting writes it (20Gi), or in bytes when it is not whole MiB."""
    for unit, suffix in ((GiB, "Gi"), (MiB, "Mi")):
        if size and size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


_USAGE = "use image:SIZE, dir or device:/dev/NAME"


def parse_source(text: str) -> PoolSource:
    """Read a setting such as `image:20Gi`, `dir` or `device:/dev/nvme1n1`."""
    kind, _, value = text.strip().partition(":")
    value = value.strip()
    if kind == "image":
        if not value:
            raise InvalidArgument(f"pool source {text.strip()!r} needs a size: image:20Gi")
        return PoolSource(SourceKind.IMAGE, size=parse_size(value))
    if kind == "dir" and not value:
        return PoolSource(SourceKind.DIR)
    device = os.path.normpath(value) if value.startswith("/") else ""
    if kind == "device" and device.startswith("/dev/"):
        return PoolSource(SourceKind.DEVICE, device=Path(device))
    raise InvalidArgument(f"unknown pool source {text.strip()[:80]!r}: {_USAGE}")


def _resolved(root: Path, source: PoolSource) -> PoolSource:
    if source.kind is SourceKind.IMAGE and source.image is None:
        return replace(source, image=default_image(root))
    return source


def default_overprovisioning(kind: SourceKind) -> float:
    """A new pool's ratio when none is given: thin images overprovision, real storage not."""
    return DEFAULT_IMAGE_OVERPROVISIONING if kind is SourceKind.IMAGE else 1.0


def create_pool(
    root: Path, source: PoolSource, *, overprovisioning: float | None = None
) -> ReflinkProbe:
    """Create the pool at `root` from `source` (refused if there is one)."""
    source = _resolved(root, source)
    if overprovisioning is None:
        overprovisioning = default_overprovisioning(source.kind)
    check_range("overprovisioning", overprovisioning, 1.0, 100.0)  # bad input first
    _refuse_existing(root)
    if source.kind is SourceKind.IMAGE:
        assert source.image is not None
        return Pool.init_image(source.image, source.size, root, overprovisioning=overprovisioning)
    if source.kind is SourceKind.DEVICE:
        assert source.device is not None
        return Pool.init_device(source.device, root, overprovisioning=overprovisioning)
    return Pool.init_dir(root, overprovisioning=overprovisioning)


def _refuse_existing(root: Path) -> None:
    """AlreadyExists naming the pool at `root` and whether it is healthy, if there is one."""
    if not (root / MARKER).exists() and not (root / DB_NAME).exists():
        return
    raise AlreadyExists(
        f"a pool already exists at {root} ({describe_existing(root)}): nothing changed "
        "(--if-missing accepts it; amber pool resize grows it)"
    )


def describe_existing(root: Path) -> str:
    """What the pool at `root` is and whether it is healthy, for people (one phrase)."""
    try:
        pool = Pool.open(root)
    except AmberError as e:
        return f"it cannot be opened: {e}; see `amber pool check`"
    try:
        status, problems = pool.status(), pool.check()
    finally:
        pool.close()
    made = f"image {status.image}" if status.image else "a directory"
    health = "healthy" if not problems else f"{len(problems)} problem(s): see `amber pool check`"
    return f"{made}, {format_size(status.size)}, {status.volumes} volume(s), {health}"


def ensure_pool(
    root: Path, source: PoolSource, *, overprovisioning: float | None = None
) -> ReflinkProbe | None:
    """Create the pool at `root` from `source`; None when it already exists as asked.

    With `overprovisioning` None, an existing pool's ratio is accepted whatever it is (it may
    have been changed with `amber pool set`) and a new pool gets the default for its kind."""
    source = _resolved(root, source)
    ensure_mounted(root)
    if (root / DB_NAME).exists():
        _check_matches(root, source, overprovisioning)
        return None
    if source.kind is SourceKind.DIR:
        return _init_reflink_dir(root, overprovisioning or 1.0)
    return create_pool(root, source, overprovisioning=overprovisioning)


def _init_reflink_dir(root: Path, overprovisioning: float) -> ReflinkProbe:
    """`dir`: nobody reads a warning at bootstrap, so a filesystem without reflink is refused."""
    root.mkdir(parents=True, exist_ok=True)
    probe = probe_reflink(root)
    if not probe.supported:
        raise FailedPrecondition(
            f"{root} is on {probe.fs_type}, which cannot make reflink copies ({probe.detail}): "
            "mount XFS (reflink=1) or btrfs there, or use image:SIZE or device:/dev/NAME"
        )
    return Pool.init_dir(root, overprovisioning=overprovisioning)


def _existing_source(root: Path) -> tuple[PoolSource | str, float]:
    """What the pool at `root` was made from (a text when no setting makes it), and its
    overprovisioning."""
    store = MetadataStore(root / DB_NAME)
    try:
        image = Path(store.get_meta("image") or "")
        device = store.get_meta("device") or ""
        overprovisioning = float(store.get_meta("overprovisioning") or "1.0")
    finally:
        store.close()
    if device:
        return PoolSource(SourceKind.DEVICE, device=Path(device)), overprovisioning
    if image == Path():
        return PoolSource(SourceKind.DIR), overprovisioning
    if not image.exists():
        return f"the image {image}, which is missing", overprovisioning
    return PoolSource(SourceKind.IMAGE, size=image.stat().st_size, image=image), overprovisioning


def _same_image(found: PoolSource | str, source: PoolSource) -> bool:
    return (
        isinstance(found, PoolSource)
        and found.kind is SourceKind.IMAGE
        and source.kind is SourceKind.IMAGE
        and found.image == source.image
    )


def _grown(found: PoolSource | str, source: PoolSource) -> bool:
    return _same_image(found, source) and isinstance(found, PoolSource) and found.size > source.size


def _smaller(found: PoolSource | str, source: PoolSource) -> bool:
    return _same_image(found, source) and isinstance(found, PoolSource) and found.size < source.size


def _check_matches(root: Path, source: PoolSource, overprovisioning: float | None) -> None:
    found, found_over = _existing_source(root)
    if _grown(found, source):
        found = source  # `amber pool resize` grew it past the setting: still the same pool
    if _smaller(found, source):
        assert isinstance(found, PoolSource)
        raise FailedPrecondition(
            f"the pool image {found.image} is {format_size(found.size)}, smaller than the "
            f"setting {source}: grow it with `amber pool resize --size "
            f"{_setting_size(source.size)}`, or set the setting back"
        )
    if found != source:
        raise FailedPrecondition(
            f"{root} already holds an Amber pool made from {found}, not {source}: change the "
            "node's setting back, or move the pool yourself (Amber does not reshape pools)"
        )
    if overprovisioning is not None and found_over != overprovisioning:
        raise FailedPrecondition(
            f"{root} already holds an Amber pool with overprovisioning {found_over:g}, "
            f"not {overprovisioning:g}"
        )
