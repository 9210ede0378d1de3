"""Property: whatever is written between backups (data, zeros, discards), every backup restores
byte for byte, and its extent-map chunk map equals the one a full re-read computes (except
where patches lie over an older chunk)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amber.backup.backuper import backup_snapshot
from amber.backup.chunker import ChunkGrid, chunks_with_data, is_zero
from amber.backup.manifest import HOLE, ZERO, ChunkRef
from amber.backup.patches import by_position
from amber.backup.progress import RecordingProgress
from amber.backup.repository import Repository, init_repository
from amber.backup.restorer import restore_backup
from amber.blobstore.filestore import FileStore
from amber.domain.models import VolumeMode
from amber.pool import Pool, VolumeRequest
from tests.backup.helpers import FAST_SCRYPT, PASSWORD
from tests.engine.helpers import punch, random_bytes, write_at

CHUNK = 64 * 1024
SIZE = 4 * 1024 * 1024
_names = itertools.count()

write = st.tuples(
    st.sampled_from(["data", "zeros", "punch", "text"]),
    st.integers(0, SIZE // 512 - 1).map(lambda n: n * 512),
    st.integers(1, 3 * CHUNK),
    st.integers(0, 2**16),
)
rounds = st.lists(st.lists(write, min_size=1, max_size=6), min_size=1, max_size=3)


def _apply(image: Path, kind: str, offset: int, length: int, seed: int) -> None:
    length = min(length, SIZE - offset)
    if kind == "data":
        write_at(image, offset, random_bytes(length, seed))
    elif kind == "text":
        write_at(image, offset, (b"%d " % seed * length)[:length])
    elif kind == "zeros":
        write_at(image, offset, bytes(length))
    else:
        start = offset // 4096 * 4096
        punch(image, start, max(4096, (offset + length) // 4096 * 4096 - start))


def _full_read_map(repo: Repository, image: Path) -> list[ChunkRef]:
    """The chunk map of a from-scratch read of the image."""
    refs: list[ChunkRef] = []
    with open(image, "rb") as f:
        grid = ChunkGrid(os.fstat(f.fileno()).st_size, repo.chunk_size)
        mapped = chunks_with_data(f.fileno(), grid)
        for index in range(grid.count):
            start, end = grid.range(index)
            data = os.pread(f.fileno(), end - start, start)
            refs.append(
                HOLE if not mapped[index] else ZERO if is_zero(data) else repo.chunk_id(data)
            )
    return refs


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=rounds)
def test_every_backup_restores_exactly(pool: Pool, tmp_path: Path, history: list) -> None:  # type: ignore[type-arg]
    n = next(_names)
    root = tmp_path / f"repo-{n}"
    root.mkdir()
    repo = init_repository(
        FileStore(root), PASSWORD, chunk_size=CHUNK, pack_size=256 * 1024, scrypt=FAST_SCRYPT
    )
    volume = f"p{n}"
    image = pool.volumes.create(VolumeRequest(volume, SIZE, VolumeMode.BLOCK, None)).image
    for round_no, writes in enumerate(history):
        for kind, offset, length, seed in writes:
            _apply(image, kind, offset, length, seed)
        snapshot = pool.snapshots.create(volume, f"{volume}-s{round_no}")
        report = backup_snapshot(pool, repo, "t", snapshot.name)
        assert report.mode == ("full-read" if round_no == 0 else "extent-map")
        manifest = repo.load_manifest(report.backup_id)
        # Positions with patches keep an older chunk under them (the restore checks those);
        # every other position names the chunk a full read finds.
        patched = by_position(manifest.patches, CHUNK)
        full = _full_read_map(repo, snapshot.image)
        assert [r for i, r in enumerate(manifest.chunk_map) if i not in patched] == [
            r for i, r in enumerate(full) if i not in patched
        ]
        restored = restore_backup(pool, repo, report.backup_id, f"{volume}-r{round_no}")
        assert restored.complete
        restored_image = pool.volumes.get(restored.volume).image
        assert restored_image.read_bytes() == snapshot.image.read_bytes()


def test_progress_callbacks_report_every_byte_read_and_restored(pool: Pool, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    repo = init_repository(FileStore(root), PASSWORD, chunk_size=CHUNK, scrypt=FAST_SCRYPT)
    image = pool.volumes.create(VolumeRequest("pv", SIZE, VolumeMode.BLOCK, None)).image
    write_at(image, 3 * CHUNK, random_bytes(5 * CHUNK + 17, 1))
    pool.snapshots.create("pv", "pv-s1")
    progress = RecordingProgress()
    report = backup_snapshot(pool, repo, "t", "pv-s1", progress=progress)
    assert report.mode == "full-read"
    reading = progress.get("reading every chunk (full backup)")  # a first backup: not "changed"
    assert reading.total == reading.advanced == report.bytes_read == 6 * CHUNK
    assert progress.finished
    progress = RecordingProgress()
    restore_backup(pool, repo, report.backup_id, "pv-r", progress=progress)
    downloading = progress.get("downloading")
    assert downloading.total == downloading.advanced == 6 * CHUNK
