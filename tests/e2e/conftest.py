"""The end-to-end session: one real control plane, SeaweedFS as the backup target, two Amber
nodes on loopback XFS pools, and the sidecars as deploy/'s ServiceAccounts (see cluster.py).

Everything is started once per session (a few seconds) and torn down fully at the end: every
process stopped, the pools' mounts and loop devices released, the directories removed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blobstore.conftest import S3Server, run_weed
from tests.csi.backup_env import write_targets
from tests.csi.conftest import make_pool, remove_pool
from tests.e2e.cluster import Cluster, control_plane, deploy_amber
from tests.k8s_tools import k8s_bin, missing

NODES = ("node-a", "node-b")
TARGET = "default"  # the target deploy/base's amber-backup class names
NEEDED = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "snapshot-controller",
    "csi-provisioner",
    "csi-snapshotter",
    "csi-resizer",
)


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with run_weed(tmp_path_factory.mktemp("e2e-weed")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_prefix() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, s3_prefix: str
) -> Iterator[Cluster]:
    bin_dir = k8s_bin(*NEEDED)  # skip (fail under CI=true) before starting anything
    if shutil.which("etcd") is None:
        missing("etcd is not installed (scripts/install.sh --dev installs etcd-server)")
    weed: S3Server = request.getfixturevalue("weed")
    xfs_root: Path = request.getfixturevalue("xfs_root")
    work = Path(tmp_path_factory.mktemp("e2e"))
    targets = write_targets(
        work / "targets", TARGET, weed.endpoint, s3_prefix, (weed.access_key, weed.secret_key)
    )
    pools = {node: make_pool(xfs_root) for node in NODES}
    try:
        with control_plane(bin_dir, work / "k8s") as plane:
            yield deploy_amber(plane, pools, targets)
    finally:
        for pool in pools.values():
            remove_pool(pool)


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "AMBER_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
