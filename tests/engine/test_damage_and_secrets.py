"""Damage is found and reported by byte range, never restored silently; wrong passwords are
refused; unreachable targets fail fast; secrets appear in no output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from amber.backup.layout import pack_key
from amber.backup.targets import TargetConfig, open_target_repository
from tests.blobstore.conftest import MotoServer, free_port
from tests.engine.helpers import CHUNK, PASSWORD_TEXT, Cli, random_bytes, write_at


def _backed_up_volume(cli: Cli, target: str) -> tuple[dict, Path]:  # type: ignore[type-arg]
    image = cli.volume("v", "32Mi")
    for i in range(8):
        write_at(image, i * CHUNK, random_bytes(CHUNK, i))
    snapshot = cli.snapshot("v", "s1")
    return cli.backup("s1", target), snapshot


def _pack_file(cli: Cli, target: str, backup_id: str, position: int) -> tuple[Path, int]:
    """The pack file holding chunk `position` of the backup, and the blob's offset in it."""
    definition = TargetConfig(cli.config).get(target)
    repo = open_target_repository(definition)
    chunk_id = repo.load_manifest(backup_id).chunk_map[position]
    assert isinstance(chunk_id, bytes)
    entry = repo.index.lookup(chunk_id)
    assert entry is not None
    root = Path(definition.url.removeprefix("file://"))
    return root / pack_key(entry.pack_id), entry.offset


def _flip(path: Path, offset: int) -> None:
    path.chmod(0o600)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_tampered_chunk_is_refused_with_its_byte_range_then_restored_partially(
    cli: Cli, file_target: str
) -> None:
    backup, snapshot = _backed_up_volume(cli, file_target)
    pack, offset = _pack_file(cli, file_target, backup["backup_id"], 3)
    _flip(pack, offset + 100)

    refused = cli.run("backup", "restore", backup["handle"], "r1")
    assert refused.returncode == 10
    assert f"bytes {3 * CHUNK}-{4 * CHUNK}" in refused.stderr
    assert "nothing was restored" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "r1" not in [v["name"] for v in cli.json("volume", "list")]

    checked = cli.run("--output", "json", "backup", "check", "--target", file_target, "--read-data")
    assert checked.returncode == 10
    problems = json.loads(checked.stdout)["problems"]
    assert [p["byte_range"] for p in problems if p["code"] == "chunk-damaged"] == [
        [3 * CHUNK, 4 * CHUNK]
    ]

    partial = cli.run("--output", "json", "backup", "restore", backup["handle"], "r2",
                      "--allow-partial")  # fmt: skip
    assert partial.returncode == 10
    assert "INCOMPLETE" in partial.stderr
    report = json.loads(partial.stdout)
    assert report["complete"] is False
    assert [(d["start"], d["end"]) for d in report["damaged"]] == [(3 * CHUNK, 4 * CHUNK)]
    restored = Path(cli.json("volume", "show", "r2")["volume"]["image"]).read_bytes()
    original = snapshot.read_bytes()
    assert restored[3 * CHUNK : 4 * CHUNK] == bytes(CHUNK)
    assert restored[: 3 * CHUNK] == original[: 3 * CHUNK]
    assert restored[4 * CHUNK :] == original[4 * CHUNK :]


def test_missing_pack_is_reported_before_anything_is_written(cli: Cli, file_target: str) -> None:
    backup, _ = _backed_up_volume(cli, file_target)
    pack, _ = _pack_file(cli, file_target, backup["backup_id"], 0)
    pack.unlink()  # all 8 chunks are in this one pack
    refused = cli.run("backup", "restore", backup["backup_id"], "r1", "--target", file_target)
    assert refused.returncode == 10
    assert f"bytes 0-{8 * CHUNK}" in refused.stderr
    assert "is missing" in refused.stderr


def test_wrong_password_is_refused(cli: Cli, file_target: str, tmp_path: Path) -> None:
    url = TargetConfig(cli.config).get(file_target).url
    (tmp_path / "wrong").write_text("not-the-password\n")
    # --no-check: `target add` itself refuses a password that does not open the repository
    cli.ok("target", "add", "other", url, "--password-file", str(tmp_path / "wrong"), "--no-check")
    done = cli.run("backup", "list", "--target", "other")
    assert done.returncode == 11
    assert "wrong password" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout
    status = cli.run("target", "status", "other")
    assert status.returncode == 11
    assert "not-the-password" not in status.stderr + status.stdout


def test_unreachable_target_fails_fast_with_one_line(cli: Cli, secrets_dir: Path) -> None:
    (secrets_dir / "key").write_text("unreachable-secret-value\n")
    cli.ok(
        "target", "add", "gone", "s3://bucket/x", "--endpoint", f"http://127.0.0.1:{free_port()}",
        "--access-key", "AKIDGONE", "--secret-key-file", str(secrets_dir / "key"),
        "--password-file", str(secrets_dir / "password"), "--no-check",
    )  # fmt: skip
    for args in (("backup", "list", "--target", "gone"), ("target", "status", "gone")):
        started = time.monotonic()
        done = cli.run(*args, timeout=60)
        assert time.monotonic() - started < 15
        assert done.returncode == 9, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1
        assert "cannot reach" in lines[0] or "not usable" in lines[0]
        assert "unreachable-secret-value" not in done.stderr + done.stdout


def test_secrets_appear_in_no_output(
    cli: Cli, s3_target: str, secrets_dir: Path, moto: MotoServer
) -> None:
    secret_key = moto.secret_key
    image = cli.volume("v", "16Mi")
    write_at(image, 0, random_bytes(3 * CHUNK, 1))
    cli.snapshot("v", "s1")
    outputs = []
    for fmt in ("table", "json"):
        for args in (
            ("target", "list"),
            ("target", "status", s3_target),
            ("backup", "create", "s1", "--target", s3_target),
            ("backup", "list", "--target", s3_target),
            ("backup", "check", "--target", s3_target),
        ):
            done = cli.ok("--output", fmt, *args)
            outputs += [done.stdout, done.stderr]
    stored = cli.config.read_text()
    for secret in (secret_key, PASSWORD_TEXT):
        assert all(secret not in text for text in outputs)
        assert secret not in stored
    assert "AKIDTEST" not in cli.ok("target", "list").stdout  # the key id is not shown either


@pytest.mark.parametrize("bad", ["file:///relative/../x?q=1", "ftp://x", "s3://b@c"])
def test_bad_urls_are_refused_when_added(cli: Cli, secrets_dir: Path, bad: str) -> None:
    done = cli.run("target", "add", "t", bad, "--password-file", str(secrets_dir / "password"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1


def test_target_commands_manage_the_private_targets_file(cli: Cli, file_target: str) -> None:
    assert cli.config.stat().st_mode & 0o777 == 0o600
    listed = cli.json("target", "list")
    assert [(t["name"], t["credential"]) for t in listed] == [(file_target, "password file")]
    status = cli.json("target", "status", file_target)
    assert (status["reachable"], status["writable"], status["unlocked"]) == (True, True, True)
    assert status["repository_version"] == 1
    again = cli.run("target", "add", file_target, "file:///tmp", "--no-encryption")
    assert again.returncode == 4
    cli.ok("target", "remove", file_target)
    assert cli.json("target", "list") == []
    assert cli.run("backup", "list", "--target", file_target).returncode == 3
