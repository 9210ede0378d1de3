"""Manifest patches (format version 2): the encoding, its invariants, and the overlay semantics
against a reference model (a bytearray written over, in order)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup import _codec
from amber.backup.chunker import ChunkGrid
from amber.backup.crypto import ObjectKind, keys_from_master
from amber.backup.extents import changed_chunks
from amber.backup.manifest import (
    HOLE,
    ZERO,
    BackupStats,
    ChunkRef,
    Manifest,
    Patch,
    decode_manifest,
    encode_manifest,
)
from amber.backup.patches import (
    PatchPolicy,
    by_position,
    coalesce,
    overlay,
    pieces,
    should_patch,
    subtract,
)
from amber.backup.progress import NullProgress
from amber.backup.repository import Repository
from amber.backup.restorer import RestoreOptions, Restorer
from amber.backup.writer import ManifestDraft
from amber.domain.errors import Corrupt, InvalidArgument
from amber.system.ioctl import FIEMAP_EXTENT_SHARED, Extent

KEYS = keys_from_master(bytes(range(32)), "0" * 32)
BACKUP_ID = "ab" * 16
IDS = [bytes([i]) * 32 for i in range(1, 4)]

# The canonical JSON of a version 1 manifest as Amber wrote it before patches existed (made
# with that code, commit 1fab8bc): this Amber must write the same bytes and read them back.
V1_DOCUMENT = (
    b'{"backup_id":"abababababababababababababababab","chunk_size":65536,"chunks":{"count":6,'
    b'"runs":"BgAFBgEEBgAGAg==","table":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQECAgICAgICAg'
    b'ICAgICAgICAgICAgICAgICAgICAgICAgMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMD"},'
    b'"created":1700000000.5,"labels":{"app":"db"},"parent_id":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",'
    b'"source_snapshot":"s1","stats":{"bytes_new":2,"bytes_read":1,"bytes_stored":3,'
    b'"chunks_new":4,"duration_seconds":0.25},"tags":["nightly"],"version":1,'
    b'"volume":{"name":"vol-a","size":327780}}'
)


def _v1_manifest(**changes: object) -> Manifest:
    fields: dict[str, object] = {
        "backup_id": BACKUP_ID,
        "volume_name": "vol-a",
        "volume_size": 5 * 65536 + 100,
        "chunk_size": 65536,
        "chunk_map": [IDS[0], ZERO, IDS[1], HOLE, IDS[0], IDS[2]],
        "created": 1700000000.5,
        "source_snapshot": "s1",
        "parent_id": "cd" * 16,
        "stats": BackupStats(1, 2, 3, 4, 0.25),
        "labels": {"app": "db"},
        "tags": ("nightly",),
    }
    return Manifest(**{**fields, **changes})  # type: ignore[arg-type]


def _document(sealed: bytes) -> dict[str, object]:
    compressed = KEYS.sealer.open(ObjectKind.MANIFEST, sealed, "m", context=BACKUP_ID.encode())
    document: dict[str, object] = json.loads(zstandard.ZstdDecompressor().decompress(compressed))
    return document


def _seal(document: dict[str, object] | bytes) -> bytes:
    plain = document if isinstance(document, bytes) else _codec.dumps(document)
    compressed = zstandard.ZstdCompressor(level=3).compress(plain)
    return KEYS.sealer.seal(ObjectKind.MANIFEST, compressed, context=BACKUP_ID.encode())


def test_a_manifest_without_patches_is_version_1_byte_for_byte() -> None:
    manifest = _v1_manifest()
    sealed = encode_manifest(manifest, KEYS.sealer)
    compressed = KEYS.sealer.open(ObjectKind.MANIFEST, sealed, "m", context=BACKUP_ID.encode())
    assert zstandard.ZstdDecompressor().decompress(compressed) == V1_DOCUMENT
    assert manifest.version == 1


def test_a_version_1_manifest_written_by_the_old_code_still_decodes() -> None:
    decoded = decode_manifest(_seal(V1_DOCUMENT), KEYS.sealer, BACKUP_ID)
    assert decoded == _v1_manifest()
    assert decoded.patches == ()


def test_a_manifest_with_patches_is_version_2() -> None:
    manifest = _v1_manifest(patches=[Patch(70_000, 100, bytes([9]) * 32, 5)])
    document = _document(encode_manifest(manifest, KEYS.sealer))
    assert document["version"] == 2
    chunks = document["chunks"]
    assert isinstance(chunks, dict)
    assert "patches" in chunks
    decoded = decode_manifest(encode_manifest(manifest, KEYS.sealer), KEYS.sealer, BACKUP_ID)
    assert decoded.patches == manifest.patches
    assert decoded.chunk_ids() == {*IDS, bytes([9]) * 32}


@st.composite
def patched_manifests(draw: st.DrawFn) -> Manifest:
    chunk_size = draw(st.sampled_from([512, 4096, 65536]))
    count = draw(st.integers(1, 12))
    volume_size = count * chunk_size - draw(st.integers(0, chunk_size - 1))
    ids = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5, unique=True))
    refs: list[ChunkRef] = draw(
        st.lists(st.sampled_from([*ids, ZERO, HOLE]), min_size=count, max_size=count)
    )
    patch_ids = ids + draw(st.lists(st.binary(min_size=32, max_size=32), max_size=3))
    patches, offset = [], 0
    for gap, length, chunk_offset, chunk_id in draw(
        st.lists(
            st.tuples(
                st.integers(0, 3 * chunk_size),
                st.integers(1, chunk_size),
                st.integers(0, chunk_size),
                st.sampled_from(patch_ids),
            ),
            max_size=20,
        )
    ):
        start = offset + gap
        length = min(length, volume_size - start, chunk_size - min(chunk_offset, chunk_size - 1))
        if length <= 0:
            break
        chunk_offset = min(chunk_offset, chunk_size - length)
        patches.append(Patch(start, length, chunk_id, chunk_offset))
        offset = start + length
    return _v1_manifest(
        volume_size=volume_size, chunk_size=chunk_size, chunk_map=refs, patches=patches
    )


@settings(max_examples=150, deadline=None)
@given(manifest=patched_manifests())
def test_patched_manifest_round_trip(manifest: Manifest) -> None:
    decoded = decode_manifest(encode_manifest(manifest, KEYS.sealer), KEYS.sealer, BACKUP_ID)
    assert decoded == manifest
    assert decoded.version == (2 if manifest.patches else 1)
    assert decoded.chunk_ids() >= {p.chunk_id for p in manifest.patches}


BAD_PATCHES = {
    "overlap": [Patch(0, 100, IDS[0]), Patch(50, 10, IDS[1])],
    "unsorted": [Patch(1000, 10, IDS[0]), Patch(0, 10, IDS[1])],
    "outside": [Patch(5 * 65536 + 50, 100, IDS[0])],
    "zero-length": [Patch(10, 0, IDS[0])],
    "past-the-chunk": [Patch(10, 100, IDS[0], 65500)],
    "not-an-id": [Patch(10, 100, b"short")],
}


@pytest.mark.parametrize("name", sorted(BAD_PATCHES))
def test_invalid_patches_are_refused_on_encode(name: str) -> None:
    with pytest.raises(InvalidArgument):
        encode_manifest(_v1_manifest(patches=BAD_PATCHES[name]), KEYS.sealer)


def _varints(*values: int) -> str:
    out = bytearray()
    for value in values:
        _codec.write_varint(out, value)
    return _codec.b64encode(bytes(out))


# (offset delta, length, table index, chunk offset) per patch; the table holds IDS (3 ids).
BAD_ENCODINGS = {
    "overlap": _varints(0, 100, 0, 0, 50, 10, 1, 0),
    "same-offset": _varints(10, 100, 0, 0, 0, 10, 1, 0),
    "outside": _varints(5 * 65536 + 50, 100, 0, 0),
    "zero-length": _varints(10, 0, 0, 0),
    "unknown-table-index": _varints(10, 100, 3, 0),
    "truncated": _varints(10, 100, 0),
    "past-the-chunk": _varints(10, 100, 0, 65500),
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(BAD_ENCODINGS))
def test_invalid_patches_are_corrupt_on_decode(name: str) -> None:
    good = _v1_manifest(patches=[Patch(10, 100, IDS[0])])
    document = _document(encode_manifest(good, KEYS.sealer))
    chunks = document["chunks"]
    assert isinstance(chunks, dict)
    chunks["patches"] = BAD_ENCODINGS[name]
    with pytest.raises(Corrupt):
        decode_manifest(_seal(document), KEYS.sealer, BACKUP_ID)


def test_a_version_1_manifest_with_patches_and_a_version_2_without_are_corrupt() -> None:
    document = json.loads(V1_DOCUMENT)
    document["chunks"]["patches"] = _varints(10, 100, 0, 0)
    with pytest.raises(Corrupt, match="version 1 manifest has patches"):
        decode_manifest(_seal(document), KEYS.sealer, BACKUP_ID)
    document = json.loads(V1_DOCUMENT)
    document["version"] = 2
    with pytest.raises(Corrupt):
        decode_manifest(_seal(document), KEYS.sealer, BACKUP_ID)


# -- the overlay semantics, against a model --------------------------------------------------

CHUNK = 4096


def _content(chunk_id: bytes) -> bytes:
    """Every chunk of the model has the content its id seeds (ids are 32 bytes)."""
    return random.Random(chunk_id).randbytes(CHUNK)


def _model(refs: list[ChunkRef], size: int, layers: list[list[Patch]]) -> bytearray:
    """The volume: the base map, then each layer's patches written over it, in order."""
    volume = bytearray(size)
    for position, ref in enumerate(refs):
        if isinstance(ref, bytes):
            end = min(CHUNK, size - position * CHUNK)
            volume[position * CHUNK : position * CHUNK + end] = _content(ref)[:end]
    for layer in layers:
        for p in layer:
            volume[p.offset : p.end] = _content(p.chunk_id)[
                p.chunk_offset : p.chunk_offset + p.length
            ]
    return volume


