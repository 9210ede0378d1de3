"""`amber backup import`: the Kubernetes objects that make a backup a VolumeSnapshot.

Another cluster (or the same one after a disaster) that has the backup's target configured
under the same name can restore any backup of it: this prints a pre-provisioned
`VolumeSnapshotContent` whose `source.snapshotHandle` is the backup's handle, and the
`VolumeSnapshot` bound to it (snapshot.storage.k8s.io/v1), ready for `kubectl apply -f -`.
The backup is looked up on the target first, so a typo fails here, not in the cluster.
The output is YAML (written in its JSON-compatible flow of quoted scalars).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer

from amber.backup.targets import backup_handle, open_target_repository, parse_backup_ref
from amber.cli.target_cmd import targets_config
from amber.domain.errors import InvalidArgument

DEFAULT_DRIVER = "amber.csi.dev"
API_VERSION = "snapshot.storage.k8s.io/v1"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_POLICIES = ("Retain", "Delete")


def _check_dns(what: str, value: str) -> str:
    if _DNS_LABEL.match(value) is None:
        raise InvalidArgument(f"{what} {value!r} is not a Kubernetes name (DNS label)")
    return value


def snapshot_objects(
    handle: str,
    *,
    namespace: str,
    name: str,
    driver: str,
    deletion_policy: str,
    snapshot_class: str | None,
    content_name: str,
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
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": content_name},
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


def import_backup(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help="Backup id or handle.")],
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
) -> None:
    """Print the VolumeSnapshotContent + VolumeSnapshot that import a backup into a cluster."""
    if deletion_policy not in _POLICIES:
        raise InvalidArgument(
            f"--deletion-policy must be Retain or Delete, not {deletion_policy!r}"
        )
    named, backup_id = parse_backup_ref(backup, target)
    if named is None:
        raise InvalidArgument("say which target holds the backup with --target, or give a handle")
    config = targets_config(ctx)
    repo = open_target_repository(config.get(named))
    manifest = repo.load_manifest(backup_id)
    objects = snapshot_objects(
        backup_handle(named, manifest.backup_id),
        namespace=_check_dns("namespace", namespace),
        name=_check_dns("name", name),
        driver=driver,
        deletion_policy=deletion_policy,
        snapshot_class=snapshot_class,
        content_name=content_name or f"{name}-{manifest.backup_id[:8]}",
    )
    typer.echo("\n".join(f"---\n{to_yaml(o)}" for o in objects))
