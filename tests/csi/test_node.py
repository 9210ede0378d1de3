"""Node RPCs against a real `amber node` process: real loop devices, mounts and filesystems."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path

import pytest

from amber.csi._proto import csi_pb2
from amber.domain.units import GiB, MiB
from amber.system import loopdev, mount
from tests.conftest import HAS_CAP_SYS_RESOURCE
from tests.csi.driver import (
    NODE,
    RPC_TIMEOUT,
    Code,
    Csi,
    Mode,
    block_cap,
    expect_code,
    image_of,
    mount_cap,
    start_driver,
)

TOPOLOGY_KEY = "topology.amber.csi.dev/node"
_NRPC = csi_pb2.NodeServiceCapability.RPC


def fs_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def write_device(path: Path, data: bytes) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def mounted_source(path: Path) -> str:
    entries = mount.mounts_at(path)
    assert entries, f"{path} is not mounted"
    return entries[-1].source


@pytest.fixture
def paths(work: Path, request: pytest.FixtureRequest) -> tuple[Path, Path]:
    """A staging directory (created, as the CO does) and a target path (not created)."""
    base = work / request.node.name.replace("[", "-").replace("]", "")
    base.mkdir()
    staging = base / "staging"
    staging.mkdir()
    return staging, base / "target"


# --- capabilities and info -----------------------------------------------------------------


def test_node_capabilities_and_info(csi: Csi) -> None:
    caps = csi.node.NodeGetCapabilities(csi_pb2.NodeGetCapabilitiesRequest(), timeout=RPC_TIMEOUT)
    assert {c.rpc.type for c in caps.capabilities} == {
        _NRPC.STAGE_UNSTAGE_VOLUME,
        _NRPC.GET_VOLUME_STATS,
        _NRPC.EXPAND_VOLUME,
        _NRPC.VOLUME_CONDITION,
        _NRPC.SINGLE_NODE_MULTI_WRITER,
    }
    info = csi.node.NodeGetInfo(csi_pb2.NodeGetInfoRequest(), timeout=RPC_TIMEOUT)
    assert info.node_id == NODE
    assert dict(info.accessible_topology.segments) == {TOPOLOGY_KEY: NODE}
    assert info.max_volumes_per_node == 0


# --- filesystem volumes --------------------------------------------------------------------


def test_stage_publish_unpublish_unstage_a_filesystem(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-node-fs", 64 * MiB).volume_id
    csi.stage(volume, staging)
    csi.stage(volume, staging)  # idempotent
    device = mounted_source(staging)
    assert device.startswith("/dev/loop")
    assert mount.mounts_at(staging)[-1].fstype == "ext4"
    (image,) = [loop.backing_file for loop in loopdev.list_loops() if str(loop.device) == device]

    csi.publish(volume, staging, target)
    csi.publish(volume, staging, target)  # idempotent
    assert target.is_dir()  # the plugin created the target
    (target / "hello").write_text("from the pod")
    assert (staging / "hello").read_text() == "from the pod"  # one filesystem

    expect_code(Code.ALREADY_EXISTS, lambda: csi.publish(volume, staging, target, read_only=True))
    csi.unpublish(volume, target)
    assert not target.exists()  # the spec: the SP removes what it created
    csi.unpublish(volume, target)  # idempotent
    csi.unstage(volume, staging)
    assert not mount.is_mounted(staging)
    # (by its image: another process may take the freed device number at once)
    assert loopdev.find_loops(image) == []
    csi.unstage(volume, staging)  # idempotent
    assert staging.is_dir()  # the CO's directory stays


def test_read_only_publication(csi: Csi, work: Path) -> None:
    """ro and rw publications of one volume, the ro target sorted before the staging path:
    the rw bind must not inherit the read-only flag of the mount it is made from."""
    base = work / "ro-pub"
    base.mkdir()
    staging, ro_target, rw_target = base / "z-staging", base / "a-ro", base / "b-rw"
    staging.mkdir()
    multi = mount_cap(mode=Mode.SINGLE_NODE_MULTI_WRITER)
    volume = csi.create("pvc-node-ro", 64 * MiB).volume_id
    csi.stage(volume, staging, multi)
    csi.publish(volume, staging, ro_target, multi, read_only=True)
    with pytest.raises(OSError, match="Read-only file system"):
        (ro_target / "x").write_text("no")
    csi.publish(volume, staging, rw_target, multi)
    (rw_target / "y").write_text("yes")
    assert (ro_target / "y").read_text() == "yes"
    for target in (ro_target, rw_target):
        csi.unpublish(volume, target)
    reader = mount_cap(mode=Mode.SINGLE_NODE_READER_ONLY)
    csi.publish(volume, staging, ro_target, reader)  # a reader-only mode is read-only
    with pytest.raises(OSError, match="Read-only file system"):
        (ro_target / "z").write_text("no")
    csi.unpublish(volume, ro_target)
    csi.unstage(volume, staging)


def test_stage_onto_a_read_only_publication_is_already_exists(csi: Csi, work: Path) -> None:
    """The spec's ALREADY_EXISTS row of NodeStageVolume: the volume is mounted at the staging
    path, but not as a staging can be (a staged filesystem is read-write)."""
    base = work / "stage-on-publication"
    base.mkdir()
    staging, target = base / "staging", base / "target"
    staging.mkdir()
    volume = csi.create("pvc-stage-on-pub", 32 * MiB).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target, read_only=True)

    message = expect_code(Code.ALREADY_EXISTS, lambda: csi.stage(volume, target))
    assert "published read-only" in message
    assert mount.mounts_at(target)[-1].read_only  # left as it was
    csi.stage(volume, staging)  # the real staging: still idempotent
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        (Mode.SINGLE_NODE_WRITER, Code.FAILED_PRECONDITION),
        (Mode.SINGLE_NODE_SINGLE_WRITER, Code.FAILED_PRECONDITION),
        (Mode.SINGLE_NODE_MULTI_WRITER, None),
    ],
)
def test_second_publication_follows_the_spec_table(
    csi: Csi, paths: tuple[Path, Path], mode: int, code: Code | None
) -> None:
    staging, target = paths
    second = target.with_name("second")
    cap = mount_cap(mode=mode)
    volume = csi.create(f"pvc-second-{mode}", 32 * MiB).volume_id
    csi.stage(volume, staging, cap)
    csi.publish(volume, staging, target, cap)
    if code is None:
        csi.publish(volume, staging, second, cap)
        assert mount.is_mounted(second)
        csi.unpublish(volume, second)
    else:
        expect_code(code, lambda: csi.publish(volume, staging, second, cap))
        assert not second.exists()
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


def test_mount_flags(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    cap = mount_cap(flags=["noatime", "nodiscard"])
    volume = csi.create("pvc-flags", 32 * MiB).volume_id
    csi.stage(volume, staging, cap)
    assert "noatime" in mount.mounts_at(staging)[-1].options
    csi.publish(volume, staging, target, mount_cap(flags=["noexec", "nodiscard"]))
    options = mount.mounts_at(target)[-1].options
    assert "noexec" in options  # a per-mount flag applies to the bind; nodiscard did at stage
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.stage(volume, staging, mount_cap(flags=["a,b"])))
    expect_code(
        Code.INVALID_ARGUMENT, lambda: csi.stage(volume, staging, mount_cap(flags=["remount"]))
    )
    assert not mount.is_mounted(staging)


def test_xfs_volume_stage_and_publish(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-node-xfs", 300 * MiB, cap=mount_cap("xfs")).volume_id
    csi.stage(volume, staging, mount_cap("xfs"))
    assert mount.mounts_at(staging)[-1].fstype == "xfs"
    expect_code(
        Code.FAILED_PRECONDITION, lambda: csi.publish(volume, staging, target, mount_cap("ext4"))
    )
    csi.publish(volume, staging, target, mount_cap())
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


# --- errors ----------------------------------------------------------------------------------


def test_stage_errors(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, _ = paths
    volume = csi.create("pvc-stage-errors", 16 * MiB).volume_id
    stage = csi.node.NodeStageVolume

    def request(**fields: object) -> csi_pb2.NodeStageVolumeRequest:
        base = {
            "volume_id": volume,
            "staging_target_path": str(staging),
            "volume_capability": mount_cap(),
        }
        base.update(fields)
        return csi_pb2.NodeStageVolumeRequest(**base)

    for fields, code in (
        ({"volume_id": ""}, Code.INVALID_ARGUMENT),
        ({"staging_target_path": ""}, Code.INVALID_ARGUMENT),
        ({"volume_capability": None}, Code.INVALID_ARGUMENT),
        ({"staging_target_path": "relative/path"}, Code.INVALID_ARGUMENT),
        ({"staging_target_path": f"{staging}/../x"}, Code.INVALID_ARGUMENT),
        ({"volume_id": "fake"}, Code.NOT_FOUND),
        ({"volume_id": f"amber:v1:vol:{NODE}:missing"}, Code.NOT_FOUND),
        ({"volume_id": "amber:v1:vol:node-b:pvc"}, Code.NOT_FOUND),
        ({"volume_capability": block_cap()}, Code.FAILED_PRECONDITION),
        ({"volume_capability": mount_cap("xfs")}, Code.FAILED_PRECONDITION),
        (
            {"volume_capability": mount_cap(mode=Mode.MULTI_NODE_MULTI_WRITER)},
            Code.FAILED_PRECONDITION,
        ),
        ({"staging_target_path": str(staging / "missing")}, Code.FAILED_PRECONDITION),
    ):
        expect_code(code, lambda f=fields: stage(request(**f), timeout=RPC_TIMEOUT))
    assert not mount.is_mounted(staging)


def test_stage_checks_ext4_and_tells_repaired_from_beyond_repair(
    csi: Csi, csi_pool: Path, paths: tuple[Path, Path]
) -> None:
    staging, _ = paths
    repairable = csi.create("pvc-fsck-fixes", 16 * MiB).volume_id
    broken = csi.create("pvc-fsck-gives-up", 16 * MiB).volume_id
    # "Not cleanly unmounted" makes e2fsck -p check; the second also lost its root inode.
    for name, requests in (
        ("pvc-fsck-fixes", ["ssv state 0"]),
        ("pvc-fsck-gives-up", ["ssv state 0", "clri <2>"]),
    ):
        for request in requests:
            debugfs = ["debugfs", "-w", "-R", request, str(image_of(csi_pool, name))]
            subprocess.run(debugfs, check=True, capture_output=True)

    # e2fsck -p checks the first and exits 1 ("errors corrected"): a success.
    csi.stage(repairable, staging)
    assert mount.is_mounted(staging)
    csi.unstage(repairable, staging)

    # Errors that preen mode leaves: DATA_LOSS (a damaged filesystem), not INTERNAL.
    message = expect_code(Code.DATA_LOSS, lambda: csi.stage(broken, staging))
    assert "cannot repair safely" in message
    assert not mount.is_mounted(staging)
    assert loopdev.find_loops(image_of(csi_pool, "pvc-fsck-gives-up")) == []


def test_stage_on_a_path_where_something_else_is_mounted(
    csi: Csi, paths: tuple[Path, Path]
) -> None:
    staging, _ = paths
    volume = csi.create("pvc-occupied", 16 * MiB).volume_id
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(staging)], check=True)
    try:
        message = expect_code(Code.ALREADY_EXISTS, lambda: csi.stage(volume, staging))
        assert "already in use" in message
        assert mount.mounts_at(staging)[-1].fstype == "tmpfs"
        csi.unstage(volume, staging)  # not staged there: OK, and the tmpfs stays
        assert mount.mounts_at(staging)[-1].fstype == "tmpfs"
    finally:
        subprocess.run(["umount", str(staging)], check=True)


def test_publish_errors(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-publish-errors", 16 * MiB).volume_id
    publish = csi.node.NodePublishVolume

    def request(**fields: object) -> csi_pb2.NodePublishVolumeRequest:
        base = {
            "volume_id": volume,
            "staging_target_path": str(staging),
            "target_path": str(target),
            "volume_capability": mount_cap(),
        }
        base.update(fields)
        return csi_pb2.NodePublishVolumeRequest(**base)

    expect_code(Code.FAILED_PRECONDITION, lambda: publish(request(), timeout=RPC_TIMEOUT))
    assert not target.exists()  # not staged: nothing created
    csi.stage(volume, staging)
    for fields, code in (
        ({"volume_id": ""}, Code.INVALID_ARGUMENT),
        ({"target_path": ""}, Code.INVALID_ARGUMENT),
        ({"volume_capability": None}, Code.INVALID_ARGUMENT),
        ({"target_path": "relative"}, Code.INVALID_ARGUMENT),
        ({"target_path": f"{target}/../../x"}, Code.INVALID_ARGUMENT),
        ({"staging_target_path": ""}, Code.FAILED_PRECONDITION),
        ({"volume_id": "fake"}, Code.NOT_FOUND),
        ({"volume_capability": block_cap()}, Code.FAILED_PRECONDITION),
        ({"target_path": str(target.parent / "no" / "parent")}, Code.FAILED_PRECONDITION),
    ):
        expect_code(code, lambda f=fields: publish(request(**f), timeout=RPC_TIMEOUT))
    assert not target.exists()
    assert not (target.parent / "no").exists()
    target.write_text("a file where a directory is needed")
    expect_code(Code.FAILED_PRECONDITION, lambda: publish(request(), timeout=RPC_TIMEOUT))
    assert target.read_text() == "a file where a directory is needed"
    target.unlink()
    csi.unstage(volume, staging)


def test_unpublish_and_unstage_errors(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-unpub-errors", 16 * MiB).volume_id
    unpublish, unstage = csi.node.NodeUnpublishVolume, csi.node.NodeUnstageVolume
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: unpublish(csi_pb2.NodeUnpublishVolumeRequest(), timeout=RPC_TIMEOUT),
    )
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: unpublish(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume), timeout=RPC_TIMEOUT
        ),
    )
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: unstage(csi_pb2.NodeUnstageVolumeRequest(volume_id=volume), timeout=RPC_TIMEOUT),
    )
    expect_code(Code.NOT_FOUND, lambda: csi.unpublish("fake", target))
    expect_code(Code.NOT_FOUND, lambda: csi.unstage(f"amber:v1:vol:{NODE}:nope", staging))
    target.mkdir()
    (target / "keep").write_text("not ours")
    csi.unpublish(volume, target)  # never published here: OK, and a non-empty dir stays
    assert (target / "keep").read_text() == "not ours"


# --- block volumes ----------------------------------------------------------------------------


def test_block_volume_as_a_device_file(csi: Csi, csi_pool: Path, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-node-block", 16 * MiB, cap=block_cap()).volume_id
    csi.stage(volume, staging, block_cap())
    csi.stage(volume, staging, block_cap())
    assert mount.is_mounted(staging / "amber-device")
    expect_code(Code.FAILED_PRECONDITION, lambda: csi.publish(volume, staging, target))
    csi.publish(volume, staging, target, block_cap())
    csi.publish(volume, staging, target, block_cap())
    assert target.is_file() or target.is_block_device()
    pattern = os.urandom(MiB)
    fd = os.open(target, os.O_RDWR)
    try:
        os.pwrite(fd, pattern, 5 * MiB)
        os.fsync(fd)
        assert os.pread(fd, MiB, 5 * MiB) == pattern
        assert os.lseek(fd, 0, os.SEEK_END) == 16 * MiB
    finally:
        os.close(fd)
    stats = csi.stats(volume, target)
    assert [(u.unit, u.total) for u in stats.usage] == [(csi_pb2.VolumeUsage.BYTES, 16 * MiB)]
    assert not stats.volume_condition.abnormal
    csi.unpublish(volume, target)
    assert not target.exists()
    csi.unstage(volume, staging)
    assert not (staging / "amber-device").exists()
    with open(image_of(csi_pool, "pvc-node-block"), "rb") as image:
        image.seek(5 * MiB)
        assert image.read(MiB) == pattern


def test_read_only_block_publication_refuses_writes(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    multi = block_cap(Mode.SINGLE_NODE_MULTI_WRITER)
    volume = csi.create("pvc-block-ro", 16 * MiB, cap=multi).volume_id
    csi.stage(volume, staging, multi)
    csi.publish(volume, staging, target, multi, read_only=True)
    fd = os.open(target, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as caught:
        write_device(target, b"x" * 4096)
    assert caught.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES)
    second = target.with_name("rw")
    message = expect_code(
        Code.FAILED_PRECONDITION, lambda: csi.publish(volume, staging, second, multi)
    )
    assert "read-only and read-write" in message
    csi.unpublish(volume, target)
    csi.publish(volume, staging, second, multi)  # the device is writable again
    assert write_device(second, b"y" * 4096) == 4096
    csi.unpublish(volume, second)
    csi.unstage(volume, staging)


# --- stats -----------------------------------------------------------------------------------


def test_volume_stats_of_a_filesystem(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-stats", 64 * MiB).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    (target / "data").write_bytes(os.urandom(8 * MiB))
    os.sync()
    for path in (target, staging):
        stats = csi.stats(volume, path)
        usage = {u.unit: u for u in stats.usage}
        byte_usage = usage[csi_pb2.VolumeUsage.BYTES]
        assert 50 * MiB < byte_usage.total <= 64 * MiB
        assert byte_usage.used >= 8 * MiB
        assert byte_usage.available < byte_usage.total
        assert usage[csi_pb2.VolumeUsage.INODES].used >= 12  # lost+found, root, data...
        assert not stats.volume_condition.abnormal
    for path, code in (
        ("some/path", Code.NOT_FOUND),
        (str(target.parent / "elsewhere"), Code.NOT_FOUND),
    ):
        expect_code(code, lambda p=path: csi.stats(volume, p))
    expect_code(Code.NOT_FOUND, lambda: csi.stats("fake-volume-id", "some/path"))
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.stats("", str(target)))
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.stats(volume, ""))
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


def test_abnormal_condition_when_the_image_is_gone(
    csi: Csi, csi_pool: Path, paths: tuple[Path, Path]
) -> None:
    staging, target = paths
    volume = csi.create("pvc-lost-image", 32 * MiB).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    image = image_of(csi_pool, "pvc-lost-image")
    keep = image.with_suffix(".keep")
    os.link(image, keep)
    image.unlink()
    try:
        condition = csi.stats(volume, target).volume_condition
    finally:
        os.link(keep, image)
        keep.unlink()
    assert condition.abnormal
    assert "missing" in condition.message
    assert not csi.stats(volume, target).volume_condition.abnormal
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


def test_abnormal_condition_when_the_filesystem_shuts_down(
    csi: Csi, paths: tuple[Path, Path]
) -> None:
    staging, target = paths
    volume = csi.create("pvc-shutdown", 300 * MiB, cap=mount_cap("xfs")).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    subprocess.run(["xfs_io", "-x", "-c", "shutdown", str(target)], check=True)
    stats = csi.stats(volume, target)
    assert stats.volume_condition.abnormal
    assert "fails" in stats.volume_condition.message
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


# --- expansion ---------------------------------------------------------------------------------


def test_online_expansion_of_a_published_xfs_volume(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-grow-xfs", 300 * MiB, cap=mount_cap("xfs")).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    before = fs_bytes(target)
    reply = csi.node_expand(volume, target, 900 * MiB)
    assert reply.capacity_bytes == 900 * MiB
    assert fs_bytes(target) > before + 500 * MiB  # grew while mounted
    assert csi.node_expand(volume, target, 600 * MiB).capacity_bytes == 900 * MiB  # no shrink
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.node_expand(volume, target, GiB, block_cap()))
    expect_code(Code.NOT_FOUND, lambda: csi.node_expand("fake", Path("some/path"), GiB))
    expect_code(
        Code.INVALID_ARGUMENT,
        lambda: csi.node.NodeExpandVolume(
            csi_pb2.NodeExpandVolumeRequest(volume_id=volume), timeout=RPC_TIMEOUT
        ),
    )
    expect_code(Code.RESOURCE_EXHAUSTED, lambda: csi.node_expand(volume, target, 1 << 49))
    expect_code(Code.OUT_OF_RANGE, lambda: csi.node_expand(volume, target, 1 << 51))
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


def test_online_expansion_of_a_published_ext4_volume(csi: Csi, paths: tuple[Path, Path]) -> None:
    """ext4 grows online with CAP_SYS_RESOURCE; without it (some sandboxes) the kernel refuses:
    NodeExpandVolume answers FAILED_PRECONDITION (the spec's "volume in use ... the filesystem
    does not support expansion of published or staged volumes", caller must not retry), the
    image is already grown, and the filesystem grows at the next NodeStageVolume."""
    staging, target = paths
    volume = csi.create("pvc-grow-ext4", 64 * MiB).volume_id
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    (target / "keep").write_text("data")
    if HAS_CAP_SYS_RESOURCE:
        assert csi.node_expand(volume, target, 256 * MiB).capacity_bytes == 256 * MiB
        assert fs_bytes(target) > 200 * MiB
    else:
        message = expect_code(
            Code.FAILED_PRECONDITION, lambda: csi.node_expand(volume, target, 256 * MiB)
        )
        assert "CAP_SYS_RESOURCE" in message
        assert csi.get_volume(volume).volume.capacity_bytes == 256 * MiB
        assert fs_bytes(target) < 100 * MiB
        csi.unpublish(volume, target)
        csi.unstage(volume, staging)
        csi.stage(volume, staging)
        csi.publish(volume, staging, target)
        assert fs_bytes(target) > 200 * MiB
        assert csi.node_expand(volume, target, 256 * MiB).capacity_bytes == 256 * MiB
    assert (target / "keep").read_text() == "data"
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


def test_node_expansion_of_a_block_volume(csi: Csi, paths: tuple[Path, Path]) -> None:
    staging, target = paths
    volume = csi.create("pvc-grow-block", 16 * MiB, cap=block_cap()).volume_id
    csi.stage(volume, staging, block_cap())
    csi.publish(volume, staging, target, block_cap())
    assert csi.node_expand(volume, target, 48 * MiB, block_cap()).capacity_bytes == 48 * MiB
    fd = os.open(target, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_END) == 48 * MiB  # the published device grew
    finally:
        os.close(fd)
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)


# --- restarts and reboots ------------------------------------------------------------------------


def test_stage_and_publish_converge_after_restart_and_reboot(fresh_pool: Path) -> None:
    work = fresh_pool.parent / f"{fresh_pool.name}-work"
    fs_paths = (work / "staging", work / "target")
    block_paths = (work / "block-staging", work / "block-target")
    fs_paths[0].mkdir()
    block_paths[0].mkdir()
    uses = [(mount_cap(), *fs_paths), (block_cap(), *block_paths)]

    def stage_and_publish(csi: Csi, volumes: list[str]) -> None:
        for volume, (cap, staging, target) in zip(volumes, uses, strict=True):
            csi.stage(volume, staging, cap)
            csi.publish(volume, staging, target, cap)

    first = start_driver(fresh_pool)
    try:
        csi = first.client()
        volumes = [
            csi.create("pvc-reboot", 32 * MiB).volume_id,
            csi.create("pvc-reboot-raw", 16 * MiB, cap=block_cap()).volume_id,
        ]
        stage_and_publish(csi, volumes)
        (fs_paths[1] / "before").write_text("survives")
        write_device(block_paths[1], b"R" * 4096)
        first.proc.send_signal(signal.SIGKILL)  # a crash: mounts stay
        first.proc.wait(timeout=30)
    finally:
        first.cleanup()

    second = start_driver(fresh_pool)
    try:
        sources = [mounted_source(fs_paths[0]), mounted_source(block_paths[0] / "amber-device")]
        stage_and_publish(second.client(), volumes)  # already mounted: OK, nothing redone
        assert mounted_source(fs_paths[0]) == sources[0]
        for path in (fs_paths[1], block_paths[0] / "amber-device", block_paths[1]):
            assert len(mount.mounts_at(path)) == 1
        second.kill()
    finally:
        second.cleanup()

    # A reboot: every mount and loop device is gone; the pool still lists them.
    for path in (fs_paths[1], fs_paths[0], block_paths[1], block_paths[0] / "amber-device"):
        subprocess.run(["umount", str(path)], check=True)
    for loop in loopdev.list_loops():
        if str(loop.backing_file).startswith(f"{fresh_pool}/"):
            loopdev.detach(loop.device, backing=loop.backing_file)
    third = start_driver(fresh_pool)
    try:
        csi = third.client()
        stage_and_publish(csi, volumes)
        assert (fs_paths[1] / "before").read_text() == "survives"
        fd = os.open(block_paths[1], os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == b"R" * 4096
        finally:
            os.close(fd)
        for volume, (_, staging, target) in zip(volumes, uses, strict=True):
            csi.unpublish(volume, target)
            csi.unstage(volume, staging)
            assert not target.exists()
        assert not mount.is_mounted(fs_paths[0])
        third.stop()
        assert "dropped stale attachment" in third.log.read_text()
    finally:
        third.cleanup()
