"""kill -9 during backup and prune, and prune racing a backup: the repository stays valid
(`check` passes), nothing a kept backup needs is lost, and the next run reuses what was
uploaded."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from amber.backup.keys import Password
from amber.backup.repository import init_repository
from amber.blobstore.filestore import FileStore
from tests.backup.helpers import FAST_SCRYPT
from tests.engine.helpers import CHUNK, PASSWORD_TEXT, Cli, random_bytes, write_at

VOLUME_CHUNKS = 160


def _random_volume(cli: Cli, name: str, seed: int) -> Path:
    image = cli.volume(name, f"{VOLUME_CHUNKS}Mi")
    block = random_bytes(CHUNK, seed)
    for i in range(VOLUME_CHUNKS):
        write_at(image, i * CHUNK, i.to_bytes(8, "little") + block[8:])
    return image


def _assert_healthy(cli: Cli, target: str) -> None:
    done = cli.run("--output", "json", "backup", "check", "--target", target, "--read-data")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True


def _restores(cli: Cli, handle: str, snapshot: Path, name: str) -> None:
    assert cli.json("backup", "restore", handle, name)["complete"] is True
    restored = Path(cli.json("volume", "show", name)["volume"]["image"])
    assert restored.read_bytes() == snapshot.read_bytes()


def test_crash_after_uploading_everything_is_resumed_without_uploading_again(
    cli: Cli, file_target: str
) -> None:
    _random_volume(cli, "v", 1)
    snapshot = cli.snapshot("v", "s1")
    crashed = cli.run("backup", "create", "s1", "--target", file_target, crash_at="backup.uploaded")
    assert crashed.returncode == -signal.SIGKILL
    _assert_healthy(cli, file_target)  # no manifest yet; its packs are unindexed leftovers
    resumed = cli.backup("s1", file_target)
    assert resumed["packs_adopted"] >= 8
    assert resumed["chunks_new"] <= 16  # at most the pack that was still open
    assert (
        cli.json("backup", "list", "--target", file_target)[0]["backup_id"] == resumed["backup_id"]
    )
    _restores(cli, resumed["handle"], snapshot, "r1")
    _assert_healthy(cli, file_target)


@pytest.mark.parametrize("failpoint", ["backup.planned", "backup.committed"])
def test_crash_at_failpoints_leaves_a_valid_repository(
    cli: Cli, file_target: str, failpoint: str
) -> None:
    image = cli.volume("v", "32Mi")
    write_at(image, 0, random_bytes(20 * CHUNK, 3))
    snapshot = cli.snapshot("v", "s1")
    crashed = cli.run("backup", "create", "s1", "--target", file_target, crash_at=failpoint)
    assert crashed.returncode == -signal.SIGKILL
    _assert_healthy(cli, file_target)
    again = cli.backup("s1", file_target)
    assert again["chunks_new"] == (0 if failpoint == "backup.committed" else 20)
    _restores(cli, again["handle"], snapshot, "r1")


def _files_under(directory: Path) -> int:
    return sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0


def _kill_after_files_change(
    proc: subprocess.Popen[str], directory: Path, count: int, delay: float
) -> bool:
    """kill -9 `proc` `delay` seconds after the number of files under `directory` changed by
    `count` (packs or staged temporary files a backup wrote, packs a prune deleted), or when
    it exits first; whether it was killed.

    Watching the files rather than the clock puts the kill in the middle of the work however
    fast the machine is: with a timed kill, backups that had become faster finished first."""
    if _wait_for_files_change(proc, directory, count):
        time.sleep(delay)
    proc.kill()
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


def _wait_for_files_change(proc: subprocess.Popen[str], directory: Path, count: int) -> bool:
    """Wait until the number of files under `directory` changed by `count` (True), or `proc`
    exited first (False)."""
    start = _files_under(directory)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if abs(_files_under(directory) - start) >= count:
            return True
        time.sleep(0.002)
    return False


def test_random_kills_during_backup_then_the_next_backup_completes(
    cli: Cli, file_target: str, tmp_path: Path
) -> None:
    _random_volume(cli, "v", 2)
    snapshot = cli.snapshot("v", "s1")
    rng = random.Random(7)
    data = tmp_path / "repo" / "data"  # the `fs` target's packs
    interrupted = 0
    for _ in range(3):
        proc = cli.popen("backup", "create", "s1", "--target", file_target, "--full")
        changed = rng.randint(1, 4)
        interrupted += _kill_after_files_change(proc, data, changed, rng.uniform(0, 0.02))
        _assert_healthy(cli, file_target)
    assert interrupted  # the first run at least, which has every pack still to write
    final = cli.backup("s1", file_target, "--full")
    assert final["chunks_new"] + final["chunks_deduplicated"] == VOLUME_CHUNKS
    _restores(cli, final["handle"], snapshot, "r1")


@pytest.fixture
def small_pack_target(cli: Cli, secrets_dir: Path, tmp_path: Path) -> str:
    """A repository with 64 KiB chunks and packs, so that prune deletes thousands of packs."""
    root = tmp_path / "small-packs"
    root.mkdir()
    init_repository(
        FileStore(root),
        Password(PASSWORD_TEXT),
        chunk_size=64 * 1024,
        pack_size=64 * 1024,
        scrypt=FAST_SCRYPT,
    )
    cli.ok("target", "add", "small", f"file://{root}", "--password-file",
           str(secrets_dir / "password"))  # fmt: skip
    return "small"


def test_random_kills_during_prune_lose_nothing_kept(
    cli: Cli, small_pack_target: str, tmp_path: Path
) -> None:
    image = cli.volume("v", "64Mi")
    handles = []
    for seed in range(3):
        write_at(image, 0, random_bytes(48 * CHUNK, seed))
        cli.snapshot("v", f"s{seed}")
        handles.append(cli.backup(f"s{seed}", small_pack_target)["handle"])
    last = Path(cli.json("snapshot", "show", "s2")["snapshot"]["image"])
    rng = random.Random(11)
    data = tmp_path / "small-packs" / "data"
    interrupted = 0
    for _ in range(3):
        proc = cli.popen("backup", "prune", "--target", small_pack_target, "--keep-last", "1",
                         "--grace", "0")  # fmt: skip
        deleted = rng.randint(1, 400)  # of the ~1500 packs the first prune deletes
        interrupted += _kill_after_files_change(proc, data, deleted, rng.uniform(0, 0.02))
        _assert_healthy(cli, small_pack_target)
    assert interrupted  # the first prune at least
    # the killed prune's exclusive lock is removed at once (its process is gone), not waited for
    result = cli.json("backup", "prune", "--target", small_pack_target, "--keep-last", "1",
                      "--grace", "0")  # fmt: skip
    assert len(result["kept_backups"]) == 1
    assert [b["handle"] for b in cli.json("backup", "list", "--target", small_pack_target)] == [
        handles[-1]
    ]
    _assert_healthy(cli, small_pack_target)
    _restores(cli, handles[-1], last, "r1")


def test_prune_racing_a_backup_loses_nothing(cli: Cli, file_target: str, tmp_path: Path) -> None:
    image = _random_volume(cli, "v", 4)
    cli.snapshot("v", "s1")
    cli.backup("s1", file_target)
    write_at(image, 0, random_bytes(40 * CHUNK, 5))
    cli.snapshot("v", "s2")
    cli.backup("s2", file_target)
    write_at(image, 40 * CHUNK, random_bytes(60 * CHUNK, 6))
    snapshot = cli.snapshot("v", "s3")
    backup = cli.popen("backup", "create", "s3", "--target", file_target)
    # The prune starts once the backup has written its first pack (of four), so that they
    # overlap however fast the machine is (a fixed 0.3 s could come after the backup ended).
    _wait_for_files_change(backup, tmp_path / "repo" / "data", 1)
    prune = cli.popen("backup", "prune", "--target", file_target, "--keep-last", "1",
                      "--grace", "0")  # fmt: skip
    b_out, b_err = backup.communicate(timeout=120)
    _, p_err = prune.communicate(timeout=120)
    assert backup.returncode == 0, b_err
    assert prune.returncode == 0, p_err
    created = json.loads(b_out)
    _assert_healthy(cli, file_target)
    _restores(cli, created["handle"], snapshot, "r3")


@pytest.mark.parametrize("failpoint", ["volume.create.journaled", "volume.create.filled"])
def test_killed_restore_leaves_no_half_volume(cli: Cli, file_target: str, failpoint: str) -> None:
    _random_volume(cli, "v", 8)
    cli.snapshot("v", "s1")
    backup = cli.backup("s1", file_target)
    crashed = cli.run("backup", "restore", backup["handle"], "half", crash_at=failpoint)
    assert crashed.returncode == -signal.SIGKILL
    names = [v["name"] for v in cli.json("volume", "list")]  # opening the pool recovers
    assert "half" not in names
    assert cli.json("pool", "check")["problems"] == []


def test_a_restore_killed_at_any_moment_leaves_nothing_or_the_whole_volume(
    cli: Cli, file_target: str
) -> None:
    image = _random_volume(cli, "v", 9)
    cli.snapshot("v", "s1")
    backup = cli.backup("s1", file_target)
    proc = cli.popen("backup", "restore", backup["handle"], "half")
    time.sleep(0.9)  # mid-download, or (on a fast machine) done and exiting
    proc.kill()
    proc.communicate()
    names = [v["name"] for v in cli.json("volume", "list")]  # opening the pool recovers
    if "half" in names:  # it committed before the kill: then it is whole
        restored = Path(cli.json("volume", "show", "half")["volume"]["image"])
        assert restored.read_bytes() == image.read_bytes()
    else:
        assert proc.returncode == -signal.SIGKILL
    assert cli.json("pool", "check")["problems"] == []
