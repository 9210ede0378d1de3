"""Backup manifests: one per committed backup, the only thing that makes chunks reachable.

A manifest says which chunk holds each aligned `chunk_size` slice of the volume. Slice `i`
covers bytes `[i * chunk_size, min((i + 1) * chunk_size, volume_size))`; its entry is a chunk id,
`"zero"` (read, all zero bytes, nothing stored) or `"hole"` (not allocated in the source, never
read). Both restore as holes. Every manifest is self-contained: it does not point at its parent's
map, so deleting any backup never damages another.

Stored form: canonical JSON, zstd (level 3), sealed as kind `manifest` with the backup id as
context (so one manifest copied over another does not open). The chunk map is encoded compactly
in two base64 fields:

- `table`: the distinct chunk ids, 32 bytes each, in order of first use;
- `runs`: a stream of unsigned LEB128 varints. Each run starts with `count << 2 | kind`:
  kind 0 = `count` holes, kind 1 = `count` zero chunks, kind 2 = `count` table entries
  `start, start + 1, ...` where `start` is the next varint. Kind 3 is reserved.

A first full backup of a volume is then one run per stretch of data, and an unchanged chunk
costs its 32-byte id plus a few bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import zstandard

from amber.backup import _codec
from amber.backup.crypto import CHUNK_ID_BYTES, ObjectKind, Sealer
from amber.backup.layout import check_backup_id
from amber.blobstore.base import Payload
from amber.domain.errors import Corrupt, FailedPrecondition, InvalidArgument
from amber.domain.names import validate_name

MANIFEST_VERSION = 1
ZERO: Final = "zero"
HOLE: Final = "hole"
ChunkRef = bytes | Literal["zero", "hole"]

_RUN_HOLE = 0
_RUN_ZERO = 1
_RUN_SEQ = 2
_MAX_MANIFEST_BYTES = 1 << 31


@dataclass(frozen=True)
class BackupStats:
    """What a backup cost: bytes read from the volume, new plaintext, stored bytes, time."""

    bytes_read: int = 0
    bytes_new: int = 0
    bytes_stored: int = 0
    chunks_new: int = 0
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class Manifest:
    """One committed backup of one volume."""

    backup_id: str
    volume_name: str
    volume_size: int
    chunk_size: int
    chunk_map: tuple[ChunkRef, ...] = field(repr=False)
    created: float
    source_snapshot: str | None = None
    parent_id: str | None = None
    stats: BackupStats = BackupStats()
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    version: int = MANIFEST_VERSION

    def chunk_range(self, index: int) -> tuple[int, int]:
        """The byte range `[start, end)` of the volume that chunk `index` covers."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.volume_size)

    def chunk_ids(self) -> set[bytes]:
        """Every distinct chunk id the backup uses."""
        return {ref for ref in self.chunk_map if isinstance(ref, bytes)}


def chunk_count(volume_size: int, chunk_size: int) -> int:
    """How many chunks cover a volume (the last one may be short)."""
    return math.ceil(volume_size / chunk_size)


def _tokens(refs: Sequence[ChunkRef], table: dict[bytes, int]) -> list[int]:
    """Holes -> -1, zeros -> -2, ids -> their table index (assigned on first use)."""
    tokens = []
    for ref in refs:
        if isinstance(ref, bytes):
            if len(ref) != CHUNK_ID_BYTES:
                raise InvalidArgument("a chunk id in a chunk map must be 32 bytes")
            tokens.append(table.setdefault(ref, len(table)))
        elif ref == HOLE:
            tokens.append(-1)
        elif ref == ZERO:
            tokens.append(-2)
        else:
            raise InvalidArgument(f"invalid chunk map entry {ref!r}")
    return tokens


def _continues(run_start: int, run_length: int, token: int) -> bool:
    if run_start < 0:
        return token == run_start
    return token == run_start + run_length


