"""A miniature engine for tests: back up bytes as a volume, restore a backup to bytes."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from amber.backup.keys import KeyFile, Password, ScryptParams
from amber.backup.locks import Lock
from amber.backup.manifest import HOLE, ZERO, ChunkRef
from amber.backup.patches import pieces
from amber.backup.repository import Repository
from amber.backup.writer import ManifestDraft

PASSWORD = Password("correct horse battery staple")
FAST_SCRYPT = ScryptParams(n=2**10, r=8, p=1)
CHUNK = 4096
PACK = 16 * 1024
KEY_FILE = KeyFile(b"k" * 40)


def random_bytes(size: int, seed: int) -> bytes:
    """Incompressible, reproducible bytes."""
    return random.Random(seed).randbytes(size)


def volume(chunks: Sequence[bytes | None]) -> bytes:
    """A volume image from per-chunk contents (None = a chunk of zeros)."""
    return b"".join(bytes(CHUNK) if c is None else c for c in chunks)


def backup(
    repo: Repository,
    data: bytes,
    *,
    volume_name: str = "vol-a",
    holes: Sequence[int] = (),
    lock: Lock | None = None,
    tags: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
    parent_id: str | None = None,
    index_every_packs: int = 32,
) -> str:
    """Back up `data`: zero chunks become "zero", chunk indexes in `holes` become "hole"."""
    writer = repo.writer(lock=lock, index_every_packs=index_every_packs)
    chunk_map: list[ChunkRef] = []
    for position, start in enumerate(range(0, len(data), repo.chunk_size)):
        piece = data[start : start + repo.chunk_size]
        if position in holes:
            chunk_map.append(HOLE)
        elif piece.count(0) == len(piece):
            chunk_map.append(ZERO)
        else:
            chunk_map.append(writer.add_chunk(piece))
    draft = ManifestDraft(
        volume_name=volume_name,
        volume_size=len(data),
        chunk_map=chunk_map,
        source_snapshot=f"{volume_name}-snap",
        parent_id=parent_id,
        labels=dict(labels or {}),
        tags=tuple(tags),
    )
    return writer.commit(draft)


def restore(repo: Repository, backup_id: str) -> bytes:
    """The volume image a backup holds (holes and zeros as zero bytes, patches applied)."""
    manifest = repo.load_manifest(backup_id)
    out = bytearray(manifest.volume_size)
    for piece in pieces(manifest):
        data = repo.read_chunk(piece.chunk_id)
        out[piece.offset : piece.offset + piece.length] = data[
            piece.chunk_offset : piece.chunk_offset + piece.length
        ]
    return bytes(out)
