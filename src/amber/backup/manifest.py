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

**Patches (format version 2).** On top of that map (the *base layer*) a manifest may carry
*patches*: `Patch(offset, length, chunk_id, chunk_offset)` says that volume bytes
`[offset, offset + length)` are bytes `[chunk_offset, chunk_offset + length)` of the chunk
`chunk_id`. The volume's content is the base layer with every patch's bytes written over it. An
incremental that changed a few 4 KiB blocks of a chunk stores only those blocks this way
(`amber.backup.patches`). Patches are sorted by offset, do not overlap, lie inside the volume,
are not empty, reach no further than `chunk_size` into their chunk, and name real chunk ids.
A manifest without patches is written as version 1, byte for byte as before patches existed;
one with patches is version 2, whose `chunks` object gains a `patches` field: varints, four per
patch (`offset` minus the previous patch's `offset` (the first: its offset), `length`, the
chunk's index in `table`, `chunk_offset`). The ids patches use join `table` after the map's own.

In memory a manifest's map is a `ChunkMap`, the same two parts: the id table as one bytes object
and one 4-byte token per chunk (`array`), not a Python object per chunk (~4 bytes per position
plus 32 per distinct id, where a tuple of id objects took ~80 per data chunk;
`bench/index_memory.py`). It is a `Sequence[ChunkRef]`: indexing and iteration make the ids.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, overload

import zstandard

from amber.backup import _codec
from amber.backup.crypto import CHUNK_ID_BYTES, ObjectKind, Sealer
from amber.backup.layout import check_backup_id
from amber.blobstore.base import Payload
from amber.domain.errors import Corrupt, FailedPrecondition, InvalidArgument
from amber.domain.names import validate_name

MANIFEST_VERSION = 1
"""The version of a manifest without patches (what Amber wrote before patches existed)."""
PATCHED_MANIFEST_VERSION = 2
"""The version of a manifest with patches."""
READABLE_VERSIONS: Final = (MANIFEST_VERSION, PATCHED_MANIFEST_VERSION)
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


class Patch(NamedTuple):
    """Volume bytes `[offset, offset + length)` are bytes `[chunk_offset, chunk_offset +
    length)` of chunk `chunk_id`."""

    offset: int
    length: int
    chunk_id: bytes
    chunk_offset: int = 0

    @property
    def end(self) -> int:
        """The first volume byte after the patch."""
        return self.offset + self.length


@dataclass(frozen=True)
class Manifest:
    """One committed backup of one volume."""

    backup_id: str
    volume_name: str
    volume_size: int
    chunk_size: int
    chunk_map: Sequence[ChunkRef] = field(repr=False)
    created: float
    source_snapshot: str | None = None
    parent_id: str | None = None
    stats: BackupStats = BackupStats()
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    patches: tuple[Patch, ...] = ()
    """Byte ranges written over the chunk map, sorted by offset (see the module docstring)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunk_map", ChunkMap.of(self.chunk_map))
        object.__setattr__(self, "patches", tuple(Patch(*p) for p in self.patches))

    @property
    def version(self) -> int:
        """The format version this manifest is stored in: 2 with patches, else 1."""
        return PATCHED_MANIFEST_VERSION if self.patches else MANIFEST_VERSION

    def chunk_range(self, index: int) -> tuple[int, int]:
        """The byte range `[start, end)` of the volume that chunk `index` covers."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.volume_size)

    def chunk_ids(self) -> set[bytes]:
        """Every distinct chunk id the backup uses (the map's and the patches')."""
        return ChunkMap.of(self.chunk_map).ids() | {p.chunk_id for p in self.patches}


def chunk_count(volume_size: int, chunk_size: int) -> int:
    """How many chunks cover a volume (the last one may be short)."""
    return math.ceil(volume_size / chunk_size)


_HOLE_TOKEN = -1
_ZERO_TOKEN = -2


def _tokens(refs: Iterable[ChunkRef], table: dict[bytes, int]) -> array[int]:
    """Holes -> -1, zeros -> -2, ids -> their table index (assigned on first use)."""
    tokens = array("i")
    for ref in refs:
        if isinstance(ref, bytes):
            if len(ref) != CHUNK_ID_BYTES:
                raise InvalidArgument("a chunk id in a chunk map must be 32 bytes")
            tokens.append(table.setdefault(ref, len(table)))
        elif ref == HOLE:
            tokens.append(_HOLE_TOKEN)
        elif ref == ZERO:
            tokens.append(_ZERO_TOKEN)
        else:
            raise InvalidArgument(f"invalid chunk map entry {ref!r}")
    return tokens


class ChunkMap(Sequence[ChunkRef]):
    """A chunk map held as its id table (one bytes object) and one int32 token per chunk."""

    __slots__ = ("_table", "_tokens")

    def __init__(self, table: bytes, tokens: array[int]) -> None:
        self._table = table
        self._tokens = tokens

    @classmethod
    def of(cls, refs: Iterable[ChunkRef]) -> ChunkMap:
        """The map of `refs` (itself if it already is one); bad entries are InvalidArgument."""
        if isinstance(refs, ChunkMap):
            return refs
        table: dict[bytes, int] = {}
        tokens = _tokens(refs, table)
        return cls(b"".join(table), tokens)

    @classmethod
    def decode(cls, table: bytes, runs: bytes, count: int, what: str) -> ChunkMap:
        """Inverse of `encode_chunk_map`; the map must have exactly `count` entries."""
        if len(table) % CHUNK_ID_BYTES:
            raise Corrupt(f"{what}: chunk id table length is not a multiple of 32")
        tokens = array("i")
        ids = len(table) // CHUNK_ID_BYTES
        pos = 0
        while pos < len(runs):
            pos = _decode_run(runs, pos, ids, tokens, limit=count, what=what)
        if len(tokens) != count:
            raise Corrupt(
                f"{what}: chunk map has {len(tokens)} entries where {count} were expected"
            )
        return cls(table, tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @overload
    def __getitem__(self, index: int) -> ChunkRef: ...

    @overload
    def __getitem__(self, index: slice) -> ChunkMap: ...

    def __getitem__(self, index: int | slice) -> ChunkRef | ChunkMap:
        if isinstance(index, slice):
            return ChunkMap.of(self._ref(t) for t in self._tokens[index])
        return self._ref(self._tokens[index])

    def __iter__(self) -> Iterator[ChunkRef]:
        table = self._table
        for token in self._tokens:
            if token >= 0:
                yield table[token * CHUNK_ID_BYTES : (token + 1) * CHUNK_ID_BYTES]
            else:
                yield HOLE if token == _HOLE_TOKEN else ZERO

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkMap) and other._table == self._table:
            return other._tokens == self._tokens
        if isinstance(other, ChunkMap | tuple | list):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"ChunkMap({len(self)} chunks, {len(self._table) // CHUNK_ID_BYTES} ids)"

    def _ref(self, token: int) -> ChunkRef:
        if token >= 0:
            return self._table[token * CHUNK_ID_BYTES : (token + 1) * CHUNK_ID_BYTES]
        return HOLE if token == _HOLE_TOKEN else ZERO

    def ids(self) -> set[bytes]:
        """Every distinct chunk id the map uses."""
        table, size = self._table, CHUNK_ID_BYTES
        return {table[t * size : (t + 1) * size] for t in set(self._tokens) if t >= 0}

    def runs(self) -> bytes:
        """The `runs` field for this map's own id table."""
        tokens, runs, i = self._tokens, bytearray(), 0
        while i < len(tokens):
            start, length = tokens[i], 1
            while i + length < len(tokens) and _continues(start, length, tokens[i + length]):
                length += 1
            _emit(runs, start, length)
            i += length
        return bytes(runs)

    @property
    def table(self) -> bytes:
        """The id table, 32 bytes per id."""
        return self._table


def _continues(run_start: int, run_length: int, token: int) -> bool:
    if run_start < 0:
        return token == run_start
    return token == run_start + run_length


def _emit(out: bytearray, start: int, length: int) -> None:
    if start == _HOLE_TOKEN:
        _codec.write_varint(out, length << 2 | _RUN_HOLE)
    elif start == _ZERO_TOKEN:
        _codec.write_varint(out, length << 2 | _RUN_ZERO)
    else:
        _codec.write_varint(out, length << 2 | _RUN_SEQ)
        _codec.write_varint(out, start)


def encode_chunk_map(refs: Sequence[ChunkRef]) -> tuple[bytes, bytes]:
    """`(table, runs)` as described in the module docstring."""
    chunk_map = ChunkMap.of(refs)
    return chunk_map.table, chunk_map.runs()


def _decode_run(runs: bytes, pos: int, ids: int, out: array[int], *, limit: int, what: str) -> int:
    header, pos = _codec.read_varint(runs, pos, what)
    count, kind = header >> 2, header & 3
    if count == 0 or kind == 3 or len(out) + count > limit:
        raise Corrupt(f"{what}: invalid chunk map run")
    if kind == _RUN_SEQ:
        start, pos = _codec.read_varint(runs, pos, what)
        if start + count > ids:
            raise Corrupt(f"{what}: chunk map refers past its id table")
        out.extend(range(start, start + count))
    else:
        out.extend(array("i", [_HOLE_TOKEN if kind == _RUN_HOLE else _ZERO_TOKEN]) * count)
    return pos


def decode_chunk_map(table: bytes, runs: bytes, count: int, what: str) -> list[ChunkRef]:
    """Inverse of `encode_chunk_map`; the map must have exactly `count` entries."""
    return list(ChunkMap.decode(table, runs, count, what))


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
    validate_patches(manifest.patches, manifest.volume_size, manifest.chunk_size)


def validate_patches(patches: Sequence[Patch], volume_size: int, chunk_size: int) -> None:
    """Raise InvalidArgument unless `patches` are sorted, disjoint, not empty, inside the
    volume, within `chunk_size` of their chunk and name 32-byte chunk ids."""
    previous_end = 0
    for n, patch in enumerate(patches):
        offset, length, chunk_id, chunk_offset = patch
        what = f"patch {n} (bytes {offset}+{length})"
        if not isinstance(chunk_id, bytes) or len(chunk_id) != CHUNK_ID_BYTES:
            raise InvalidArgument(f"{what} does not name a 32-byte chunk id")
        if length <= 0 or offset < 0 or chunk_offset < 0:
            raise InvalidArgument(f"{what} is empty or negative")
        if offset < previous_end:
            raise InvalidArgument(f"{what} overlaps or precedes the patch before it")
        if offset + length > volume_size:
            raise InvalidArgument(f"{what} ends past the {volume_size}-byte volume")
        if chunk_offset + length > chunk_size:
            raise InvalidArgument(f"{what} reaches past the {chunk_size}-byte chunk size")
        previous_end = offset + length


def encode_patches(patches: Sequence[Patch], table: bytes) -> tuple[bytes, bytes]:
    """`(table, patches)`: `table` with the patches' new ids appended, and the patch varints."""
    index = {table[i : i + CHUNK_ID_BYTES]: i // CHUNK_ID_BYTES for i in range(0, len(table), 32)}
    extra: list[bytes] = []
    out, previous = bytearray(), 0
    for patch in patches:
        position = index.get(patch.chunk_id)
        if position is None:
            position = index[patch.chunk_id] = len(index)
            extra.append(patch.chunk_id)
        for value in (patch.offset - previous, patch.length, position, patch.chunk_offset):
            _codec.write_varint(out, value)
        previous = patch.offset
    return table + b"".join(extra), bytes(out)


def decode_patches(table: bytes, data: bytes, what: str) -> tuple[Patch, ...]:
    """Inverse of `encode_patches` (the ranges are checked by `validate_patches`)."""
    ids = len(table) // CHUNK_ID_BYTES
    patches: list[Patch] = []
    pos, previous = 0, 0
    while pos < len(data):
        values = []
        for _ in range(4):
            value, pos = _codec.read_varint(data, pos, what)
            values.append(value)
        delta, length, position, chunk_offset = values
        if position >= ids:
            raise Corrupt(f"{what}: a patch refers past the chunk id table")
        chunk_id = table[position * CHUNK_ID_BYTES : (position + 1) * CHUNK_ID_BYTES]
        previous += delta
        patches.append(Patch(previous, length, chunk_id, chunk_offset))
    return tuple(patches)


def _chunks_document(manifest: Manifest) -> dict[str, Any]:
    table, runs = encode_chunk_map(manifest.chunk_map)
    chunks = {"count": len(manifest.chunk_map)}
    if not manifest.patches:  # version 1: exactly the fields (and bytes) it always had
        return {**chunks, "table": _codec.b64encode(table), "runs": _codec.b64encode(runs)}
    table, patches = encode_patches(manifest.patches, table)
    return {
        **chunks,
        "table": _codec.b64encode(table),
        "runs": _codec.b64encode(runs),
        "patches": _codec.b64encode(patches),
    }


def _document(manifest: Manifest) -> dict[str, Any]:
    stats = manifest.stats
    return {
        "version": manifest.version,
        "backup_id": manifest.backup_id,
        "volume": {"name": manifest.volume_name, "size": manifest.volume_size},
        "source_snapshot": manifest.source_snapshot,
        "parent_id": manifest.parent_id,
        "chunk_size": manifest.chunk_size,
        "chunks": _chunks_document(manifest),
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


def _chunk_map(
    document: dict[str, Any], version: int, what: str
) -> tuple[ChunkMap, tuple[Patch, ...]]:
    chunks = _codec.get(document, "chunks", dict, what)
    table = _codec.b64decode(_codec.get(chunks, "table", str, what), what)
    runs = _codec.b64decode(_codec.get(chunks, "runs", str, what), what)
    chunk_map = ChunkMap.decode(table, runs, _codec.get(chunks, "count", int, what), what)
    if version == MANIFEST_VERSION:
        if "patches" in chunks:
            raise Corrupt(f"{what}: a version 1 manifest has patches")
        return chunk_map, ()
    patches = _codec.b64decode(_codec.get(chunks, "patches", str, what), what)
    decoded = decode_patches(table, patches, what)
    if not decoded:
        raise Corrupt(f"{what}: a version 2 manifest without patches")
    return chunk_map, decoded


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
    if version not in READABLE_VERSIONS:
        raise FailedPrecondition(
            f"{what} has format version {version}; this Amber reads versions "
            f"{' and '.join(map(str, READABLE_VERSIONS))}: upgrade Amber to read it"
        )
    volume = _codec.get(document, "volume", dict, what)
    chunk_map, patches = _chunk_map(document, version, what)
    return Manifest(
        backup_id=_codec.get(document, "backup_id", str, what),
        volume_name=_codec.get(volume, "name", str, what),
        volume_size=_codec.get(volume, "size", int, what),
        chunk_size=_codec.get(document, "chunk_size", int, what),
        chunk_map=chunk_map,
        created=_codec.get(document, "created", float, what),
        source_snapshot=_codec.get_optional_str(document, "source_snapshot", what),
        parent_id=_codec.get_optional_str(document, "parent_id", what),
        stats=_stats(document, what),
        labels=_string_map(document.get("labels"), what),
        tags=_tags(document.get("tags"), what),
        patches=patches,
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
