"""Byte formats: packs, index objects, chunk maps and manifests (property tests)."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.crypto import ObjectKind, keys_from_master, keys_without_encryption
from amber.backup.index import IndexObject, PackRecord, decode_index, encode_index
from amber.backup.manifest import (
    HOLE,
    ZERO,
    BackupStats,
    ChunkRef,
    Manifest,
    chunk_count,
    decode_chunk_map,
    decode_manifest,
    encode_chunk_map,
    encode_manifest,
)
from amber.backup.pack import (
    FLAG_ZSTD,
    FOOTER,
    BlobCodec,
    PackBuilder,
    PackEntry,
    entries_from_pack_bytes,
)
from amber.domain.errors import Corrupt, FailedPrecondition, InvalidArgument

KEYS = keys_from_master(bytes(range(32)), "0" * 32)
PLAIN_KEYS = keys_without_encryption(bytes(32), "1" * 32)
ids = st.binary(min_size=32, max_size=32)
chunk_bytes = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda n, b: b * n, st.integers(1, 2000), st.binary(min_size=1, max_size=3)),
)


def build_pack(chunks: list[bytes], keys=KEYS) -> tuple[bytes, list[PackEntry], BlobCodec]:  # type: ignore[no-untyped-def]
    codec = BlobCodec(keys, 1)
    builder = PackBuilder()
    for chunk in chunks:
        builder.add(codec.encode(keys.chunk_id(chunk), chunk))
    finished = builder.finish(keys.sealer)
    assert finished.pack_id == blake3.blake3(finished.data).digest()
    assert finished.size == len(finished.data)
    return finished.data, list(finished.entries), codec


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(chunk_bytes, min_size=1, max_size=12), encrypted=st.booleans())
def test_pack_round_trip(chunks: list[bytes], encrypted: bool) -> None:
    keys = KEYS if encrypted else PLAIN_KEYS
    data, entries, codec = build_pack(chunks, keys)
    parsed = entries_from_pack_bytes(keys.sealer, data, "pack")
    assert parsed == entries
    for chunk, entry in zip(chunks, parsed, strict=True):
        assert entry.raw_length == len(chunk)
        sealed = data[entry.offset : entry.offset + entry.length]
        assert codec.decode(entry, sealed, "pack") == chunk
        # The restore's path: decrypted into a reused scratch buffer, opened from a view.
        scratch = bytearray(entry.length)
        assert bytes(codec.decode_into(entry, memoryview(sealed), "pack", scratch)) == chunk
        compressed = entry.flags & FLAG_ZSTD
        assert (
            entry.length - keys.sealer.overhead < len(chunk)
            if compressed
            else entry.length - keys.sealer.overhead == len(chunk)
        )


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(min_size=1, max_size=500), min_size=1, max_size=6), data=st.data())
def test_any_flipped_bit_in_a_pack_is_detected(chunks: list[bytes], data: st.DataObject) -> None:
    packed, _, codec = build_pack(chunks)
    position = data.draw(st.integers(0, len(packed) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(packed)
    damaged[position] ^= 1 << bit
    found = into_found = False
    try:
        parsed = entries_from_pack_bytes(KEYS.sealer, bytes(damaged), "pack")
        for entry in parsed:
            codec.decode(entry, bytes(damaged[entry.offset : entry.offset + entry.length]), "pack")
    except Corrupt:
        found = True
    try:
        parsed = entries_from_pack_bytes(KEYS.sealer, bytes(damaged), "pack")
        scratch = bytearray(max(e.length for e in parsed))
        for entry in parsed:
            blob = memoryview(damaged)[entry.offset : entry.offset + entry.length]
            codec.decode_into(entry, blob, "pack", scratch)
    except Corrupt:
        into_found = True
    assert found
    assert into_found


def test_a_blob_moved_under_another_chunk_id_is_corrupt() -> None:
    a, b = b"first chunk" * 10, b"second chunk" * 10
    data, entries, codec = build_pack([a, b])
    swapped = PackEntry(
        entries[0].chunk_id,
        entries[1].offset,
        entries[1].length,
        entries[1].raw_length,
        entries[1].flags,
    )
    with pytest.raises(Corrupt, match="failed its integrity check"):
        codec.decode(swapped, data[swapped.offset : swapped.offset + swapped.length], "pack")


def test_footer_and_header_errors_are_corrupt() -> None:
    data, _, _ = build_pack([b"x" * 100])
    with pytest.raises(Corrupt, match="too short"):
        entries_from_pack_bytes(KEYS.sealer, data[:4], "pack")
    bad_magic = b"NOTAPACK" + data[-FOOTER.size + 8 :]
    with pytest.raises(Corrupt, match="magic"):
        entries_from_pack_bytes(KEYS.sealer, data[: -FOOTER.size] + bad_magic, "pack")
    huge = data[:-4] + (2**31).to_bytes(4, "little")
    with pytest.raises(Corrupt, match="exceeds"):
        entries_from_pack_bytes(KEYS.sealer, huge, "pack")
    with pytest.raises(Corrupt, match="not a pack-header"):
        entries_from_pack_bytes(PLAIN_KEYS.sealer, data, "pack")


@settings(max_examples=60, deadline=None)
@given(
    records=st.lists(
        st.builds(
            PackRecord,
            ids,
            st.integers(0, 2**40),
            st.lists(
                st.builds(
                    PackEntry,
                    ids,
                    st.integers(0, 2**40),
                    st.integers(0, 2**32 - 1),
                    st.integers(0, 2**32 - 1),
                    st.integers(0, 1),
                ),
                max_size=5,
            ).map(tuple),
        ),
        max_size=5,
    ),
    supersedes=st.lists(ids, max_size=3),
)
def test_index_object_round_trip(records: list[PackRecord], supersedes: list[bytes]) -> None:
    plaintext = encode_index(records, supersedes)
    assert decode_index(plaintext, "index") == IndexObject(tuple(records), tuple(supersedes))
    for cut in (1, len(plaintext) // 2):
        with pytest.raises(Corrupt):
            decode_index(plaintext[:-cut], "index")
    with pytest.raises(Corrupt, match="trailing"):
        decode_index(plaintext + b"\x00", "index")


chunk_refs = st.lists(
    st.one_of(st.sampled_from([ZERO, HOLE]), st.sampled_from([bytes([i]) * 32 for i in range(6)])),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(refs=chunk_refs)
def test_chunk_map_round_trip(refs: list[ChunkRef]) -> None:
    table, runs = encode_chunk_map(refs)
    assert decode_chunk_map(table, runs, len(refs), "map") == refs
    assert len(table) == 32 * len({r for r in refs if isinstance(r, bytes)})
    if refs:
        with pytest.raises(Corrupt):
            decode_chunk_map(table, runs, len(refs) + 1, "map")


def test_chunk_map_encoding_is_compact() -> None:
    fresh = [i.to_bytes(32, "big") for i in range(10_000)]
    refs: list[ChunkRef] = [*fresh]
    refs += [ZERO] * 5000
    refs += [HOLE] * 5000
    table, runs = encode_chunk_map(refs)
    assert len(table) == 32 * 10_000
    assert len(runs) == 10  # three runs: (header, start), header, header
    repeated = encode_chunk_map([fresh[0]] * 10_000)
    assert len(repeated[0]) == 32


def test_chunk_map_rejects_garbage() -> None:
    with pytest.raises(Corrupt):
        decode_chunk_map(b"", bytes([0x80]), 1, "map")  # truncated varint
    with pytest.raises(Corrupt):
        decode_chunk_map(b"", bytes([(1 << 2) | 3]), 1, "map")  # reserved kind
    with pytest.raises(Corrupt):
        decode_chunk_map(b"\x00" * 32, bytes([(2 << 2) | 2, 0]), 2, "map")  # past the table
    with pytest.raises(Corrupt):
        decode_chunk_map(b"", bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), 3, "map")  # huge run
    with pytest.raises(InvalidArgument):
        encode_chunk_map([b"short"])


names = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True).filter(lambda n: ".." not in n)
texts = st.text(max_size=20)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    chunk_size = draw(st.sampled_from([512, 4096, 1 << 20]))
    size = draw(st.integers(1, chunk_size * 40))
    count = chunk_count(size, chunk_size)
    absent: list[ChunkRef] = [ZERO, HOLE]
    refs: list[ChunkRef] = draw(
        st.lists(st.one_of(st.sampled_from(absent), ids), min_size=count, max_size=count)
    )
    hexid = st.text("0123456789abcdef", min_size=32, max_size=32)
    return Manifest(
        backup_id=draw(hexid),
        volume_name=draw(names),
        volume_size=size,
        chunk_size=chunk_size,
        chunk_map=tuple(refs),
        created=draw(st.floats(0, 4e9)),
        source_snapshot=draw(st.none() | texts),
        parent_id=draw(st.none() | hexid),
        stats=BackupStats(
            bytes_read=draw(st.integers(0, 2**50)),
            bytes_new=draw(st.integers(0, 2**50)),
            bytes_stored=draw(st.integers(0, 2**50)),
            chunks_new=draw(st.integers(0, 2**30)),
            duration_seconds=draw(st.floats(0, 1e6)),
        ),
        labels=draw(st.dictionaries(texts, texts, max_size=3)),
        tags=tuple(draw(st.lists(texts, max_size=3))),
    )


@settings(max_examples=100, deadline=None)
@given(manifest=manifests(), encrypted=st.booleans())
def test_manifest_round_trip(manifest: Manifest, encrypted: bool) -> None:
    keys = KEYS if encrypted else PLAIN_KEYS
    sealed = encode_manifest(manifest, keys.sealer)
    assert decode_manifest(sealed, keys.sealer, manifest.backup_id) == manifest
    other_id = "f" * 32 if manifest.backup_id != "f" * 32 else "e" * 32
    with pytest.raises(Corrupt):
        decode_manifest(sealed, keys.sealer, other_id)


def test_manifest_from_a_newer_format_is_refused() -> None:
    import json

    import zstandard

    document = {"version": 3, "backup_id": "a" * 32}
    compressed = zstandard.ZstdCompressor().compress(json.dumps(document).encode())
    sealed = KEYS.sealer.seal(ObjectKind.MANIFEST, compressed, context=b"a" * 32)
    with pytest.raises(FailedPrecondition, match="format version 3"):
        decode_manifest(sealed, KEYS.sealer, "a" * 32)


def test_manifest_with_missing_fields_is_corrupt() -> None:
    import zstandard

    compressed = zstandard.ZstdCompressor().compress(b'{"version": 1}')
    sealed = KEYS.sealer.seal(ObjectKind.MANIFEST, compressed, context=b"a" * 32)
    with pytest.raises(Corrupt, match="field 'volume'"):
        decode_manifest(sealed, KEYS.sealer, "a" * 32)
