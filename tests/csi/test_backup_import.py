"""`amber backup import` in the documented deployment: the VolumeSnapshotContent it prints is
one a csi-snapshotter with `--node-deployment` handles (labelled with `--node`), it validates
against the snapshot CRD schema, and the first cluster's snapshot ID (`amber:v1:bak:...`) is
accepted wherever a backup is named. The real `amber` in a subprocess; the backup is made and
restored by real `amber node` processes over a real S3 server (the fixture of
test_list_snapshots.py)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest
import yaml

from amber.backup.handles import key_backup_id
from amber.cli.import_cmd import MANAGED_BY
from amber.csi._proto import csi_pb2
from amber.domain.units import MiB
from tests.csi.driver import RPC_TIMEOUT, block_cap, snapshot_source
from tests.csi.test_backup_snapshots import CONTENT_SCHEMA, SNAPSHOT_SCHEMA
from tests.csi.test_list_snapshots import TARGET, Nodes, ready_backup, until
from tests.csi.test_list_snapshots import nodes as nodes  # the module's fixture

LABELLED_CONTENT_SCHEMA = copy.deepcopy(CONTENT_SCHEMA)
LABELLED_CONTENT_SCHEMA["properties"]["metadata"] = {
    "type": "object",
    "required": ["name", "labels"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63},
            "required": [MANAGED_BY],
        },
    },
}


def amber(config: Path, pool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "amber",
            "--pool",
            str(pool),
            "backup",
            "--config",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def snapshot_id(nodes: Nodes) -> str:
    a = nodes.csi(0)
    volume_id = a.create("pvc-import-src", 16 * MiB, cap=block_cap()).volume_id
    snap = ready_backup(a, volume_id, "snapshot-import-node", {"type": "backup", "target": TARGET})
    value: str = snap.snapshot_id
    assert value == f"amber:v1:bak:{TARGET}:snapshot-import-node"
    return value


def _objects(done: subprocess.CompletedProcess[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    assert done.returncode == 0, done.stderr
    content, snapshot = yaml.safe_load_all(done.stdout)
    jsonschema.validate(snapshot, SNAPSHOT_SCHEMA)
    return content, snapshot


def test_import_with_node_is_labelled_for_that_nodes_snapshotter(
    nodes: Nodes, snapshot_id: str
) -> None:
    done = amber(
        nodes.targets, nodes.pools[1], "import", snapshot_id, "-n", "ns2", "--name", "imported",
        "--node", "node-b",
    )  # fmt: skip
    content, snapshot = _objects(done)
    jsonschema.validate(content, LABELLED_CONTENT_SCHEMA)
    assert content["metadata"]["labels"] == {MANAGED_BY: "node-b"}
    assert done.stderr == ""
    handle = content["spec"]["source"]["snapshotHandle"]
    assert handle == f"amber:v1:backup:{TARGET}:{key_backup_id('snapshot-import-node')}"
    assert snapshot["spec"]["source"]["volumeSnapshotContentName"] == content["metadata"]["name"]
    # What node B's snapshotter then asks, and the restore a PVC from it makes.
    b = nodes.csi(1)
    found = b.list_snapshots(snapshot_id=handle).entries
    assert [(e.snapshot.ready_to_use, e.snapshot.size_bytes) for e in found] == [(True, 16 * MiB)]
    request = csi_pb2.CreateVolumeRequest(
        name="pvc-imported",
        volume_capabilities=[block_cap()],
        volume_content_source=snapshot_source(handle),
    )
    volume = until(lambda: _try_create(b, request), lambda v: v is not None, timeout=90)
    assert volume.capacity_bytes == 16 * MiB


def _try_create(csi: Any, request: Any) -> Any:
    """The volume, or None while the restore runs (ABORTED)."""
    try:
        return csi.controller.CreateVolume(request, timeout=RPC_TIMEOUT).volume
    except grpc.RpcError as e:
        if e.code() is not grpc.StatusCode.ABORTED:
            raise
        return None


def test_import_without_node_still_prints_and_warns_in_one_line(
    nodes: Nodes, snapshot_id: str
) -> None:
    done = amber(nodes.targets, nodes.pools[1], "import", snapshot_id, "-n", "ns", "--name", "x")
    content, _ = _objects(done)
    jsonschema.validate(content, CONTENT_SCHEMA)
    assert "labels" not in content["metadata"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("warning: ")
    assert MANAGED_BY in lines[0]
    assert "--node" in lines[0]


def test_the_snapshot_id_names_the_backup_everywhere(nodes: Nodes, snapshot_id: str) -> None:
    shown = amber(nodes.targets, nodes.pools[1], "show", snapshot_id)
    assert shown.returncode == 0, shown.stderr
    as_json = subprocess.run(
        [sys.executable, "-m", "amber", "--pool", str(nodes.pools[1]), "-o", "json", "backup",
         "--config", str(nodes.targets), "show", snapshot_id],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert json.loads(as_json.stdout)["backup_id"] == key_backup_id("snapshot-import-node")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["import", f"amber:v1:bak:{TARGET}:no-such-snapshot", "-n", "n", "--name", "x"], 3, ""),
        (["import", f"amber:v1:bak:{TARGET}:k", "-t", "other", "-n", "n", "--name", "x"], 2, ""),
        (["import", "amber:v1:bak:s3t", "-n", "n", "--name", "x"], 2, "invalid backup handle"),
        (["import", f"amber:v1:bak:{TARGET}:k", "-n", "n", "--name", "x", "--node", "-x"], 2,
         "--node"),
        (["import", f"amber:v1:bak:{TARGET}:k", "-n", "n", "--name", "x", "--node", "n" * 64], 2,
         "--node"),
        (["show", f"amber:v1:bak:{TARGET}:no-such-snapshot"], 3, ""),
    ],
)  # fmt: skip
def test_bad_names_are_one_line_errors(
    nodes: Nodes, args: list[str], code: int, words: str
) -> None:
    done = amber(nodes.targets, nodes.pools[1], *args)
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    assert words in lines[0]
    assert done.stdout == ""
