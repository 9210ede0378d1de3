"""Packs: many sealed chunk blobs in one object, with a header that lists them.

Layout of a pack (all integers little-endian):

```
blob 0 | blob 1 | ... | blob n-1 | sealed header | footer (16 bytes)
footer = magic "AMBRPACK" (8) | format version u32 (= 1) | sealed header length u32
header (plaintext, before sealing as kind pack-header):
    magic "APH1" (4) | entry count u32 | entries, 49 bytes each:
    chunk id (32) | offset u64 | stored length u32 | raw length u32 | flags u8
```

Each blob is one chunk: zstd level 1 when that makes it smaller (flag bit 0), raw otherwise, then
sealed as kind `blob` with the chunk id as context. A blob is readable by itself with one ranged
read; the header makes the pack self-describing, so the index can always be rebuilt from the packs
alone. The pack is named by the BLAKE3 hash of all its bytes and never rewritten.

`BlobCodec.decode` is the one place a chunk comes back: open, decompress, compare the length and
recompute the keyed chunk id. Anything that does not match is `Corrupt`, naming pack and chunk.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard

from amber.backup.crypto import (
    CHUNK_ID_BYTES,
    Data,
    ObjectKind,
    RepositoryKeys,
    Sealer,
    content_hash,
)
from amber.backup.layout import pack_key
from amber.blobstore.base import BlobStore, Payload
from amber.domain.errors import Corrupt

FLAG_ZSTD = 0x01
KNOWN_FLAGS = FLAG_ZSTD

FOOTER = struct.Struct("<8sII")
FOOTER_MAGIC = b"AMBRPACK"
PACK_VERSION = 1
HEADER_PREFIX = struct.Struct("<4sI")
HEADER_MAGIC = b"APH1"
HEADER_ENTRY = struct.Struct("<32sQIIB")
_U32_MAX = 2**32 - 1


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one blob sits in its pack."""

    chunk_id: bytes
    offset: int
    length: int
    raw_length: int
    flags: int


@dataclass(frozen=True, slots=True)
class EncodedBlob:
    """A chunk compressed and sealed, ready to go into a pack."""

    chunk_id: bytes
    data: Payload
    raw_length: int
    flags: int


def short(chunk_id: bytes) -> str:
    """The first 16 hex digits of an id, for messages."""
    return chunk_id.hex()[:16]


