"""Hypothesis strategies for index tests: few distinct chunk ids and packs, so that an id often
repeats (added twice, within a pack, across packs and index objects)."""

from __future__ import annotations

from hypothesis import strategies as st

from amber.backup.pack import PackEntry

chunk_ids = st.sampled_from([bytes([i]) * 32 for i in range(40)]) | st.binary(
    min_size=32, max_size=32
)
pack_ids = st.sampled_from([bytes([0xF0 + i]) * 32 for i in range(4)])


def pack_entries(max_flags: int) -> st.SearchStrategy[PackEntry]:
    """Pack entries of `chunk_ids` with any offset and lengths and flags up to `max_flags`."""
    return st.builds(
        PackEntry,
        chunk_ids,
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, max_flags),
    )
