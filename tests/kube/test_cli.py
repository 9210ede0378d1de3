"""`amber node/controller --recurring-jobs` at the edge: one line and an exit code for a bad
setting, and the Kubernetes client kept out of every other command's imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def amber(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amber", *args],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, **(env or {})}, cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], {}, 9, "from /nonexistent/kubeconfig"),
        (["--kubeconfig", str(REPO / "pyproject.toml")], {}, 9, "expected '<document start>'"),
        ([], {"KUBERNETES_SERVICE_HOST": ""}, 9, "from the pod's service account"),
    ],
)
def test_a_bad_client_configuration_is_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    sock = f"unix://{tmp_path}/c.sock"
    done = amber("controller", "--endpoint", sock, "--recurring-jobs", *args, env=env)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot load the Kubernetes client configuration")
    assert message in lines[0]


def test_a_bad_time_scale_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "x",'
        ' "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],'
        ' "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],'
        ' "users": [{"name": "x", "user": {"token": "t"}}]}'
    )
    done = amber(
        "controller", "--endpoint", f"unix://{tmp_path}/c.sock", "--recurring-jobs",
        "--kubeconfig", str(config), env={"AMBER_JOBS_TIME_SCALE": "fast"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: AMBER_JOBS_TIME_SCALE='fast' must be a number from 1 to 1000000 "
        "(a test knob: 60 makes one second one scheduler minute)"
    ]


def test_the_kubernetes_client_stays_out_of_the_cli_s_cold_path() -> None:
    probe = (
        "import sys; from amber.cli import main, node_cmd; "
        "print('kubernetes' in sys.modules, 'amber.kube.api' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["False", "False"]