class BlobCodec:
    """Compress + seal chunks, and open + decompress + verify them. Safe to use from threads."""

    def __init__(self, keys: RepositoryKeys, level: int) -> None:
        self._keys = keys
        self._level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            # The level's parameters with a 128 KiB window and a 4096-entry hash table, sized
            # for 1 MiB chunks (zstd's defaults assume inputs of any size): at level 1 on the
            # benchmark volume's data, 1.42 against 1.70 s/GiB for 0.2% more stored bytes
            # (`bench/engine_parts.py`).
            params = zstandard.ZstdCompressionParameters.from_level(
                self._level, window_log=17, hash_log=12, write_content_size=True
            )
            compressor = zstandard.ZstdCompressor(compression_params=params)
            self._local.compressor = compressor
        return compressor

    def encode(self, chunk_id: bytes, plaintext: Data) -> EncodedBlob:
        """Compress when it shrinks the chunk, then seal with the chunk id as context."""
        compressed = self._compressor().compress(plaintext)
        payload: Data
        if len(compressed) < len(plaintext):
            payload, flags = compressed, FLAG_ZSTD
        else:
            payload, flags = plaintext, 0
        sealed = self._keys.sealer.seal(ObjectKind.BLOB, payload, context=chunk_id)
        return EncodedBlob(chunk_id, sealed, len(plaintext), flags)

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        decompressor: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if decompressor is None:
            decompressor = zstandard.ZstdDecompressor()
            self._local.decompressor = decompressor
        return decompressor

    def decode(self, entry: PackEntry, sealed: Data, pack: str) -> bytes:
        """The chunk's plaintext, verified against its id; Corrupt names pack and chunk."""
        what = self._check_length(entry, sealed, pack)
        payload = self._keys.sealer.open(ObjectKind.BLOB, sealed, what, context=entry.chunk_id)
        return bytes(self._finish(entry, payload, what))

    def decode_into(self, entry: PackEntry, sealed: Data, pack: str, scratch: bytearray) -> Data:
        """Like `decode`, but an uncompressed chunk comes back as a view of `scratch` (at least
        `entry.length` bytes; the caller reuses it per thread), or of `sealed` when the
        repository is not encrypted: valid only until the next call with the same scratch.
        What a restore uses, so it allocates nothing per chunk under the GIL."""
        what = self._check_length(entry, sealed, pack)
        sealer = self._keys.sealer
        payload = sealer.open_into(ObjectKind.BLOB, sealed, what, entry.chunk_id, scratch)
        return self._finish(entry, payload, what)

    def _check_length(self, entry: PackEntry, sealed: Data, pack: str) -> str:
        what = f"chunk {short(entry.chunk_id)} in pack {pack}"
        if len(sealed) != entry.length:
            raise Corrupt(f"{what}: read {len(sealed)} bytes where the index says {entry.length}")
        return what

    def _finish(self, entry: PackEntry, payload: Data, what: str) -> Data:
        """Decompress if flagged, then check the length and the keyed id."""
        plaintext = self._decompress(payload, entry, what) if entry.flags & FLAG_ZSTD else payload
        if len(plaintext) != entry.raw_length:
            raise Corrupt(f"{what}: {len(plaintext)} bytes where {entry.raw_length} were stored")
        if self._keys.chunk_id(plaintext) != entry.chunk_id:
            raise Corrupt(f"{what}: content does not match its chunk id")
        return plaintext

    def _decompress(self, payload: Data, entry: PackEntry, what: str) -> bytes:
        try:
            declared = zstandard.frame_content_size(payload)
        except zstandard.ZstdError as e:
            raise Corrupt(f"{what}: not a zstd frame: {e}") from e
        if declared not in (-1, entry.raw_length):
            raise Corrupt(f"{what}: compressed frame declares {declared} bytes")
        try:
            return self._decompressor().decompress(payload, max_output_size=entry.raw_length)
        except zstandard.ZstdError as e:
            raise Corrupt(f"{what}: cannot be decompressed: {e}") from e


def encode_header(entries: Sequence[PackEntry]) -> bytes:
    """The plaintext header listing `entries`."""
    out = bytearray(HEADER_PREFIX.pack(HEADER_MAGIC, len(entries)))
    for e in entries:
        out += HEADER_ENTRY.pack(e.chunk_id, e.offset, e.length, e.raw_length, e.flags)
    return bytes(out)


def decode_header(plaintext: bytes, data_end: int, what: str) -> list[PackEntry]:
    """Parse a header; every entry must lie inside the blob area `[0, data_end)`."""
    if len(plaintext) < HEADER_PREFIX.size:
        raise Corrupt(f"{what}: pack header is truncated")
    magic, count = HEADER_PREFIX.unpack_from(plaintext)
    if magic != HEADER_MAGIC or len(plaintext) != HEADER_PREFIX.size + count * HEADER_ENTRY.size:
        raise Corrupt(f"{what}: pack header has a wrong magic or length")
    entries = [
        PackEntry(*fields) for fields in HEADER_ENTRY.iter_unpack(plaintext[HEADER_PREFIX.size :])
    ]
    for entry in entries:
        if entry.offset + entry.length > data_end or entry.flags & ~KNOWN_FLAGS:
            raise Corrupt(f"{what}: entry for chunk {short(entry.chunk_id)} is out of bounds")
    return entries


