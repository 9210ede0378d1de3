"""The compact in-memory index (`ChunkTable`) behaves like the dict it replaced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.index import ChunkTable, IndexEntry, RepositoryIndex
from amber.backup.pack import PackEntry
from tests.backup import strategies

ids, packs = strategies.chunk_ids, strategies.pack_ids
entries = strategies.pack_entries(max_flags=1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(packs, entries), max_size=300), st.lists(ids, max_size=20))
def test_chunk_table_matches_a_dict_where_the_first_location_wins(
    added: list[tuple[bytes, PackEntry]], probes: list[bytes]
) -> None:
    table = ChunkTable()
    model: dict[bytes, IndexEntry] = {}
    for pack_id, e in added:
        was_new = e.chunk_id not in model
        entry = IndexEntry(pack_id, e.offset, e.length, e.raw_length, e.flags)
        model.setdefault(e.chunk_id, entry)
        assert table.add(e.chunk_id, pack_id, e) is was_new
    assert len(table) == len(model)
    assert dict(table.entries()) == model
    assert list(table) == list(model)  # insertion order
    for chunk_id in [*model, *probes]:
        assert (chunk_id in table) is (chunk_id in model)
        assert table.get(chunk_id) == model.get(chunk_id)


def test_absent_and_foreign_keys_are_not_found() -> None:
    table = ChunkTable()
    assert b"\x00" * 32 not in table
    table.add(b"\x01" * 32, b"p" * 32, PackEntry(b"\x01" * 32, 0, 1, 1, 0))
    for absent in (b"\x00" * 32, b"\x01" * 31, b"\x01" * 33, "zero", None, 7):
        assert absent not in table
    assert table.get(b"\x02" * 32) is None
    with pytest.raises(KeyError):
        table[b"\x02" * 32]
    with pytest.raises(ValueError, match="32 bytes"):
        table.add(b"short", b"p" * 32, PackEntry(b"short", 0, 1, 1, 0))


def test_the_table_stays_exact_across_many_growths() -> None:
    table = ChunkTable()
    chunk_ids = [i.to_bytes(4, "big") * 8 for i in range(5000)]  # structured ids, not random
    for offset, chunk_id in enumerate(chunk_ids):
        assert table.add(chunk_id, b"p" * 32, PackEntry(chunk_id, offset, 2, 3, 1))
    assert len(table) == 5000
    assert all(table[c].offset == offset for offset, c in enumerate(chunk_ids))
    assert (5000).to_bytes(4, "big") * 8 not in table


def test_repository_index_merge_and_add_pack_keep_the_first_location() -> None:
    chunk, other = b"c" * 32, b"o" * 32
    first, second = RepositoryIndex(), RepositoryIndex()
    first.add_pack(b"A" * 32, 100, [PackEntry(chunk, 0, 10, 20, 1)])
    second.add_pack(b"B" * 32, 200, [PackEntry(chunk, 50, 11, 20, 0), PackEntry(other, 5, 1, 1, 0)])
    second.object_keys.add("index/x")
    first.merge(second)
    assert first.lookup(chunk) == IndexEntry(b"A" * 32, 0, 10, 20, 1)
    assert first.lookup(other) == IndexEntry(b"B" * 32, 5, 1, 1, 0)
    assert first.pack_sizes == {b"A" * 32: 100, b"B" * 32: 200}
    assert first.object_keys == {"index/x"}
    first.add_pack(b"C" * 32, 300, [PackEntry(other, 9, 9, 9, 1)])
    assert first.lookup(other) == IndexEntry(b"B" * 32, 5, 1, 1, 0)
    records = {r.pack_id: r.entries for r in first.records()}
    assert records == {
        b"A" * 32: (PackEntry(chunk, 0, 10, 20, 1),),
        b"B" * 32: (PackEntry(other, 5, 1, 1, 0),),
        b"C" * 32: (),
    }
    assert first.entries_by_pack()[b"B" * 32] == [(other, IndexEntry(b"B" * 32, 5, 1, 1, 0))]
