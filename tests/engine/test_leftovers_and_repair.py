"""Killed backups, damaged index objects, key slots and locks, through the real `amber` CLI on
a real pool, against a directory target and a moto S3 server.

- a backup killed (failpoint) after it staged or uploaded a pack leaves it behind; `check`
  lists a file target's staged leftovers; the rerun adopts them and uploads less than the change;
  prune removes leftovers nobody adopted;
- a flipped byte in (or the loss of) an index object: restore falls back to the pack headers,
  `backup repair` rebuilds the index (also when killed midway);
- a damaged or missing key slot is "damaged" (exit 10), not "wrong password" (exit 11);
- an unreadable lock is reported at once by backup and prune, named by check, removed by unlock.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.engine.helpers import CHUNK, Cli, random_bytes, write_at

CHANGE_CHUNKS = 64


def _volume_with_data(cli: Cli, name: str, seed: int) -> Path:
    image = cli.volume(name, f"{CHANGE_CHUNKS}Mi")
    write_at(image, 0, random_bytes(CHANGE_CHUNKS * CHUNK, seed))
    return image


def _check(cli: Cli, target: str, *args: str) -> dict:  # type: ignore[type-arg]
    done = cli.run("--output", "json", "backup", "check", "--target", target, *args)
    assert done.returncode in (0, 10), done.stderr
    result: dict = json.loads(done.stdout)  # type: ignore[type-arg]
    return result


def _codes(result: dict) -> list[str]:  # type: ignore[type-arg]
    return [problem["code"] for problem in result["problems"]]


def _restores(cli: Cli, handle: str, snapshot: Path, name: str) -> None:
    assert cli.json("backup", "restore", handle, name)["complete"] is True
    restored = Path(cli.json("volume", "show", name)["volume"]["image"])
    assert restored.read_bytes() == snapshot.read_bytes()


def _temps(repo: Path) -> list[Path]:
    return sorted(repo.rglob(".amber-tmp.*"))


def test_a_killed_backup_on_a_file_target_is_adopted_by_the_rerun(
    cli: Cli, file_target: str, tmp_path: Path
) -> None:
    _volume_with_data(cli, "v", 1)
    snapshot = cli.snapshot("v", "s1")
    killed = cli.run(
        "backup", "create", "s1", "--target", file_target, crash_at="backup.pack-staged"
    )
    assert killed.returncode == -signal.SIGKILL
    repo = tmp_path / "repo"
    staged = _temps(repo)
    assert staged  # the staged pack was never renamed into place
    check = _check(cli, file_target)
    assert check["ok"] is True  # leftovers are warnings
    assert _codes(check).count("leftover-temporary") == len(staged)
    rerun = cli.backup("s1", file_target)
    assert rerun["packs_adopted"] >= 1
    change = CHANGE_CHUNKS * CHUNK
    assert rerun["bytes_new"] <= change - 4 * CHUNK  # a pack holds 16 chunks
    assert rerun["bytes_stored"] < change
    # whole packs were adopted; what is left is a pack another worker was still writing
    # when the process died (torn), which prune removes later
    left = _temps(repo)
    assert set(left) < set(staged)
    assert all(path.read_bytes()[-16:-8] != b"AMBRPACK" for path in left)
    after = _check(cli, file_target, "--read-data")
    assert after["ok"] is True
    assert _codes(after).count("leftover-temporary") == len(left)
    _restores(cli, rerun["handle"], snapshot, "r1")


def test_a_killed_backup_on_s3_is_adopted_by_the_rerun(cli: Cli, s3_target: str) -> None:
    _volume_with_data(cli, "v", 2)
    snapshot = cli.snapshot("v", "s1")
    killed = cli.run("backup", "create", "s1", "--target", s3_target, crash_at="backup.pack-staged")
    assert killed.returncode == -signal.SIGKILL
    assert "pack-unindexed" in _codes(_check(cli, s3_target))
    rerun = cli.backup("s1", s3_target)
    assert rerun["packs_adopted"] >= 1
    assert rerun["bytes_stored"] < CHANGE_CHUNKS * CHUNK
    assert _check(cli, s3_target, "--read-data")["ok"] is True
    _restores(cli, rerun["handle"], snapshot, "r1")


def test_prune_removes_leftovers_nobody_adopted(cli: Cli, file_target: str, tmp_path: Path) -> None:
    image = _volume_with_data(cli, "v", 3)
    cli.snapshot("v", "s1")
    kept = cli.backup("s1", file_target)
    write_at(image, 0, random_bytes(CHANGE_CHUNKS * CHUNK, 4))
    cli.snapshot("v", "s2")
    killed = cli.run(
        "backup", "create", "s2", "--target", file_target, crash_at="backup.pack-staged"
    )
    assert killed.returncode == -signal.SIGKILL
    repo = tmp_path / "repo"
    assert _temps(repo)
    young = cli.json("backup", "prune", "--target", file_target, "--keep-last", "1")
    assert young["leftovers_removed"] == []  # within the default grace period
    assert _temps(repo)
    pruned = cli.json(
        "backup", "prune", "--target", file_target, "--keep-last", "1", "--grace", "0"
    )
    assert pruned["leftovers_removed"]
    assert pruned["leftover_bytes"] > 0
    assert _temps(repo) == []
    assert _check(cli, file_target, "--read-data")["ok"] is True
    assert [b["backup_id"] for b in cli.json("backup", "list", "--target", file_target)] == [
        kept["backup_id"]
    ]


def _index_objects(repo: Path) -> list[Path]:
    return sorted((repo / "index").iterdir())


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flipped", "deleted"])
def test_a_damaged_index_object_restores_from_pack_headers_and_repair_rebuilds_it(
    cli: Cli, file_target: str, tmp_path: Path, damage: str
) -> None:
    _volume_with_data(cli, "v", 5)
    snapshot = cli.snapshot("v", "s1")
    backup = cli.backup("s1", file_target)
    repo = tmp_path / "repo"
    for path in _index_objects(repo):
        if damage == "flipped":
            _flip_byte(path)
        else:
            path.unlink()
    check = _check(cli, file_target)
    assert check["ok"] is False
    expected = "index-unreadable" if damage == "flipped" else "chunk-not-indexed"
    assert expected in _codes(check)
    _restores(cli, backup["handle"], snapshot, "r1")  # from the pack headers
    repaired = cli.json("backup", "repair", "--target", file_target)
    assert repaired["rebuilt"]["packs_indexed"] >= CHANGE_CHUNKS // 16
    assert repaired["rebuilt"]["chunks_indexed"] == CHANGE_CHUNKS
    if damage == "flipped":
        assert repaired["rebuilt"]["unreadable_index_objects"]
    assert _check(cli, file_target, "--read-data")["ok"] is True
    _restores(cli, backup["handle"], snapshot, "r2")


def test_a_repair_killed_after_writing_the_new_index_leaves_a_valid_repository(
    cli: Cli, file_target: str, tmp_path: Path
) -> None:
    _volume_with_data(cli, "v", 6)
    snapshot = cli.snapshot("v", "s1")
    backup = cli.backup("s1", file_target)
    repo = tmp_path / "repo"
    damaged = _index_objects(repo)
    for path in damaged:
        _flip_byte(path)
    killed = cli.run("backup", "repair", "--target", file_target, crash_at="repair.index-written")
    assert killed.returncode == -signal.SIGKILL
    assert set(damaged) < set(_index_objects(repo))  # new index written, old not yet removed
    check = _check(cli, file_target)
    assert "index-unreadable" in _codes(check)  # the damaged one is still there ...
    assert not {"chunk-not-indexed", "pack-missing"} & set(_codes(check))  # ... but superseded
    _restores(cli, backup["handle"], snapshot, "r1")
    cli.ok("backup", "repair", "--target", file_target)
    assert not set(damaged) & set(_index_objects(repo))
    assert _check(cli, file_target, "--read-data")["ok"] is True


@pytest.mark.parametrize("damage", ["flipped", "deleted", "garbage"])
def test_a_damaged_or_missing_key_slot_is_damage_not_a_wrong_password(
    cli: Cli, file_target: str, tmp_path: Path, damage: str
) -> None:
    (slot,) = (tmp_path / "repo" / "keys").iterdir()
    if damage == "deleted":
        slot.unlink()
    elif damage == "garbage":
        slot.write_bytes(b"\x00" * 40)
    else:
        document = json.loads(slot.read_bytes())
        wrapped = document["wrapped"]
        document["wrapped"] = ("A" if wrapped[0] != "A" else "B") + wrapped[1:]
        slot.write_text(json.dumps(document))
    done = cli.run("backup", "list", "--target", file_target)
    assert done.returncode == 10, done.stderr
    assert "wrong password" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "key slot" in done.stderr


def test_an_unreadable_lock_is_reported_at_once_named_by_check_and_removed_by_unlock(
    cli: Cli, file_target: str, tmp_path: Path
) -> None:
    _volume_with_data(cli, "v", 7)
    snapshot = cli.snapshot("v", "s1")
    backup = cli.backup("s1", file_target)
    lock_id = "0f" * 16
    (tmp_path / "repo" / "locks" / lock_id).write_bytes(b"not a lock")
    for args in (
        ("backup", "create", "s1", "--target", file_target),
        ("backup", "prune", "--target", file_target, "--keep-last", "1"),
        ("backup", "repair", "--target", file_target),
    ):
        done = cli.run(*args, timeout=60)  # no 300 s wait for a lock that never expires
        assert done.returncode == 10, done.stderr
        assert f"locks/{lock_id}" in done.stderr
        assert "backup unlock" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    check = _check(cli, file_target)
    assert check["ok"] is True
    named = [p for p in check["problems"] if p["code"] == "lock-unreadable"]
    assert [p["object_key"] for p in named] == [f"locks/{lock_id}"]
    _restores(cli, backup["handle"], snapshot, "r1")  # readers are not blocked
    cleared = cli.json("backup", "unlock", "--target", file_target)
    assert cleared["removed"] == []  # not removed without being named
    assert cli.run("backup", "unlock", "--target", file_target, "1" * 32).returncode == 3
    removed = cli.json("backup", "unlock", "--target", file_target, lock_id)
    assert removed["removed"] == [f"locks/{lock_id}"]
    assert cli.backup("s1", file_target)["chunks_new"] == 0
