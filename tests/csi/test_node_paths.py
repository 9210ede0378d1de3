"""Paths the node RPCs must refuse at the edge, against a real `amber node` process.

A path component longer than NAME_MAX (255 bytes) cannot exist on Linux: INVALID_ARGUMENT, not
an INTERNAL error from the first system call that trips on it. A publication onto the volume's
own staging path (or inside it, or around it) would hide or stack on the staged mount:
INVALID_ARGUMENT, and the real publication still works afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amber.csi.node import STAGED_DEVICE
from amber.domain.units import MiB
from tests.csi.driver import (
    Code,
    Csi,
    DriverProcess,
    block_cap,
    expect_code,
    mount_cap,
    pool_state,
)


@pytest.fixture
def base(work: Path, request: pytest.FixtureRequest) -> Path:
    path = work / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir()
    return path


def long_paths(base: Path) -> list[Path]:
    """Paths with one component of 256 bytes: at the end, in the middle, in UTF-8."""
    return [
        base / ("c" * 256),
        base / ("c" * 300) / "target",
        base / ("é" * 128),  # 128 characters, 256 bytes
    ]


@pytest.mark.parametrize("kind", ["mount", "block"])
def test_over_long_path_components_are_invalid_argument(
    csi: Csi, csi_pool: Path, work: Path, driver: DriverProcess, base: Path, *, kind: str
) -> None:
    cap: Any = mount_cap() if kind == "mount" else block_cap()
    volume = csi.create(f"pvc-long-{kind}", 16 * MiB, cap=cap).volume_id
    staging, target = base / "staging", base / "target"
    staging.mkdir()
    csi.stage(volume, staging, cap)
    before = pool_state(csi, csi_pool, work)
    for bad in long_paths(base):
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.stage(volume, bad, cap))
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.publish(volume, staging, bad, cap))
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.publish(volume, bad, target, cap))
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.unpublish(volume, bad))
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.unstage(volume, bad))
        expect_code(Code.INVALID_ARGUMENT, lambda bad=bad: csi.node_expand(volume, bad, 32 * MiB))
        expect_code(Code.NOT_FOUND, lambda bad=bad: csi.stats(volume, bad))
    assert pool_state(csi, csi_pool, work) == before
    assert "Traceback" not in driver.log.read_text(errors="replace")
    csi.publish(volume, staging, target, cap)  # the volume is still fine
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)
    csi.delete(volume)


def test_a_255_byte_component_is_fine(csi: Csi, base: Path) -> None:
    volume = csi.create("pvc-long-ok", 16 * MiB).volume_id
    staging, target = base / ("s" * 255), base / ("t" * 255)
    staging.mkdir()
    csi.stage(volume, staging)
    csi.publish(volume, staging, target)
    (target / "file").write_text("data")
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)
    assert not target.exists()
    csi.delete(volume)


@pytest.mark.parametrize("kind", ["mount", "block"])
def test_publishing_onto_the_staging_path_is_refused(
    csi: Csi, csi_pool: Path, work: Path, base: Path, kind: str
) -> None:
    cap: Any = mount_cap() if kind == "mount" else block_cap()
    volume = csi.create(f"pvc-self-{kind}", 16 * MiB, cap=cap).volume_id
    staging = base / "staging"
    staging.mkdir()
    csi.stage(volume, staging, cap)
    before = pool_state(csi, csi_pool, work)
    for bad in (staging, staging / STAGED_DEVICE, staging / "inside"):
        message = expect_code(
            Code.INVALID_ARGUMENT, lambda bad=bad: csi.publish(volume, staging, bad, cap)
        )
        assert "staging_target_path" in message
    assert pool_state(csi, csi_pool, work) == before
    # The refused calls left nothing behind that blocks the real publication.
    target = base / "target"
    csi.publish(volume, staging, target, cap)
    if kind == "mount":
        (target / "file").write_text("data")
        assert (target / "file").read_text() == "data"
    else:
        fd = os.open(target, os.O_WRONLY)
        try:
            assert os.write(fd, b"x" * 4096) == 4096
        finally:
            os.close(fd)
    csi.unpublish(volume, target)
    csi.unstage(volume, staging)
    assert not target.exists()
    csi.delete(volume)


def test_a_target_around_the_staging_path_is_refused(csi: Csi, base: Path) -> None:
    volume = csi.create("pvc-around", 16 * MiB).volume_id
    outer = base / "outer"
    staging = outer / "staging"
    staging.mkdir(parents=True)
    csi.stage(volume, staging)
    expect_code(Code.INVALID_ARGUMENT, lambda: csi.publish(volume, staging, outer))
    csi.unstage(volume, staging)
    csi.delete(volume)


def test_amber_csi_stage_refuses_an_over_long_path_in_one_line(
    driver: DriverProcess, base: Path
) -> None:
    """The CLI edge applies the same path rule before it creates the staging directory."""
    staging = base / ("c" * 256) / "staging"
    command = [sys.executable, "-m", "amber", "csi", "stage", "amber:v1:vol:node-a:pvc-x"]
    done = subprocess.run(
        [*command, str(staging), f"--endpoint={driver.endpoint}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: staging path has a component longer than 255 bytes (NAME_MAX)"
    ]


@pytest.mark.parametrize("kind", ["mount", "block"])
def test_paths_the_kernel_refuses_are_the_requests_problem(
    csi: Csi, driver: DriverProcess, base: Path, kind: str
) -> None:
    """A target the kernel will not create (sysfs) or that cannot exist (below a file) gets
    FAILED_PRECONDITION naming it, never INTERNAL; unpublishing what cannot exist is OK."""
    cap: Any = mount_cap() if kind == "mount" else block_cap()
    volume = csi.create(f"pvc-kernel-{kind}", 16 * MiB, cap=cap).volume_id
    staging = base / "staging"
    staging.mkdir()
    csi.stage(volume, staging, cap)
    sysfs = Path("/sys/kernel/amber-sanity-target")
    message = expect_code(
        Code.FAILED_PRECONDITION, lambda: csi.publish(volume, staging, sysfs, cap)
    )
    assert str(sysfs) in message
    below_a_file = Path("/etc/hostname/amber-target")
    expect_code(Code.FAILED_PRECONDITION, lambda: csi.publish(volume, staging, below_a_file, cap))
    csi.unpublish(volume, below_a_file)  # not published there, cannot even exist: OK
    expect_code(Code.FAILED_PRECONDITION, lambda: csi.stage(volume, below_a_file, cap))
    assert not sysfs.exists()
    assert "Traceback" not in driver.log.read_text(errors="replace")
    csi.unstage(volume, staging)
    csi.delete(volume)
