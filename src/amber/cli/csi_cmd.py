"""`amber csi`: talk to a running driver over its socket, the way Kubernetes would.

For debugging without Kubernetes: each subcommand sends one (or a few) CSI RPCs to the driver
at `--endpoint` and prints the reply. The command plays the CO's part where the spec gives it
one: it creates the staging directory before NodeStageVolume, reads the volume's mode from
ControllerGetVolume to build the volume capability, and after `expand --path` calls
NodeExpandVolume when the controller says the node has work left.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Final

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from rich.table import Table

from amber.cli import output
from amber.cli.state import key_values, state
from amber.csi import params
from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.domain import errors
from amber.domain.units import format_size, parse_size

app = typer.Typer(
    help="Call a running Amber CSI driver over its socket (debugging without Kubernetes).",
    no_args_is_help=True,
)

DEFAULT_ENDPOINT: Final = "unix:///run/amber/csi.sock"
RPC_TIMEOUT: Final = 300.0
_MODE_KEY: Final = "amber.csi.dev/mode"
_FSTYPE_KEY: Final = "amber.csi.dev/fsType"
_ERRORS: Final[dict[grpc.StatusCode, type[errors.AmberError]]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.OutOfSpace,
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
    grpc.StatusCode.ABORTED: errors.Busy,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DATA_LOSS: errors.Corrupt,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
}

EndpointOption = Annotated[
    str,
    typer.Option("--endpoint", envvar="CSI_ENDPOINT", help="The driver's socket (unix://...)."),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="KEY=VALUE: a class parameter, as a StorageClass or VolumeSnapshotClass "
        "would send (repeatable).",
    ),
]
SecretsOption = Annotated[
    Path | None,
    typer.Option(
        "--secrets-file",
        help="A YAML (key: value lines) or JSON map sent as the call's secrets (never printed).",
    ),
]


_SECRET_KEY_RE: Final = re.compile(r"[-._a-zA-Z0-9]+")
"""What a Kubernetes Secret allows as a key."""


def _params(pairs: list[str] | None) -> dict[str, str]:
    return key_values(pairs, "--param")


def _secrets(path: Path | None) -> dict[str, str]:
    """The secrets map in `path`: a JSON object of strings, or `key: value` lines (YAML's flat
    form: `#` comments, quoted values). Errors name the file and line, never a value."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise errors.InvalidArgument(f"cannot read the secrets file {path}: {e}") from None
    if text.lstrip().startswith("{"):
        return _json_secrets(path, text)
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = f"{line} ".partition(": ")
        if not sep or not _SECRET_KEY_RE.fullmatch(key):
            raise errors.InvalidArgument(
                f"line {number} of the secrets file {path} is not 'key: value'"
            )
        found[key.strip()] = _unquote(value.strip(), path, number)
    return found


def _unquote(value: str, path: Path, number: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if value.startswith('"'):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if not isinstance(decoded, str):
            raise errors.InvalidArgument(
                f"line {number} of the secrets file {path} has a badly quoted value"
            )
        return decoded
    return value


def _json_secrets(path: Path, text: str) -> dict[str, str]:
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in document.items()
    ):
        raise errors.InvalidArgument(
            f"the secrets file {path} is not a JSON object of strings to strings"
        )
    return document


