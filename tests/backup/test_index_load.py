"""Loading index objects in bulk (`ChunkTable.add_packed_entries`, `IndexObject.add_to`) gives
the table that adding entry objects one by one gives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.index import (
    ChunkTable,
    IndexObject,
    PackRecord,
    decode_index,
    encode_index,
    merge_objects,
)
from amber.backup.pack import HEADER_ENTRY, PackEntry
from tests.backup import strategies

ids, pack_ids = strategies.chunk_ids, strategies.pack_ids
entries = strategies.pack_entries(max_flags=255)
packs = st.lists(st.tuples(pack_ids, st.lists(entries, max_size=60)), max_size=12)


def packed(records: list[PackEntry]) -> bytes:
    return b"".join(
        HEADER_ENTRY.pack(e.chunk_id, e.offset, e.length, e.raw_length, e.flags) for e in records
    )


@settings(max_examples=80, deadline=None)
@given(packs, st.integers(0, 3000))
def test_bulk_adding_equals_adding_entry_by_entry(
    added: list[tuple[bytes, list[PackEntry]]], reserved: int
) -> None:
    one_by_one, bulk = ChunkTable(), ChunkTable()
    bulk.reserve(reserved)
    for pack_id, records in added:
        one_by_one.add_pack_entries(pack_id, ((e.chunk_id, e) for e in records))
        bulk.add_packed_entries(pack_id, packed(records))
    assert list(bulk.entries()) == list(one_by_one.entries())  # same rows, same order
    for _, records in added:
        for e in records:
            assert bulk[e.chunk_id] == one_by_one[e.chunk_id]


def test_bulk_adding_grows_the_table_past_many_doublings() -> None:
    table = ChunkTable()
    chunk_ids = [i.to_bytes(4, "big") * 8 for i in range(20_000)]  # structured, not random
    for start in range(0, len(chunk_ids), 5000):
        part = [PackEntry(c, i, 2, 3, 1) for i, c in enumerate(chunk_ids[start : start + 5000])]
        table.add_packed_entries(start.to_bytes(32, "big"), packed(part))
    assert len(table) == 20_000
    assert all(table[c].offset == i % 5000 for i, c in enumerate(chunk_ids))
    assert (20_000).to_bytes(4, "big") * 8 not in table


@settings(max_examples=40, deadline=None)
@given(st.lists(packs, min_size=1, max_size=4), st.data())
def test_a_loaded_index_equals_one_merged_from_entry_objects(
    objects: list[list[tuple[bytes, list[PackEntry]]]], data: st.DataObject
) -> None:
    """The decoded objects (entries kept as stored) and the same objects built from
    `PackRecord`s merge into the same index, superseded objects left out of both."""
    records = [
        [PackRecord(pack_id, 1000 + len(entries), tuple(entries)) for pack_id, entries in obj]
        for obj in objects
    ]
    keys = [f"index/{i:064x}" for i in range(len(records))]
    superseded = data.draw(st.sets(st.sampled_from(keys)))
    digests = [bytes.fromhex(key.removeprefix("index/")) for key in sorted(superseded)]
    # The last object supersedes the drawn ones (possibly itself: then none is loaded).
    plaintexts = [
        encode_index(r, digests if i == len(records) - 1 else ()) for i, r in enumerate(records)
    ]
    decoded = {key: decode_index(p, key) for key, p in zip(keys, plaintexts, strict=True)}
    built = {
        key: IndexObject(r, digests if i == len(records) - 1 else ())
        for i, (key, r) in enumerate(zip(keys, records, strict=True))
    }
    loaded, expected = merge_objects(decoded), merge_objects(built)
    assert list(loaded.chunks.entries()) == list(expected.chunks.entries())
    assert loaded.pack_sizes == expected.pack_sizes
    assert loaded.object_keys == expected.object_keys
    assert loaded.superseded_keys == expected.superseded_keys
    assert all(decoded[key] == built[key] for key in keys)  # records decoded on demand
