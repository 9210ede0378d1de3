"""A restore verifies every chunk, however its reads are cut and however many run at once: a
damaged blob inside a coalesced ranged read is reported alone, and the rest restores exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from amber.backup.layout import pack_key
from amber.backup.progress import NullProgress
from amber.backup.repository import Repository, init_repository
from amber.backup.restorer import RestoreOptions, Restorer
from amber.domain.errors import Corrupt
from tests.backup.helpers import CHUNK, FAST_SCRYPT, PACK, PASSWORD, backup, random_bytes
from tests.backup.memstore import FakeClock, MemStore

CHUNKS = 40
DAMAGED = 17


@pytest.fixture
def damaged(clock: FakeClock) -> tuple[Repository, str, bytes]:
    """(repository, backup id, the volume) with one byte of chunk DAMAGED's blob flipped."""
    store = MemStore(clock)
    repo = init_repository(
        store, PASSWORD, chunk_size=CHUNK, pack_size=PACK, scrypt=FAST_SCRYPT, clock=clock
    )
    data = b"".join(random_bytes(CHUNK, seed) for seed in range(CHUNKS))
    backup_id = backup(repo, data)
    chunk_id = repo.load_manifest(backup_id).chunk_map[DAMAGED]
    assert isinstance(chunk_id, bytes)
    entry = repo.refresh_index().lookup(chunk_id)
    assert entry is not None
    key = pack_key(entry.pack_id)
    pack = bytearray(store.get(key))
    pack[entry.offset + entry.length // 2] ^= 0x01
    store.put(key, bytes(pack))
    return repo, backup_id, data


@pytest.mark.parametrize(
    "options",
    [
        RestoreOptions(download_threads=1, max_request_bytes=CHUNK, allow_partial=True),
        RestoreOptions(download_threads=3, max_request_bytes=4 * CHUNK, allow_partial=True),
        RestoreOptions(allow_partial=True),  # the defaults: whole packs in one read
    ],
)
def test_a_damaged_blob_in_a_coalesced_read_is_reported_alone(
    damaged: tuple[Repository, str, bytes], tmp_path: Path, options: RestoreOptions
) -> None:
    repo, backup_id, data = damaged
    restorer = Restorer(repo, repo.load_manifest(backup_id), options, NullProgress())
    image = tmp_path / "image"
    with image.open("wb") as f:
        f.truncate(len(data))
    restorer.write_image(image)
    [lost] = restorer.damaged_ranges()
    assert (lost.start, lost.end) == (DAMAGED * CHUNK, (DAMAGED + 1) * CHUNK)
    assert "integrity" in lost.reason
    restored = image.read_bytes()
    assert restored[lost.start : lost.end] == bytes(CHUNK)
    assert restored[: lost.start] == data[: lost.start]
    assert restored[lost.end :] == data[lost.end :]


def test_without_allow_partial_a_damaged_blob_stops_the_restore(
    damaged: tuple[Repository, str, bytes], tmp_path: Path
) -> None:
    repo, backup_id, data = damaged
    restorer = Restorer(repo, repo.load_manifest(backup_id), RestoreOptions(), NullProgress())
    image = tmp_path / "image"
    with image.open("wb") as f:
        f.truncate(len(data))
    with pytest.raises(Corrupt, match=f"bytes {DAMAGED * CHUNK}-{(DAMAGED + 1) * CHUNK}"):
        restorer.write_image(image)
