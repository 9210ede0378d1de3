"""Where the Kubernetes test binaries are: `AMBER_K8S_BIN` (set by scripts/test.sh after it
unpacks `../shared/k8s`), or a clear skip when they are not available.

CI must run every test that needs them: with `CI=true` a missing directory fails the test
instead of skipping it, so a green CI never hides an end-to-end suite that did not run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "AMBER_K8S_BIN"
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
    "csi-provisioner",
    "csi-snapshotter",
    "snapshot-controller",
    "csi-resizer",
    "csi-sanity",
)


def missing(reason: str) -> None:
    """Skip the test with `reason`, or fail it when `CI=true`."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run in CI)", pytrace=False)
    pytest.skip(reason)


def k8s_bin(*needed: str) -> Path:
    """The directory holding the Kubernetes binaries (and `needed` among them), else skip the
    test (fail it when `CI=true`) with the reason."""
    value = os.environ.get(ENV, "")
    if not value:
        missing(
            f"{ENV} is not set: scripts/test.sh sets it when ../shared/k8s/unpack.sh exists "
            "(or unpack it yourself: ../shared/k8s/unpack.sh DEST; export AMBER_K8S_BIN=DEST/bin)"
        )
    directory = Path(value)
    for name in needed:
        if not os.access(directory / name, os.X_OK):
            missing(f"{ENV}={directory} has no executable {name}")
    return directory
