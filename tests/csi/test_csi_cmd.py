"""`amber csi` with class parameters and secrets, against a real `amber node` process: a backup
snapshot tried without Kubernetes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.csi.driver import DriverProcess

PASSWORD = "csi-cmd-repository-password-5b1e"


def amber_csi(driver: DriverProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amber", "csi", *args, f"--endpoint={driver.endpoint}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ok_json(driver: DriverProcess, *args: str) -> Any:
    done = amber_csi(driver, *args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_param_reaches_create_volume(driver: DriverProcess) -> None:
    made = ok_json(driver, "create-volume", "cmd-xfs", "--size", "320Mi", "--param", "fsType=xfs")
    assert made["volume"]["volume_context"]["amber.csi.dev/fsType"] == "xfs"
    refused = amber_csi(
        driver, "create-volume", "cmd-ntfs", "--size", "64Mi", "--param", "fsType=ntfs"
    )
    assert refused.returncode == 2  # the driver's INVALID_ARGUMENT
    assert refused.stderr.count("\n") == 1
    assert "ntfs" in refused.stderr


@pytest.mark.parametrize("pair", ["fsType", "=xfs"])
def test_a_param_without_key_and_value_is_a_usage_error(driver: DriverProcess, pair: str) -> None:
    done = amber_csi(driver, "create-volume", "cmd-bad", "--size", "64Mi", "--param", pair)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "invalid --param" in done.stderr
    assert "KEY=VALUE" in done.stderr


def test_backup_snapshot_with_params_and_a_secrets_file(
    driver: DriverProcess, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(
        "# the snapshotter secret, as a Kubernetes Secret's stringData would hold it\n"
        f"url: file://{repo}\n"
        f'repositoryPassword: "{PASSWORD}"\n'
        "target: cmd-target\n"
    )
    volume_id = ok_json(driver, "create-volume", "cmd-src", "--size", "16Mi", "--block")["volume"][
        "volume_id"
    ]
    args = ("snapshot", volume_id, "cmd-backup", "--param", "type=backup",
            "--param", "target=cmd-target", "--secrets-file", str(secrets))  # fmt: skip
    deadline = time.monotonic() + 90
    while not (snapshot := ok_json(driver, *args)["snapshot"]).get("ready_to_use"):
        assert time.monotonic() < deadline, snapshot
        time.sleep(0.2)
    assert snapshot["snapshot_id"].startswith("amber:v1:bak:cmd-target:")
    assert [p.name for p in (repo / "backups").iterdir()]  # the backup is in the repository
    listed = ok_json(driver, "list-snapshots", "--secrets-file", str(secrets))
    assert snapshot["snapshot_id"] in [e["snapshot"]["snapshot_id"] for e in listed["entries"]]
    deleted = amber_csi(
        driver, "delete-snapshot", snapshot["snapshot_id"], "--secrets-file", str(secrets)
    )
    assert deleted.returncode == 0, deleted.stderr
    assert not list((repo / "backups").iterdir())
    assert PASSWORD not in driver.log.read_text(errors="replace")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("url file:///x\n", "line 1 of the secrets file"),
        ("# fine\n  indented: value\n", "line 2 of the secrets file"),
        ('password: "unterminated-s3cr3t\n', "badly quoted value"),
        ('{"password": 5}', "not a JSON object of strings"),
    ],
)
def test_a_bad_secrets_file_is_one_line_without_its_values(
    driver: DriverProcess, tmp_path: Path, content: str, words: str
) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text(content)
    done = amber_csi(driver, "snapshot", "some-volume", "s", "--secrets-file", str(secrets))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert words in done.stderr
    assert "s3cr3t" not in done.stderr
    assert "file:///x" not in done.stderr


def test_json_secrets_are_read(driver: DriverProcess, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"url": f"file://{tmp_path}/repo", "target": "cmd-json"}))
    made = ok_json(driver, "create-volume", "cmd-json", "--size", "16Mi", "--block")
    done = amber_csi(driver, "snapshot", made["volume"]["volume_id"], "s", "--param", "type=backup",
                     "--secrets-file", str(secrets))  # fmt: skip
    # the driver read the secret's target and refused it for want of a password
    assert done.returncode == 2, done.stderr
    assert "holds no repository password" in done.stderr
