"""The upstream CSI conformance suite, csi-sanity (kubernetes-csi/csi-test v5.4.0), against Amber.

A real `amber node` process serves a real XFS reflink pool on a loopback image; csi-sanity
speaks gRPC to it over its unix socket, with Filesystem volumes (ext4, xfs) and with Block
volumes. Every spec that runs must pass; a failure prints the failed specs, csi-sanity's account
of them and the driver's log. csi-sanity itself skips the specs of capabilities Amber does not
announce (ControllerPublish, ControllerModifyVolume); its GroupController specs run.

csi-sanity also sends a secret with every call that takes one, and the driver logs every request
(`--log-requests`): the secret must not appear in the log. And afterwards nothing csi-sanity
made may be left: no volume, snapshot, image, mount or loop device.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from amber.domain.units import GiB, MiB
from amber.system import loopdev
from tests.csi.conftest import make_pool, remove_pool
from tests.csi.driver import DriverProcess, pool_state, start_driver
from tests.k8s_tools import k8s_bin

SANITY_TIMEOUT = 900.0
SNAPSHOT_PARAMETERS = "type: local\n"
SECRET = "amber-sanity-s3cr3t-7f1c"
SECRET_CALLS = (
    "CreateVolume",
    "DeleteVolume",
    "ControllerValidateVolumeCapabilities",
    "NodeStageVolume",
    "NodePublishVolume",
    "CreateSnapshot",
    "DeleteSnapshot",
    "ControllerExpandVolume",
    "ListSnapshots",
    "NodeExpandVolume",
)
"""The calls csi-sanity can send secrets with (its secrets file has a `<call>Secret` map each)."""
GROUP_SPECS = 6
"""csi-sanity's GroupController specs: they run since `amber node` announces the service."""
SKIPPED: tuple[str, ...] = ()
"""Regular expressions of specs Amber cannot pass by design (each with its reason beside it)."""
CONNECT_RACE = "Connection timed out"
"""csi-test's utils.Connect dials, then waits for a state change away from the state it reads
next: when the connection is already READY by then (the dialling goroutine ran first, as it can
on a loaded machine), it waits for a change that never comes and fails the first spec after a
minute with this message, whatever the driver does. Amber's socket answered before csi-sanity
started (`start_driver` waits for a READY channel)."""
SANITY_ENV = {**os.environ, "GOMAXPROCS": "1"}
"""One P: the dialling goroutine cannot overtake utils.Connect's first state read (the race
above) unless the scheduler preempts it in that instant."""


@dataclass(frozen=True)
class Variant:
    access_type: str
    parameters: str
    """The class parameters of the test volumes (YAML)."""
    size: int
    expand_size: int


VARIANTS = {
    "ext4": Variant("mount", "csi.storage.k8s.io/fstype: ext4\n", 64 * MiB, 128 * MiB),
    # An xfs filesystem needs 300 MiB at least.
    "xfs": Variant("mount", "fsType: xfs\n", 512 * MiB, GiB),
    "block": Variant("block", "", 64 * MiB, 128 * MiB),
}


@dataclass(frozen=True)
class Outcome:
    total: int
    failed: dict[str, str]
    """Failed spec name -> csi-sanity's failure message."""
    ran: tuple[str, ...] = ()
    """The names of the specs that ran."""


@pytest.fixture
def csi_sanity() -> Path:
    return k8s_bin("csi-sanity") / "csi-sanity"


@pytest.fixture
def sanity_driver(csi_sanity: Path, xfs_root: Path) -> Iterator[tuple[DriverProcess, Path]]:
    """An `amber node` that logs every request, on a pool of its own, and a scratch directory."""
    pool = make_pool(xfs_root)
    work = pool.parent / f"{pool.name}-work"
    driver = start_driver(pool, extra=["--log-requests"])
    try:
        yield driver, work
        driver.stop()
    finally:
        driver.cleanup()
        remove_pool(pool)


def write_inputs(work: Path, variant: Variant) -> list[str]:
    """csi-sanity's input files, as its command-line options."""
    files = {
        "parameters.yaml": variant.parameters,
        "snapshot-parameters.yaml": SNAPSHOT_PARAMETERS,
        "secrets.yaml": "".join(f"{call}Secret:\n  token: {SECRET}\n" for call in SECRET_CALLS),
    }
    for name, text in files.items():
        (work / name).write_text(text)
    return [
        f"--csi.testvolumeaccesstype={variant.access_type}",
        f"--csi.testvolumeparameters={work / 'parameters.yaml'}",
        f"--csi.testsnapshotparameters={work / 'snapshot-parameters.yaml'}",
        f"--csi.secrets={work / 'secrets.yaml'}",
        f"--csi.testvolumesize={variant.size}",
        f"--csi.testvolumeexpandsize={variant.expand_size}",
    ]


