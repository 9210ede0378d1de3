"""Running the dashboard: bind first (so the printed address is ready), then uvicorn.

`serve` runs in the foreground until SIGINT/SIGTERM (`amber dashboard`, the end of
`amber demo`); `start_in_thread` runs it beside the CSI server in `amber node`.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

from amber.backup.targets import TargetConfig, TargetRuntime
from amber.domain.errors import Unavailable
from amber.pool import Pool
from amber.pool.context import no_failpoint
from amber.web.config import Address, DashboardConfig
from amber.web.context import WebContext

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger(__name__)
STOP_WAIT = 15.0
"""How long `start_in_thread`'s stop waits for the server thread (uvicorn's graceful shutdown
gives requests in flight 5 s)."""


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
) -> tuple[WebContext, object]:
    """The context of the requests (the caller closes it) and the uvicorn server."""
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
    return ctx, uvicorn.Server(
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
    """Serve in the foreground until SIGTERM/SIGINT; `on_ready` hears the bound address. The
    requests' context is closed when the server stops (SIGTERM: a normal return; SIGINT:
    KeyboardInterrupt once the server has stopped)."""
    import uvicorn

    sock = bind(config.address)
    ctx, server = _server(config, pool, runtime, failpoint)
    assert isinstance(server, uvicorn.Server)
    try:
        with _signals_stop(server) as received:
            on_ready(bound_address(sock, config.address))
            server.run(sockets=[sock])
        if signal.SIGINT in received:
            raise KeyboardInterrupt  # Ctrl-C: the CLI's exit 130, after the clean-up
    finally:
        ctx.close()


@contextmanager
def _signals_stop(server: uvicorn.Server) -> Iterator[list[int]]:
    """SIGTERM and SIGINT stop the server, then `run()` returns; yields the signals received.

    uvicorn stops gracefully on either and then raises it again under the handler it found.
    Under the default SIGTERM action the process died before anything was closed (the job
    records, the pool); and with Python's own SIGINT handler in place, `asyncio.run()` puts its
    runner's handler under uvicorn's, which lost the raised-again SIGINT whenever the main task
    had already ended (exit 0 instead of 130, now and then). Handled here, both only record the
    signal: the caller decides what it means once the server has stopped."""
    received: list[int] = []

    def stop(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        server.should_exit = True  # before uvicorn's own handler (or raised again after it)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_in_thread(config: DashboardConfig, pool: Pool, runtime: TargetRuntime) -> Running:
    """Serve in a daemon thread (beside the CSI server); returns at once."""
    import uvicorn

    sock = bind(config.address)
    ctx, server = _server(config, pool, runtime)
    assert isinstance(server, uvicorn.Server)
    # uvicorn leaves signals alone outside the main thread: the CSI server keeps its own.

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except Exception:
            log.exception("the dashboard stopped")
        finally:
            ctx.close()

    thread = threading.Thread(target=run, name="dashboard", daemon=True)
    thread.start()

    def stop() -> None:
        """Stop serving (requests in flight get uvicorn's graceful timeout) and wait for the
        thread, which closes the requests' context."""
        server.should_exit = True
        thread.join(STOP_WAIT)
        if thread.is_alive():
            log.warning("the dashboard did not stop within %.0fs", STOP_WAIT)

    return Running(bound_address(sock, config.address), stop, thread)
