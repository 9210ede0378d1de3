"""Fixtures for deploy/: every kustomization rendered by the real `kubectl kustomize`.

kubectl comes from $AMBER_K8S_BIN (CI unpacks ../shared/k8s there); without it these tests
skip with the reason, except in CI (CI=true), where they fail. The snapshot CRDs are read from
<repo>/../shared/k8s/crd, under the same rule; Amber's own CRDs from deploy/base/crd-*.yaml.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CRD_DIR = REPO.parent / "shared" / "k8s" / "crd"
AMBER_CRDS = sorted((DEPLOY / "base").glob("crd-*.yaml"))
"""Amber's own CRDs (RecurringJob)."""
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def missing(reason: str) -> None:
    """Skip with `reason`, or fail when running in CI (where everything must run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run in CI)")
    pytest.skip(reason)


def kubectl() -> Path:
    bin_dir = os.environ.get("AMBER_K8S_BIN")
    if not bin_dir:
        missing("AMBER_K8S_BIN is not set: no kubectl to render deploy/ with")
    path = Path(str(bin_dir)) / "kubectl"
    if not os.access(path, os.X_OK):
        missing(f"no kubectl in AMBER_K8S_BIN={bin_dir}")
    return path


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects `kubectl kustomize DIRECTORY` renders."""
    done = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every kustomization under deploy/, by path relative to deploy/."""
    return {str(d.relative_to(DEPLOY)): render(d) for d in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """openAPIV3Schema of every served CRD version, by (group, version, kind)."""
    if not CRD_DIR.is_dir():
        missing(f"no snapshot CRDs at {CRD_DIR}")
    schemas = {}
    for path in [*sorted(CRD_DIR.glob("*.yaml")), *AMBER_CRDS]:
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    assert schemas, f"no CRDs in {CRD_DIR}"
    return schemas
