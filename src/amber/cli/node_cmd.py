"""`amber node` and `amber controller`: run the CSI driver.

`amber node` is the per-node plugin (DaemonSet): Identity, Controller and Node on one socket,
over this node's pool. `amber controller` is the endpoint of `csi-resizer` (Deployment): it
announces that volumes grow on their nodes, and holds no pool. See docs/csi.md.

`amber node --recurring-jobs` also runs the RecurringJob operator (`amber.kube`) for the
volumes of this node, beside the driver, with its own handle on the pool; see docs/jobs.md.
The Kubernetes client is imported only then.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from amber.backup.targets import DEFAULT_CONFIG
from amber.cli.dashboard_cmd import NodeTokenOption, dashboard_config, start_dashboard
from amber.cli.durations import Duration
from amber.cli.state import state
from amber.csi.capabilities import DriverMode
from amber.csi.driver import DriverConfig, serve
from amber.csi.ids import IdKind, parse_id, validate_node_id
from amber.csi.metadata import MetadataType
from amber.domain.errors import NotFound
from amber.logs import LogStyle, setup_server_logging
from amber.metrics import MetricsAddress, parse_address
from amber.ops.handles import parse_backup_id
from amber.ops.snapshots import BackupSettings
from amber.ops.uploads import UploadSettings
from amber.pool import Pool, PoolSettings

if TYPE_CHECKING:
    from amber.backup.repository import Repository
    from amber.jobs.executor import Outcome
    from amber.jobs.runner import Clock
    from amber.jobs.spec import JobSpec
    from amber.kube.api import KubeApi
    from amber.kube.operator import NodeOperator
    from amber.ops.backups import RepositoryOpener

_log = logging.getLogger(__name__)
TIME_SCALE_ENV = "AMBER_JOBS_TIME_SCALE"
DEFAULT_STATE_DIR = Path("/var/lib/amber-controller")

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

MetricsAddressOption = Annotated[
    str | None,
    typer.Option(
        "--metrics-address",
        help="Serve Prometheus metrics over HTTP at HOST:PORT (e.g. 127.0.0.1:9809; default: "
        "not served). See docs/metrics.md.",
    ),
]


def _metrics_address(text: str | None) -> MetricsAddress | None:
    return None if text is None else parse_address(text)


RecurringJobsOption = Annotated[
    bool,
    typer.Option(
        "--recurring-jobs",
        help="Also run the RecurringJob operator (amber.csi.dev) for this node's volumes.",
    ),
]
JobNamespacesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--recurring-jobs-namespace",
        help="Watch RecurringJobs in this namespace only (repeat for more; default: all).",
    ),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig of the RecurringJob operator (default: the pod's service account).",
    ),
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
    recurring_jobs: RecurringJobsOption = False,
    job_namespaces: JobNamespacesOption = None,
    kubeconfig: KubeconfigOption = None,
    metrics_address: MetricsAddressOption = None,
    dashboard_address: Annotated[
        str | None,
        typer.Option(
            "--dashboard-address",
            help="Also serve the web dashboard at HOST:PORT (e.g. 127.0.0.1:8080; reach it "
            "with kubectl port-forward). Off by default.",
        ),
    ] = None,
    dashboard_token: NodeTokenOption = None,
) -> None:
    """Run the node plugin: Identity, Controller and Node services over this node's pool."""
    st = state(ctx)
    validate_node_id(node_id)
    exposed = _metrics_address(metrics_address)
    dashboard = dashboard_config(
        pool or st.pool, targets_config, dashboard_address, dashboard_token
    )
    setup_server_logging(verbose=st.verbose, style=log_format)
    api = _kube_api(kubeconfig) if recurring_jobs else None
    clock = _clock() if recurring_jobs else None  # a bad test knob fails here, in one line
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
        metrics_address=exposed,
    )

    def open_pool(root: Path) -> Pool:
        return Pool.open(root, settings=PoolSettings(), failpoint=st.failpoint())

    operators: list[tuple[NodeOperator, Pool]] = []

    def open_pool_and_jobs(root: Path) -> Pool:
        pool = open_pool(root)
        if api is not None and clock is not None:  # after the driver's open: pool recovered
            own = open_pool(root)  # closed after the operator stopped, not with the driver's
            operators.append((_start_operator(api, clock, node_id, own, job_namespaces), own))
        return pool

    stop_dashboard = None
    if dashboard is not None:
        stop_dashboard = start_dashboard(
            dashboard, open_pool(dashboard.pool), metrics_served=exposed is not None
        )
    try:
        serve(config, open_pool=open_pool_and_jobs)
    finally:
        for operator, own in operators:
            operator.stop()
            own.close()
        if stop_dashboard is not None:
            stop_dashboard()  # its thread, its pool handle and metric sources


