"""Finding a backup by its snapshot key, and removing the locks that ended restores left: the
driver's lookup and leftover-lock code over a real repository in a directory (FileStore), with
the store's calls recorded or scripted to fail. test_backup_snapshots.py runs the same paths end
to end, over gRPC, against a real S3 server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from amber.backup.layout import is_valid_id
from amber.backup.repository import Repository, init_repository, open_repository
from amber.backup.restorer import restore_holder
from amber.backup.writer import ManifestDraft
from amber.blobstore.faulty import Fault, FaultyStore
from amber.blobstore.filestore import FileStore
from amber.domain.errors import Unavailable
from amber.ops.backups import restores_from
from amber.ops.handles import LABEL_KEY, BackupRef, key_backup_id
from amber.ops.leftovers import LeftoverLocks
from amber.ops.lookup import find_backup
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, random_bytes


class RecordingStore:
    """Any BlobStore, with `(method, key or prefix)` of every request recorded in `calls`
    (`describe`, which only names the store for messages, is not one)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name == "describe":
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, str(args[0]) if args else ""))
            return attr(*args, **kwargs)

        return call


def _repository(store: Any) -> Repository:
    return init_repository(store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT)


def _faulty(root: Path, script: list[Fault]) -> tuple[Repository, FaultyStore]:
    """The repository at `root` opened again, through a store that plays `script`."""
    faulty = FaultyStore(FileStore(root), script)
    return open_repository(faulty, PASSWORD), faulty


def _commit(repo: Repository, backup_id: str | None, key: str, seed: int) -> str:
    writer = repo.writer()
    chunk = writer.add_chunk(random_bytes(CHUNK, seed))
    draft = ManifestDraft("vol-a", CHUNK, [chunk], labels={LABEL_KEY: key}, backup_id=backup_id)
    return writer.commit(draft)


def test_key_backup_id_is_fixed_by_the_key_alone() -> None:
    # A stored format: backups already committed are found only while this stays the same.
    assert key_backup_id("snapshot-a") == "1c288b0713168079861b51d44909c41f"
    assert is_valid_id(key_backup_id("snapshot-a"))
    assert key_backup_id("snapshot-b") != key_backup_id("snapshot-a")


def test_a_key_is_found_with_one_read_never_a_listing(tmp_path: Path) -> None:
    store = RecordingStore(FileStore(tmp_path))
    repo = _repository(store)
    for seed in range(5):  # other backups, under random ids, with other keys
        _commit(repo, None, f"snapshot-other-{seed}", seed)
    backup_id = _commit(repo, key_backup_id("snapshot-a"), "snapshot-a", 99)
    store.calls.clear()

    found = find_backup(repo, BackupRef("t", key="snapshot-a"))
    assert found is not None
    assert found.backup_id == backup_id == key_backup_id("snapshot-a")
    assert store.calls == [("get", f"backups/{backup_id}")]

    store.calls.clear()
    assert find_backup(repo, BackupRef("t", key="snapshot-missing")) is None
    assert store.calls == [("get", f"backups/{key_backup_id('snapshot-missing')}")]


def test_a_manifest_under_the_id_made_for_another_key_is_not_found(tmp_path: Path) -> None:
    repo = _repository(FileStore(tmp_path))
    _commit(repo, key_backup_id("snapshot-a"), "snapshot-x", 1)
    assert find_backup(repo, BackupRef("t", key="snapshot-a")) is None
    assert find_backup(repo, BackupRef("t", key="snapshot-x")) is None
    by_id = find_backup(repo, BackupRef("t", backup_id=key_backup_id("snapshot-a")))
    assert by_id is not None


# -- leftover restore locks --------------------------------------------------------------------


def _until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_lock_of_an_ended_restore_goes_once_the_target_answers(tmp_path: Path) -> None:
    setup = _repository(FileStore(tmp_path))
    backup_id = key_backup_id("snapshot-a")
    ended = restore_holder(backup_id, "vol-ended")
    setup.lock(ended)  # what the engine could not delete: the target was away
    running = setup.lock(restore_holder(backup_id, "vol-running"))  # ours, and it runs
    other = setup.lock(f"other-node pid 7: restore {backup_id} to vol-x")  # another node's
    repo, faulty = _faulty(tmp_path, [Fault("list", "locks/", times=3)])
    leftovers = LeftoverLocks(first_pause=0.01, max_pause=0.05)
    leftovers.start()
    try:
        leftovers.add(ended, backup_id, repo, ())
        _until(lambda: leftovers.pending() == [])
    finally:
        leftovers.stop()
    faulty.assert_all_fired()  # it was tried while the target did not answer, and again
    assert sorted(restores_from(repo, backup_id)) == sorted(
        [running.info.holder, other.info.holder]
    )


def test_delete_snapshot_and_a_new_restore_remove_a_leftover_at_once(tmp_path: Path) -> None:
    setup = _repository(FileStore(tmp_path))
    one, two = key_backup_id("snapshot-1"), key_backup_id("snapshot-2")
    for backup_id in (one, two):
        setup.lock(restore_holder(backup_id, "vol"))
    repo, faulty = _faulty(tmp_path, [Fault("list", "locks/")])
    leftovers = LeftoverLocks()  # no thread: only what the calls do
    leftovers.add(restore_holder(one, "vol"), one, repo, ())
    leftovers.add(restore_holder(two, "vol"), two, repo, ())

    # A new restore with the same holder name must wait while the old lock cannot be removed.
    with pytest.raises(Unavailable):
        leftovers.settle(restore_holder(one, "vol"))
    assert restore_holder(one, "vol") in leftovers.pending()
    leftovers.settle(restore_holder(one, "vol"))
    assert restores_from(repo, one) == []

    # DeleteSnapshot of a backup removes the leftovers of that backup only.
    assert restores_from(repo, two) == [restore_holder(two, "vol")]
    leftovers.sweep_backup(one)
    assert restores_from(repo, two) == [restore_holder(two, "vol")]
    leftovers.sweep_backup(two)
    assert restores_from(repo, two) == []
    assert leftovers.pending() == []
    faulty.assert_all_fired()
