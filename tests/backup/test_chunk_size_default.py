"""New repositories get the measured default chunk size; existing ones keep theirs."""

from __future__ import annotations

from amber.backup.config import parse_config
from amber.backup.repository import init_repository, open_repository
from amber.domain.units import KiB, MiB
from tests.backup.helpers import FAST_SCRYPT, PASSWORD, backup, random_bytes, restore
from tests.backup.memstore import MemStore


def test_a_new_repository_gets_256_kib_chunks(mem_store: MemStore) -> None:
    repo = init_repository(mem_store, PASSWORD, scrypt=FAST_SCRYPT)
    assert repo.chunk_size == 256 * KiB
    config, _mac = parse_config(mem_store.get("config"), "memory")
    assert config.chunk_size == 256 * KiB
    data = random_bytes(600 * KiB, seed=1)
    manifest = repo.load_manifest(backup(repo, data))
    assert (manifest.chunk_size, len(manifest.chunk_map)) == (256 * KiB, 3)
    assert restore(repo, manifest.backup_id) == data


def test_a_repository_with_1_mib_chunks_keeps_them_for_reads_and_writes(
    mem_store: MemStore,
) -> None:
    old = init_repository(mem_store, PASSWORD, chunk_size=MiB, scrypt=FAST_SCRYPT)
    first = random_bytes(2 * MiB + 5, seed=2)
    first_id = backup(old, first)
    reopened = open_repository(mem_store, PASSWORD)
    assert reopened.chunk_size == MiB
    second = first[:MiB] + random_bytes(MiB, seed=3) + first[2 * MiB :]
    second_id = backup(reopened, second)
    manifest = reopened.load_manifest(second_id)
    assert (manifest.chunk_size, len(manifest.chunk_map)) == (MiB, 3)
    assert manifest.chunk_map[0] == reopened.load_manifest(first_id).chunk_map[0]
    assert restore(reopened, first_id) == first
    assert restore(reopened, second_id) == second
