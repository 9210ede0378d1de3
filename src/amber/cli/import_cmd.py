"""`amber backup import`: the Kubernetes objects that make a backup a VolumeSnapshot.

Another cluster (or the same one after a disaster) that has the backup's target configured
under the same name can restore any backup of it: this prints a pre-provisioned
`VolumeSnapshotContent` whose `source.snapshotHandle` is the backup's handle, and the
`VolumeSnapshot` bound to it (snapshot.storage.k8s.io/v1), ready for `kubectl apply -f -`.
The backup is looked up on the target first, so a typo fails here, not in the cluster.
The output is YAML (written in its JSON-compatible flow of quoted scalars).

The backup may be named by its id (with --target), its handle, or the ID the first cluster's
VolumeSnapshotContent carries (`amber:v1:bak:<target>:<key>`). A csi-snapshotter started with
`--node-deployment` (as Amber's DaemonSet runs it) only handles the contents labelled
`snapshot.storage.kubernetes.io/managed-by: <its node>`: `--node` sets that label (any node
that can reach the target will do); without it the content stays unready in such a cluster,
which a warning on stderr says.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Final

import typer

from amber.backup.handles import BackupName, check_key, parse_backup_name, resolve_backup_id
from amber.backup.manifest import Manifest
from amber.backup.repository import Repository
from amber.backup.targets import TargetRuntime, backup_handle
from amber.cli.output import err_console
from amber.cli.target_cmd import open_repository
from amber.domain.errors import InvalidArgument

DEFAULT_DRIVER = "amber.csi.dev"
API_VERSION = "snapshot.storage.k8s.io/v1"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_POLICIES = ("Retain", "Delete")
MANAGED_BY: Final = "snapshot.storage.kubernetes.io/managed-by"
"""The label a csi-snapshotter with `--node-deployment` selects the contents it handles by."""
_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
NO_NODE_WARNING: Final = (
    f"warning: the VolumeSnapshotContent has no label {MANAGED_BY}: a csi-snapshotter run with "
    "--node-deployment (as Amber's DaemonSet runs it) handles only contents labelled with its "
    "node, so this one would never become ready; pass --node NODE (any node that can reach "
    "the target)"
)


def _check_dns(what: str, value: str) -> str:
    if _DNS_LABEL.match(value) is None:
        raise InvalidArgument(f"{what} {value!r} is not a Kubernetes name (DNS label)")
    return value


def _check_node(node: str) -> str:
    if _LABEL_VALUE.match(node) is None:
        raise InvalidArgument(
            f"--node {node[:80]!r} cannot be a Kubernetes label value (at most 63 letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )
    return node


def snapshot_objects(
    handle: str,
    *,
    namespace: str,
    name: str,
    driver: str,
    deletion_policy: str,
    snapshot_class: str | None,
    content_name: str,
    node: str | None = None,
) -> list[dict[str, Any]]:
    """The VolumeSnapshotContent and VolumeSnapshot of a pre-provisioned backup snapshot."""
    content_spec: dict[str, Any] = {
        "deletionPolicy": deletion_policy,
        "driver": driver,
        "source": {"snapshotHandle": handle},
        "volumeSnapshotRef": {
            "apiVersion": API_VERSION,
            "kind": "VolumeSnapshot",
            "name": name,
            "namespace": namespace,
        },
    }
    snapshot_spec: dict[str, Any] = {"source": {"volumeSnapshotContentName": content_name}}
    if snapshot_class:
        content_spec["volumeSnapshotClassName"] = snapshot_class
        snapshot_spec["volumeSnapshotClassName"] = snapshot_class
    content_meta: dict[str, Any] = {"name": content_name}
    if node is not None:
        content_meta["labels"] = {MANAGED_BY: node}
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "VolumeSnapshotContent",
            "metadata": content_meta,
            "spec": content_spec,
        },
        {
            "apiVersion": API_VERSION,
            "kind": "VolumeSnapshot",
            "metadata": {"name": name, "namespace": namespace},
            "spec": snapshot_spec,
        },
    ]


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block YAML of nested dicts with scalars quoted as JSON strings (valid YAML)."""
    lines = []
    pad = "  " * indent
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:")
            lines.append(to_yaml(item, indent + 1))
        else:
            lines.append(f"{pad}{key}: {json.dumps(item)}")
    return "\n".join(lines)


def _manifest(repo: Repository, wanted: BackupName, target: str) -> Manifest:
    """The manifest `wanted` names (an id, a unique prefix, `latest`, or a snapshot key)."""
    if wanted.key is not None:
        return check_key(repo.load_manifest(wanted.backup_id), wanted)
    backup_id = resolve_backup_id(repo, wanted.backup_id, where=f"target {target!r}")
    return repo.load_manifest(backup_id)


def import_backup(
    ctx: typer.Context,
    backup: Annotated[
        str, typer.Argument(help="Backup id, handle, or snapshot ID (amber:v1:bak:...).")
    ],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="VolumeSnapshot namespace.")],
    name: Annotated[str, typer.Option("--name", help="VolumeSnapshot name.")],
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="Backup target (not needed with a handle).")
    ] = None,
    driver: Annotated[str, typer.Option("--driver", help="CSI driver name.")] = DEFAULT_DRIVER,
    deletion_policy: Annotated[
        str, typer.Option("--deletion-policy", help="Retain (default) or Delete.")
    ] = "Retain",
    snapshot_class: Annotated[
        str | None, typer.Option("--class", help="VolumeSnapshotClass name (optional).")
    ] = None,
    content_name: Annotated[
        str | None, typer.Option("--content-name", help="VolumeSnapshotContent name.")
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="Node whose csi-snapshotter (--node-deployment) handles the content: "
            f"sets the label {MANAGED_BY}.",
        ),
    ] = None,
) -> None:
    """Print the VolumeSnapshotContent + VolumeSnapshot that import a backup into a cluster."""
    if deletion_policy not in _POLICIES:
        raise InvalidArgument(
            f"--deletion-policy must be Retain or Delete, not {deletion_policy!r}"
        )
    wanted = parse_backup_name(backup, target)
    if wanted.target is None:
        raise InvalidArgument("say which target holds the backup with --target, or give a handle")
    named = wanted.target
    _check_dns("namespace", namespace)
    _check_dns("name", name)
    if node is not None:
        _check_node(node)
    repo = open_repository(ctx, named, TargetRuntime())
    manifest = _manifest(repo, wanted, named)
    objects = snapshot_objects(
        backup_handle(named, manifest.backup_id),
        namespace=_check_dns("namespace", namespace),
        name=_check_dns("name", name),
        driver=driver,
        deletion_policy=deletion_policy,
        snapshot_class=snapshot_class,
        content_name=content_name or f"{name}-{manifest.backup_id[:8]}",
        node=node,
    )
    typer.echo("\n".join(f"---\n{to_yaml(o)}" for o in objects))
    if node is None:
        err_console().print(NO_NODE_WARNING, markup=False, highlight=False, soft_wrap=True)