class Driver:
    """A connection to a driver, with the CO's bits of behaviour."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(endpoint)
        self.identity = csi_pb2_grpc.IdentityStub(self._channel)
        self.controller = csi_pb2_grpc.ControllerStub(self._channel)
        self.node = csi_pb2_grpc.NodeStub(self._channel)

    def call(self, method: Callable[..., Any], request: Any) -> Any:
        """One RPC; a gRPC error becomes the matching domain error (and exit code)."""
        try:
            return method(request, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            if code is grpc.StatusCode.UNAVAILABLE and "connect" in details:
                details = f"cannot reach the driver at {self.endpoint}: {details}"
            error = _ERRORS.get(code, errors.SystemFailure)
            raise error(f"{code.name}: {details}") from None

    def capability(self, volume_id: str, *, read_only: bool = False) -> Any:
        """The capability a CO would send for this volume (from its volume_context)."""
        reply = self.call(
            self.controller.ControllerGetVolume,
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id),
        )
        context = reply.volume.volume_context
        return _capability(
            block=context.get(_MODE_KEY) == "block",
            fs_type=context.get(_FSTYPE_KEY, ""),
            read_only=read_only,
        )

    def close(self) -> None:
        self._channel.close()


def _capability(*, block: bool, fs_type: str = "", read_only: bool = False) -> Any:
    mode = csi_pb2.VolumeCapability.AccessMode
    cap = csi_pb2.VolumeCapability(
        access_mode=mode(
            mode=mode.SINGLE_NODE_READER_ONLY if read_only else mode.SINGLE_NODE_MULTI_WRITER
        )
    )
    if block:
        cap.block.SetInParent()
    else:
        cap.mount.fs_type = fs_type
    return cap


def _json_mode(ctx: typer.Context) -> bool:
    return state(ctx).json


def _emit(ctx: typer.Context, reply: Any, table: Table | None) -> None:
    if _json_mode(ctx) or table is None:
        data = MessageToDict(reply, preserving_proto_field_name=True)
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        output.console().print(output.fit(table, "VOLUME ID", "SNAPSHOT ID", "SOURCE VOLUME"))


def _rows(title: str, rows: list[tuple[str, str]]) -> Table:
    return output.details(title, rows)


def _run(endpoint: str, action: Callable[[Driver], None]) -> None:
    driver = Driver(endpoint)
    try:
        action(driver)
    finally:
        driver.close()


def _source(from_snapshot: str | None, from_volume: str | None) -> Any:
    if from_snapshot and from_volume:
        raise errors.InvalidArgument("use either --from-snapshot or --from-volume, not both")
    source = csi_pb2.VolumeContentSource
    if from_snapshot:
        return source(snapshot=source.SnapshotSource(snapshot_id=from_snapshot))
    if from_volume:
        return source(volume=source.VolumeSource(volume_id=from_volume))
    return None


def _volume_rows(volume: Any) -> list[tuple[str, str]]:
    rows = [
        ("volume id", volume.volume_id),
        ("capacity", f"{format_size(volume.capacity_bytes)} ({volume.capacity_bytes} bytes)"),
    ]
    rows += [(key, value) for key, value in sorted(volume.volume_context.items())]
    source = volume.content_source
    if source.HasField("snapshot"):
        rows.append(("from snapshot", source.snapshot.snapshot_id))
    elif source.HasField("volume"):
        rows.append(("from volume", source.volume.volume_id))
    for topology in volume.accessible_topology:
        rows += [(f"topology {k}", v) for k, v in sorted(topology.segments.items())]
    return rows


# -- identity -----------------------------------------------------------------------------


@app.command("info")
def info(ctx: typer.Context, endpoint: EndpointOption = DEFAULT_ENDPOINT) -> None:
    """Plugin name, version, capabilities, health and node information."""

    def action(d: Driver) -> None:
        plugin = d.call(d.identity.GetPluginInfo, csi_pb2.GetPluginInfoRequest())
        plugin_caps = d.call(
            d.identity.GetPluginCapabilities, csi_pb2.GetPluginCapabilitiesRequest()
        )
        probe = d.call(d.identity.Probe, csi_pb2.ProbeRequest())
        controller = d.call(
            d.controller.ControllerGetCapabilities, csi_pb2.ControllerGetCapabilitiesRequest()
        )
        node = d.call(d.node.NodeGetCapabilities, csi_pb2.NodeGetCapabilitiesRequest())
        node_info = _optional(d, d.node.NodeGetInfo, csi_pb2.NodeGetInfoRequest())
        replies = {
            "plugin": plugin,
            "plugin_capabilities": plugin_caps,
            "probe": probe,
            "controller_capabilities": controller,
            "node_capabilities": node,
        }
        if node_info is not None:
            replies["node"] = node_info
        _emit_info(ctx, replies)

    _run(endpoint, action)


def _optional(d: Driver, method: Callable[..., Any], request: Any) -> Any:
    try:
        return d.call(method, request)
    except errors.SystemFailure:
        return None  # UNIMPLEMENTED: the controller endpoint has no NodeGetInfo


def _emit_info(ctx: typer.Context, replies: dict[str, Any]) -> None:
    if _json_mode(ctx):
        data = {k: MessageToDict(v, preserving_proto_field_name=True) for k, v in replies.items()}
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return
    rpc_names = csi_pb2.ControllerServiceCapability.RPC.Type.Name
    node_names = csi_pb2.NodeServiceCapability.RPC.Type.Name
    rows = [
        ("name", replies["plugin"].name),
        ("version", replies["plugin"].vendor_version),
        ("ready", str(replies["probe"].ready.value)),
        ("plugin capabilities", _plugin_caps(replies["plugin_capabilities"])),
        (
            "controller",
            ", ".join(
                rpc_names(c.rpc.type) for c in replies["controller_capabilities"].capabilities
            )
            or "-",
        ),
        (
            "node",
            ", ".join(node_names(c.rpc.type) for c in replies["node_capabilities"].capabilities),
        ),
    ]
    if "node" in replies:
        node = replies["node"]
        rows.append(("node id", node.node_id))
        rows += [(k, v) for k, v in sorted(node.accessible_topology.segments.items())]
    output.console().print(_rows("CSI driver", rows))


def _plugin_caps(reply: Any) -> str:
    names = []
    for cap in reply.capabilities:
        if cap.HasField("service"):
            names.append(csi_pb2.PluginCapability.Service.Type.Name(cap.service.type))
        elif cap.HasField("volume_expansion"):
            expansion = csi_pb2.PluginCapability.VolumeExpansion.Type.Name
            names.append(f"expansion {expansion(cap.volume_expansion.type)}")
    return ", ".join(names)


# -- volumes ------------------------------------------------------------------------------


@app.command("create-volume")
def create_volume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The CSI name (any string up to 128 bytes).")],
    size: Annotated[str, typer.Option("--size", help="Size, e.g. 10Gi.")],
    block: Annotated[bool, typer.Option("--block", help="A raw block volume.")] = False,
    fs_type: Annotated[str, typer.Option("--fs", help="ext4 or xfs.")] = "",
    from_snapshot: Annotated[
        str | None, typer.Option("--from-snapshot", help="Restore this snapshot ID.")
    ] = None,
    from_volume: Annotated[
        str | None, typer.Option("--from-volume", help="Clone this volume ID.")
    ] = None,
    param: ParamOption = None,
    secrets_file: SecretsOption = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """CreateVolume: an empty volume, a clone or a restore (instant reflink copies)."""
    request = csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=parse_size(size)),
        volume_capabilities=[_capability(block=block, fs_type=fs_type)],
        volume_content_source=_source(from_snapshot, from_volume),
        parameters=_params(param),
        secrets=_secrets(secrets_file),
    )

    def action(d: Driver) -> None:
        reply = d.call(d.controller.CreateVolume, request)
        _emit(ctx, reply, _rows("Volume", _volume_rows(reply.volume)))

    _run(endpoint, action)


@app.command("delete-volume")
def delete_volume(
    volume_id: str, secrets_file: SecretsOption = None, endpoint: EndpointOption = DEFAULT_ENDPOINT
) -> None:
    """DeleteVolume (its snapshots stay)."""
    request = csi_pb2.DeleteVolumeRequest(volume_id=volume_id, secrets=_secrets(secrets_file))
    _run(endpoint, lambda d: d.call(d.controller.DeleteVolume, request))


@app.command("get-volume")
def get_volume(
    ctx: typer.Context,
    volume_id: str,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """ControllerGetVolume: size, source, topology and condition."""

    def action(d: Driver) -> None:
        reply = d.call(
            d.controller.ControllerGetVolume,
            csi_pb2.ControllerGetVolumeRequest(volume_id=volume_id),
        )
        condition = reply.status.volume_condition
        rows = [*_volume_rows(reply.volume), ("condition", _condition(condition))]
        _emit(ctx, reply, _rows("Volume", rows))

    _run(endpoint, action)


def _condition(condition: Any) -> str:
    return f"{'ABNORMAL' if condition.abnormal else 'normal'}: {condition.message}"


@app.command("list-volumes")
def list_volumes(ctx: typer.Context, endpoint: EndpointOption = DEFAULT_ENDPOINT) -> None:
    """ListVolumes (every page)."""

    def action(d: Driver) -> None:
        entries: list[Any] = []
        token = ""
        while True:
            reply = d.call(
                d.controller.ListVolumes, csi_pb2.ListVolumesRequest(starting_token=token)
            )
            entries += reply.entries
            token = reply.next_token
            if not token:
                break
        combined = csi_pb2.ListVolumesResponse(entries=entries)
        table = Table(title="Volumes", title_justify="left")
        for column in ("VOLUME ID", "SIZE", "MODE", "CONDITION"):
            table.add_column(column)
        for e in entries:
            table.add_row(
                e.volume.volume_id,
                format_size(e.volume.capacity_bytes),
                e.volume.volume_context.get(_MODE_KEY, "-"),
                _condition(e.status.volume_condition),
            )
        _emit(ctx, combined, table)

    _run(endpoint, action)


@app.command("expand")
def expand(
    ctx: typer.Context,
    volume_id: str,
    size: Annotated[str, typer.Option("--size", help="The new size, e.g. 20Gi.")],
    path: Annotated[
        Path | None,
        typer.Option("--path", help="Where the volume is published: also run NodeExpandVolume."),
    ] = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """ControllerExpandVolume, then NodeExpandVolume at --path when the node has work left."""
    wanted = csi_pb2.CapacityRange(required_bytes=parse_size(size))

    def action(d: Driver) -> None:
        reply = d.call(
            d.controller.ControllerExpandVolume,
            csi_pb2.ControllerExpandVolumeRequest(volume_id=volume_id, capacity_range=wanted),
        )
        if path is not None and reply.node_expansion_required:
            d.call(
                d.node.NodeExpandVolume,
                csi_pb2.NodeExpandVolumeRequest(
                    volume_id=volume_id, volume_path=str(path), capacity_range=wanted
                ),
            )
        rows = [
            ("capacity", f"{format_size(reply.capacity_bytes)} ({reply.capacity_bytes} bytes)"),
            ("node expansion required", str(reply.node_expansion_required)),
        ]
        _emit(ctx, reply, _rows("Expanded", rows))

    _run(endpoint, action)


# -- snapshots ----------------------------------------------------------------------------


def _snapshot_rows(snapshot: Any) -> list[tuple[str, str]]:
    return [
        ("snapshot id", snapshot.snapshot_id),
        ("source volume", snapshot.source_volume_id),
        ("size", f"{format_size(snapshot.size_bytes)} ({snapshot.size_bytes} bytes)"),
        ("created", output.when(snapshot.creation_time.ToNanoseconds() / 1e9)),
        ("ready", str(snapshot.ready_to_use)),
    ]


@app.command("snapshot")
def snapshot(
    ctx: typer.Context,
    volume_id: str,
    name: str,
    param: ParamOption = None,
    secrets_file: SecretsOption = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """CreateSnapshot of VOLUME_ID named NAME (instant, on the volume's node; a backup snapshot
    with --param type=backup, its target from --param target=NAME or the secrets)."""
    request = csi_pb2.CreateSnapshotRequest(
        name=name,
        source_volume_id=volume_id,
        parameters=_params(param),
        secrets=_secrets(secrets_file),
    )

    def action(d: Driver) -> None:
        reply = d.call(d.controller.CreateSnapshot, request)
        _emit(ctx, reply, _rows("Snapshot", _snapshot_rows(reply.snapshot)))

    _run(endpoint, action)


@app.command("delete-snapshot")
def delete_snapshot(
    snapshot_id: str,
    secrets_file: SecretsOption = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """DeleteSnapshot (a backup snapshot's target may need the secrets)."""
    request = csi_pb2.DeleteSnapshotRequest(snapshot_id=snapshot_id, secrets=_secrets(secrets_file))
    _run(endpoint, lambda d: d.call(d.controller.DeleteSnapshot, request))


@app.command("list-snapshots")
def list_snapshots(
    ctx: typer.Context,
    volume_id: Annotated[
        str, typer.Option("--volume", help="Only snapshots of this volume ID.")
    ] = "",
    secrets_file: SecretsOption = None,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """ListSnapshots (every page)."""
    secrets = _secrets(secrets_file)

    def action(d: Driver) -> None:
        entries: list[Any] = []
        token = ""
        while True:
            reply = d.call(
                d.controller.ListSnapshots,
                csi_pb2.ListSnapshotsRequest(
                    source_volume_id=volume_id, starting_token=token, secrets=secrets
                ),
            )
            entries += reply.entries
            token = reply.next_token
            if not token:
                break
        table = Table(title="Snapshots", title_justify="left")
        for column in ("SNAPSHOT ID", "SOURCE VOLUME", "SIZE", "CREATED"):
            table.add_column(column)
        for e in entries:
            s = e.snapshot
            created = output.when(s.creation_time.ToNanoseconds() / 1e9)
            table.add_row(s.snapshot_id, s.source_volume_id, format_size(s.size_bytes), created)
        _emit(ctx, csi_pb2.ListSnapshotsResponse(entries=entries), table)

    _run(endpoint, action)


# -- node ---------------------------------------------------------------------------------


@app.command("stage")
def stage(
    volume_id: str,
    path: Annotated[Path, typer.Argument(help="The staging directory (created if missing).")],
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """NodeStageVolume: attach the volume and mount it (or its device) at PATH."""

    staging = params.validate_path("staging path", str(path.absolute()))

    def action(d: Driver) -> None:
        try:
            staging.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise errors.FailedPrecondition(
                f"cannot create the staging directory {staging}: {e.strerror}"
            ) from e
        request = csi_pb2.NodeStageVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(staging),
            volume_capability=d.capability(volume_id),
        )
        d.call(d.node.NodeStageVolume, request)

    _run(endpoint, action)


@app.command("unstage")
def unstage(volume_id: str, path: Path, endpoint: EndpointOption = DEFAULT_ENDPOINT) -> None:
    """NodeUnstageVolume: unmount the staging path and free the loop device."""
    request = csi_pb2.NodeUnstageVolumeRequest(
        volume_id=volume_id, staging_target_path=str(path.absolute())
    )
    _run(endpoint, lambda d: d.call(d.node.NodeUnstageVolume, request))


@app.command("publish")
def publish(
    volume_id: str,
    staging: Path,
    target: Path,
    read_only: Annotated[bool, typer.Option("--read-only", help="Publish read-only.")] = False,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """NodePublishVolume: bind the staged volume onto TARGET (a directory, or a device file)."""

    def action(d: Driver) -> None:
        request = csi_pb2.NodePublishVolumeRequest(
            volume_id=volume_id,
            staging_target_path=str(staging.absolute()),
            target_path=str(target.absolute()),
            volume_capability=d.capability(volume_id),
            readonly=read_only,
        )
        d.call(d.node.NodePublishVolume, request)

    _run(endpoint, action)


@app.command("unpublish")
def unpublish(volume_id: str, target: Path, endpoint: EndpointOption = DEFAULT_ENDPOINT) -> None:
    """NodeUnpublishVolume: unmount TARGET and remove it."""
    request = csi_pb2.NodeUnpublishVolumeRequest(
        volume_id=volume_id, target_path=str(target.absolute())
    )
    _run(endpoint, lambda d: d.call(d.node.NodeUnpublishVolume, request))


@app.command("stats")
def stats(
    ctx: typer.Context,
    volume_id: str,
    path: Path,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
) -> None:
    """NodeGetVolumeStats: bytes, inodes and condition of the volume at PATH."""

    def action(d: Driver) -> None:
        reply = d.call(
            d.node.NodeGetVolumeStats,
            csi_pb2.NodeGetVolumeStatsRequest(
                volume_id=volume_id, volume_path=str(path.absolute())
            ),
        )
        unit = csi_pb2.VolumeUsage.Unit.Name
        rows = [
            (unit(u.unit).lower(), f"total {u.total}, used {u.used}, available {u.available}")
            for u in reply.usage
        ]
        rows.append(("condition", _condition(reply.volume_condition)))
        _emit(ctx, reply, _rows("Volume stats", rows))

    _run(endpoint, action)
