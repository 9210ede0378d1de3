"""The gRPC server that carries the CSI services: endpoint, thread pool, logging, shutdown.

`CSIServer` serves the servicers it is given on a unix socket (or, for debugging only, a TCP
port), logs one line per RPC through `RpcLogInterceptor`, counts every RPC in the metrics
(`MetricsInterceptor`), and shuts down gracefully: on stop
(or SIGTERM/SIGINT after `install_signal_handlers()`) it refuses new calls at once, lets the
calls in flight finish within the grace period, cancels what is left, and removes its socket.

Start-up is careful with the socket path: it creates the parent directory, replaces a stale
socket left by a crashed predecessor, and refuses to start when another server still answers
on it or when the path is not a socket at all.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import grpc

from amber.csi._proto import csi_pb2_grpc
from amber.csi.logging import RpcLogInterceptor
from amber.csi.metrics import MetricsInterceptor
from amber.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
)

__all__ = ["CSIServer", "Endpoint", "Registration", "parse_endpoint", "registration_for"]

_log = logging.getLogger(__name__)

Registration = tuple[Callable[[Any, Any], None], object]
"""(`csi_pb2_grpc.add_<Service>Servicer_to_server`, servicer instance)."""

UNIX_PATH_MAX: Final = 107
"""Longest socket path the kernel accepts (sun_path is 108 bytes with the terminating NUL)."""

_LIVE_PROBE_TIMEOUT: Final = 1.0
_WAIT_SLICE: Final = 0.25


@dataclass(frozen=True)
class Endpoint:
    """A parsed listen address: a unix socket path, or a TCP host and port."""

    scheme: str
    """"unix" or "tcp"."""
    path: Path | None = None
    """The socket path (unix only)."""
    host: str = ""
    """The host or address to bind (tcp only)."""
    port: int = 0
    """The port (tcp only; 0 picks a free one)."""

    @property
    def grpc_address(self) -> str:
        """The address in the form `grpc.Server.add_insecure_port` expects."""
        if self.path is not None:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(endpoint: str) -> Endpoint:
    """Parse `unix:///abs/path.sock` (also `unix:/abs/path.sock`) or `tcp://host:port`.

    TCP is accepted for debugging only: the CSI spec and the Kubernetes sidecars use unix
    sockets, and a TCP port has no filesystem permissions to protect it.
    """
    if endpoint.startswith("unix:"):
        raw = endpoint.removeprefix("unix:")
        raw = raw.removeprefix("//")  # unix:///abs -> /abs; unix://rel -> rel (refused)
        if not raw.startswith("/"):
            raise InvalidArgument(
                f"CSI endpoint {endpoint!r} needs an absolute socket path, "
                "like unix:///var/lib/kubelet/plugins/amber.csi.dev/csi.sock"
            )
        if len(os.fsencode(raw)) > UNIX_PATH_MAX:
            raise InvalidArgument(
                f"CSI endpoint {endpoint!r}: the socket path is longer than "
                f"{UNIX_PATH_MAX} bytes, which unix sockets cannot use; choose a shorter path"
            )
        return Endpoint("unix", path=Path(raw))
    if endpoint.startswith("tcp://"):
        return _parse_tcp(endpoint)
    raise InvalidArgument(
        f"CSI endpoint {endpoint!r} is not supported: use unix:///path/to/csi.sock "
        "(or tcp://host:port for debugging)"
    )


def _parse_tcp(endpoint: str) -> Endpoint:
    hostport = endpoint.removeprefix("tcp://")
    host, sep, port_text = hostport.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or "/" in hostport or not port_text.isdigit():
        raise InvalidArgument(f"CSI endpoint {endpoint!r} must look like tcp://127.0.0.1:10000")
    port = int(port_text)
    if port > 65535:
        raise InvalidArgument(f"CSI endpoint {endpoint!r}: port {port} is out of range")
    return Endpoint("tcp", host=host, port=port)


def registration_for(servicer: object) -> Registration:
    """The registration tuple for a servicer, found from the CSI service class it extends."""
    adders = (
        (csi_pb2_grpc.IdentityServicer, csi_pb2_grpc.add_IdentityServicer_to_server),
        (csi_pb2_grpc.ControllerServicer, csi_pb2_grpc.add_ControllerServicer_to_server),
        (csi_pb2_grpc.NodeServicer, csi_pb2_grpc.add_NodeServicer_to_server),
        (csi_pb2_grpc.GroupControllerServicer, csi_pb2_grpc.add_GroupControllerServicer_to_server),
        (
            csi_pb2_grpc.SnapshotMetadataServicer,
            csi_pb2_grpc.add_SnapshotMetadataServicer_to_server,
        ),
    )
    for base, adder in adders:
        if isinstance(servicer, base):
            return adder, servicer
    raise InvalidArgument(f"{type(servicer).__name__} does not extend a CSI servicer class")


class CSIServer:
    """Serve CSI servicers on one endpoint until stopped.

    >>> server = CSIServer("unix:///csi/csi.sock", [registration_for(identity), ...])
    >>> server.start()
    >>> server.install_signal_handlers()   # from the main thread
    >>> server.wait()                      # returns once stopped and cleaned up
    """

    def __init__(
        self,
        endpoint: str,
        servicers: Sequence[Registration],
        *,
        max_workers: int = 16,
        grace: float = 30.0,
        interceptor: RpcLogInterceptor | None = None,
        metrics: MetricsInterceptor | None = None,
    ) -> None:
        self.endpoint = parse_endpoint(endpoint)
        self.grace = grace
        self._servicers = list(servicers)
        self._max_workers = max_workers
        self._interceptor = interceptor or RpcLogInterceptor()
        self._metrics = metrics or MetricsInterceptor()
        self._lock = threading.Lock()
        self._server: Any = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._socket_identity: tuple[int, int, int] | None = None
        self._port = 0
        self._stopping = False
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        """The bound TCP port (useful with tcp://host:0); 0 for unix sockets."""
        return self._port

    def start(self) -> None:
        """Bind the endpoint and start serving. Raises a domain error when it cannot."""
        with self._lock:
            if self._server is not None:
                raise FailedPrecondition("the CSI server was already started")
            if self.endpoint.path is not None:
                _prepare_socket_path(self.endpoint.path)
            self._executor = futures.ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="csi-rpc"
            )
            server = grpc.server(
                self._executor,
                # Metrics outermost: they count the code the log interceptor gives a crash.
                interceptors=[self._metrics, self._interceptor],
                # Never share a TCP port silently with another server (gRPC's default on Linux).
                options=[("grpc.so_reuseport", 0)],
            )
            for add, servicer in self._servicers:
                add(servicer, server)
            try:
                self._port = server.add_insecure_port(self.endpoint.grpc_address)
            except RuntimeError as e:
                self._executor.shutdown(wait=False)
                raise Unavailable(f"cannot listen on {self._describe()}: {e}") from e
            server.start()
            self._server = server
            if self.endpoint.path is not None:
                self._socket_identity = _identity(self.endpoint.path)
                self._port = 0
        _log.info("CSI server listening on %s", self._describe())

    def stop(self, grace: float | None = None) -> None:
        """Stop serving and wait until done; safe to call more than once and from any thread.

        New calls are refused at once; calls in flight get `grace` seconds (default: the
        constructor's) to finish, then are cancelled. The socket file is removed at the end.
        A second call while the first is still waiting cancels the calls in flight now.
        """
        grace = self.grace if grace is None else grace
        with self._lock:
            server = self._server
            if server is None or self._stopped.is_set():
                self._stopped.set()
                return
            again = self._stopping
            self._stopping = True
        if again:
            _log.info("CSI server stopping now: cancelling the calls in flight")
            server.stop(None)
            self._stopped.wait()
            return
        _log.info("CSI server stopping (grace %.1fs)", grace)
        server.stop(grace).wait()
        self._cleanup()
        _log.info("CSI server stopped")
        self._stopped.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped and cleaned up; False if `timeout` ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.is_set():
            left = (
                _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - time.monotonic())
            )
            if left <= 0:
                return False
            # Short slices keep the main thread responsive to signals.
            self._stopped.wait(left)
        return True

    def install_signal_handlers(
        self, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """On SIGTERM/SIGINT, stop gracefully in a background thread; a second signal stops now.

        Must be called from the main thread (a Python rule for signal handlers).
        """

        def stop_after(signum: int) -> None:
            _log.info("received %s", signal.Signals(signum).name)
            self.stop()

        def handle(signum: int, frame: FrameType | None) -> None:
            # Do nothing else here: the handler interrupts the main thread anywhere, even in the
            # middle of a write to the log stream.
            threading.Thread(
                target=stop_after, args=(signum,), name="csi-stop", daemon=True
            ).start()

        for sig in signals:
            signal.signal(sig, handle)

    def _cleanup(self) -> None:
        if self._executor is not None:
            # Calls cancelled after the grace period may still hold a thread (a stuck mount);
            # do not wait for them here.
            self._executor.shutdown(wait=False, cancel_futures=True)
        path = self.endpoint.path
        if path is None or self._socket_identity is None:
            return
        # gRPC usually unlinks its socket when it stops listening. If it is still there, remove
        # it, but only if it is ours: a successor may already have bound the path during our
        # grace period (an inode number alone can be reused at once, hence the ctime).
        with contextlib.suppress(FileNotFoundError):
            if _identity(path) == self._socket_identity:
                path.unlink()

    def _describe(self) -> str:
        if self.endpoint.path is not None:
            return f"unix://{self.endpoint.path}"
        return f"tcp://{self.endpoint.host}:{self._port or self.endpoint.port}"


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino, st.st_ctime_ns


def _prepare_socket_path(path: Path) -> None:
    """Create the parent directory and remove a stale socket; refuse anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(
            f"{path} exists and is not a socket; remove it or choose another CSI endpoint"
        )
    if _answers(path):
        raise AlreadyExists(
            f"another server is listening on {path}; stop it before starting this one"
        )
    _log.info("removing stale socket %s", path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _answers(path: Path) -> bool:
    """True when a process accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_LIVE_PROBE_TIMEOUT)
        try:
            probe.connect(os.fspath(path))
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            if isinstance(e, TimeoutError) or e.errno == errno.EAGAIN:
                return True  # someone is there, just slow to accept
            raise Unavailable(f"cannot check whether {path} is in use: {e}") from e
        return True