def run_sanity(
    csi_sanity: Path, driver: DriverProcess, work: Path, variant: Variant
) -> tuple[Outcome, str]:
    """Run csi-sanity against `driver`; the outcome from its JUnit report, and its output."""
    report = work / "junit.xml"
    command = [
        str(csi_sanity),
        f"--csi.endpoint={driver.endpoint}",
        f"--csi.mountdir={work / 'target'}",
        f"--csi.stagingdir={work / 'staging'}",
        *write_inputs(work, variant),
        f"--ginkgo.junit-report={report}",
        "--ginkgo.no-color",
        *(f"--ginkgo.skip={pattern}" for pattern in SKIPPED),
    ]
    outcome, output = sanity_once(command, report)
    if lost_only_the_connect_race(outcome):
        # csi-sanity's own client lost the race (CONNECT_RACE), not the driver: run it again.
        outcome, again = sanity_once(command, report)
        output = f"{output}\n--- run again after csi-sanity's connect race ---\n{again}"
    return outcome, output


def sanity_once(command: list[str], report: Path) -> tuple[Outcome, str]:
    report.unlink(missing_ok=True)
    done = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SANITY_TIMEOUT,
        check=False,
        env=SANITY_ENV,
    )
    output = done.stdout + done.stderr
    assert report.exists(), f"csi-sanity wrote no report (exit {done.returncode}):\n{output}"
    outcome = read_report(report)
    assert outcome.failed or done.returncode == 0, f"csi-sanity exit {done.returncode}:\n{output}"
    return outcome, output


def lost_only_the_connect_race(outcome: Outcome) -> bool:
    """Whether the one failed spec is csi-sanity failing to connect (CONNECT_RACE)."""
    return len(outcome.failed) == 1 and all(
        CONNECT_RACE in message for message in outcome.failed.values()
    )


def read_report(report: Path) -> Outcome:
    """The specs that ran and those that failed, from a Ginkgo JUnit report."""
    total, failed, ran = 0, {}, []
    for case in ET.parse(report).getroot().iter("testcase"):
        if case.get("status") in ("skipped", "pending"):
            continue
        total += 1
        ran.append(case.get("name", "?"))
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            failed[case.get("name", "?")] = problem.get("message", "") + (problem.text or "")
    return Outcome(total, failed, tuple(ran))


def referenced_lines(log: str, failures: str) -> str:
    """The node log's lines naming a `(ref XXXX)` an INTERNAL answer gave (its traceback is
    there), which the log's tail may no longer hold by the time the suite ends."""
    refs = set(re.findall(r"\(ref ([0-9a-f]{8,})\)", failures))
    lines = [line for line in log.splitlines() if any(ref in line for ref in refs)]
    return "\n".join(line[:6000] for line in lines[:10]) or "(none)"


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_csi_sanity_passes(
    csi_sanity: Path, sanity_driver: tuple[DriverProcess, Path], variant: Variant
) -> None:
    driver, work = sanity_driver
    outcome, output = run_sanity(csi_sanity, driver, work, variant)
    log = driver.log.read_text(errors="replace")
    if outcome.failed:
        names = "\n".join(f"  - {name}" for name in sorted(outcome.failed))
        first = sorted(outcome.failed.items())[:10]
        details = "\n\n".join(f"{name}:\n{message[:1500]}" for name, message in first)
        pytest.fail(
            f"csi-sanity: {len(outcome.failed)} of {outcome.total} specs failed:\n{names}\n\n"
            f"{details}\n\n--- csi-sanity output (tail) ---\n{output[-6000:]}"
            f"\n\n--- amber node log, the failures' refs ---\n{referenced_lines(log, details)}"
            f"\n\n--- amber node log (tail) ---\n{log[-8000:]}",
            pytrace=False,
        )
    assert outcome.total > 50, f"csi-sanity ran only {outcome.total} specs:\n{output[-4000:]}"
    group_specs = [name for name in outcome.ran if "GroupController" in name]
    assert len(group_specs) >= GROUP_SPECS, f"GroupController specs that ran: {group_specs}"
    assert '"secrets":{"token":"***"}' in log, "the driver logged no request with its secret"
    assert SECRET not in log
    assert_nothing_left(driver, work)


def assert_nothing_left(driver: DriverProcess, work: Path) -> None:
    """csi-sanity deletes what it made: no volume, snapshot, mount or loop device remains."""
    assert driver.pool is not None
    state = pool_state(driver.client(), driver.pool, work)
    assert state == {"volumes": [], "snapshots": [], "images": [], "mounts": []}
    prefix = f"{driver.pool}/"
    loops = [loop for loop in loopdev.list_loops() if str(loop.backing_file).startswith(prefix)]
    assert loops == []