def _emit(out: bytearray, start: int, length: int) -> None:
    if start == -1:
        _codec.write_varint(out, length << 2 | _RUN_HOLE)
    elif start == -2:
        _codec.write_varint(out, length << 2 | _RUN_ZERO)
    else:
        _codec.write_varint(out, length << 2 | _RUN_SEQ)
        _codec.write_varint(out, start)


def encode_chunk_map(refs: Sequence[ChunkRef]) -> tuple[bytes, bytes]:
    """`(table, runs)` as described in the module docstring."""
    table: dict[bytes, int] = {}
    tokens = _tokens(refs, table)
    runs = bytearray()
    i = 0
    while i < len(tokens):
        start, length = tokens[i], 1
        while i + length < len(tokens) and _continues(start, length, tokens[i + length]):
            length += 1
        _emit(runs, start, length)
        i += length
    return b"".join(table), bytes(runs)


def _decode_run(
    runs: bytes, pos: int, ids: list[bytes], out: list[ChunkRef], *, limit: int, what: str
) -> int:
    header, pos = _codec.read_varint(runs, pos, what)
    count, kind = header >> 2, header & 3
    if count == 0 or kind == 3 or len(out) + count > limit:
        raise Corrupt(f"{what}: invalid chunk map run")
    if kind == _RUN_SEQ:
        start, pos = _codec.read_varint(runs, pos, what)
        if start + count > len(ids):
            raise Corrupt(f"{what}: chunk map refers past its id table")
        out.extend(ids[start : start + count])
    else:
        out.extend([HOLE if kind == _RUN_HOLE else ZERO] * count)
    return pos


def decode_chunk_map(table: bytes, runs: bytes, count: int, what: str) -> list[ChunkRef]:
    """Inverse of `encode_chunk_map`; the map must have exactly `count` entries."""
    if len(table) % CHUNK_ID_BYTES:
        raise Corrupt(f"{what}: chunk id table length is not a multiple of 32")
    ids = [table[i : i + CHUNK_ID_BYTES] for i in range(0, len(table), CHUNK_ID_BYTES)]
    out: list[ChunkRef] = []
    pos = 0
    while pos < len(runs):
        pos = _decode_run(runs, pos, ids, out, limit=count, what=what)
    if len(out) != count:
        raise Corrupt(f"{what}: chunk map has {len(out)} entries where {count} were expected")
    return out


def validate_manifest(manifest: Manifest) -> None:
    """Raise InvalidArgument unless the manifest is consistent with itself."""
    check_backup_id(manifest.backup_id)
    validate_name("volume", manifest.volume_name)
    if manifest.parent_id is not None:
        check_backup_id(manifest.parent_id)
    if manifest.volume_size <= 0 or manifest.chunk_size <= 0:
        raise InvalidArgument("volume size and chunk size must be positive")
    expected = chunk_count(manifest.volume_size, manifest.chunk_size)
    if len(manifest.chunk_map) != expected:
        raise InvalidArgument(
            f"the chunk map has {len(manifest.chunk_map)} entries; a {manifest.volume_size}-byte "
            f"volume in {manifest.chunk_size}-byte chunks needs {expected}"
        )
    for name, value in (*manifest.labels.items(), *((t, t) for t in manifest.tags)):
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("labels and tags must be strings")


def _document(manifest: Manifest) -> dict[str, Any]:
    table, runs = encode_chunk_map(manifest.chunk_map)
    stats = manifest.stats
    return {
        "version": manifest.version,
        "backup_id": manifest.backup_id,
        "volume": {"name": manifest.volume_name, "size": manifest.volume_size},
        "source_snapshot": manifest.source_snapshot,
        "parent_id": manifest.parent_id,
        "chunk_size": manifest.chunk_size,
        "chunks": {
            "count": len(manifest.chunk_map),
            "table": _codec.b64encode(table),
            "runs": _codec.b64encode(runs),
        },
        "stats": {
            "bytes_read": stats.bytes_read,
            "bytes_new": stats.bytes_new,
            "bytes_stored": stats.bytes_stored,
            "chunks_new": stats.chunks_new,
            "duration_seconds": stats.duration_seconds,
        },
        "labels": dict(manifest.labels),
        "tags": list(manifest.tags),
        "created": manifest.created,
    }


