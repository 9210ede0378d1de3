"""The upstream CSI conformance suite, csi-sanity (kubernetes-csi/csi-test v5.4.0), against Amber.

A real `amber node` process serves a real XFS reflink pool on a loopback image; csi-sanity
speaks gRPC to it over its unix socket, once with Filesystem (ext4) volumes and once with Block
volumes. Every spec must pass; a failure prints the failed specs, csi-sanity's account of them
and the driver's log.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amber.domain.units import MiB
from amber.system import loopdev
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import DriverProcess, pool_state, start_driver
from tests.sanity.tools import k8s_binary

VOLUME_SIZE = 64 * MiB
EXPAND_SIZE = 128 * MiB
SANITY_TIMEOUT = 900.0
PARAMETERS = {
    "mount": "csi.storage.k8s.io/fstype: ext4\n",
    "block": "",
}
SNAPSHOT_PARAMETERS = "type: local\n"
SKIPPED: list[str] = []
"""Regular expressions of specs Amber cannot pass by design (each with its reason beside it)."""


@dataclass(frozen=True)
class Outcome:
    total: int
    failed: dict[str, str]
    """Failed spec name -> csi-sanity's failure message."""


@pytest.fixture
def csi_sanity() -> Path:
    return k8s_binary("csi-sanity")


@pytest.fixture
def sanity_driver(csi_sanity: Path, xfs_root: Path) -> Iterator[tuple[DriverProcess, Path]]:
    pool = make_pool(xfs_root)
    work = pool.parent / f"{pool.name}-work"
    driver = start_driver(pool)
    try:
        yield driver, work
        driver.stop()
    finally:
        driver.cleanup()
        remove_pool(pool)


def run_sanity(
    csi_sanity: Path, driver: DriverProcess, work: Path, access_type: str
) -> tuple[Outcome, str]:
    """Run csi-sanity against `driver`; the outcome from its JUnit report, and its output."""
    parameters = work / "parameters.yaml"
    parameters.write_text(PARAMETERS[access_type])
    snapshot_parameters = work / "snapshot-parameters.yaml"
    snapshot_parameters.write_text(SNAPSHOT_PARAMETERS)
    report = work / "junit.xml"
    command = [
        str(csi_sanity),
        f"--csi.endpoint={driver.endpoint}",
        f"--csi.mountdir={work / 'target'}",
        f"--csi.stagingdir={work / 'staging'}",
        f"--csi.testvolumeaccesstype={access_type}",
        f"--csi.testvolumeparameters={parameters}",
        f"--csi.testsnapshotparameters={snapshot_parameters}",
        f"--csi.testvolumesize={VOLUME_SIZE}",
        f"--csi.testvolumeexpandsize={EXPAND_SIZE}",
        f"--ginkgo.junit-report={report}",
        "--ginkgo.no-color",
        *(f"--ginkgo.skip={pattern}" for pattern in SKIPPED),
    ]
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SANITY_TIMEOUT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert report.exists(), f"csi-sanity wrote no report (exit {done.returncode}):\n{output}"
    outcome = read_report(report)
    assert outcome.failed or done.returncode == 0, f"csi-sanity exit {done.returncode}:\n{output}"
    return outcome, output


def read_report(report: Path) -> Outcome:
    """The specs that ran and those that failed, from a Ginkgo JUnit report."""
    total, failed = 0, {}
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.get("status") in ("skipped", "pending"):
            continue
        total += 1
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed[case.get("name", "?")] = problem.get("message", "") + (problem.text or "")
    return Outcome(total, failed)


@pytest.mark.parametrize("access_type", ["mount", "block"])
def test_csi_sanity_passes(
    csi_sanity: Path, sanity_driver: tuple[DriverProcess, Path], access_type: str
) -> None:
    driver, work = sanity_driver
    outcome, output = run_sanity(csi_sanity, driver, work, access_type)
    if outcome.failed:
        names = "\n".join(f"  - {name}" for name in sorted(outcome.failed))
        first = sorted(outcome.failed.items())[:10]
        details = "\n\n".join(f"{name}:\n{message[:1500]}" for name, message in first)
        log = driver.log.read_text(errors="replace")
        pytest.fail(
            f"csi-sanity ({access_type}): {len(outcome.failed)} of {outcome.total} specs failed:\n"
            f"{names}\n\n{details}\n\n--- csi-sanity output (tail) ---\n{output[-6000:]}"
            f"\n\n--- amber node log (tail) ---\n{log[-8000:]}",
            pytrace=False,
        )
    assert outcome.total > 50, f"csi-sanity ran only {outcome.total} specs:\n{output[-4000:]}"
    assert_nothing_left(driver, work)


def assert_nothing_left(driver: DriverProcess, work: Path) -> None:
    """csi-sanity deletes what it made: no volume, snapshot, mount or loop device remains."""
    assert driver.pool is not None
    state = pool_state(driver.client(), driver.pool, work)
    assert state == {"volumes": [], "snapshots": [], "images": [], "mounts": []}
    prefix = f"{driver.pool}/"
    loops = [loop for loop in loopdev.list_loops() if str(loop.backing_file).startswith(prefix)]
    assert loops == []
