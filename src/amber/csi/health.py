"""Volume condition and usage as the CO sees them (VolumeCondition, VolumeUsage).

The conditions themselves (what the controller and the node check) live in `amber.pool.health`,
below the CSI driver and the dashboard's metrics; here they become the spec's messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amber.csi._proto import csi_pb2
from amber.pool.health import Condition, attachment_condition, image_condition
from amber.system import fs, ioctl

__all__ = [
    "Condition",
    "attachment_condition",
    "device_usage",
    "image_condition",
    "mount_usage",
    "to_proto",
]


def to_proto(condition: Condition) -> Any:
    """The spec's VolumeCondition of a condition."""
    return csi_pb2.VolumeCondition(abnormal=condition.abnormal, message=condition.message)


def mount_usage(path: Path) -> list[Any]:
    """Bytes and inodes of the filesystem mounted at `path`."""
    usage = fs.usage(path)
    unit = csi_pb2.VolumeUsage
    return [
        unit(
            unit=unit.BYTES,
            total=usage.total,
            available=usage.available,
            used=max(usage.total - usage.free, 0),
        ),
        unit(
            unit=unit.INODES,
            total=usage.inodes_total,
            available=usage.inodes_free,
            used=max(usage.inodes_total - usage.inodes_free, 0),
        ),
    ]


def device_usage(device: Path) -> list[Any]:
    """The size of a block device (used and available are unknowable for raw devices)."""
    unit = csi_pb2.VolumeUsage
    return [unit(unit=unit.BYTES, total=ioctl.block_device_size(device))]
