"""The key cache: scrypt once per password file, never a way around a revoked or changed one."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from amber.backup import keys as keyslots
from amber.backup.keycache import KeyCache
from amber.backup.keys import KeyFile, Password, generate_key_file
from amber.backup.repository import init_repository, open_repository
from amber.backup.targets import Target, TargetRuntime, key_cache_dir, open_target_repository
from amber.blobstore.base import BlobStore
from amber.domain.errors import PermissionDenied
from tests.backup.helpers import FAST_SCRYPT
from tests.backup.memstore import FakeClock, MemStore


class ScryptCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = keyslots._kek_from_password

        def counted(*args: object) -> bytes:
            self.calls += 1
            return real(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(keyslots, "_kek_from_password", counted)


@pytest.fixture
def scrypt(monkeypatch: pytest.MonkeyPatch) -> ScryptCounter:
    return ScryptCounter(monkeypatch)


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("first password\n")
    return path


@pytest.fixture
def store() -> BlobStore:
    return MemStore(FakeClock())


@pytest.fixture
def encrypted(store: BlobStore, scrypt: ScryptCounter) -> BlobStore:
    """`store` holding a repository with the password in `password_file`; scrypt counted
    from here on (the opens only)."""
    init_repository(store, Password("first password"), scrypt=FAST_SCRYPT)
    scrypt.calls = 0
    return store


def _open(store: BlobStore, cache_dir: Path, password_file: Path) -> str:
    password = Password(password_file.read_text().rstrip("\n"))
    cache = KeyCache(cache_dir, password_file)
    return open_repository(store, password, key_cache=cache).config.repository_id


def test_the_second_open_skips_scrypt(
    encrypted: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    cache_dir = tmp_path / "keys"
    repository_id = _open(encrypted, cache_dir, password_file)
    assert scrypt.calls == 1
    assert _open(encrypted, cache_dir, password_file) == repository_id
    assert scrypt.calls == 1
    [entry] = list(cache_dir.iterdir())
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert "first password" not in entry.read_text()


def test_a_changed_password_file_is_not_served_from_the_cache(
    encrypted: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    cache_dir = tmp_path / "keys"
    _open(encrypted, cache_dir, password_file)
    password_file.write_text("a wrong password\n")
    with pytest.raises(PermissionDenied):
        _open(encrypted, cache_dir, password_file)
    assert scrypt.calls == 2


def test_a_removed_key_slot_revokes_its_cache_entry(
    store: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    key_file = KeyFile(generate_key_file())
    repo = init_repository(store, key_file)
    password_slot = repo.add_key(Password("first password"), scrypt=FAST_SCRYPT)
    cache_dir = tmp_path / "keys"
    _open(store, cache_dir, password_file)
    repo.remove_key(password_slot)
    with pytest.raises(PermissionDenied):
        _open(store, cache_dir, password_file)
    assert list(cache_dir.iterdir()) == []  # the stale entry is gone


def test_a_damaged_entry_falls_back_to_the_password(
    encrypted: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    cache_dir = tmp_path / "keys"
    _open(encrypted, cache_dir, password_file)
    [entry] = list(cache_dir.iterdir())
    document = json.loads(entry.read_text())
    document["master"] = "A" * 43 + "="  # 32 zero bytes: not this repository's key
    entry.write_text(json.dumps(document))
    _open(encrypted, cache_dir, password_file)
    assert scrypt.calls == 2
    entry.write_text("not json")
    _open(encrypted, cache_dir, password_file)
    assert scrypt.calls == 3
    _open(encrypted, cache_dir, password_file)
    assert scrypt.calls == 3  # each fallback rewrote the entry


def test_an_unusable_cache_directory_only_costs_scrypt(
    encrypted: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _open(encrypted, blocker / "keys", password_file)
    _open(encrypted, blocker / "keys", password_file)
    assert scrypt.calls == 2


def test_the_environment_chooses_the_directory(tmp_path: Path) -> None:
    assert key_cache_dir({}) == Path("/run/amber/keys")
    assert key_cache_dir({"AMBER_KEY_CACHE": "off"}) is None
    assert key_cache_dir({"AMBER_KEY_CACHE": str(tmp_path)}) == tmp_path
    assert os.environ.get("AMBER_KEY_CACHE") != "/run/amber/keys"  # tests never touch /run


def test_creating_a_repository_fills_the_cache(
    store: BlobStore, tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    """The first backup after `target add --init` pays no scrypt: init remembers the key."""
    cache_dir = tmp_path / "keys"
    password = Password(password_file.read_text().rstrip("\n"))
    cache = KeyCache(cache_dir, password_file)
    created = init_repository(store, password, scrypt=FAST_SCRYPT, key_cache=cache)
    assert scrypt.calls == 1  # the slot's own
    assert _open(store, cache_dir, password_file) == created.config.repository_id
    assert scrypt.calls == 1


def test_creating_an_unencrypted_repository_remembers_nothing(
    store: BlobStore, tmp_path: Path, password_file: Path
) -> None:
    cache_dir = tmp_path / "keys"
    init_repository(store, None, encryption="none", key_cache=KeyCache(cache_dir, password_file))
    assert not cache_dir.exists()


def test_a_target_created_with_init_opens_from_the_cache(
    tmp_path: Path, password_file: Path, scrypt: ScryptCounter
) -> None:
    (tmp_path / "repo").mkdir()
    target = Target("t", f"file://{tmp_path / 'repo'}", password_file=str(password_file))
    runtime = TargetRuntime(scrypt=FAST_SCRYPT, key_cache=tmp_path / "keys")
    created = open_target_repository(target, create=True, runtime=runtime)
    assert scrypt.calls == 1
    opened = open_target_repository(target, runtime=runtime)
    assert opened.config.repository_id == created.config.repository_id
    assert scrypt.calls == 1
    assert len(list((tmp_path / "keys").iterdir())) == 1