def _kube_api(kubeconfig: Path | None) -> KubeApi:
    from amber.kube.api import connect  # the Kubernetes client: only with --recurring-jobs

    return connect(kubeconfig)


def _clock() -> Clock:
    from amber.jobs.runner import SystemClock
    from amber.kube.clock import ScaledClock, parse_scale

    scale = os.environ.get(TIME_SCALE_ENV)
    if scale is None:
        return SystemClock()
    clock = ScaledClock(parse_scale(scale))
    _log.warning("%s=%s: the recurring-job clock runs faster (a test knob)", TIME_SCALE_ENV, scale)
    return clock


def _start_operator(
    api: KubeApi, clock: Clock, node_id: str, pool: Pool, namespaces: list[str] | None
) -> NodeOperator:
    from amber.kube.operator import NodeOperator, OperatorSettings

    operator = NodeOperator(
        api,
        node_id,
        PoolWork(pool),
        pool.root,
        clock=clock,
        settings=OperatorSettings(namespaces=tuple(namespaces or ())),
    )
    operator.start()
    return operator


class PoolWork:
    """What the operator asks of this node's pool, by CSI handles: they are parsed here, at
    the edge that knows the CSI IDs, and answered by `amber.kube.pool.PoolChanges`."""

    def __init__(self, pool: Pool) -> None:
        from amber.kube.pool import PoolChanges

        self.pool = pool
        self.changes = PoolChanges(pool)

    def changed(self, job: JobSpec, volume_handle: str, snapshot_handle: str) -> bool | None:
        volume = parse_id(volume_handle, IdKind.VOLUME)
        if volume is None:
            return None
        snapshot = parse_id(snapshot_handle, IdKind.SNAPSHOT)
        if snapshot is not None:
            return self.changes.changed(job, volume.name, snapshot.name)
        if parse_backup_id(snapshot_handle) is not None:  # compared with the target's base
            return self.changes.changed(job, volume.name, None)
        return None

    def trim(self, job: JobSpec, volume_handle: str) -> Outcome:
        volume = parse_id(volume_handle, IdKind.VOLUME)
        if volume is None:
            raise NotFound(f"volume {volume_handle} is not one of this node's")
        return self.changes.trim(job, volume.name)


def controller(
    ctx: typer.Context,
    endpoint: EndpointOption = DEFAULT_ENDPOINT,
    grace: GraceOption = 30.0,
    log_requests: LogRequestsOption = False,
    log_format: LogFormatOption = LogStyle.AUTO,
    recurring_jobs: RecurringJobsOption = False,
    job_namespaces: JobNamespacesOption = None,
    kubeconfig: KubeconfigOption = None,
    targets_config: Annotated[
        Path,
        typer.Option(
            "--targets-config",
            help="Targets file of the prune and check RecurringJobs (mount it from a Secret).",
        ),
    ] = DEFAULT_CONFIG,
    state_dir: Annotated[
        Path,
        typer.Option(
            "--state-dir",
            help="Where the prune and check RecurringJobs keep their run records.",
        ),
    ] = DEFAULT_STATE_DIR,
    metrics_address: MetricsAddressOption = None,
) -> None:
    """Run the controller endpoint for csi-resizer (volumes grow on their nodes)."""
    exposed = _metrics_address(metrics_address)
    setup_server_logging(verbose=state(ctx).verbose, style=log_format)
    operator = None
    if recurring_jobs:
        from amber.kube.operator import ControllerOperator, OperatorSettings

        api, clock = _kube_api(kubeconfig), _clock()
        state_dir.mkdir(parents=True, exist_ok=True)
        operator = ControllerOperator(
            api,
            _repository_opener(targets_config),
            state_dir,
            clock=clock,
            settings=OperatorSettings(namespaces=tuple(job_namespaces or ())),
        )
        operator.start()
    try:
        serve(
            DriverConfig(
                mode=DriverMode.CONTROLLER,
                endpoint=endpoint,
                grace=grace,
                log_requests=log_requests,
                metrics_address=exposed,
            )
        )
    finally:
        if operator is not None:
            operator.stop()


def _repository_opener(targets_config: Path) -> RepositoryOpener:
    """Opens a target of the targets file by name, as the nodes do (`amber.ops.targets`)."""
    from amber.ops.targets import TargetResolver

    resolver = TargetResolver(targets_config)

    def open_repository(target: str, *, create: bool = False) -> Repository:
        return resolver.resolve(target).open(create=create)

    return open_repository
