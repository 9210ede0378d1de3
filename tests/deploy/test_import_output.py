"""`amber backup import`, run for real on a real backup, prints objects the snapshot CRDs accept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.cli.runner import amber, amber_json
from tests.deploy.test_manifests import Schemas, schema_errors


def test_backup_import_prints_objects_the_crds_accept(
    pool_dir: Path, tmp_path: Path, crd_schemas: Schemas, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "password"
    password.write_text("a long random repository password\n")
    os.chmod(password, 0o600)
    config = tmp_path / "targets.json"
    monkeypatch.setenv("AMBER_CONFIG", str(config))
    (tmp_path / "backups").mkdir()
    url = f"file://{tmp_path / 'backups'}"
    for args in (
        ["target", "add", "t1", url, "--password-file", str(password), "--init"],
        ["volume", "create", "data", "--size", "16Mi"],
        ["snapshot", "create", "data", "s1"],
    ):
        done = amber(pool_dir, *args)
        assert done.returncode == 0, done.stderr
    created = amber_json(pool_dir, "backup", "create", "s1", "--target", "t1")
    backup_id = created["backup_id"]
    for extra in ([], ["--deletion-policy", "Delete", "--class", "amber-backup"]):
        done = amber(
            pool_dir,
            "backup",
            "import",
            backup_id,
            "--target",
            "t1",
            "--namespace",
            "new-cluster",
            "--name",
            "restored",
            *extra,
        )
        assert done.returncode == 0, done.stderr
        objects = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        assert [o["kind"] for o in objects] == ["VolumeSnapshotContent", "VolumeSnapshot"]
        assert [e for o in objects for e in schema_errors(o, crd_schemas)] == []
