"""Helpers for the CSI tests: run `identity_server.py` in a subprocess and talk to it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from amber.csi._proto import csi_pb2_grpc

LAUNCHER = Path(__file__).with_name("identity_server.py")
START_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0
RPC_TIMEOUT = 5.0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` every 10 ms until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@dataclass
class ServerProcess:
    """A running launcher process and the files it reads and writes."""

    proc: subprocess.Popen[bytes]
    socket: Path
    state_dir: Path
    rpc_log: Path
    stderr_log: Path
    channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"unix://{self.socket}"

    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.target)
        self.channels.append(ch)
        return ch

    def identity(self) -> csi_pb2_grpc.IdentityStub:
        return csi_pb2_grpc.IdentityStub(self.channel())

    def controller(self) -> csi_pb2_grpc.ControllerStub:
        return csi_pb2_grpc.ControllerStub(self.channel())

    def rpc_lines(self) -> list[dict[str, Any]]:
        """Every RPC log line, parsed (each line must be one JSON object)."""
        text = self.rpc_log.read_text() if self.rpc_log.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def all_output(self) -> str:
        parts = [p.read_text(errors="replace") for p in (self.rpc_log, self.stderr_log)]
        return "\n".join(parts)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=EXIT_TIMEOUT)


def launch(workdir: Path, *args: str, grace: float = 15.0) -> ServerProcess:
    """Start the launcher on `workdir/csi.sock` and wait until it answers gRPC calls."""
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "run" / "csi.sock"
    state_dir = workdir / "state"
    state_dir.mkdir(exist_ok=True)
    rpc_log = workdir / "rpc.log"
    stderr_log = workdir / "stderr.log"
    command = [
        sys.executable,
        str(LAUNCHER),
        f"--endpoint=unix://{sock}",
        f"--state-dir={state_dir}",
        f"--rpc-log={rpc_log}",
        f"--grace={grace}",
        *args,
    ]
    with stderr_log.open("wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    server = ServerProcess(proc, sock, state_dir, rpc_log, stderr_log)
    try:
        # `serving`: the signal handlers are installed (a signal sent before would kill it)
        serving = state_dir / "serving"
        wait_for(
            lambda: proc.poll() is not None or (serving.exists() and _accepts(sock)),
            START_TIMEOUT,
            "the socket",
        )
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {stderr_log.read_text()}")
        grpc.channel_ready_future(server.channel()).result(timeout=START_TIMEOUT)
    except BaseException:
        server.close()
        raise
    return server


@contextmanager
def running(workdir: Path, *args: str, grace: float = 15.0) -> Iterator[ServerProcess]:
    server = launch(workdir, *args, grace=grace)
    try:
        yield server
    finally:
        server.close()


def _accepts(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            return False
    return True


def make_stale_socket(path: Path) -> None:
    """Leave a socket file at `path` that nobody listens on, as a crashed server would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.fspath(path))
    sock.close()
