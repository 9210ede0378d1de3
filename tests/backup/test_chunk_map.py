"""The compact in-memory chunk map (`ChunkMap`) behaves like the tuple of refs it replaced."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amber.backup.manifest import HOLE, ZERO, ChunkMap, ChunkRef, encode_chunk_map
from amber.domain.errors import Corrupt, InvalidArgument

chunk_refs = st.lists(
    st.one_of(st.sampled_from([ZERO, HOLE]), st.sampled_from([bytes([i]) * 32 for i in range(6)])),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(refs=chunk_refs, data=st.data())
def test_a_chunk_map_reads_like_its_refs(refs: list[ChunkRef], data: st.DataObject) -> None:
    built = ChunkMap.of(refs)
    decoded = ChunkMap.decode(*encode_chunk_map(refs), len(refs), "map")
    for chunk_map in (built, decoded):
        assert list(chunk_map) == refs
        assert len(chunk_map) == len(refs)
        assert chunk_map == tuple(refs)
        assert chunk_map == refs
        assert chunk_map.ids() == {r for r in refs if isinstance(r, bytes)}
        if refs:
            i = data.draw(st.integers(-len(refs), len(refs) - 1))
            assert chunk_map[i] == refs[i]
    assert built == decoded
    assert hash(built) == hash(decoded)
    assert list(built[1:5]) == refs[1:5]


def test_a_changed_chunk_map_is_not_equal() -> None:
    a, b = b"a" * 32, b"b" * 32
    assert ChunkMap.of([a, HOLE]) != ChunkMap.of([b, HOLE])
    assert ChunkMap.of([a, HOLE]) != [a, ZERO]
    assert ChunkMap.of([a, HOLE]) != [a]
    assert ChunkMap.of([a]) != "not a map"
    with pytest.raises(IndexError):
        ChunkMap.of([a])[1]


def test_bad_entries_and_a_table_overrun_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="32 bytes"):
        ChunkMap.of([b"short"])
    with pytest.raises(InvalidArgument, match="invalid chunk map entry"):
        ChunkMap.of(["nothing"])  # type: ignore[list-item]
    table, runs = encode_chunk_map([b"a" * 32, b"b" * 32])
    with pytest.raises(Corrupt, match="past its id table"):
        ChunkMap.decode(table[:32], runs, 2, "map")


def test_one_token_per_chunk_not_one_object() -> None:
    refs: list[ChunkRef] = [i.to_bytes(32, "big") for i in range(1000)] + [HOLE] * 9000
    chunk_map = ChunkMap.decode(*encode_chunk_map(refs), len(refs), "map")
    assert len(chunk_map.table) == 32 * 1000
    assert chunk_map.runs() == encode_chunk_map(refs)[1]
