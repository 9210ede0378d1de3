"""Fixtures for the backup engine: real pools (XFS reflink), real `amber` processes, targets on
a directory and on a real moto S3 server process (started the way tests/blobstore does it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.blobstore.conftest import MotoServer, _run_moto
from tests.engine.helpers import PASSWORD_TEXT, Cli


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto S3 server process on 127.0.0.1 (signatures not checked)."""
    with _run_moto(tmp_path_factory.mktemp("engine-moto"), auth=False) as server:
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
    """Target `fs`: a directory, encrypted with a password file, initialized."""
    repo = tmp_path / "repo"
    repo.mkdir()
    password = str(secrets_dir / "password")
    cli.ok("target", "add", "fs", f"file://{repo}", "--password-file", password, "--init")
    return "fs"


@pytest.fixture
def s3_target(cli: Cli, secrets_dir: Path, moto: MotoServer) -> str:
    """Target `s3`: a fresh prefix on the moto server, secret key in a file."""
    (secrets_dir / "s3-secret").write_text(moto.secret_key + "\n")
    prefix = f"engine-{os.urandom(6).hex()}"
    cli.ok(
        "target", "add", "s3", f"s3://{moto.bucket}/{prefix}", "--endpoint", moto.endpoint,
        "--path-style", "--access-key", moto.access_key,
        "--secret-key-file", str(secrets_dir / "s3-secret"),
        "--password-file", str(secrets_dir / "password"), "--init",
    )  # fmt: skip
    return "s3"


@pytest.fixture(params=["file", "s3"])
def target(request: pytest.FixtureRequest) -> str:
    """Each kind of target in turn."""
    name = "file_target" if request.param == "file" else "s3_target"
    value: str = request.getfixturevalue(name)
    return value
