"""Building and running the driver: the servicers of a mode, on a CSIServer, until SIGTERM.

`DriverConfig` is read once at the edge (`amber node`, `amber controller`); nothing here reads
the environment. Node mode opens the pool first -- which runs its recovery, so that attachments
whose mounts vanished in a reboot are dropped before the first NodeStageVolume arrives -- and
serves Identity, Controller and Node. Controller mode needs no pool.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from amber.csi.capabilities import DriverMode, plugin_capabilities
from amber.csi.controller import ControllerServicer, ResizerControllerServicer
from amber.csi.group import GroupControllerServicer
from amber.csi.identity import IdentityServicer
from amber.csi.ids import validate_node_id
from amber.csi.logging import RpcLogInterceptor
from amber.csi.metadata import MetadataType, SnapshotMetadataServicer
from amber.csi.metrics import NodeMetrics
from amber.csi.node import NodeServicer, ResizerNodeServicer
from amber.csi.objects import LocalObjects
from amber.csi.server import CSIServer, Registration, registration_for
from amber.domain.errors import Unavailable
from amber.metrics import MetricsAddress
from amber.ops.snapshots import BackupSettings, BackupSnapshots
from amber.pool import Pool

__all__ = ["DriverConfig", "build_servicers", "pool_health", "serve"]

_log = logging.getLogger(__name__)
DB_NAME: Final = "amber.db"
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class DriverConfig:
    """How one driver process runs."""

    mode: DriverMode
    """Which services to serve (node: all three; controller: the csi-resizer endpoint)."""
    endpoint: str
    """Where to listen: unix:///path/to/csi.sock."""
    node_id: str = ""
    """This node's ID (the Kubernetes node name); node mode only."""
    pool: Path | None = None
    """The pool directory; node mode only."""
    max_volumes: int = 0
    """NodeGetInfo's max_volumes_per_node (0: no limit announced)."""
    grace: float = 30.0
    """Seconds calls in flight get to finish after SIGTERM."""
    workers: int = 16
    """RPCs served at once."""
    log_requests: bool = False
    """Log every request (redacted) with its RPC line."""
    backups: BackupSettings = field(default_factory=BackupSettings)
    """Backup snapshots: the targets file and retry settings; node mode only."""
    metadata_type: MetadataType = MetadataType.VARIABLE
    """How SnapshotMetadata reports ranges (extents or fixed blocks); node mode only."""
    metrics_address: MetricsAddress | None = None
    """Where to serve Prometheus metrics over HTTP (None: not served)."""


def pool_health(pool: Pool) -> Callable[[], bool | None]:
    """Probe's check: the pool directory and its metadata are there and answer."""

    def check() -> bool | None:
        try:
            db = os.stat(pool.root / DB_NAME)
            pool.status()
        except OSError as e:
            raise Unavailable(f"the pool at {pool.root} is not usable: {e.strerror or e}") from e
        except Exception as e:  # sqlite errors and the like: report, never crash Probe
            raise Unavailable(f"the pool at {pool.root} does not answer: {e}") from e
        if db.st_size == 0:
            raise Unavailable(f"the pool metadata {pool.root / DB_NAME} is empty")
        return True

    return check


def build_servicers(
    config: DriverConfig, pool: Pool | None, backups: BackupSnapshots | None = None
) -> list[Registration]:
    """The registrations of `config.mode` (node mode needs the open pool and backups)."""
    if config.mode is DriverMode.CONTROLLER:
        identity = IdentityServicer(plugin_capabilities(config.mode))
        return [
            registration_for(identity),
            registration_for(ResizerControllerServicer()),
            registration_for(ResizerNodeServicer()),
        ]
    assert pool is not None
    assert backups is not None
    objects = LocalObjects(pool, config.node_id)
    return [
        registration_for(IdentityServicer(plugin_capabilities(config.mode), pool_health(pool))),
        registration_for(ControllerServicer(objects, backups)),
        registration_for(NodeServicer(objects, max_volumes=config.max_volumes)),
        registration_for(GroupControllerServicer(objects, backups)),
        registration_for(SnapshotMetadataServicer(objects, config.metadata_type)),
    ]


def serve(config: DriverConfig, *, open_pool: Callable[[Path], Pool] = Pool.open) -> None:
    """Run the driver until SIGTERM/SIGINT; the pool is closed and the socket removed after."""
    pool = None
    backups = None
    if config.mode is DriverMode.NODE:
        validate_node_id(config.node_id)
        if config.pool is None:
            raise Unavailable("node mode needs a pool (--pool)")
        pool = open_pool(config.pool)
        for line in pool.recovered:
            _log.warning("pool recovery: %s", line)
        try:
            backups = BackupSnapshots(pool, config.node_id, config.backups)
        except BaseException:
            pool.close()  # an open pool keeps its filesystem busy: never leave it behind
            raise
        backups.start()
    exposed = None
    try:
        exposed = _start_metrics(config, pool)
        server = CSIServer(
            config.endpoint,
            build_servicers(config, pool, backups),
            max_workers=config.workers,
            grace=config.grace,
            interceptor=RpcLogInterceptor(log_requests=config.log_requests),
        )
        _start(server, pool)
        _log.info(
            "amber %s plugin serving on %s%s",
            config.mode.value,
            config.endpoint,
            f" for node {config.node_id!r} with pool {config.pool}" if pool else "",
        )
        server.wait()
    finally:
        if exposed is not None:
            exposed.stop()
        if backups is not None:
            backups.close()
        if pool is not None:
            pool.close()


STARTED_FAILPOINT: Final = "csi.server-started"
"""Reached between the server's start and its signal handlers (tests send a signal there)."""


def _start(server: CSIServer, pool: Pool | None) -> None:
    """Start serving with no window for SIGTERM/SIGINT: one that arrives while the server
    starts is held, then stops it gracefully once its handlers are installed."""
    held: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in _STOP_SIGNALS
    }
    try:
        server.start()
        if pool is not None:
            pool.ctx.failpoint(STARTED_FAILPOINT)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    server.install_signal_handlers(_STOP_SIGNALS)
    if held:
        _log.info("received %s while starting", signal.Signals(held[0]).name)
        server.stop()


def _start_metrics(config: DriverConfig, pool: Pool | None) -> NodeMetrics | None:
    """Serve the metrics when asked (node mode: with the pool's and the targets' sources)."""
    if config.metrics_address is None:
        return None
    exposed = NodeMetrics(
        config.metrics_address,
        pool,
        config.backups.targets_config if pool is not None else None,
    )
    exposed.start()
    return exposed
