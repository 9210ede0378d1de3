"""restic's conveniences: durations, the only target by default, a volume where a snapshot is
wanted, shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amber.domain.errors import InvalidArgument
from amber.domain.units import parse_duration
from tests.blobstore.conftest import S3Server
from tests.engine.helpers import PASSWORD_TEXT, Cli


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("2.5", 2.5), ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400),
     ("7d", 7 * 86400), ("2w", 14 * 86400), ("500ms", 0.5), (" 1d ", 86400)],
)  # fmt: skip
def test_durations_are_read_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "-5", "1 h", "h", "1y", "nan", "inf", "1e3", "", "1hh"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid duration"):
        parse_duration(text)


def test_zero_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidArgument, match="greater than zero"):
        parse_duration("0s")
    assert parse_duration("0", allow_zero=True) == 0
    with pytest.raises(InvalidArgument, match="century"):
        parse_duration("36600d")


@pytest.fixture
def cli(pool_dir: Path, tmp_path: Path) -> Cli:
    return Cli(pool_dir, tmp_path / "etc" / "targets.json")


@pytest.fixture
def only_target(cli: Cli, tmp_path: Path) -> str:
    password = tmp_path / "password"
    password.write_text(PASSWORD_TEXT + "\n")
    root = tmp_path / "repo"
    root.mkdir()
    cli.ok("target", "add", "fs", f"file://{root}", "--password-file", str(password), "--init")
    cli.volume("db")
    return "fs"


def test_the_only_target_is_the_default_and_durations_take_units(
    cli: Cli, only_target: str
) -> None:
    cli.snapshot("db", "db-1")
    made = cli.json("backup", "create", "db-1")
    assert made["handle"].startswith("amber:v1:backup:fs:")
    pruned = cli.json("backup", "prune", "--keep-last", "1", "--grace", "7d", "--dry-run")
    assert pruned["dry_run"] is True
    assert [b["backup_id"] for b in cli.json("backup", "list")] == [made["backup_id"]]
    cli.ok("backup", "check")
    bad = cli.run("backup", "prune", "--keep-last", "1", "--grace", "7 days")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "invalid duration '7 days'" in bad.stderr


def test_without_a_target_and_with_two_the_error_says_so(cli: Cli, only_target: str) -> None:
    cli.ok("target", "add", "other", "file:///nonexistent-amber", "--no-encryption", "--no-check")
    done = cli.run("backup", "list")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "--target" in done.stderr
    assert "2 targets are configured" in done.stderr


def test_backup_create_of_a_volume_says_snapshot_first_or_does_it(
    cli: Cli, only_target: str
) -> None:
    refused = cli.run("backup", "create", "db")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1
    assert "'db' is a volume" in refused.stderr
    assert "amber snapshot create db" in refused.stderr
    assert "--snapshot" in refused.stderr
    made = cli.json("backup", "create", "db", "--snapshot")
    assert made["volume"] == "db"
    assert made["snapshot"].startswith("db-backup-")
    assert [s["name"] for s in cli.json("snapshot", "list")] == [made["snapshot"]]
    missing = cli.run("backup", "create", "nope", "--snapshot")
    assert missing.returncode == 3
    assert "volume 'nope' not found" in missing.stderr


def test_shell_completion_is_offered_and_completes_lazy_commands() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "amber", "--help"], capture_output=True, text=True, check=True
    )
    assert "--install-completion" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_AMBER_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        done = subprocess.run(
            [str(Path(sys.executable).parent / "amber")],  # the installed entry point
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("amber vol") == ["volume"]
    assert "list" in complete("amber backup li")
    assert "--target" in complete("amber backup list --t")


# -- target add: checked before it is saved; its directory or bucket made when asked -----------


@pytest.fixture(autouse=True)
def _no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the host's AWS settings out of the `amber` processes."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("AMBER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def password(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text(PASSWORD_TEXT + "\n")
    return str(path)


def _names(cli: Cli) -> list[str]:
    return [t["name"] for t in cli.json("target", "list")]


def test_a_file_target_directory_is_made_with_init_only(
    cli: Cli, tmp_path: Path, password: str
) -> None:
    where = tmp_path / "nas" / "amber"
    refused = cli.run("target", "add", "nas", f"file://{where}", "--password-file", password)
    assert refused.returncode == 3
    assert refused.stderr.count("\n") == 1
    assert "--init" in refused.stderr
    assert not where.exists()
    assert _names(cli) == []
    added = cli.json(
        "target", "add", "nas", f"file://{where}", "--password-file", password, "--init"
    )
    assert added["created"] == [f"directory {where}"]
    assert (where / "config").is_file()
    assert _names(cli) == ["nas"]


def test_target_add_checks_the_password_unless_told_not_to(
    cli: Cli, tmp_path: Path, password: str
) -> None:
    where = tmp_path / "repo"
    cli.ok("target", "add", "good", f"file://{where}", "--password-file", password, "--init")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    refused = cli.run("target", "add", "bad", f"file://{where}", "--password-file", str(wrong))
    assert refused.returncode == 11
    assert refused.stderr.count("\n") == 1
    assert "not-the-password" not in refused.stderr
    assert _names(cli) == ["good"]
    cli.ok("target", "add", "bad", f"file://{where}", "--password-file", str(wrong), "--no-check")
    assert _names(cli) == ["bad", "good"]


def test_an_unreachable_target_is_not_saved(cli: Cli, password: str) -> None:
    from tests.blobstore.conftest import free_port

    args = ("target", "add", "gone", "s3://bucket/x", "--endpoint",
            f"http://127.0.0.1:{free_port()}", "--password-file", password)  # fmt: skip
    refused = cli.run(*args, timeout=60)
    assert refused.returncode == 9
    assert refused.stderr.count("\n") == 1
    assert "--no-check" in refused.stderr
    assert _names(cli) == []
    cli.ok(*args, "--no-check")
    assert _names(cli) == ["gone"]


@pytest.fixture(scope="module", params=["moto", "seaweedfs"])
def s3(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[S3Server]:
    from tests.blobstore.conftest import _run_moto, run_weed

    where = tmp_path_factory.mktemp(f"conveniences-{request.param}")
    with _run_moto(where, auth=False) if request.param == "moto" else run_weed(where) as server:
        yield server


def test_create_bucket_makes_a_missing_bucket(
    cli: Cli, tmp_path: Path, password: str, s3: S3Server
) -> None:
    (tmp_path / "s3-secret").write_text(s3.secret_key + "\n")
    bucket = f"amber-new-{os.urandom(4).hex()}"
    args = ("target", "add", "s3", f"s3://{bucket}/prefix", "--endpoint", s3.endpoint,
            "--path-style", "--access-key", s3.access_key,
            "--secret-key-file", str(tmp_path / "s3-secret"),
            "--password-file", password)  # fmt: skip
    missing = cli.run(*args)
    assert missing.returncode != 0
    assert bucket in missing.stderr
    assert missing.stderr.count("\n") == 1
    assert _names(cli) == []
    added = cli.json(*args, "--create-bucket", "--init")
    assert added["created"] == [f"bucket {bucket}"]
    assert added["repository_id"]
    status = cli.json("target", "status", "s3")
    assert (status["reachable"], status["writable"], status["unlocked"]) == (True, True, True)
    # an existing bucket is left as it is
    cli.ok("target", "remove", "s3")
    assert cli.json(*args, "--create-bucket")["created"] == []
