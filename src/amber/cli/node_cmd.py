"""`amber node` and `amber controller`: run the CSI driver.

`amber node` is the per-node plugin (DaemonSet): Identity, Controller and Node on one socket,
over this node's pool. `amber controller` is the endpoint of `csi-resizer` (Deployment): it
announces that volumes grow on their nodes, and holds no pool. See docs/csi.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from amber.backup.targets import DEFAULT_CONFIG
from amber.cli.durations import Duration
from amber.cli.state import state
from amber.csi.capabilities import DriverMode
from amber.csi.driver import DriverConfig, serve
from amber.csi.ids import validate_node_id
from amber.csi.metadata import MetadataType
from amber.logs import LogStyle, setup_server_logging
from amber.ops.snapshots import BackupSettings
from amber.ops.uploads import UploadSettings
from amber.pool import Pool, PoolSettings

DEFAULT_ENDPOINT = "unix:///run/amber/csi.sock"
MAX_VOLUMES_LIMIT = 2**31 - 1
"""Kubernetes keeps a node's volume limit in an int32 (CSINode `allocatable.count`)."""

EndpointOption = Annotated[
    str,
    typer.Option(
        "--endpoint",
        envvar="CSI_ENDPOINT",
        help="Where to listen: unix:///path/to/csi.sock.",
    ),
]
GraceOption = Annotated[
    float,
    typer.Option(
        "--grace",
        click_type=Duration(),
        help="How long calls in flight get to finish after SIGTERM (30s, 2m; bare: seconds).",
    ),
]
LogRequestsOption = Annotated[
    bool,
    typer.Option("--log-requests", help="Log every request (secrets redacted) with its RPC."),
]


LogFormatOption = Annotated[
    LogStyle,
    typer.Option(
        "--log-format",
        help="auto: logfmt on a terminal, JSON lines otherwise (time, level, logger, message, "
        "request_id).",
    ),
]


def node(
    ctx: typer.Context,
    node_id: Annotated[
        str,
        typer.Option(
            "--node-id",
            envvar="AMBER_NODE_ID",
            help="This node's ID: the Kubernetes node name.",
        ),
    ],
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    pool: Annotated[
        Path | None,
        typer.Option("--pool", help="Pool directory (overrides the global --pool)."),
    ] = None,
    max_volumes: Annotated[
        int,
        typer.Option(
            "--max-volumes",
            min=0,
            max=MAX_VOLUMES_LIMIT,
            help="Volumes per node announced (0: no limit).",
        ),
    ] = 0,
    grace: GraceOption = 30.0,
    log_requests: LogRequestsOption = False,
    log_format: LogFormatOption = LogStyle.AUTO,
    targets_config: Annotated[
        Path,
        typer.Option(
            "--targets-config",
            help="Targets file of backup snapshot classes (mount it from a Secret).",
        ),
    ] = DEFAULT_CONFIG,
    upload_retry: Annotated[
        float,
        typer.Option(
            "--upload-retry",
            click_type=Duration(allow_zero=False, at_least=0.01),
            help="First pause after a failed upload (2s, 500ms; bare: seconds).",
        ),
    ] = 2.0,
    upload_attempts: Annotated[
        int,
        typer.Option("--upload-attempts", min=1, help="Upload attempts before a snapshot fails."),
    ] = 8,
    metadata_type: Annotated[
        MetadataType,
        typer.Option(
            "--snapshot-metadata-type",
            help="How SnapshotMetadata reports ranges: variable (extents) or fixed (4 KiB blocks).",
        ),
    ] = MetadataType.VARIABLE,
) -> None:
    """Run the node plugin: Identity, Controller and Node services over this node's pool."""
    st = state(ctx)
    validate_node_id(node_id)
    setup_server_logging(verbose=st.verbose, style=log_format)
    config = DriverConfig(
        mode=DriverMode.NODE,
        endpoint=endpoint,
        node_id=node_id,
        pool=pool or st.pool,
        max_volumes=max_volumes,
        grace=grace,
        log_requests=log_requests,
        backups=BackupSettings(
            targets_config=targets_config,
            uploads=UploadSettings(retry_base=upload_retry, max_attempts=upload_attempts),
        ),
        metadata_type=metadata_type,
    )

    def open_pool(root: Path) -> Pool:
        return Pool.open(root, settings=PoolSettings(), failpoint=st.failpoint())

    serve(config, open_pool=open_pool)


def controller(
    ctx: typer.Context,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    grace: GraceOption = 30.0,
    log_requests: LogRequestsOption = False,
    log_format: LogFormatOption = LogStyle.AUTO,
) -> None:
    """Run the controller endpoint for csi-resizer (volumes grow on their nodes)."""
    setup_server_logging(verbose=state(ctx).verbose, style=log_format)
    serve(
        DriverConfig(
            mode=DriverMode.CONTROLLER, endpoint=endpoint, grace=grace, log_requests=log_requests
        )
    )