def parse_footer(footer: bytes, pack_size: int, what: str) -> int:
    """The sealed header's length from the 16-byte footer, checked against the pack size."""
    if len(footer) != FOOTER.size:
        raise Corrupt(f"{what}: pack is too short to hold a footer")
    magic, version, header_length = FOOTER.unpack(footer)
    if magic != FOOTER_MAGIC:
        raise Corrupt(f"{what}: pack footer has a wrong magic")
    if version != PACK_VERSION:
        raise Corrupt(f"{what}: pack format version {version} is not {PACK_VERSION}")
    if header_length + FOOTER.size > pack_size:
        raise Corrupt(f"{what}: pack header length {header_length} exceeds the pack")
    return int(header_length)


def open_header(sealer: Sealer, sealed: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Open and parse a sealed header taken from a pack of `pack_size` bytes."""
    plaintext = sealer.open(ObjectKind.PACK_HEADER, sealed, f"header of {what}")
    return decode_header(plaintext, pack_size - FOOTER.size - len(sealed), what)


def entries_from_pack_bytes(sealer: Sealer, data: bytes, what: str) -> list[PackEntry]:
    """The header entries of a pack held whole in memory."""
    header_length = parse_footer(data[-FOOTER.size :], len(data), what)
    header_start = len(data) - FOOTER.size - header_length
    return open_header(sealer, data[header_start : len(data) - FOOTER.size], len(data), what)


def read_pack_header(
    store: BlobStore, pack_id: bytes, size: int, sealer: Sealer
) -> list[PackEntry]:
    """Read a stored pack's header with two ranged reads (footer, then header)."""
    key = pack_key(pack_id)
    if size < FOOTER.size:
        raise Corrupt(f"pack {key}: {size} bytes is too short to be a pack")
    header_length = parse_footer(store.get_range(key, size - FOOTER.size, FOOTER.size), size, key)
    sealed = store.get_range(key, size - FOOTER.size - header_length, header_length)
    return open_header(sealer, sealed, size, key)


@dataclass(frozen=True)
class FinishedPack:
    """A complete pack: its id (`content_hash` of its bytes), its bytes as the parts that
    concatenate to them (the sealed blobs, header and footer: never joined in memory, see
    `BlobStore.stage`), its size and its entries."""

    pack_id: bytes
    parts: tuple[Payload, ...]
    size: int
    entries: tuple[PackEntry, ...]

    @property
    def data(self) -> bytes:
        """The pack's bytes in one object (a copy; for tests and small tools)."""
        return b"".join(self.parts)


class PackBuilder:
    """Accumulates blobs for one pack. Not thread-safe: the writer serializes access."""

    def __init__(self) -> None:
        self._blobs: list[Payload] = []
        self._size = 0
        self._entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        """Bytes of blobs so far (the header and footer come on top)."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, blob: EncodedBlob) -> None:
        """Append one blob."""
        if len(blob.chunk_id) != CHUNK_ID_BYTES:
            raise ValueError("a chunk id is 32 bytes")
        if len(blob.data) > _U32_MAX or blob.raw_length > _U32_MAX:
            raise ValueError("a blob must be smaller than 4 GiB")
        entry = PackEntry(blob.chunk_id, self._size, len(blob.data), blob.raw_length, blob.flags)
        self._entries.append(entry)
        self._blobs.append(blob.data)
        self._size += len(blob.data)

    def finish(self, sealer: Sealer) -> FinishedPack:
        """Append the sealed header and the footer; name the pack by its hash."""
        sealed = sealer.seal(ObjectKind.PACK_HEADER, encode_header(self._entries))
        footer = FOOTER.pack(FOOTER_MAGIC, PACK_VERSION, len(sealed))
        # Not joined: a 16 MiB join was a fresh allocation and a copy under the GIL per pack.
        parts = (*self._blobs, sealed, footer)
        self._blobs = []
        size = self._size + len(sealed) + len(footer)
        return FinishedPack(content_hash(*parts), parts, size, tuple(self._entries))
