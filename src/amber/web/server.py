"""Running the dashboard: bind first (so the printed address is ready), then uvicorn.

`serve` runs in the foreground until SIGINT/SIGTERM (`amber dashboard`, the end of
`amber demo`); `start_in_thread` runs it beside the CSI server in `amber node`.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from amber.backup.targets import TargetConfig, TargetRuntime
from amber.domain.errors import Unavailable
from amber.pool import Pool
from amber.pool.context import no_failpoint
from amber.web.config import Address, DashboardConfig
from amber.web.context import WebContext

log = logging.getLogger(__name__)


def bind(address: Address) -> socket.socket:
    """A listening socket at `address` (port 0: any free port); Unavailable if it is taken."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it (Linux): a response written as headers then body must
    # not wait for the client's delayed ACK (Nagle), which added 40 ms to every page.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((address.host, address.port))
    except OSError as e:
        sock.close()
        raise Unavailable(
            f"cannot listen on {address.host}:{address.port}: {e.strerror or e}"
        ) from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def bound_address(sock: socket.socket, address: Address) -> Address:
    """The address a socket really listens on (the port chosen for port 0)."""
    return Address(address.host, sock.getsockname()[1])


@dataclass
class Running:
    """A dashboard being served: where, and how to stop it."""

    address: Address
    stop: Callable[[], None]
    thread: threading.Thread | None = None


def _server(
    config: DashboardConfig,
    pool: Pool,
    runtime: TargetRuntime,
    failpoint: Callable[[str], None] = no_failpoint,
) -> object:
    import uvicorn

    from amber.web.app import create_app

    ctx = WebContext(
        pool,
        TargetConfig(config.targets_config),
        runtime,
        failpoint=failpoint,
        jobs_file=config.jobs_file,
    )
    app = create_app(config, ctx)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
    )


def serve(
    config: DashboardConfig,
    pool: Pool,
    runtime: TargetRuntime,
    on_ready: Callable[[Address], None],
    failpoint: Callable[[str], None] = no_failpoint,
) -> None:
    """Serve in the foreground until interrupted; `on_ready` hears the bound address."""
    import uvicorn

    sock = bind(config.address)
    server = _server(config, pool, runtime, failpoint)
    assert isinstance(server, uvicorn.Server)
    on_ready(bound_address(sock, config.address))
    server.run(sockets=[sock])


def start_in_thread(config: DashboardConfig, pool: Pool, runtime: TargetRuntime) -> Running:
    """Serve in a daemon thread (beside the CSI server); returns at once."""
    import uvicorn

    sock = bind(config.address)
    server = _server(config, pool, runtime)
    assert isinstance(server, uvicorn.Server)
    # uvicorn leaves signals alone outside the main thread: the CSI server keeps its own.

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except Exception:
            log.exception("the dashboard stopped")

    thread = threading.Thread(target=run, name="dashboard", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return Running(bound_address(sock, config.address), stop, thread)
