"""The repository end to end, over an in-memory store and a real directory."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import blake3
import pytest

from amber.backup.check import check
from amber.backup.crypto import ENCRYPTION_NONE
from amber.backup.keys import KeyFile, Password, generate_key_file
from amber.backup.layout import pack_id_from_key
from amber.backup.locks import LockKind
from amber.backup.manifest import ZERO
from amber.backup.pack import FOOTER
from amber.backup.repository import Repository, init_repository, open_repository
from amber.backup.writer import ManifestDraft
from amber.blobstore.base import BlobStore
from amber.domain.errors import (
    AlreadyExists,
    Corrupt,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from tests.backup.helpers import (
    CHUNK,
    FAST_SCRYPT,
    PACK,
    PASSWORD,
    backup,
    random_bytes,
    restore,
    volume,
)
from tests.backup.memstore import FailingPuts, FakeClock, flip_byte, keys, overwrite


def sample_volume(seed: int = 0, chunks: int = 12) -> bytes:
    """Random chunks, one zero chunk, one compressible chunk and a short last chunk."""
    pieces: list[bytes | None] = [random_bytes(CHUNK, seed * 1000 + i) for i in range(chunks)]
    pieces[3] = None
    pieces[5] = b"compressible " * (CHUNK // 13) + b"x" * (CHUNK % 13)
    return volume(pieces) + random_bytes(1000, seed * 1000 + 999)


def test_round_trip_reopen_with_password(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    data = sample_volume()
    clock.advance(5)
    backup_id = backup(repo, data, tags=["nightly"], labels={"app": "db"}, holes=[7])
    reopened = open_repository(store, PASSWORD, clock=clock)
    manifest = reopened.load_manifest(backup_id)
    expected = bytearray(data)
    expected[7 * CHUNK : 8 * CHUNK] = bytes(CHUNK)  # a hole restores as zeros
    assert restore(reopened, backup_id) == bytes(expected)
    assert manifest.volume_size == len(data)
    assert manifest.chunk_size == CHUNK
    assert manifest.chunk_map[3] == ZERO
    assert manifest.chunk_map[7] == "hole"
    assert manifest.tags == ("nightly",)
    assert manifest.labels == {"app": "db"}
    assert manifest.source_snapshot == "vol-a-snap"
    assert manifest.created == clock.now
    assert manifest.stats.chunks_new == 11
    assert manifest.stats.bytes_stored < manifest.stats.bytes_new + 11 * 64
    assert reopened.list_backups() == [backup_id]


def test_compression_flag_and_raw_storage(repo: Repository) -> None:
    writer = repo.writer()
    compressible = writer.add_chunk(b"a" * CHUNK)
    incompressible = writer.add_chunk(random_bytes(CHUNK, 1))
    writer.flush()
    assert repo.index.chunks[compressible].flags == 1
    assert repo.index.chunks[compressible].length < 200
    assert repo.index.chunks[incompressible].flags == 0
    assert repo.index.chunks[incompressible].length == CHUNK + 28  # nonce + tag
    assert repo.read_chunk(compressible) == b"a" * CHUNK


def test_same_chunk_twice_is_stored_once(repo: Repository, store: BlobStore) -> None:
    chunk = random_bytes(CHUNK, 7)
    data = chunk + chunk + chunk
    backup_id = backup(repo, data)
    manifest = repo.load_manifest(backup_id)
    assert len(set(manifest.chunk_map)) == 1
    assert manifest.stats.chunks_new == 1
    assert len(repo.index) == 1
    assert len(keys(store, "data/")) == 1
    assert restore(repo, backup_id) == data


def test_second_backup_of_same_data_adds_no_pack(repo: Repository, store: BlobStore) -> None:
    data = sample_volume(1)
    first = backup(repo, data)
    packs_before = keys(store, "data/")
    index_before = keys(store, "index/")
    second = backup(open_repository(store, PASSWORD), data, parent_id=first)
    assert keys(store, "data/") == packs_before
    assert keys(store, "index/") == index_before
    manifest = repo.load_manifest(second)
    assert manifest.stats.chunks_new == 0
    assert manifest.parent_id == first
    assert restore(repo, second) == data


def test_packs_are_filled_to_the_target_and_named_by_hash(
    repo: Repository, store: BlobStore
) -> None:
    backup(repo, sample_volume(2, chunks=20))
    pack_keys = keys(store, "data/")
    assert len(pack_keys) >= 4
    for key in pack_keys:
        content = store.get(key)
        assert pack_id_from_key(key) == blake3.blake3(content).digest()
    sizes = sorted(store.stat(k).size for k in pack_keys)
    assert all(size >= PACK for size in sizes[1:])  # only the last pack may be short


def test_wrong_password_is_permission_denied(repo: Repository, store: BlobStore) -> None:
    with pytest.raises(PermissionDenied, match="wrong password"):
        open_repository(store, Password("wrong"))
    with pytest.raises(PermissionDenied, match="is encrypted"):
        open_repository(store, None)
    with pytest.raises(PermissionDenied, match="wrong key file"):
        open_repository(store, KeyFile(generate_key_file()))


def test_key_file_slot_and_removing_slots(repo: Repository, store: BlobStore) -> None:
    key_file = KeyFile(generate_key_file())
    slot = repo.add_key(key_file, label="node daemon")
    backup_id = backup(repo, sample_volume(3))
    by_file = open_repository(store, KeyFile(key_file.material.strip() + b"\n\n"))
    assert restore(by_file, backup_id) == sample_volume(3)
    password_slot = next(s.slot_id for s in repo.list_key_slots() if s.slot_id != slot)
    repo.remove_key(password_slot)
    with pytest.raises(PermissionDenied):
        open_repository(store, PASSWORD)
    with pytest.raises(FailedPrecondition, match="last key slot"):
        by_file.remove_key(slot)


def test_init_arguments(store: BlobStore) -> None:
    with pytest.raises(InvalidArgument, match="no default"):
        init_repository(store, None)
    with pytest.raises(InvalidArgument, match="takes no password"):
        init_repository(store, PASSWORD, encryption=ENCRYPTION_NONE)
    with pytest.raises(InvalidArgument, match="unknown encryption"):
        init_repository(store, PASSWORD, encryption="rot13")
    assert keys(store, "") == []
    init_repository(store, PASSWORD, scrypt=FAST_SCRYPT)
    with pytest.raises(AlreadyExists):
        init_repository(store, PASSWORD, scrypt=FAST_SCRYPT)
    with pytest.raises(InvalidArgument):
        Password("")


def test_open_without_repository_is_not_found(store: BlobStore) -> None:
    with pytest.raises(NotFound, match="no Amber backup repository"):
        open_repository(store, PASSWORD)


def test_encrypted_packs_hold_no_plaintext(repo: Repository, store: BlobStore) -> None:
    secret = random_bytes(CHUNK, 42)
    backup(repo, secret)
    stored = b"".join(store.get(k) for k in keys(store, ""))
    assert secret[:64] not in stored


def test_unencrypted_repository_round_trip(store: BlobStore, clock: FakeClock) -> None:
    repo = init_repository(store, None, encryption=ENCRYPTION_NONE, chunk_size=CHUNK, clock=clock)
    data = random_bytes(CHUNK, 5) * 2
    backup_id = backup(repo, data)
    (pack,) = keys(store, "data/")
    assert data[:64] in store.get(pack)  # stored in the clear, as asked
    reopened = open_repository(store, None)
    assert restore(reopened, backup_id) == data
    with pytest.raises(FailedPrecondition, match="NOT encrypted"):
        open_repository(store, PASSWORD)
    flip_byte(store, pack, 10)
    with pytest.raises(Corrupt):
        reopened.read_chunk(reopened.load_manifest(backup_id).chunk_map[0])  # type: ignore[arg-type]


def test_tampered_pack_byte_is_corrupt_naming_pack_and_chunk(
    repo: Repository, store: BlobStore
) -> None:
    data = random_bytes(CHUNK, 9)
    backup_id = backup(repo, data)
    chunk_id = repo.load_manifest(backup_id).chunk_map[0]
    assert isinstance(chunk_id, bytes)
    (pack,) = keys(store, "data/")
    flip_byte(store, pack, 100)
    with pytest.raises(Corrupt) as raised:
        open_repository(store, PASSWORD).read_chunk(chunk_id)
    assert pack in raised.value.message
    assert chunk_id.hex()[:16] in raised.value.message


def test_tampered_manifest_is_corrupt(repo: Repository, store: BlobStore) -> None:
    backup_id = backup(repo, sample_volume(4))
    flip_byte(store, f"backups/{backup_id}", -5)
    with pytest.raises(Corrupt, match=backup_id):
        repo.load_manifest(backup_id)


def test_swapped_object_kinds_are_corrupt(repo: Repository, store: BlobStore) -> None:
    first = backup(repo, sample_volume(5))
    second = backup(repo, sample_volume(6))
    # One manifest copied over another: the backup id is bound into the manifest's sealing.
    overwrite(store, f"backups/{second}", store.get(f"backups/{first}"))
    with pytest.raises(Corrupt):
        repo.load_manifest(second)
    # A pack header presented as a manifest: the object kind is bound too.
    pack = keys(store, "data/")[0]
    content = store.get(pack)
    header_length = int.from_bytes(content[-4:], "little")
    header = content[-FOOTER.size - header_length : -FOOTER.size]
    overwrite(store, f"backups/{first}", header)
    with pytest.raises(Corrupt, match="not a manifest"):
        repo.load_manifest(first)
    # A manifest stored as an index object under its proper hash name.
    manifest_bytes = store.get(f"backups/{second}")
    store.put(f"index/{blake3.blake3(manifest_bytes).hexdigest()}", manifest_bytes)
    with pytest.raises(Corrupt, match="index object"):
        repo.reload_index()


def test_interrupted_writer_leaves_a_checkable_repository(
    store: BlobStore, clock: FakeClock
) -> None:
    init_repository(
        store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT, clock=clock
    )
    data = sample_volume(7, chunks=40)
    failing = FailingPuts(store, "data/", after=5)
    broken = open_repository(failing, PASSWORD, clock=clock)
    with pytest.raises(Unavailable):
        backup(broken, data, index_every_packs=2)
    assert failing.failed == 1
    assert keys(store, "backups/") == []
    packs_left = keys(store, "data/")
    assert len(packs_left) == 5

    repo = open_repository(store, PASSWORD, clock=clock)
    indexed_before = len(repo.index)
    assert indexed_before > 0  # the periodic index flush made progress reusable
    result = check(repo, read_data=True)
    assert result.ok, result.errors
    assert {p.code for p in result.warnings} == {"pack-unindexed"}

    backup_id = backup(repo, data)
    manifest = repo.load_manifest(backup_id)
    assert manifest.stats.chunks_new == len(manifest.chunk_ids()) - indexed_before
    assert restore(open_repository(store, PASSWORD), backup_id) == data
    assert check(repo, read_data=True).ok


def test_failed_writer_refuses_further_use(store: BlobStore, clock: FakeClock) -> None:
    init_repository(
        store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT, clock=clock
    )
    repo = open_repository(FailingPuts(store, "data/", after=0), PASSWORD, clock=clock)
    writer = repo.writer()
    writer.add_chunk(random_bytes(CHUNK, 1))
    writer.add_chunk(random_bytes(CHUNK, 2))
    writer.add_chunk(random_bytes(CHUNK, 3))
    with pytest.raises(Unavailable):
        writer.add_chunk(random_bytes(CHUNK, 4))  # fills the pack: its upload fails
    with pytest.raises(FailedPrecondition, match="failed"):
        writer.add_chunk(random_bytes(CHUNK, 99))


def test_commit_validates_the_draft_without_side_effects(
    repo: Repository, store: BlobStore
) -> None:
    writer = repo.writer()
    chunk_id = writer.add_chunk(random_bytes(CHUNK, 1))
    unknown = repo.chunk_id(b"never added")
    with pytest.raises(InvalidArgument, match="entry 1 names chunk"):
        writer.commit(ManifestDraft("vol-a", 2 * CHUNK, [chunk_id, unknown]))
    with pytest.raises(InvalidArgument, match="needs 2"):
        writer.commit(ManifestDraft("vol-a", 2 * CHUNK, [chunk_id]))
    with pytest.raises(InvalidArgument, match="invalid volume name"):
        writer.commit(ManifestDraft("../etc", CHUNK, [chunk_id]))
    assert keys(store, "backups/") == []
    assert keys(store, "data/") == []
    backup_id = writer.commit(ManifestDraft("vol-a", CHUNK + 1, [chunk_id, ZERO]))
    assert repo.load_manifest(backup_id).volume_size == CHUNK + 1
    with pytest.raises(FailedPrecondition, match="committed"):
        writer.add_chunk(b"more")


def test_commit_under_a_chosen_id_refuses_a_taken_one(repo: Repository, store: BlobStore) -> None:
    chosen = "0123456789abcdef" * 2
    writer = repo.writer()
    chunk_id = writer.add_chunk(random_bytes(CHUNK, 7))
    with pytest.raises(InvalidArgument, match="32 hex digits"):
        writer.commit(ManifestDraft("vol-a", CHUNK, [chunk_id], backup_id="not-an-id"))
    assert writer.commit(ManifestDraft("vol-a", CHUNK, [chunk_id], backup_id=chosen)) == chosen
    assert repo.load_manifest(chosen).chunk_map == (chunk_id,)
    second = repo.writer()
    with pytest.raises(AlreadyExists, match=chosen):
        second.commit(ManifestDraft("vol-b", CHUNK, [chunk_id], backup_id=chosen))
    assert repo.load_manifest(chosen).volume_name == "vol-a"
    assert repo.list_backups() == [chosen]


def test_rebuild_index_recovers_a_deleted_index(repo: Repository, store: BlobStore) -> None:
    data = sample_volume(8, chunks=20)
    backup_id = backup(repo, data)
    for key in keys(store, "index/"):
        store.delete(key)
    reopened = open_repository(store, PASSWORD)
    first = reopened.load_manifest(backup_id).chunk_map[0]
    assert isinstance(first, bytes)
    with pytest.raises(NotFound):
        reopened.read_chunk(first)
    assert not check(reopened).ok
    result = reopened.rebuild_index()
    assert result.packs_indexed == len(keys(store, "data/"))
    assert result.chunks_indexed == len(reopened.load_manifest(backup_id).chunk_ids())
    assert result.unreadable_packs == ()
    assert restore(reopened, backup_id) == data
    assert check(open_repository(store, PASSWORD), read_data=True).ok


def test_rebuild_index_replaces_old_index_objects(repo: Repository, store: BlobStore) -> None:
    backup(repo, sample_volume(9))
    backup(repo, sample_volume(10))
    old = keys(store, "index/")
    assert len(old) == 2
    result = repo.rebuild_index()
    assert sorted(result.index_objects_removed) == old
    assert keys(store, "index/") == sorted(result.index_objects_written)
    assert check(repo).problems == []


def test_rebuild_index_reports_unreadable_packs(repo: Repository, store: BlobStore) -> None:
    backup(repo, sample_volume(11))
    pack = keys(store, "data/")[0]
    flip_byte(store, pack, -1)  # the footer
    result = repo.rebuild_index()
    assert len(result.unreadable_packs) == 1
    assert result.unreadable_packs[0].startswith(pack)


def test_threads_may_add_chunks_concurrently(repo: Repository) -> None:
    pieces = [random_bytes(CHUNK, i % 24) for i in range(96)]
    writer = repo.writer()
    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(writer.add_chunk, pieces))
    backup_id = writer.commit(ManifestDraft("vol-a", len(pieces) * CHUNK, ids))
    assert restore(repo, backup_id) == b"".join(pieces)
    assert writer.stats.chunks_new == 24
    assert len(repo.index) == 24


def test_commit_fails_when_the_lock_was_lost(
    repo: Repository, store: BlobStore, clock: FakeClock
) -> None:
    lock = repo.lock("backup vol-a", LockKind.SHARED, ttl=60)
    writer = repo.writer(lock=lock)
    chunk_id = writer.add_chunk(random_bytes(CHUNK, 1))
    clock.advance(61)
    with pytest.raises(FailedPrecondition, match="expired"):
        writer.commit(ManifestDraft("vol-a", CHUNK, [chunk_id]))
    assert keys(store, "backups/") == []


def test_writer_refreshes_its_lock_as_packs_go_out(repo: Repository, clock: FakeClock) -> None:
    lock = repo.lock("backup vol-a", LockKind.SHARED, ttl=100)
    first_id = lock.info.lock_id
    writer = repo.writer(lock=lock)
    refs = []
    for seed in range(12):
        clock.advance(20)
        refs.append(writer.add_chunk(random_bytes(CHUNK, seed)))
    backup_id = writer.commit(ManifestDraft("vol-a", 12 * CHUNK, refs))
    assert lock.info.lock_id != first_id
    assert lock.info.expires > clock.now
    assert [info.lock_id for info in repo.active_locks()] == [lock.info.lock_id]
    assert repo.load_manifest(backup_id).stats.duration_seconds == 240


def test_unknown_format_version_is_refused(repo: Repository, store: BlobStore) -> None:
    document = json.loads(store.get("config"))
    document["version"] = 2
    overwrite(store, "config", json.dumps(document).encode())
    with pytest.raises(FailedPrecondition, match="format version 2"):
        open_repository(store, PASSWORD)


def test_a_repository_of_an_earlier_development_build_is_refused_clearly(
    repo: Repository, store: BlobStore
) -> None:
    document = json.loads(store.get("config"))
    del document["hash"]
    document["chunk_id"] = "hmac-sha256"
    overwrite(store, "config", json.dumps(document).encode())
    with pytest.raises(FailedPrecondition, match=r"earlier development build.*new repository"):
        open_repository(store, PASSWORD)


def test_edited_config_is_corrupt(repo: Repository, store: BlobStore) -> None:
    document = json.loads(store.get("config"))
    document["pack_size"] = 4096
    overwrite(store, "config", json.dumps(document).encode())
    with pytest.raises(Corrupt, match="fails authentication"):
        open_repository(store, PASSWORD)


def test_garbage_config_is_corrupt(store: BlobStore) -> None:
    store.put("config", b"\x00not json")
    with pytest.raises(Corrupt):
        open_repository(store, PASSWORD)


def test_load_manifest_rejects_bad_ids(repo: Repository) -> None:
    with pytest.raises(InvalidArgument, match="32 lowercase hex"):
        repo.load_manifest("../config")
    with pytest.raises(NotFound, match="does not exist"):
        repo.load_manifest("0" * 32)
