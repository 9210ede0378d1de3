"""Fixtures for the backup engine: real pools (XFS reflink), real `amber` processes, targets on
a directory and on real S3 server processes, moto and SeaweedFS (started the way tests/blobstore
does it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.backup.repository import init_repository
from amber.backup.targets import TargetConfig, credentials, open_store
from tests.blobstore.conftest import MotoServer, S3Server, _run_moto, run_weed
from tests.engine.helpers import CHUNK, PASSWORD_TEXT, Cli


def init_with_test_chunks(cli: Cli, name: str) -> None:
    """Initialize target `name`'s repository with the tests' 1 MiB chunks (`CHUNK`), as Amber
    did before new repositories got 256 KiB: the expectations here count 1 MiB chunks, and the
    engine keeps working on repositories made then (tests/backup covers the new default)."""
    target = TargetConfig(cli.config).get(name)
    init_repository(open_store(target), credentials(target), chunk_size=CHUNK)


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server process on 127.0.0.1 (signatures not checked)."""
    with _run_moto(tmp_path_factory.mktemp("engine-moto"), auth=False) as server:
        yield server


@pytest.fixture(scope="session")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server process on 127.0.0.1 (signatures checked)."""
    with run_weed(tmp_path_factory.mktemp("engine-weed")) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the host's AWS settings out of every test (and of the `amber` processes)."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "AMBER_CONFIG":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    """A directory with the password file (and room for more secret files)."""
    path = tmp_path / "secrets"
    path.mkdir()
    (path / "password").write_text(PASSWORD_TEXT + "\n")
    return path


@pytest.fixture
def cli(pool_dir: Path, tmp_path: Path) -> Cli:
    """The real `amber` command on the test pool, with its own targets file."""
    return Cli(pool_dir, tmp_path / "etc" / "targets.json")


@pytest.fixture
def file_target(cli: Cli, secrets_dir: Path, tmp_path: Path) -> str:
    """Target `fs`: a directory, encrypted with a password file, initialized (1 MiB chunks)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    password = str(secrets_dir / "password")
    cli.ok("target", "add", "fs", f"file://{repo}", "--password-file", password)
    init_with_test_chunks(cli, "fs")
    return "fs"


def add_s3_target(cli: Cli, secrets_dir: Path, server: S3Server) -> str:
    """Target `s3`: a fresh prefix on `server`, secret key in a file, initialized (1 MiB
    chunks)."""
    (secrets_dir / "s3-secret").write_text(server.secret_key + "\n")
    prefix = f"engine-{os.urandom(6).hex()}"
    cli.ok(
        "target", "add", "s3", f"s3://{server.bucket}/{prefix}", "--endpoint", server.endpoint,
        "--path-style", "--access-key", server.access_key,
        "--secret-key-file", str(secrets_dir / "s3-secret"),
        "--password-file", str(secrets_dir / "password"),
    )  # fmt: skip
    init_with_test_chunks(cli, "s3")
    return "s3"


@pytest.fixture
def s3_target(cli: Cli, secrets_dir: Path, moto: MotoServer) -> str:
    """Target `s3` on the moto server."""
    return add_s3_target(cli, secrets_dir, moto)


@pytest.fixture(params=["file", "moto", "seaweedfs"])
def target(request: pytest.FixtureRequest) -> str:
    """Each kind of target in turn: a directory, and S3 on each real S3 server."""
    if request.param == "file":
        value: str = request.getfixturevalue("file_target")
        return value
    server: S3Server = request.getfixturevalue("moto" if request.param == "moto" else "weed")
    cli: Cli = request.getfixturevalue("cli")
    return add_s3_target(cli, request.getfixturevalue("secrets_dir"), server)
