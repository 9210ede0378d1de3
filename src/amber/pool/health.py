"""Volume condition: is a volume whole and usable (CSI's VolumeCondition, the metrics).

The controller's view checks what it can without using the volume: the image file exists, is a
regular file and is as large as recorded. The node's view adds what only the node sees: the
loop device still backs the image, the mount is still there and still writable when it should
be (ext4 remounts read-only on errors), and the filesystem still answers (a shut-down XFS or a
dead device answers EIO). The CSI driver (`amber.csi.health`) and the metrics sources
(`amber.pool.stats`) both read it here.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from amber.domain.models import Attachment, AttachmentKind, Volume
from amber.domain.units import format_size
from amber.system import fs, loopdev, mount

__all__ = ["Condition", "attachment_condition", "image_condition"]


@dataclass(frozen=True)
class Condition:
    """A volume's condition: normal or abnormal, with a message for people (CSI's
    VolumeCondition, the volume metrics' `abnormal`)."""

    abnormal: bool
    message: str


def _os_problem(e: OSError) -> str:
    return e.strerror or errno.errorcode.get(e.errno or 0, str(e))


def image_condition(volume: Volume, pool_problem: str | None = None) -> Condition:
    """The controller's view: the volume's image file is there and whole, and the pool
    filesystem has room for its writes (`pool_problem` says why not)."""
    try:
        st = os.stat(volume.image)
    except FileNotFoundError:
        return Condition(True, f"the image of volume {volume.name!r} is missing from the pool")
    except OSError as e:
        return Condition(
            True, f"the image of volume {volume.name!r} is unreadable: {_os_problem(e)}"
        )
    if not stat.S_ISREG(st.st_mode):
        return Condition(True, f"the image of volume {volume.name!r} is not a regular file")
    if st.st_size < volume.size:
        return Condition(
            True,
            f"the image of volume {volume.name!r} is {format_size(st.st_size)}, smaller than "
            f"its recorded size {format_size(volume.size)} (truncated?)",
        )
    if pool_problem:
        return Condition(True, pool_problem)
    return Condition(False, f"volume {volume.name!r} is healthy")


def attachment_condition(
    volume: Volume, attachment: Attachment, pool_problem: str | None = None
) -> Condition:
    """The node's view of one published or staged use of the volume."""
    image = image_condition(volume)
    if image.abnormal:
        return image
    use = _use_condition(volume, attachment)
    if pool_problem and not use.abnormal:
        return Condition(True, pool_problem)
    return use


def _use_condition(volume: Volume, attachment: Attachment) -> Condition:
    live = {loop.device for loop in loopdev.find_loops(volume.image)}
    if attachment.loop_device not in live:
        return Condition(True, f"loop device {attachment.loop_device} no longer backs the volume")
    if attachment.kind is AttachmentKind.DEVICE:
        return _device_condition(volume, attachment.loop_device)
    return _mount_condition(volume, attachment)


def _device_condition(volume: Volume, device: Path) -> Condition:
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
    except OSError as e:
        return Condition(True, f"the device {device} does not answer: {_os_problem(e)}")
    return Condition(False, f"volume {volume.name!r} is healthy")


def _mount_condition(volume: Volume, attachment: Attachment) -> Condition:
    entries = mount.mounts_at(attachment.path)
    if not entries:
        return Condition(True, f"{attachment.path} is no longer mounted")
    if entries[-1].read_only and not attachment.read_only:
        return Condition(
            True,
            f"the filesystem at {attachment.path} became read-only (the kernel does this on "
            "filesystem errors): check the volume's filesystem",
        )
    try:
        fs.usage(attachment.path)
        with os.scandir(attachment.path) as listing:
            next(listing, None)
    except OSError as e:
        return Condition(True, f"the filesystem at {attachment.path} fails: {_os_problem(e)}")
    return Condition(False, f"volume {volume.name!r} is healthy")