def _from_pieces(manifest: Manifest) -> bytearray:
    volume = bytearray(manifest.volume_size)
    previous_end = 0
    for piece in pieces(manifest):
        assert piece.offset >= previous_end  # disjoint and in volume order
        data = _content(piece.chunk_id)[piece.chunk_offset : piece.chunk_offset + piece.length]
        assert len(data) == piece.length
        volume[piece.offset : piece.offset + piece.length] = data
        previous_end = piece.offset + piece.length
    return volume


@st.composite
def layered(draw: st.DrawFn) -> tuple[list[ChunkRef], int, list[list[Patch]]]:
    """A base map and a sequence of patch layers, each sorted, disjoint, inside one position
    each (as a backup makes them), stored at chunk offset 0 of a fresh chunk."""
    count = draw(st.integers(1, 6))
    size = count * CHUNK - draw(st.integers(0, CHUNK - 1))
    ids = [bytes([n]) * 32 for n in range(1, 4)]
    refs: list[ChunkRef] = draw(
        st.lists(st.sampled_from([*ids, ZERO, HOLE]), min_size=count, max_size=count)
    )
    layers = []
    for layer_number in range(draw(st.integers(0, 5))):
        cuts = sorted(draw(st.sets(st.integers(0, size), max_size=10)))
        ranges = [(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False) if b > a]
        layer = []
        for n, (start, end) in enumerate(ranges):
            for position, group in by_position(
                [Patch(start, end - start, bytes([100 + layer_number, n]) * 16)], CHUNK
            ).items():
                assert all(p.offset // CHUNK == position for p in group)
                layer += [p._replace(chunk_offset=0) for p in group]
        layers.append(layer)
    return refs, size, layers


@settings(max_examples=200, deadline=None)
@given(case=layered())
def test_patch_layers_overlaid_give_the_models_content(
    case: tuple[list[ChunkRef], int, list[list[Patch]]],
) -> None:
    refs, size, layers = case
    patches: list[Patch] = []
    for layer in layers:
        patches = overlay(patches, layer)
    manifest = _v1_manifest(volume_size=size, chunk_size=CHUNK, chunk_map=refs, patches=patches)
    assert _from_pieces(manifest) == _model(refs, size, layers)
    # What the encoding keeps is what the pieces are made of.
    decoded = decode_manifest(encode_manifest(manifest, KEYS.sealer), KEYS.sealer, BACKUP_ID)
    assert _from_pieces(decoded) == _model(refs, size, layers)


def test_subtract_trims_and_splits_moving_the_chunk_offset() -> None:
    patch = Patch(100, 100, IDS[0], 7)
    assert subtract([patch], [(120, 130), (150, 160)]) == [
        Patch(100, 20, IDS[0], 7),
        Patch(130, 20, IDS[0], 37),
        Patch(160, 40, IDS[0], 67),
    ]
    assert subtract([patch], [(0, 1000)]) == []
    assert subtract([patch], [(0, 100), (200, 300)]) == [patch]


def test_coalesce_and_the_patch_policy() -> None:
    assert coalesce([(0, 4096), (8192, 12288), (40960, 45056)], 16384) == [
        (0, 12288),
        (40960, 45056),
    ]
    policy = PatchPolicy(max_fraction=0.25, max_patches=2)
    assert should_patch(262144, [(0, 4096)], [], policy)
    assert not should_patch(262144, [(0, 65537)], [], policy)  # more than a quarter
    assert not should_patch(262144, [], [], policy)
    old = [Patch(100_000, 10, IDS[0]), Patch(200_000, 10, IDS[1])]
    assert not should_patch(262144, [(0, 4096)], old, policy)  # would make 3 patches
    assert should_patch(262144, [(99_000, 101_000)], old, policy)  # covers one: 2


# -- the real restorer writes what the model says ---------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_restore_of_a_patched_backup_equals_the_model(
    repo: Repository, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    size = 12 * repo.chunk_size - 100
    assert repo.chunk_size == CHUNK
    writer = repo.writer()
    contents = [rng.randbytes(CHUNK) for _ in range(3)]
    ids = [writer.add_chunk(data) for data in contents]
    last = writer.add_chunk(contents[0][: CHUNK - 100])  # the short last chunk
    refs: list[ChunkRef] = [rng.choice([*ids, ZERO, HOLE]) for _ in range(12)]
    refs[-1] = last if isinstance(refs[-1], bytes) else refs[-1]
    volume = bytearray(size)
    for position, ref in enumerate(refs):
        if isinstance(ref, bytes):
            start, end = position * CHUNK, min((position + 1) * CHUNK, size)
            volume[start:end] = contents[ids.index(ref) if ref in ids else 0][: end - start]
    patches: list[Patch] = []
    for _layer in range(4):
        layer = []
        for position in sorted(rng.sample(range(12), 4)):
            start = position * CHUNK + rng.randrange(0, CHUNK // 2)
            length = min(rng.randrange(1, CHUNK // 2), size - start)
            data = bytes(length) if rng.random() < 0.3 else rng.randbytes(length)  # zeros too
            layer.append(Patch(start, length, writer.add_chunk(data)))
            volume[start : start + length] = data
        patches = overlay(patches, layer)
    draft = ManifestDraft("vol-a", size, refs, patches=patches)
    manifest = repo.load_manifest(writer.commit(draft))
    assert manifest.version == 2
    image = tmp_path / "restored.img"
    image.write_bytes(b"")
    with open(image, "r+b") as f:
        f.truncate(size)
    Restorer(repo, manifest, RestoreOptions(), NullProgress()).write_image(image)
    assert image.read_bytes() == volume


def test_a_draft_naming_an_unknown_patch_chunk_is_refused(repo: Repository) -> None:
    writer = repo.writer()
    chunk = writer.add_chunk(b"x" * CHUNK)
    draft = ManifestDraft("vol-a", CHUNK, [chunk], patches=[Patch(0, 10, b"\x07" * 32)])
    with pytest.raises(InvalidArgument, match="patch at byte 0"):
        writer.commit(draft)


def test_changed_chunks_keep_the_ranges_of_chunks_changed_in_part() -> None:
    c = 1024
    grid = ChunkGrid(8 * c, c)
    base = [Extent(0, 10_000, 8 * c, 0)]
    new = [
        Extent(0, 10_000, c + 100, FIEMAP_EXTENT_SHARED),
        Extent(c + 100, 50_000, 200, 0),  # inside chunk 1
        Extent(c + 300, 10_000 + c + 300, 2 * c - 300, FIEMAP_EXTENT_SHARED),
        Extent(3 * c, 60_000, 3 * c + 24, 0),  # chunks 3-5 whole and 24 bytes of chunk 6
        Extent(6 * c + 24, 10_000 + 6 * c + 24, 2 * c - 24, FIEMAP_EXTENT_SHARED),
    ]
    changes = changed_chunks(base, new, grid, grid.count)
    assert list(changes.same) == [1, 0, 1, 0, 0, 0, 0, 1]
    # Chunks changed whole keep no ranges: they cannot be patched, and a volume rewritten
    # whole must not cost a list per chunk.
    assert changes.ranges == {1: [(c + 100, c + 300)], 6: [(6 * c, 6 * c + 24)]}
