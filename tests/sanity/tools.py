"""Finding the Kubernetes test binaries (csi-sanity and friends) for the tests that need them.

CI unpacks them (`../shared/k8s/unpack.sh DEST`) and names the directory in `AMBER_K8S_BIN`.
Without it a test is skipped with the reason, except under `CI=true`, where a missing binary
fails the test: CI must never pass without having run them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "AMBER_K8S_BIN"


def k8s_binary(name: str) -> Path:
    """The path of binary `name` in `$AMBER_K8S_BIN`; skip (or fail under CI) when missing."""
    directory = os.environ.get(ENV, "")
    path = Path(directory) / name if directory else None
    if path is not None and os.access(path, os.X_OK):
        return path
    reason = (
        f"{name} not run: set {ENV} to the directory holding it (../shared/k8s/unpack.sh DEST)"
        if path is None
        else f"{name} not run: {path} is not an executable file ({ENV}={directory})"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run it")
    pytest.skip(reason)
