"""Test launcher: a real `CSIServer` in its own process, on the endpoint given.

Serves the real `IdentityServicer` and `ScriptedController`, a stand-in controller whose methods
misbehave on request so the error mapping, the logging and the shutdown can be observed from a
real client. Everything it does is steered through files in `--state-dir`:

- `unhealthy` exists: the health check raises (Probe -> FAILED_PRECONDITION);
- `starting` exists: the health check answers "not ready yet";
- CreateVolume(name="slow") touches `slow-started` and returns once `slow-release` exists;
- it touches `serving` once its signal handlers are installed (the tests wait for it).

RPC log lines go to `--rpc-log` (one JSON object a line), everything else to stderr.
Exit status: 0 after a clean stop, the domain error's exit code when the server cannot start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from amber.csi._proto import csi_pb2, csi_pb2_grpc
from amber.csi.errors import rpc_errors
from amber.csi.identity import IdentityServicer, PluginCapabilities
from amber.csi.logging import RpcLogInterceptor
from amber.csi.server import CSIServer, registration_for
from amber.domain import errors

SLOW_CALL_LIMIT = 20.0  # seconds a "slow" call waits for its release file at most


class RpcRecordFormatter(logging.Formatter):
    """The RPC record alone, as one JSON object a line (what the tests parse)."""

    def format(self, record: logging.LogRecord) -> str:
        rpc = getattr(record, "csi_rpc", None)
        if rpc is None:
            return super().format(record)
        return json.dumps(rpc, ensure_ascii=False, separators=(",", ":"), default=str)


class ScriptedController(csi_pb2_grpc.ControllerServicer):
    """CreateVolume raises the domain error named in parameters["raise"], with a message that
    (on purpose) quotes the request's password; name="ok" succeeds, name="crash" raises a
    non-domain exception, name="slow" blocks. DeleteVolume is left undecorated on purpose."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @rpc_errors()
    def CreateVolume(self, request: Any, context: Any) -> Any:
        password = request.secrets.get("password", "")
        if request.name == "ok":
            return csi_pb2.CreateVolumeResponse(
                volume=csi_pb2.Volume(volume_id=f"vol-{request.name}", capacity_bytes=1 << 20)
            )
        if request.name == "slow":
            return self._slow(request)
        if request.name == "crash":
            raise RuntimeError(f"unexpected failure while using password {password}")
        error_class = getattr(errors, request.parameters["raise"])
        raise error_class(f"volume {request.name} failed (password was {password})")

    @rpc_errors({errors.OutOfSpace: grpc.StatusCode.OUT_OF_RANGE})
    def ControllerExpandVolume(self, request: Any, context: Any) -> Any:
        raise errors.OutOfSpace(f"the pool cannot grow {request.volume_id}")

    def DeleteVolume(self, request: Any, context: Any) -> Any:  # no @rpc_errors: safety net
        raise KeyError(f"leaked token {request.secrets.get('token', '')}")

    def _slow(self, request: Any) -> Any:
        (self.state_dir / "slow-started").touch()
        release = self.state_dir / "slow-release"
        deadline = time.monotonic() + SLOW_CALL_LIMIT
        while not release.exists():
            if time.monotonic() > deadline:
                raise errors.Busy("slow call was never released")
            time.sleep(0.01)
        return csi_pb2.CreateVolumeResponse(volume=csi_pb2.Volume(volume_id="vol-slow"))


def health_check(state_dir: Path) -> bool:
    if (state_dir / "unhealthy").exists():
        raise errors.Unavailable(f"the pool under {state_dir} is not usable (test switch)")
    return not (state_dir / "starting").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--rpc-log", required=True, type=Path)
    parser.add_argument("--grace", type=float, default=15.0)
    parser.add_argument("--log-requests", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format="%(name)s %(message)s")
    rpc_logger = logging.getLogger("amber.csi.rpc")
    rpc_logger.propagate = False
    rpc_handler = logging.FileHandler(args.rpc_log)
    rpc_handler.setFormatter(RpcRecordFormatter())
    rpc_logger.addHandler(rpc_handler)

    state_dir: Path = args.state_dir
    identity = IdentityServicer(PluginCapabilities(), lambda: health_check(state_dir))
    server = CSIServer(
        args.endpoint,
        [registration_for(identity), registration_for(ScriptedController(state_dir))],
        max_workers=4,
        grace=args.grace,
        interceptor=RpcLogInterceptor(rpc_logger, log_requests=args.log_requests),
    )
    try:
        server.start()
    except errors.AmberError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    server.install_signal_handlers()
    (state_dir / "serving").touch()  # from now on a signal stops it cleanly
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