def encode_manifest(manifest: Manifest, sealer: Sealer) -> Payload:
    """JSON, then zstd, then sealed with the backup id as context."""
    validate_manifest(manifest)
    compressed = zstandard.ZstdCompressor(level=3).compress(_codec.dumps(_document(manifest)))
    return sealer.seal(ObjectKind.MANIFEST, compressed, context=manifest.backup_id.encode())


def _stats(document: dict[str, Any], what: str) -> BackupStats:
    stats = _codec.get(document, "stats", dict, what)
    return BackupStats(
        bytes_read=_codec.get(stats, "bytes_read", int, what),
        bytes_new=_codec.get(stats, "bytes_new", int, what),
        bytes_stored=_codec.get(stats, "bytes_stored", int, what),
        chunks_new=_codec.get(stats, "chunks_new", int, what),
        duration_seconds=_codec.get(stats, "duration_seconds", float, what),
    )


def _chunk_map(document: dict[str, Any], what: str) -> tuple[ChunkRef, ...]:
    chunks = _codec.get(document, "chunks", dict, what)
    table = _codec.b64decode(_codec.get(chunks, "table", str, what), what)
    runs = _codec.b64decode(_codec.get(chunks, "runs", str, what), what)
    return tuple(decode_chunk_map(table, runs, _codec.get(chunks, "count", int, what), what))


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise Corrupt(f"{what}: labels must map strings to strings")
    return dict(value)


def _tags(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise Corrupt(f"{what}: tags must be a list of strings")
    return tuple(value)


def _from_document(document: dict[str, Any], what: str) -> Manifest:
    version = _codec.get(document, "version", int, what)
    if version != MANIFEST_VERSION:
        raise FailedPrecondition(
            f"{what} has format version {version}; this Amber reads version {MANIFEST_VERSION}: "
            "upgrade Amber to read it"
        )
    volume = _codec.get(document, "volume", dict, what)
    return Manifest(
        backup_id=_codec.get(document, "backup_id", str, what),
        volume_name=_codec.get(volume, "name", str, what),
        volume_size=_codec.get(volume, "size", int, what),
        chunk_size=_codec.get(document, "chunk_size", int, what),
        chunk_map=_chunk_map(document, what),
        created=_codec.get(document, "created", float, what),
        source_snapshot=_codec.get_optional_str(document, "source_snapshot", what),
        parent_id=_codec.get_optional_str(document, "parent_id", what),
        stats=_stats(document, what),
        labels=_string_map(document.get("labels"), what),
        tags=_tags(document.get("tags"), what),
    )


def decode_manifest(sealed: bytes, sealer: Sealer, backup_id: str) -> Manifest:
    """Open, decompress, parse and validate the manifest stored under `backup_id`."""
    what = f"manifest of backup {backup_id}"
    compressed = sealer.open(ObjectKind.MANIFEST, sealed, what, context=backup_id.encode())
    try:
        plaintext = zstandard.ZstdDecompressor().decompress(
            compressed, max_output_size=_MAX_MANIFEST_BYTES
        )
    except zstandard.ZstdError as e:
        raise Corrupt(f"{what} cannot be decompressed: {e}") from e
    manifest = _from_document(_codec.loads_object(plaintext, what), what)
    if manifest.backup_id != backup_id:
        raise Corrupt(f"{what} names itself {manifest.backup_id!r}")
    try:
        validate_manifest(manifest)
    except InvalidArgument as e:
        raise Corrupt(f"{what} is inconsistent: {e.message}") from e
    return manifest
